"""Requests and the per-thread meters that charge CPU to them.

A :class:`Request` is one HTTP request being served. A thread's :class:`Meter` says which
request the thread is working for right now (``current``) and charges the thread's CPU time
(and instructions, where counted) to it, stretch by stretch:

- ``enter(req)`` starts a stretch: the stretch of the request that was current so far (if any)
  is charged and the request is pushed; ``exit(req)`` charges the stretch and pops back to the
  request before it. So nested stretches on one thread are charged to the innermost request
  only, and nothing is charged twice.
- A synchronous (WSGI, Django) request is one stretch, from the middleware's entry to the
  response's ``close()``. An asynchronous request is one stretch per step of its task (see
  :mod:`profwatch._tasks`), plus a stretch for each call it runs in a worker thread (see
  :mod:`profwatch._offload`).

The stack sampler reads ``current`` and ``seq`` of every meter from its own thread. Both are
plain attribute writes made under the GIL, and ``seq`` changes on every enter and exit, so the
sampler can tell whether the thread switched requests while it was looking.

Meters are per thread (``threading.local``) and listed by thread id in :data:`meters`. After
``os.fork`` only the forking thread exists in the child: :func:`after_fork_in_child` drops the
other meters and gives the survivor its new thread ids and a fresh counter (a perf counter fd
inherited from the parent would keep counting the parent's thread).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from ._counters import Counters, _close

_thread_time_ns = time.thread_time_ns
_time_ns = time.time_ns
_perf_counter_ns = time.perf_counter_ns
_monotonic_ns = time.monotonic_ns
_UNOPENED = -1
_PRUNE_AT = 64


class Request:
    """One request: what is known when it starts, and what is charged to it while it runs."""

    __slots__ = (
        "runtime",
        "method",
        "resolve",
        "resolve_arg",
        "measured",
        "cpu_ns",
        "instructions",
        "status",
        "ts",
        "t0",
        "endpoint",
        "done",
    )

    def __init__(
        self,
        runtime: Any,
        method: str,
        resolve: Callable[[Any], Optional[str]],
        resolve_arg: Any,
        measured: bool,
    ) -> None:
        self.runtime = runtime
        self.method = method
        #: ``resolve(resolve_arg)`` gives the route template once the app has routed.
        self.resolve = resolve
        self.resolve_arg = resolve_arg
        #: False for requests left out by ``sample_rate``: no clocks read, no event sent, but
        #: their stack samples are still attributed to their endpoint.
        self.measured = measured
        self.cpu_ns = 0
        #: ``None`` once any stretch lacked a usable instruction count.
        self.instructions: Optional[int] = 0
        self.status = 0
        self.ts = _time_ns()
        self.t0 = _perf_counter_ns()
        #: Set once, when the request finishes; the sampler reads it after ``done``.
        self.endpoint = ""
        self.done = False


class Meter:
    """One thread's meter; only that thread calls :meth:`enter` and :meth:`exit`."""

    __slots__ = ("ident", "tid", "born", "born_cpu", "current", "outer", "cpu0", "ins0", "en0", "run0", "fd", "seq")

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.tid = threading.get_native_id()
        #: The thread's CPU time when the meter was made: the sampler counts the thread's CPU
        #: from here, not from its first tick that sees the meter (a worker thread made for one
        #: request, as Django's ASGI handler makes them, would lose the CPU before that tick).
        self.born_cpu = _thread_time_ns()
        #: When it was made (monotonic ns): a sampler made later counts from its first look.
        self.born = _monotonic_ns()
        self.current: Optional[Request] = None
        self.outer: List[Optional[Request]] = []
        self.cpu0 = 0
        self.ins0 = self.en0 = self.run0 = 0
        self.fd: Optional[int] = _UNOPENED
        self.seq = 0

    def _read(self) -> Any:
        fd = self.fd
        if fd == _UNOPENED:
            fd = self.fd = counters.open()
        if fd is None:
            return None
        try:
            return counters.read(fd)
        except Exception:  # a failed or short read: this stretch has no instruction count
            return None

    def _charge(self, req: Request, cpu: int, ins: Any) -> None:
        req.cpu_ns += cpu - self.cpu0
        if req.instructions is not None:
            if ins is None or self.fd is None or (ins[1] - self.en0) != (ins[2] - self.run0):
                req.instructions = None
            else:
                req.instructions += ins[0] - self.ins0

    def _mark(self, cpu: int, ins: Any) -> None:
        self.cpu0 = cpu
        if ins is not None:
            self.ins0, self.en0, self.run0 = ins

    def enter(self, req: Request) -> None:
        cur = self.current
        cur_measured = cur is not None and cur.measured
        if req.measured or cur_measured:
            cpu = _thread_time_ns()
            if counters.available is False:  # the common path: CPU time only, inlined
                if cur_measured:
                    cur.cpu_ns += cpu - self.cpu0  # type: ignore[union-attr]
                self.cpu0 = cpu
            else:
                ins = self._read()
                if cur_measured:
                    self._charge(cur, cpu, ins)  # type: ignore[arg-type]
                self._mark(cpu, ins)
        self.outer.append(cur)
        self.current = req
        self.seq += 1

    def exit(self, req: Request) -> None:
        cur = self.current
        if cur is not req:
            # An unbalanced exit (a server that skipped close(), say): forget that request.
            for i in range(len(self.outer) - 1, -1, -1):
                if self.outer[i] is req:
                    del self.outer[i]
                    break
            return
        prev = self.outer.pop() if self.outer else None
        prev_measured = prev is not None and prev.measured
        if cur.measured or prev_measured:
            cpu = _thread_time_ns()
            if counters.available is False:
                if cur.measured:
                    cur.cpu_ns += cpu - self.cpu0
                self.cpu0 = cpu
            else:
                ins = self._read()
                if cur.measured:
                    self._charge(cur, cpu, ins)
                self._mark(cpu, ins)
        self.current = prev
        self.seq += 1


#: The process's counter decision (tests swap in one with a fake opener).
counters = Counters()
#: Every live thread's meter, by ``threading.get_ident()``; the sampler prunes dead ones.
meters: Dict[int, Meter] = {}
_local = threading.local()
#: Called when a thread makes its meter (the sampler thread, to end an idle sleep).
on_new_meter: Optional[Callable[[], None]] = None


def meter() -> Meter:
    """The calling thread's meter."""
    try:
        return _local.meter
    except AttributeError:
        m = _local.meter = Meter()
        if len(meters) >= _PRUNE_AT:
            try:
                prune()
            except Exception:
                pass
        old = meters.get(m.ident)  # a thread that exited, whose id was reused
        if old is not None and old.fd is not None and old.fd != _UNOPENED:
            _close(old.fd)
            old.fd = None
        meters[m.ident] = m
        hook = on_new_meter
        if hook is not None:
            try:
                hook()
            except Exception:
                pass
        return m


def prune() -> None:
    """Forgets the meters of threads that have exited, closing their counters."""
    alive = sys._current_frames()
    for ident, m in list(meters.items()):
        if ident not in alive:
            meters.pop(ident, None)
            if m.fd is not None and m.fd != _UNOPENED:
                _close(m.fd)
                m.fd = None


def use_counters(c: Counters) -> None:
    """Replaces the counter decision (tests); threads reopen their counters on next use."""
    global counters
    counters = c
    for m in list(meters.values()):
        m.fd = _UNOPENED


def after_fork_in_child() -> None:
    """Keeps only the forking thread's meter, with its new ids and no inherited counter."""
    counters._lock = threading.Lock()  # another thread may have held it at fork time
    m = getattr(_local, "meter", None)
    meters.clear()
    if m is not None:
        if m.fd is not None and m.fd != _UNOPENED:
            _close(m.fd)
        m.fd = _UNOPENED
        m.ident = threading.get_ident()
        m.tid = threading.get_native_id()
        m.born_cpu = _thread_time_ns()
        m.born = _monotonic_ns()
        meters[m.ident] = m
        if m.current is not None and m.current.measured:
            m.cpu0 = _thread_time_ns()
            m.current.instructions = None
