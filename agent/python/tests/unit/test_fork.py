"""After os.fork the child opens its own sidecar connection, restarts the sampler and the
exporter, and never re-sends what the parent had queued."""

import json
import os
import signal
import threading

import pytest

from helpers import burn, eventually, serve, split_hello, unix_listener

import profwatch
from profwatch import _runtime


def hot_in_child(ms):
    burn(ms)


def _serve_one(rt, route, ms, fn=burn):
    serve(rt, route, lambda: fn(ms))


# Forking a process whose threads run is the very case under test (gunicorn --preload with a
# master that served requests), so Python 3.12's warning about it is expected here.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
def test_a_forked_child_restarts_its_threads_and_connection():
    srv, path = unix_listener()
    received = {}  # connection number → bytes

    def accept_all():
        n = 0
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            n += 1
            received[n] = b""

            def read(c=c, n=n):
                while True:
                    b = c.recv(65536)
                    if not b:
                        return
                    received[n] += b

            threading.Thread(target=read, daemon=True).start()

    threading.Thread(target=accept_all, daemon=True).start()
    profwatch.configure(service="fork", sidecar="unix://" + path, profile_hz=99, profile_interval=3600)
    try:
        rt = _runtime.runtime()
        _serve_one(rt, "/parent", 1)  # starts the parent's threads
        profwatch.flush()
        eventually(lambda: b"/parent" in received.get(1, b""), what="the parent's event")
        _serve_one(rt, "/queued-before-fork", 1)  # still queued at fork time
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: serve, flush, report, exit without running the parent's atexit
            try:
                os.close(r)
                crt = _runtime.runtime()
                _serve_one(crt, "/child", 300, hot_in_child)
                profwatch.flush()
                s = profwatch.stats()
                threads = sorted(t.name for t in threading.enumerate() if t.name.startswith("profwatch"))
                armed = crt.sampler._main is not None and signal.getitimer(signal.ITIMER_PROF)[0] > 0
                os.write(w, json.dumps({"stats": s, "threads": threads, "sigprof": armed}).encode())
            finally:
                os._exit(0)
        os.close(w)
        child = json.loads(os.read(r, 1 << 20))
        os.waitpid(pid, 0)
        assert child["threads"] == ["profwatch-export", "profwatch-sampler"]
        assert child["sigprof"], "the child's main thread is sampled from its own timer (fork does not copy it)"
        assert child["stats"]["requests"] == 1, "the child's counters start from zero"
        assert child["stats"]["events_sent"] == 1
        assert child["stats"]["samples_in_requests"] >= 20
        eventually(lambda: len(received) >= 2 and b"hot_in_child" in received[2], what="the child's own connection and profile")
        parent_hello, _ = split_hello(received[1])
        child_hello, child_bytes = split_hello(received[2])
        assert parent_hello == {"pid": os.getpid(), "service": "fork"}
        assert child_hello == {"pid": pid, "service": "fork"}, "the child registers its own pid"
        assert b"/queued-before-fork" not in child_bytes, "the parent's queue is the parent's"
        lines = [json.loads(l) for l in child_bytes.split(b"\n") if l.startswith(b"{")]
        assert [e["endpoint"] for e in lines] == ["GET /child"]
        profwatch.flush()
        eventually(lambda: b"/queued-before-fork" in received[1], what="the parent sends its own queue")
    finally:
        profwatch.shutdown()
        srv.close()
