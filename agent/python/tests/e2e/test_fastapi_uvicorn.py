"""FastAPI under uvicorn (one event loop) → real sidecar → real collector: interleaved async
requests, a def endpoint in the thread pool, and a BaseHTTPMiddleware inside profwatch's."""

import pytest

from conftest import assert_cpu_ms, parallel, running, unique_service
from helpers import eventually


@pytest.fixture(scope="module")
def fastapi_app(sidecar, workdir):
    yield from running("uvicorn", "fastapi_app:app", unique_service("fastapi"), "unix://" + sidecar.socket, workdir)


def test_interleaved_async_requests_are_attributed_to_their_own_request(fastapi_app, collector):
    paths = []
    for i in range(6):
        paths += ["/async/a/%d?ms=80" % i, "/async/b/%d?ms=40" % i]
    assert parallel(lambda p: fastapi_app.get(p)[0], paths, threads=6) == [200] * 12
    stats = fastapi_app.json("/stats")
    assert stats["max_inflight"] >= 2, "the requests did interleave on the loop"
    assert stats["main_thread_sampling"] == "sigprof", "uvicorn's loop runs on the main thread"
    svc = fastapi_app.service

    def arrived():
        eps = collector.endpoints(svc)
        return eps if eps.get("GET /async/a/{id}", {}).get("requests") == 6 and eps.get("GET /async/b/{id}", {}).get("requests") == 6 else None

    eps = eventually(arrived, what="the async events")
    assert_cpu_ms(eps["GET /async/a/{id}"], 80, "GET /async/a/{id}")
    assert_cpu_ms(eps["GET /async/b/{id}"], 40, "GET /async/b/{id}")
    collector.assert_only_in(svc, "async_hot_a", "GET /async/a/{id}", at_least=20)
    collector.assert_only_in(svc, "async_hot_b", "GET /async/b/{id}", at_least=10)


def test_a_def_endpoint_in_the_thread_pool_is_measured(fastapi_app, collector):
    assert parallel(lambda p: fastapi_app.get(p)[0], ["/sync/%d?ms=50" % i for i in range(8)], threads=4) == [200] * 8
    svc = fastapi_app.service
    eps = eventually(lambda: (lambda e: e if e.get("GET /sync/{id}", {}).get("requests") == 8 else None)(collector.endpoints(svc)), what="the sync events")
    assert_cpu_ms(eps["GET /sync/{id}"], 50, "GET /sync/{id}")
    collector.assert_only_in(svc, "sync_hot", "GET /sync/{id}", at_least=20)


def test_unmatched_requests_are_not_named_by_path(fastapi_app, collector):
    assert [fastapi_app.get("/no/such/%d" % i)[0] for i in range(3)] == [404] * 3
    svc = fastapi_app.service
    eps = eventually(lambda: (lambda e: e if e.get("GET <unmatched>", {}).get("requests") == 3 else None)(collector.endpoints(svc)), what="unmatched events")
    assert not [name for name in eps if "/no/such" in name]
