"""The stack sampler: Python stacks of the request threads, by endpoint, as profile frames.

Two ways of taking a sample, one per kind of thread:

- **The main thread, from ``SIGPROF``** (``profile_signal``, on by default). A preforking
  server's sync worker (gunicorn's ``sync``, uwsgi without threads) and uvicorn's event loop
  serve requests on the main thread. For it the sampler arms ``ITIMER_PROF`` at ``profile_hz``
  and a Python ``SIGPROF`` handler takes the sample: Python runs signal handlers in the main
  thread, between bytecodes, with the interrupted frame in hand, so the sample costs no thread
  wake-up and no hand-over of the GIL (on a VM a sampler thread's wake-up costs tens of µs of
  CPU, and forcing the busy thread to drop the GIL as much again: most of what a 99 Hz sampler
  thread costs, see agent/python/bench/README.md). It is armed on the first request the main
  thread serves, only if nothing else owns ``SIGPROF`` or ``ITIMER_PROF`` (another profiler),
  with ``SA_RESTART`` so that system calls the signal lands in are restarted by the kernel.
  ``ITIMER_PROF`` counts the whole process's CPU, so the handler does not count signals: it
  reads the main thread's own CPU clock and takes one sample per ``1 / profile_hz`` s of it,
  like the thread below. A signal that finds the sampler busy (the sampler thread or a flush
  holds its lock) keeps its CPU for the next one. If the handler is replaced later, the sampler
  thread notices within a second, stops the timer if ``SIGPROF`` would now kill the process, and
  samples the main thread itself again. A handler runs only between bytecodes: a long call into
  C that holds the GIL gets its samples when it returns, on the frame that made the call, which
  is also where a sampler thread (which needs the GIL too) would put them.
- **Every other thread, from a sampler thread** reading ``sys._current_frames()`` (gunicorn's
  ``gthread`` workers, anyio's worker threads, Django's ASGI threads; and the main thread when
  the signal is off or taken). A signal handler cannot see these: it runs in the main thread.
  With only the main thread serving, the sampler thread sleeps until a new thread makes a
  meter (or a second passes, or a profile is due).

How the sampler thread takes a sample, at each tick:

- For each thread that has a meter (it ran at least one request, see :mod:`profwatch._meter`),
  its CPU time is read from its per-thread clock (``clock_gettime`` on the kernel's per-thread
  CPU clock id for its native id: no signal, no ``/proc``, and a clean ``EINVAL`` once it has
  exited). The CPU it spent since the last tick (since its meter was made, at the first tick
  that sees it; since that tick for a meter older than the sampler, after ``configure`` was
  called again) is added to its budget; each whole ``1 / profile_hz`` s of budget is one
  sample. So samples measure CPU time, like perf's
  cpu-clock in the Rust sampler: a thread blocked in I/O or in ``select`` gets none, and the
  collector's ``samples / sample_rate`` is CPU seconds.
- The next tick comes when the first thread would be due its next sample if it went on
  spending CPU at the rate it did since the last tick (between ``1 / (8 profile_hz)`` s and
  ``4 / profile_hz`` s). A thread busy all the time is sampled every ``1 / profile_hz`` s, as
  with a fixed tick; a thread half busy every ``2 / profile_hz`` s of wall time, and an idle
  process every ``4 / profile_hz`` s, instead of waking the sampler (which, on a loaded VM,
  costs tens of µs of CPU and a hand-over of the GIL) for ticks that find nothing due. The
  samples are the same: one per ``1 / profile_hz`` s of a thread's CPU.
- A thread due samples has its request (the meter's ``current`` and ``seq``) read *before*
  ``sys._current_frames()``, and ``seq`` again after: if the thread entered or left a request in
  between, the samples are dropped (``raced``) rather than given to the wrong request.
- The stack is the chain of code objects from the thread's current frame to its root (at most
  2048; deeper stacks lose their root end). Frames of profwatch itself are left out unless they
  are the leaf. Each frame is named once per code object, ``module:qualname (file:line)``,
  with the file relative to its ``sys.path`` entry (so names do not change with the install
  directory) and the line where the function starts (so a function is one node of the flame
  graph, not one per line).

Attribution: under asyncio the loop thread's meter names the request whose task step is
running (``profwatch._tasks``); a worker thread's meter names the request whose offloaded call
it runs (``profwatch._offload``). A request's samples are held until it finishes (its endpoint
is known only once the app has routed it), then added to its endpoint's profile. Samples of a
thread outside any request go to a profile with no endpoint.

Every ``profile_interval`` seconds (10 by default) each endpoint's stacks become one profile
(agent/PROTOCOL.md: a query line, then folded stacks), split into several if larger than the
transport carries, and queued on the exporter. Budgets: at most :data:`MAX_STACKS` distinct
stacks per interval and :data:`MAX_PENDING` unfinished requests holding samples; beyond them
samples are dropped and counted. A failing tick or signal is counted (``sampler_errors``)
and the sampler goes on. The signal handler takes no lock it would wait for (it may have
interrupted the very code that holds one): its counts wait on the sampler until a tick or a
flush moves them to the process's counters.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import quote

from . import _meter
from ._daemon import Daemon

log = logging.getLogger("profwatch")

MAX_FRAMES = 2048
MAX_FRAME_BYTES = 4096
MAX_STACKS = 20000
MAX_PENDING = 4096
MAX_NAMES = 100000
#: The sampler's wait between ticks, in sampling periods: at most MAX_WAIT (a thread that
#: starts spending CPU after a pause is seen within that many periods), at least 1 / MIN_WAIT.
MAX_WAIT = 4
MIN_WAIT = 8
TRUNCATED = "[truncated]"
#: The sampler thread's longest sleep, in seconds, while the main thread is sampled from
#: SIGPROF and no other thread has a meter (a new meter wakes it at once).
IDLE_WAIT = 1.0

_SIGPROF = getattr(signal, "SIGPROF", None)
_thread_time_ns = time.thread_time_ns
#: The sampler whose main thread is sampled from SIGPROF, if any.
_active: Optional["Sampler"] = None


def _on_sigprof(signum: int, frame: Any) -> None:
    """The process's SIGPROF handler (installed once, never removed: a SIGPROF that arrives
    after the timer is stopped finds no sampler and does nothing)."""
    s = _active
    if s is not None:
        s.on_signal(frame)


def after_fork_in_child() -> None:
    """The child has no interval timer (fork does not copy it) and none of the parent's samplers."""
    global _active
    _active = None
    _meter.on_new_meter = None

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def thread_clock_id(tid: int) -> int:
    """The kernel's per-thread CPU clock id (``CPUCLOCK_SCHED | CPUCLOCK_PERTHREAD``) of ``tid``."""
    return ((~tid) << 3) | 6


class FrameNames:
    """``code object → "module:qualname (file:line)"``, computed once per code object.

    Keyed by ``id(code)`` (hashing a code object hashes its constants, every time); the entry
    holds the code object, so its id cannot be reused while the entry exists."""

    def __init__(self) -> None:
        self.names: Dict[int, Tuple[Any, Optional[str]]] = {}
        self._paths: List[str] = []
        self._paths_of: Tuple[str, ...] = ()

    def _relative(self, filename: str) -> str:
        key = tuple(sys.path)
        if key != self._paths_of:
            self._paths_of = key
            paths = {os.path.abspath(p) if p else os.getcwd() for p in key if isinstance(p, str)}
            self._paths = sorted((p.rstrip(os.sep) + os.sep for p in paths), key=len, reverse=True)
        for p in self._paths:
            if filename.startswith(p):
                return filename[len(p):]
        return filename

    def name(self, code: Any, frame: Any) -> Optional[str]:
        """The frame's name, or ``None`` for a frame of profwatch itself."""
        entry = self.names.get(id(code))
        if entry is not None and entry[0] is code:
            return entry[1]
        if len(self.names) >= MAX_NAMES:
            self.names.clear()
        filename = code.co_filename or "?"
        if filename.startswith(_PKG_DIR + os.sep):
            self.names[id(code)] = (code, None)
            return None
        module = frame.f_globals.get("__name__") if frame is not None else None
        name = format_frame(module, getattr(code, "co_qualname", code.co_name), self._relative(filename), code.co_firstlineno)
        self.names[id(code)] = (code, name)
        return name

    def leaf(self, code: Any, frame: Any) -> str:
        """The name of a frame of profwatch itself, for when it is the leaf."""
        module = frame.f_globals.get("__name__")
        return format_frame(module, getattr(code, "co_qualname", code.co_name), self._relative(code.co_filename or "?"), code.co_firstlineno)


def format_frame(module: Optional[str], qualname: str, filename: str, line: int) -> str:
    """``module:qualname (file:line)``, made safe for folded stacks (no ``;``, no newline,
    at most 4096 bytes)."""
    s = "%s:%s (%s:%d)" % (module if isinstance(module, str) else "?", qualname, filename, line)
    if ";" in s or "\n" in s or "\r" in s:
        s = s.replace(";", ",").replace("\n", " ").replace("\r", " ")
    b = s.encode("utf-8", "replace")
    if len(b) > MAX_FRAME_BYTES:
        s = b[:MAX_FRAME_BYTES].decode("utf-8", "ignore")
    return s


def encode_profiles(
    labels: Iterable[Tuple[str, str]],
    hz: int,
    ts: int,
    stacks: Dict[str, int],
    max_bytes: int,
) -> Tuple[List[bytes], int]:
    """One endpoint's stacks as profile payloads (agent/PROTOCOL.md), each at most ``max_bytes``.

    ``labels`` are the query's label pairs (empty values left out); ``stacks`` maps a folded
    stack (``root;...;leaf``) to its sample count. Returns the payloads and the number of
    samples in stacks too large for any payload (dropped). Lines are sorted, so the output is
    deterministic.
    """
    query = "format=folded&sample_rate=%d&ts=%d" % (hz, ts)
    query += "".join("&%s=%s" % (quote(k, safe=""), quote(v, safe="")) for k, v in labels if v)
    header = (query + "\n").encode("utf-8")
    payloads: List[bytes] = []
    dropped = 0
    body: List[bytes] = []
    size = len(header)
    for stack in sorted(stacks):
        line = ("%s %d\n" % (stack, stacks[stack])).encode("utf-8")
        if len(header) + len(line) > max_bytes:
            dropped += stacks[stack]
            continue
        if size + len(line) > max_bytes:
            payloads.append(header + b"".join(body))
            body, size = [], len(header)
        body.append(line)
        size += len(line)
    if body:
        payloads.append(header + b"".join(body))
    return payloads, dropped


class Sampler(Daemon):
    """Samples the request threads at ``hz`` and queues profiles on the exporter every
    ``interval`` s."""

    thread_name = "profwatch-sampler"

    def __init__(self, runtime: Any, hz: int, interval: float) -> None:
        super().__init__()
        self.runtime = runtime
        self.hz = hz
        self.interval = interval
        self.period_ns = 1_000_000_000 // hz
        self.frames = FrameNames()
        self._threads: Dict[Any, List[int]] = {}  # meter → [last cpu_ns, budget ns, clock id]
        self._pending: Dict[Any, Dict[tuple, int]] = {}  # unfinished request → stack → samples
        self._profiles: Dict[str, Dict[tuple, int]] = {}  # endpoint → stack → samples
        self._stacks = 0
        self._last_tick = self._made = time.monotonic_ns()
        self._interval_start = time.time()
        self._lock = threading.Lock()  # the tick, the signal handler, a flush from another thread
        self._errors_logged = False
        self._wake = threading.Event()  # a new meter, or stop: ends an idle sleep
        #: The main thread's meter while SIGPROF samples it, its CPU clock at the last signal,
        #: and its CPU not yet sampled (ns).
        self._main: Optional[_meter.Meter] = None
        self._main_cpu = 0
        self._main_budget = 0
        #: Counts of the signal handler, moved to the process's counters by a tick or a flush.
        self._sig_counts: Dict[str, int] = {}

    def _run(self) -> None:
        wait = 1.0 / self.hz
        next_flush = time.monotonic() + self.interval
        next_prune = time.monotonic() + 1.0
        stop, wake = self._stop, self._wake
        _meter.on_new_meter = wake.set
        while not stop.is_set():
            if wait >= IDLE_WAIT:
                # Only the main thread serves, sampled from SIGPROF: sleep until a new thread
                # makes a meter, the next profile is due, or a second has passed.
                wake.wait(max(min(wait, next_flush - time.monotonic()), 0.001))
                wake.clear()
            else:
                # time.sleep, not Event.wait: a timed Event.wait allocates a lock per call.
                time.sleep(wait)
            if stop.is_set():
                return
            now = time.monotonic()
            wait = 1.0 / self.hz
            try:
                with self._lock:
                    wait = self.tick() / 1e9
                if now >= next_prune:
                    next_prune = now + 1.0
                    _meter.prune()
                    self._check_signal()
                if now >= next_flush:
                    next_flush = now + self.interval
                    self.flush()
            except Exception as e:
                self._error(e)

    def stop(self, timeout: float = 1.0) -> None:
        self.disarm_signal()
        self._stop.set()
        self._wake.set()
        super().stop(timeout)

    def _error(self, e: BaseException) -> None:
        self.runtime.stats.add("sampler_errors")
        if not self._errors_logged:
            self._errors_logged = True
            log.warning("profwatch: sampler error (counted, sampling goes on): %r", e)

    def arm_signal(self, m: "_meter.Meter") -> bool:
        """Samples the main thread, whose meter is ``m``, from SIGPROF (see the module's text).
        Called on the main thread; ``False`` (and the sampler thread samples it) when the signal
        or the timer is someone else's, or there is none on this platform."""
        global _active
        if _SIGPROF is None or threading.current_thread() is not threading.main_thread():
            return False
        try:
            if signal.getsignal(_SIGPROF) not in (signal.SIG_DFL, _on_sigprof):
                return False
            if signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0):
                return False
            self._main_cpu = self._counted_from(m, _thread_time_ns())
            self._main_budget = 0
            self._main = m
            _active = self
            signal.signal(_SIGPROF, _on_sigprof)
            if signal.getsignal(_SIGPROF) is not _on_sigprof:
                # An embedding server that ignores signal.signal (mod_wsgi restricts it): an
                # armed timer would deliver SIGPROF to its default action and kill the process.
                self.disarm_signal()
                return False
            signal.siginterrupt(_SIGPROF, False)
            period = self.period_ns / 1e9
            signal.setitimer(signal.ITIMER_PROF, period, period)
            return True
        except (ValueError, OSError, AttributeError) as e:
            log.debug("profwatch: SIGPROF not used (%r); the sampler thread samples every thread", e)
            self.disarm_signal()
            return False

    def _counted_from(self, m: "_meter.Meter", cpu: int) -> int:
        """Where the CPU of ``m``'s thread, now ``cpu``, starts counting: at the meter's birth,
        or now if the meter is older than this sampler (the process was configured again)."""
        return m.born_cpu if m.born >= self._made else cpu

    @property
    def main_thread_sampling(self) -> str:
        """``sigprof`` while the main thread is sampled from SIGPROF, else ``thread``."""
        return "sigprof" if self._main is not None else "thread"

    def disarm_signal(self) -> None:
        """Stops the timer (if the handler is still ours) and forgets the main thread."""
        global _active
        if _active is self:
            _active = None
            try:
                if signal.getsignal(_SIGPROF) is _on_sigprof:
                    signal.setitimer(signal.ITIMER_PROF, 0)
            except (ValueError, OSError):
                pass
        self._main = None

    def _check_signal(self) -> None:
        """The sampler thread, once a second: if SIGPROF has been given another handler, the
        main thread goes back to the sampler thread, and the timer stops unless another
        Python handler (another profiler's) now receives it."""
        main = self._main
        if main is None:
            return
        handler = signal.getsignal(_SIGPROF)
        if handler is _on_sigprof:
            return
        global _active
        if _active is self:
            _active = None
        if not callable(handler):  # SIG_DFL would kill the process at the next signal
            signal.setitimer(signal.ITIMER_PROF, 0)
        with self._lock:
            self._main = None
            try:
                cpu = time.clock_gettime_ns(thread_clock_id(main.tid))
                self._threads[main] = [cpu, self._main_budget, thread_clock_id(main.tid)]
            except OSError:
                pass
        log.warning("profwatch: SIGPROF was given another handler; the sampler thread samples the main thread")

    def on_signal(self, frame: Any) -> None:
        """SIGPROF, on the main thread: the samples its CPU since the last signal is due, of
        ``frame``. Never raises, never waits for a lock."""
        m = self._main
        if m is None or frame is None:
            return
        try:
            cpu = _thread_time_ns()
            budget = self._main_budget + cpu - self._main_cpu
            self._main_cpu = cpu
            period = self.period_ns
            if budget < period or not self._lock.acquire(False):
                self._main_budget = budget
                return
            try:
                n = budget // period
                self._main_budget = budget - n * period
                counts = self._sig_counts
                req = m.current
                dropped = self._add(req, self._stack(frame), n)
                key = dropped or ("samples_in_requests" if req is not None else "samples")
                counts[key] = counts.get(key, 0) + n
            finally:
                self._lock.release()
        except Exception:
            try:
                self._sig_counts["sampler_errors"] = self._sig_counts.get("sampler_errors", 0) + 1
            except Exception:
                pass

    def _move_signal_counts(self) -> None:
        """Under the lock: the signal handler's counts, to the process's counters."""
        counts, self._sig_counts = self._sig_counts, {}
        stats = self.runtime.stats
        for key, n in counts.items():
            if key == "samples_in_requests":
                stats.add("samples", n)
                stats.add("samples_in_requests", n)
            elif key in ("samples", "sampler_errors"):
                stats.add(key, n)
            else:
                stats.add("samples", n)
                stats.samples_dropped(key, n)

    def tick(self) -> int:
        """Takes the samples due now; returns how long (ns) to wait before the next tick: until
        the first thread would be due a sample at the rate it spent CPU since this tick's
        predecessor, at least :data:`MIN_WAIT` and at most :data:`MAX_WAIT` periods."""
        period = self.period_ns
        now = time.monotonic_ns()
        wall = max(now - self._last_tick, 1)
        self._last_tick = now
        wait = MAX_WAIT * period
        due = []
        threads = self._threads
        main = self._main
        others = 0
        if self._sig_counts:
            self._move_signal_counts()
        for m in list(_meter.meters.values()):
            if m is main:
                continue
            others += 1
            st = threads.get(m)
            try:
                cpu = time.clock_gettime_ns(st[2] if st is not None else thread_clock_id(m.tid))
            except OSError:
                threads.pop(m, None)  # the thread has exited
                continue
            if st is None:
                st = threads[m] = [self._counted_from(m, cpu), 0, thread_clock_id(m.tid)]
            used = cpu - st[0]
            budget = st[1] + used
            st[0] = cpu
            if budget >= period:
                n = budget // period
                budget -= n * period
                due.append((m, n, m.seq, m.current))
            st[1] = budget
            if used > 0:
                wait = min(wait, (period - budget) * wall // used)
        if len(threads) > 2 * len(_meter.meters) + 16:
            live = set(_meter.meters.values())
            for m in [m for m in threads if m not in live]:
                del threads[m]
        if due:
            self._take(due)
        if self._pending:
            self._settle()
        if main is not None and others == 0:
            return int(IDLE_WAIT * 1e9)
        return max(wait, period // MIN_WAIT)

    def _take(self, due: list) -> None:
        stats = self.runtime.stats
        current_frames = sys._current_frames()
        taken = attributed = 0
        for m, n, seq, req in due:
            frame = current_frames.get(m.ident)
            if frame is None:
                continue
            if m.seq != seq:
                stats.samples_dropped("raced", n)
                continue
            taken += n
            dropped = self._add(req, self._stack(frame), n)
            if dropped:
                stats.samples_dropped(dropped, n)
            elif req is not None:
                attributed += n
        del current_frames
        if taken:
            stats.add("samples", taken)
        if attributed:
            stats.add("samples_in_requests", attributed)

    def _add(self, req: Any, stack: tuple, n: int) -> Optional[str]:
        """Under the lock: ``n`` samples of ``stack`` for ``req`` (held until it finishes), or
        for no endpoint without a request. Returns why they were dropped, if they were."""
        if req is None:
            stacks = self._profiles.get("")
            if stacks is None:
                stacks = self._profiles[""] = {}
        else:
            stacks = self._pending.get(req)
            if stacks is None:
                if len(self._pending) >= MAX_PENDING:
                    return "too_many_requests"
                stacks = self._pending[req] = {}
        if stack in stacks:
            stacks[stack] += n
        elif self._stacks >= MAX_STACKS:
            return "too_many_stacks"
        else:
            self._stacks += 1
            stacks[stack] = n
        return None

    def _stack(self, frame: Any) -> tuple:
        names = self.frames
        get = names.names.get
        out = []
        f = frame
        code = f.f_code
        e = get(id(code))
        name = e[1] if e is not None and e[0] is code else names.name(code, f)
        out.append(name if name is not None else names.leaf(code, f))
        f = f.f_back
        limit = MAX_FRAMES - 1
        while f is not None:
            code = f.f_code
            e = get(id(code))
            name = e[1] if e is not None and e[0] is code else names.name(code, f)
            if name is not None:
                out.append(name)
                if len(out) >= limit:
                    f = f.f_back
                    break
            f = f.f_back
        if f is not None:
            out.append(TRUNCATED)
        out.reverse()
        return tuple(out)

    def _settle(self) -> None:
        """Moves the samples of finished requests to their endpoint's profile."""
        for req in [r for r in self._pending if r.done]:
            stacks = self._pending.pop(req)
            target = self._profiles.get(req.endpoint)
            if target is None:
                self._profiles[req.endpoint] = stacks
            else:
                for stack, n in stacks.items():
                    target[stack] = target.get(stack, 0) + n

    def flush(self) -> None:
        """Queues one profile per endpoint with the samples of the interval that ends now."""
        if not self._lock.acquire(timeout=1.0):
            return
        try:
            if self._sig_counts:
                self._move_signal_counts()
            self._settle()
            profiles, self._profiles = self._profiles, {}
            self._stacks = sum(len(s) for s in self._pending.values())
            ts, self._interval_start = int(self._interval_start), time.time()
        finally:
            self._lock.release()
        rt = self.runtime
        cfg = rt.config
        limit = rt.exporter.transport.profile_max
        for endpoint, stacks in profiles.items():
            folded = {";".join(stack): n for stack, n in stacks.items()}
            labels = (("service", cfg.service), ("endpoint", endpoint), ("build", cfg.build), ("dc", cfg.dc))
            payloads, dropped = encode_profiles(labels, self.hz, ts, folded, limit)
            if dropped:
                rt.stats.samples_dropped("too_large", dropped)
            for p in payloads:
                rt.exporter.add_profile(p)
