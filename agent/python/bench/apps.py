"""The benchmark's views: one Flask view and one Django view, each built twice, without and
with profwatch (``flask_bare``/``flask_pw``, ``django_bare``/``django_pw``). Under gunicorn,
``BENCH_PROFWATCH=1`` picks the instrumented pair (``flask_app``, ``django_app``).

The views are small (route, a little JSON), plus ``BENCH_VIEW_ITERS`` rounds of pure-Python
work (default 0; bench.py turns ``--view-ms`` into rounds once, by timing them in its own
process, so that every server does the same work per request): the smaller the view, the
larger the SDK's share of each request, so the figures at 0 are the worst case for a real
service. The work is fixed, not "until the thread's clock has moved by so much": such a loop
would read the clock (a system call) between rounds, and would absorb into its own budget any
CPU the SDK spends on the thread while it runs (a SIGPROF sample), hiding it.
"""

import os
import random

# --layouts: this process's own layout. Objects of random sizes, kept for the process's life,
# move everything allocated after them (the apps, the SDK, the view's objects) to other places
# within their pages and pools, as any change to a program does; bench.py also pads the
# environment, which moves the stack. Seeded by the server's number, so the k-th server of
# every variant gets the same padding.
if os.environ.get("BENCH_LAYOUT"):
    _rng = random.Random(int(os.environ["BENCH_LAYOUT"]))
    _PADDING = [bytes(_rng.randrange(1, 1024)) for _ in range(_rng.randrange(0, 3000))]

import django  # noqa: E402 (after the padding, on purpose)
from django.conf import settings
from django.http import JsonResponse
from django.test.utils import override_settings
from django.urls import path
from flask import Flask, jsonify

import profwatch
import profwatch.flask
from work import work

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


_VIEW_ITERS = int(os.environ.get("BENCH_VIEW_ITERS", "0"))


def _payload(id):
    if _VIEW_ITERS:
        work(_VIEW_ITERS)
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

if os.environ.get("BENCH_STATS_FILE"):
    # --mode cachegrind: the worker's counters (its samples, the cyclic GC's passes by
    # generation) when it exits (%p: its pid). Registered after
    # profwatch's own exit handler, so it runs first, before the runtime shuts down.
    import atexit
    import json

    def _write_stats(path=os.environ["BENCH_STATS_FILE"]):
        import gc

        with open(path.replace("%p", str(os.getpid())), "w") as f:
            json.dump(dict(profwatch.stats(), gc_collections=[g["collections"] for g in gc.get_stats()]), f)

    atexit.register(_write_stats)
flask_app = flask_pw if _on else flask_bare
django_app = django_pw if _on else django_bare
