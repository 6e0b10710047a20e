"""Without a sidecar (never started, or killed mid-run) the app keeps serving; the SDK
counts what it dropped."""

import os

from conftest import parallel, start_app, start_sidecar, unique_service
from helpers import eventually


def _dropped(stats):
    return sum(stats["events_dropped"].values())


def test_gunicorn_app_serves_with_no_sidecar_at_all(workdir):
    app = start_app("gunicorn", "flask_app:app", unique_service("nosidecar"), "unix://%s/none/agent.sock" % workdir, workdir, workers=2)
    try:
        assert parallel(lambda p: app.get(p)[0], ["/items/%d?ms=2" % i for i in range(30)], threads=4) == [200] * 30
        eventually(lambda: _dropped(app.json("/stats")) > 0 and app.json("/stats")["events_dropped"]["no_sidecar"] > 0, what="no_sidecar drops counted")
    finally:
        app.stop()


def test_uvicorn_app_serves_when_udp_has_no_listener(workdir):
    import socket

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there any more
    app = start_app("uvicorn", "fastapi_app:app", unique_service("noudp"), "udp://127.0.0.1:%d" % port, workdir)
    try:
        assert parallel(lambda p: app.get(p)[0], ["/async/a/%d?ms=4" % i for i in range(20)], threads=4) == [200] * 20
        eventually(lambda: app.json("/stats")["requests"] >= 20, what="requests counted")
        assert app.json("/stats")["internal_errors"] == 0
    finally:
        app.stop()


def test_the_app_keeps_serving_after_the_sidecar_dies(profwatch_bin, collector, workdir):
    sc = start_sidecar(profwatch_bin, collector, os.path.join(workdir, "sidecar-killed"))
    app = start_app("uvicorn", "fastapi_app:app", unique_service("killed"), "unix://" + sc.socket, workdir)
    try:
        assert app.get("/async/a/1?ms=2")[0] == 200
        eventually(lambda: collector.endpoints(app.service).get("GET /async/a/{id}"), what="events while the sidecar is up")
        sc.process.stop(sig=9)
        assert parallel(lambda p: app.get(p)[0], ["/async/a/%d?ms=2" % i for i in range(20)], threads=4) == [200] * 20
        eventually(lambda: _dropped(app.json("/stats")) > 0, what="drops counted once the sidecar is gone")
        assert app.json("/stats")["internal_errors"] == 0
    finally:
        app.stop()
        sc.process.stop()
