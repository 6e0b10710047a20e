"""The stack sampler: samples measure CPU time, go to the request running on their thread,
and ship as profile payloads (agent/PROTOCOL.md) per endpoint."""

import signal
import sys
import threading

import pytest
from helpers import burn, eventually, serve

import profwatch
from profwatch import _sampler
from profwatch._meter import meter
from profwatch._sampler import Sampler, encode_profiles, format_frame


def test_profile_payloads_are_the_protocol_text():
    labels = [("service", "shop"), ("endpoint", "GET /cart/{id}"), ("build", "812"), ("dc", "")]
    [payload], dropped = encode_profiles(labels, 99, 1700000000, {"main;b": 4, "main;a a": 31}, 1 << 20)
    assert dropped == 0
    assert payload == (
        b"format=folded&sample_rate=99&ts=1700000000&service=shop&endpoint=GET%20%2Fcart%2F%7Bid%7D&build=812\n"
        b"main;a a 31\n"
        b"main;b 4\n"
    )


def test_large_profiles_are_split_and_oversized_stacks_dropped():
    stacks = {"s%03d;leaf" % i: i + 1 for i in range(100)}
    stacks["x" * 500] = 7
    payloads, dropped = encode_profiles([("service", "s")], 99, 1, stacks, 400)
    assert dropped == 7
    assert len(payloads) > 1 and all(len(p) <= 400 for p in payloads)
    merged = {}
    for p in payloads:
        head, _, body = p.decode().partition("\n")
        assert head == "format=folded&sample_rate=99&ts=1&service=s"
        for line in body.splitlines():
            k, _, n = line.rpartition(" ")
            merged[k] = int(n)
    assert merged == {k: v for k, v in stacks.items() if len(k) < 100}


def test_frame_names_are_safe_for_folded_stacks():
    assert format_frame("app.views", "Cart.total", "app/views.py", 42) == "app.views:Cart.total (app/views.py:42)"
    assert format_frame(None, "f", "a;b\nc.py", 1) == "?:f (a,b c.py:1)"
    assert len(format_frame("m", "q" * 5000, "f.py", 1).encode()) == 4096


def hot_inside_request(ms):
    burn(ms)


def hot_outside_request(ms):
    burn(ms)


def test_samples_go_to_the_request_running_on_their_thread(configure, memory):
    rt = configure(profile_hz=99, profile_interval=3600, build="7")

    def requests():
        serve(rt, "/hot", lambda: hot_inside_request(300))
        hot_outside_request(300)

    t = threading.Thread(target=requests)
    t.start()
    t.join()
    rt.flush()
    profiles = {labels.get("endpoint", ""): (labels, stacks) for labels, stacks in memory.profiles()}
    labels, stacks = profiles["GET /hot"]
    assert labels["service"] == "unit" and labels["build"] == "7" and labels["sample_rate"] == "99"
    inside = sum(n for s, n in stacks.items() if "hot_inside_request" in s)
    # 300 ms of CPU at 99 Hz is ~30 samples; the machine may be loaded, so allow a wide band.
    assert 20 <= inside <= 35, stacks
    assert not any("hot_outside_request" in s for s in stacks)
    frame = next(s for s in stacks if "hot_inside_request" in s).split(";")
    assert frame[-1].startswith("helpers:burn (helpers.py:")
    assert frame[-2].startswith("test_sampler:hot_inside_request (test_sampler.py:")
    _, outside = profiles[""]
    assert sum(n for s, n in outside.items() if "hot_outside_request" in s) >= 20
    s = rt.snapshot()
    assert s["samples_in_requests"] >= inside and s["sampler_errors"] == 0


def test_a_failing_sampler_is_counted_and_the_app_goes_on(configure, memory, monkeypatch):
    def broken():
        raise RuntimeError("no frames today")

    monkeypatch.setattr(sys, "_current_frames", broken)
    rt = configure(profile_hz=99, profile_interval=3600)

    t = threading.Thread(target=serve, args=(rt, "/x", lambda: burn(100)))
    t.start()
    t.join()
    eventually(lambda: rt.snapshot()["sampler_errors"] > 0, what="a counted sampler error")
    rt.exporter.drain()
    assert len(memory.events()) == 1


def test_a_new_threads_cpu_counts_from_its_meter_not_from_the_first_tick(configure, memory):
    """A worker thread made for one request (Django's ASGI handler makes one per request) spends
    CPU before any tick sees it; those samples belong to its request."""
    rt = configure(profile_interval=3600)  # no sampler thread: this test ticks by hand
    sampler = Sampler(rt, 100, 3600)
    sampler.tick()  # sees the meters of other threads, not the one below
    entered, release = threading.Event(), threading.Event()

    def serve():
        req = rt.start_request("GET", lambda _: "/new-thread", None)
        m = meter()
        m.enter(req)
        hot_before_any_tick(200)
        entered.set()
        release.wait(30)
        m.exit(req)
        rt.finish(req)

    t = threading.Thread(target=serve)
    t.start()
    try:
        assert entered.wait(30)
        sampler.tick()  # the first tick that sees the thread: 200 ms of CPU at 100 Hz are due
    finally:
        release.set()
        t.join()
    sampler.tick()
    stacks = sampler._profiles["GET /new-thread"]
    assert 19 <= sum(stacks.values()) <= 21, stacks


def hot_before_any_tick(ms):
    burn(ms)


def hot_on_main(ms):
    burn(ms)


def _main_samples(memory, route):
    profiles = {labels.get("endpoint", ""): stacks for labels, stacks in memory.profiles()}
    stacks = profiles.get("GET " + route, {})
    return sum(n for s, n in stacks.items() if "hot_on_main" in s), stacks


@pytest.fixture
def sigprof_default():
    """SIGPROF as a fresh process has it (default action, no timer), before and after."""
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    yield
    signal.setitimer(signal.ITIMER_PROF, 0)
    signal.signal(signal.SIGPROF, signal.SIG_DFL)


def test_the_main_thread_is_sampled_from_sigprof_and_only_once(configure, memory, sigprof_default):
    rt = configure(profile_hz=99, profile_interval=3600)
    serve(rt, "/main", lambda: hot_on_main(300))  # the first request, on the main thread
    assert signal.getsignal(signal.SIGPROF) is _sampler._on_sigprof
    assert signal.getitimer(signal.ITIMER_PROF)[1] == pytest.approx(1 / 99, rel=0.01)
    main = rt.sampler._main
    assert main is meter()
    serve(rt, "/main", lambda: hot_on_main(300))
    rt.flush()
    inside, stacks = _main_samples(memory, "/main")
    # 600 ms of CPU at 99 Hz is ~59 samples: the sampler thread sampling the main thread too
    # would double it; the machine may be loaded, so allow a band.
    assert 45 <= inside <= 70, stacks
    frame = next(s for s in stacks if "hot_on_main" in s).split(";")
    assert frame[-1].startswith("helpers:burn (helpers.py:")
    assert frame[-2].startswith("test_sampler:hot_on_main (test_sampler.py:")
    assert main not in rt.sampler._threads, "the sampler thread must leave the main thread to SIGPROF"
    s = rt.snapshot()
    assert s["samples_in_requests"] >= inside and s["sampler_errors"] == 0
    assert s["main_thread_sampling"] == "sigprof"
    profwatch.shutdown()
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0), "shutdown stops the timer"


def test_another_owner_of_sigprof_is_left_alone(configure, memory, sigprof_default):
    seen = []
    signal.signal(signal.SIGPROF, lambda signum, frame: seen.append(signum))
    rt = configure(profile_hz=99, profile_interval=3600)
    serve(rt, "/main", lambda: hot_on_main(300))
    assert rt.sampler._main is None and signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    rt.flush()
    inside, stacks = _main_samples(memory, "/main")
    assert 20 <= inside <= 35, stacks  # the sampler thread took them
    assert seen == []
    assert rt.snapshot()["main_thread_sampling"] == "thread"


def test_the_signal_can_be_turned_off(configure, memory, sigprof_default):
    rt = configure(profile_hz=99, profile_interval=3600, profile_signal=False)
    serve(rt, "/main", lambda: hot_on_main(100))
    assert rt.sampler._main is None
    assert signal.getsignal(signal.SIGPROF) is signal.SIG_DFL
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)


def test_a_replaced_handler_gives_the_main_thread_back_to_the_sampler_thread(configure, memory, sigprof_default):
    rt = configure(profile_hz=99, profile_interval=3600)
    serve(rt, "/first", lambda: None)
    assert rt.sampler._main is not None
    signal.signal(signal.SIGPROF, signal.SIG_IGN)  # the app takes SIGPROF over
    # The sampler thread checks once a second; a default handler would have killed us, so the
    # timer must stop whenever the new handler is not a Python function.
    eventually(lambda: rt.sampler._main is None, timeout=30, what="the main thread handed back")
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    serve(rt, "/main", lambda: hot_on_main(300))
    rt.flush()
    inside, stacks = _main_samples(memory, "/main")
    assert 20 <= inside <= 35, stacks
