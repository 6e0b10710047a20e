"""Flask under gunicorn (2 sync workers, app preloaded in the master) → real sidecar → real
collector."""

import json

import pytest

from conftest import assert_cpu_ms, parallel, running, unique_service
from helpers import eventually


@pytest.fixture(scope="module")
def flask_app(sidecar, workdir):
    yield from running(
        "gunicorn",
        "flask_app:app",
        unique_service("flask"),
        "unix://" + sidecar.socket,
        workdir,
        workers=2,
        extra_env={"PW_WARMUP_IN_MASTER": "1"},
    )


def test_endpoints_are_named_by_route_and_cpu_is_measured(flask_app, collector):
    paths = ["/items/%d?ms=60" % i for i in range(10)] + ["/other/n%d?ms=20" % i for i in range(10)]
    paths += ["/nope/%d" % i for i in range(3)]
    statuses = parallel(lambda p: flask_app.get(p)[0], paths, threads=2)
    assert statuses == [200] * 20 + [404] * 3

    def arrived():
        eps = collector.endpoints(flask_app.service)
        want = {"GET /items/{id}": 10 + 1, "GET /other/{name}": 10, "GET <unmatched>": 3}  # +1: the master's warm-up
        return eps if all(eps.get(k, {}).get("requests") == v for k, v in want.items()) else None

    eps = eventually(arrived, what="every event at the collector")
    assert not any(any(ch.isdigit() for ch in name) for name in eps), "raw paths leaked: %s" % sorted(eps)
    assert_cpu_ms(eps["GET /items/{id}"], 60, "GET /items/{id}")
    assert_cpu_ms(eps["GET /other/{name}"], 20, "GET /other/{name}")


def test_a_hot_function_is_in_its_own_endpoints_flame_graph_only(flask_app, collector):
    parallel(lambda p: flask_app.get(p), ["/items/%d?ms=100" % i for i in range(8)] + ["/other/x?ms=100"] * 8, threads=2)
    svc = flask_app.service
    collector.assert_only_in(svc, "flask_hot_items", "GET /items/{id}", at_least=40)
    collector.assert_only_in(svc, "flask_hot_other", "GET /other/{name}", at_least=40)
    stack = next(s for s in collector.folded(svc, "GET /items/{id}") if "flask_hot_items" in s)
    assert "flask_app:item (flask_app.py:" in stack and stack.split(";")[-1].startswith("common:burn (common.py:")


def test_each_preforked_workers_samples_arrive(flask_app, collector):
    """The master served a request before forking (threads and sidecar connection live); each
    worker's own sampler and connection must still work. Each worker burns CPU in a function
    named after its pid, so the flame graph tells the workers apart."""
    pids = set()

    def spread():
        for _ in range(8):
            pids.add(flask_app.json("/work?ms=40")["pid"])
        return len(pids) >= 2

    eventually(spread, what="requests served by both workers")
    svc = flask_app.service
    for pid in sorted(pids):
        eventually(
            lambda: collector.samples_of(svc, "GET /work", "burn_in_worker_%d" % pid) > 0,
            what="samples of worker %d" % pid,
        )
    stats = [flask_app.json("/stats") for _ in range(6)]
    for s in stats:
        assert s["pid"] in pids and s["sampler_errors"] == 0 and s["internal_errors"] == 0, json.dumps(s)
        # A sync worker serves on its main thread: sampled from SIGPROF, not by the thread.
        assert s["main_thread_sampling"] == "sigprof", json.dumps(s)


def test_each_preforked_worker_registers_its_memory(flask_app, collector, sidecar):
    """No --memory-name or --memory-pid: each process's connection says hello with its own pid
    (the workers reconnect after the fork), so the sidecar watches the master (it served the
    warm-up request) and both workers, under the configured build."""
    pids = set()

    def spread():
        for _ in range(8):
            pids.add(flask_app.json("/work?ms=5")["pid"])
        return len(pids) >= 2

    eventually(spread, what="requests served by both workers")

    def watched():
        rows = json.loads(collector.get("/api/v1/memory", service=flask_app.service, group_by="build"))
        row = next((r for r in rows if r["group"] == "e2e-1"), None)
        return row if row is not None and row["processes"] >= 3 else None

    row = eventually(watched, what="memory samples of the master and both workers (%s)" % sorted(pids))
    assert row["private_bytes"] > 0 and row["rss_bytes"] > 0, row
    status = sidecar.status()
    hellos = dict(status["memory_hellos"])
    assert hellos["registered"] >= 3, status
    assert dict(status["rejected"]).get("bad_hello", 0) == 0, status
