"""Counters: instructions where perf_event_open gives a hardware counter, thread CPU time
always; both branches with a fake, and the real probe on whatever machine runs the tests."""

import errno
import os
import threading

import pytest

from helpers import burn, serve, stretch

from profwatch import _meter
from profwatch._counters import Counters
from profwatch._meter import Request


class FakePerf:
    """A counter whose reads the test sets: (instructions, time_enabled, time_running)."""

    def __init__(self, fail=None):
        self.fail = fail
        self.value = self.enabled = self.running = 0
        self.fds = []

    def open(self):
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        fd = os.open(os.devnull, os.O_RDONLY)
        self.fds.append(fd)
        return fd

    def read(self, fd):
        assert fd in self.fds
        return (self.value, self.enabled, self.running)

    def advance(self, instructions, enabled=1000, running=None):
        self.value += instructions
        self.enabled += enabled
        self.running += enabled if running is None else running


def _request(measured=True):
    return Request(None, "GET", lambda _: None, None, measured)


def _in_fresh_thread(fn):
    """Runs ``fn`` in a new thread (a fresh meter, so a fresh counter) and returns its result."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def test_with_a_hardware_counter_instructions_are_the_counter_delta():
    fake = FakePerf()
    _meter.use_counters(Counters(opener=fake.open, reader=fake.read))

    def work():
        fake.advance(12345)
        burn(2)

    req = _in_fresh_thread(lambda: stretch(_request(), work))
    assert _meter.counters.path == "perf"
    assert req.instructions == 12345
    assert req.cpu_ns >= 2_000_000


def test_a_multiplexed_counter_reports_no_instructions():
    fake = FakePerf()
    _meter.use_counters(Counters(opener=fake.open, reader=fake.read))

    def work():
        fake.advance(500, enabled=1000, running=600)  # scheduled out part of the time

    assert _in_fresh_thread(lambda: stretch(_request(), work)).instructions is None


def test_without_a_hardware_counter_the_fallback_measures_cpu_time_only(configure, memory):
    fake = FakePerf(fail=errno.ENOENT)  # what a VM without a PMU answers
    _meter.use_counters(Counters(opener=fake.open, reader=fake.read))
    rt = configure()

    req = _in_fresh_thread(lambda: serve(rt, "/x", lambda: burn(3)))
    assert _meter.counters.path == "thread_time"
    assert "No such file" in _meter.counters.reason
    rt.exporter.drain()
    [event] = memory.events()
    assert "instructions" not in event
    assert event["cpu_ns"] >= 3_000_000
    assert req.cpu_ns == event["cpu_ns"]


def test_events_carry_instructions_when_counted(configure, memory):
    fake = FakePerf()
    _meter.use_counters(Counters(opener=fake.open, reader=fake.read))
    rt = configure()

    _in_fresh_thread(lambda: serve(rt, "/x", lambda: fake.advance(777)))
    rt.exporter.drain()
    [event] = memory.events()
    assert event["instructions"] == 777


def test_the_real_probe_is_consistent_with_what_it_reports():
    c = Counters()
    fd = _in_fresh_thread(c.open)
    if fd is None:
        assert c.path == "thread_time" and c.reason, "a failed probe says why"
    else:
        assert c.path == "perf"
        value, enabled, running = c.read(fd)
        assert value > 0 and enabled >= running > 0
        os.close(fd)


def _hardware_pmu_listed():
    """Whether the kernel lists a CPU PMU (x86 and POWER ``cpu``, ``cpu_core``/``cpu_atom``;
    Arm ``armv8_*``...) under /sys/bus/event_source/devices: without one there is no hardware
    instruction counter to open, whatever the permissions. ``power`` is not one: on x86 it is
    the RAPL energy counters, listed on VMs that have no CPU PMU."""
    try:
        devices = os.listdir("/sys/bus/event_source/devices")
    except OSError:
        return None
    return any(d.startswith(("cpu", "armv", "arm_", "riscv")) for d in devices)


def test_without_a_cpu_pmu_the_fallback_is_what_runs():
    """On a VM without a PMU (this project's: only software, tracepoint, breakpoint, msr and
    uprobe event sources) the real probe must choose thread CPU time."""
    listed = _hardware_pmu_listed()
    if listed is None or listed:
        pytest.skip("this machine lists a CPU PMU (or no sysfs): the consistency test above covers it")
    c = Counters()
    assert _in_fresh_thread(c.open) is None
    assert c.path == "thread_time", c.reason
