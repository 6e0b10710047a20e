"""Django under gunicorn (WSGI, 2 workers) and under uvicorn (ASGI) → real sidecar → real
collector."""

import pytest

from conftest import assert_cpu_ms, parallel, running, unique_service
from helpers import eventually

ROUTES = {
    "/items/%d/?ms=60": "GET /items/{pk}/",
    "/api/v1/orders/%d/?ms=30": "GET /api/v1/orders/{order_id}/",
}


def _exercise(app, collector):
    paths = [p % i for p in ROUTES for i in range(8)] + ["/legacy/2019/", "/missing/1/", "/missing/2/"]
    statuses = parallel(lambda p: app.get(p)[0], paths, threads=3)
    assert statuses == [200] * 17 + [404, 404]
    svc = app.service
    want = {"GET /items/{pk}/": 8, "GET /api/v1/orders/{order_id}/": 8, "GET /legacy/{year}/": 1, "GET <unmatched>": 2}

    def arrived():
        eps = collector.endpoints(svc)
        return eps if all(eps.get(k, {}).get("requests") == v for k, v in want.items()) else None

    eps = eventually(arrived, what="Django's events named by route")
    assert not [n for n in eps if "2019" in n or "/missing" in n]
    assert_cpu_ms(eps["GET /items/{pk}/"], 60, "GET /items/{pk}/")
    assert_cpu_ms(eps["GET /api/v1/orders/{order_id}/"], 30, "GET /api/v1/orders/{order_id}/")
    collector.assert_only_in(svc, "django_hot_items", "GET /items/{pk}/", at_least=20)
    collector.assert_only_in(svc, "django_hot_orders", "GET /api/v1/orders/{order_id}/", at_least=10)


@pytest.fixture(scope="module")
def django_wsgi(sidecar, workdir):
    yield from running("gunicorn", "djsite.wsgi:application", unique_service("django-wsgi"), "unix://" + sidecar.socket, workdir, workers=2)


@pytest.fixture(scope="module")
def django_asgi(sidecar, workdir):
    yield from running("uvicorn", "djsite.asgi:application", unique_service("django-asgi"), "udp://" + sidecar.udp, workdir)


def test_django_wsgi_under_gunicorn(django_wsgi, collector):
    _exercise(django_wsgi, collector)


def test_django_asgi_under_uvicorn_sync_views_in_threads(django_asgi, collector):
    """Under ASGI Django runs these sync views in worker threads, a new one per request; over
    UDP."""
    _exercise(django_asgi, collector)


def test_django_asgi_interleaved_async_views(django_asgi, collector):
    assert parallel(lambda p: django_asgi.get(p)[0], ["/async/%d/?ms=40" % i for i in range(6)], threads=6) == [200] * 6
    assert django_asgi.json("/stats/")["max_inflight"] >= 2
    svc = django_asgi.service
    eps = eventually(lambda: (lambda e: e if e.get("GET /async/{pk}/", {}).get("requests") == 6 else None)(collector.endpoints(svc)), what="async view events")
    assert_cpu_ms(eps["GET /async/{pk}/"], 40, "GET /async/{pk}/")
    collector.assert_only_in(svc, "django_async_hot", "GET /async/{pk}/", at_least=10)
