"""The process's runtime: configuration, counters, exporter and sampler, and the request
lifecycle the middlewares share (:meth:`Runtime.start_request`, :meth:`Runtime.end`).

Invariants:

- Threads start lazily, on the process's first request (and, if that request is served on the
  main thread, SIGPROF sampling of it, see :mod:`profwatch._sampler`), so that a gunicorn or uwsgi master
  that imports (or preloads) the app but serves nothing runs no profwatch thread.
- After ``os.fork`` the child gets fresh counters, an empty queue, its own sidecar connection
  (the parent's is closed in the child only, never shut down; the new one's hello carries the
  child's pid, so the sidecar watches each worker's memory) and no threads; they start again
  on the child's first request (``os.register_at_fork``). Events queued in the parent before
  the fork are the parent's to send, so the child never sends them twice.
- At interpreter exit the sampler's last interval and the queued events are written
  (``atexit``; a missing sidecar makes that a no-op, never a long wait).
- :meth:`Runtime.end` never raises: a route callable that fails names the request
  ``METHOD <unmatched>`` and counts an internal error.
- The request path takes no lock once the threads have started: the endpoint cache is read
  without one (a miss takes the namer's lock), the request count is an ``itertools.count`` and
  the event goes to a ``deque`` (both atomic under the GIL).
"""

from __future__ import annotations

import atexit
import logging
import os
import random
import threading
import time
from typing import Any, Callable, Optional

from . import _meter, _sampler
from ._config import Config, make_config
from ._endpoint import Namer
from ._exporter import Exporter
from ._meter import Meter, Request
from ._sampler import Sampler
from ._stats import Stats
from ._transport import Transport, make_transport

log = logging.getLogger("profwatch")
_perf_counter_ns = time.perf_counter_ns


class Runtime:
    def __init__(self, config: Config, transport: Optional[Transport] = None) -> None:
        self.config = config
        self._transport = transport
        self._fresh()

    def _fresh(self) -> None:
        cfg = self.config
        # Everything with a lock is new: another thread may have held one at fork time.
        self.namer = Namer()
        self.stats = Stats()
        transport = self._transport
        if transport is None:
            transport = make_transport(cfg.sidecar, {"service": cfg.service, "build": cfg.build, "dc": cfg.dc})
        self.exporter = Exporter(cfg, self.stats, transport)
        # Bound once: the request path's calls (finish) skip the attribute lookups.
        self._add_event = self.exporter.add_event
        self._names = self.namer.names
        self._requests = self.stats.requests
        self._measure_all = cfg.sample_rate >= 1.0
        self.sampler = Sampler(self, cfg.profile_hz, cfg.profile_interval) if cfg.profile_hz else None
        self._lock = threading.Lock()
        self._started = False
        self._closed = False

    def _start(self) -> None:
        with self._lock:
            if self._started or self._closed:
                return
            self._started = True
            self.exporter.start()
            if self.sampler is not None:
                if self.config.profile_signal and threading.current_thread() is threading.main_thread():
                    self.sampler.arm_signal(_meter.meter())
                self.sampler.start()

    def start_request(
        self, method: str, resolve: Callable[[Any], Optional[str]], arg: Any, kind: Callable[..., Request] = Request
    ) -> Request:
        """A new request (of class ``kind``), measured or not as ``sample_rate`` draws."""
        if not self._started:
            self._start()
        return kind(self, method, resolve, arg, self._measure_all or random.random() < self.config.sample_rate)

    def end(self, m: Optional[Meter], req: Request) -> None:
        """Ends ``req``'s stretch on the meter ``m`` (if any), names the request, marks it done
        and queues its event (if measured). Never raises: a route callable that fails names the
        request ``METHOD <unmatched>``, and either counts an internal error.

        The event is a tuple of numbers and strings, not the request: the request is freed
        now, and the tuple, which the cyclic GC stops tracking at its first pass, waits in the
        queue without growing the GC's oldest generation."""
        try:
            if m is not None:
                m.exit(req)
            try:
                template = req.resolve(req.resolve_arg)
                if template is not None and not isinstance(template, str):
                    template = None
            except Exception:
                template = None
                self.stats.add("internal_errors")
            req.resolve_arg = None  # the environ, scope or request: free it with the request
            endpoint = self._names.get((req.method, template))
            if endpoint is None:
                endpoint = self.namer.name(req.method, template)
            req.endpoint = endpoint
            req.done = True
            next(self._requests)
            if req.measured:
                instructions = req.instructions if _meter.counters.available else None
                self._add_event((req.ts, endpoint, req.status, req.cpu_ns, instructions, _perf_counter_ns() - req.t0))
        except Exception:
            self.stats.add("internal_errors")

    def finish(self, req: Request) -> None:
        """:meth:`end` for a request whose stretches have all ended (async requests)."""
        self.end(None, req)

    def flush(self) -> None:
        """Ships the sampler's current interval and everything queued, now."""
        if self.sampler is not None:
            self.sampler.flush()
        self.exporter.drain()

    def shutdown(self) -> None:
        with self._lock:
            self._closed = True
        if self.sampler is not None:
            self.sampler.stop()
        try:
            self.flush()
        finally:
            self.exporter.stop(timeout=1.0)
            self.exporter.transport.close()

    def after_fork_in_child(self) -> None:
        self.exporter.transport.close()
        self._fresh()

    def snapshot(self) -> dict:
        out = self.stats.snapshot()
        out["endpoints_over_limit"] = self.namer.over_limit
        out["counter_path"] = _meter.counters.path
        out["main_thread_sampling"] = self.sampler.main_thread_sampling if self.sampler is not None else "off"
        out["sidecar"] = str(self.config.sidecar)
        queued = len(self.exporter.events)
        out["queued_events"] = queued
        out["requests_sampled"] = out["events_sent"] + queued + sum(out["events_dropped"].values())
        return out


_runtime: Optional[Runtime] = None
_env_failed = False
_global_lock = threading.Lock()


def configure(transport: Optional[Transport] = None, **kwargs: Any) -> Runtime:
    """Builds the runtime from arguments and environment (see :func:`profwatch.configure`)."""
    global _runtime, _env_failed
    rt = Runtime(make_config(**kwargs), transport)
    with _global_lock:
        old, _runtime = _runtime, rt
        _env_failed = False
    if old is not None:
        try:
            old.shutdown()
        except Exception:
            pass
    return rt


def runtime() -> Optional[Runtime]:
    """The runtime, configured from the environment on first use; ``None`` if that fails."""
    rt = _runtime
    if rt is not None or _env_failed:
        return rt
    return _from_env()


def _from_env() -> Optional[Runtime]:
    global _env_failed
    with _global_lock:
        if _runtime is not None or _env_failed:
            return _runtime
    try:
        return configure()
    except ValueError as e:
        _env_failed = True
        log.warning("profwatch: not configured (%s); requests are served unmeasured", e)
        return None


def shutdown() -> None:
    global _runtime
    with _global_lock:
        rt, _runtime = _runtime, None
    if rt is not None:
        rt.shutdown()


def _after_fork_in_child() -> None:
    global _global_lock
    _global_lock = threading.Lock()
    _sampler.after_fork_in_child()
    _meter.after_fork_in_child()
    rt = _runtime
    if rt is not None:
        rt.after_fork_in_child()


def _at_exit() -> None:
    rt = _runtime
    if rt is not None:
        try:
            rt.shutdown()
        except Exception:
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)
