"""The benchmark's views: one Flask view and one Django view, each built twice, without and
with profwatch (``flask_bare``/``flask_pw``, ``django_bare``/``django_pw``). Under gunicorn,
``BENCH_PROFWATCH=1`` picks the instrumented pair (``flask_app``, ``django_app``).

The views are small (route, a little JSON), plus ``BENCH_VIEW_MS`` milliseconds of CPU in
pure Python (default 0): the smaller the view, the larger the SDK's share of each request, so
the figures at 0 are the worst case for a real service.
"""

import os
import time

import django
from django.conf import settings
from django.http import JsonResponse
from django.test.utils import override_settings
from django.urls import path
from flask import Flask, jsonify

import profwatch
import profwatch.flask

_DJANGO_MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
settings.configure(
    DEBUG=False,
    SECRET_KEY="bench",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=_DJANGO_MIDDLEWARE,
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)
django.setup()


_VIEW_NS = int(float(os.environ.get("BENCH_VIEW_MS", "0")) * 1e6)


def _payload(id):
    if _VIEW_NS:
        end = time.thread_time_ns() + _VIEW_NS
        while time.thread_time_ns() < end:
            pass
    return {"id": id, "name": "item-%d" % id, "tags": ["a", "b", "c"], "price": id * 1.25}


def _flask():
    app = Flask("bench")

    @app.route("/hello/<int:id>")
    def hello(id):
        return jsonify(_payload(id))

    return app


def django_hello(request, id):
    return JsonResponse(_payload(id))


urlpatterns = [path("hello/<int:id>/", django_hello)]


def _django(instrumented):
    from django.core.handlers.wsgi import WSGIHandler

    middleware = (["profwatch.django.Middleware"] if instrumented else []) + _DJANGO_MIDDLEWARE
    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


flask_bare = _flask()
flask_pw = profwatch.flask.instrument(_flask())
django_bare = _django(False)
django_pw = _django(True)

_on = os.environ.get("BENCH_PROFWATCH") == "1"
flask_app = flask_pw if _on else flask_bare
django_app = django_pw if _on else django_bare
