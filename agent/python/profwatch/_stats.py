"""Counters of what the SDK did and, above all, of what it dropped, by reason.

Every piece of data the SDK gives up on (an event, a sample, a profile) is counted here under
a typed reason instead of raising into the app; :func:`profwatch.stats` returns a snapshot.
Counters are per process (a forked child starts from zero).
"""

from __future__ import annotations

import itertools
import threading
from typing import Dict

#: Why an event or a profile was not handed to the sidecar.
SEND_DROP_REASONS = (
    "queue_full",  # the in-process queue was full (the exporter thread is behind)
    "no_sidecar",  # nothing listens on the socket (or it refused the connection)
    "socket_full",  # the socket's buffer was full: the sidecar is not reading fast enough
    "send_error",  # the connection broke while writing
    "too_large",  # one message larger than the transport can carry
)

#: Why a stack sample was not kept.
SAMPLE_DROP_REASONS = (
    "raced",  # the thread switched requests while the sample was taken
    "too_many_stacks",  # the interval's distinct-stack budget was spent
    "too_many_requests",  # too many unfinished requests held samples
    "too_large",  # a stack larger than one profile message may be
)

_COUNTERS = (
    "events_sent",
    "samples",  # samples taken (each is 1 / profile_hz of a thread's CPU time)
    "samples_in_requests",  # of which attributed to a request's endpoint
    "profiles_sent",
    "sampler_errors",  # sampler ticks that failed (the sampler goes on)
    "internal_errors",  # SDK errors caught on the request path (the request goes on)
    "endpoints_over_limit",
)


class Stats:
    """Thread-safe counters. The request path only advances ``requests`` (``next()`` on an
    :func:`itertools.count`, atomic under the GIL, no lock); drops take a lock."""

    def __init__(self) -> None:
        self.requests = itertools.count()  # advanced with next() by the request path
        self._lock = threading.Lock()
        self._c: Dict[str, int] = dict.fromkeys(_COUNTERS, 0)
        self._events_dropped: Dict[str, int] = dict.fromkeys(SEND_DROP_REASONS, 0)
        self._profiles_dropped: Dict[str, int] = dict.fromkeys(SEND_DROP_REASONS, 0)
        self._samples_dropped: Dict[str, int] = dict.fromkeys(SAMPLE_DROP_REASONS, 0)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._c[name] += n

    def events_dropped(self, reason: str, n: int = 1) -> None:
        self._drop(self._events_dropped, reason, n)

    def profiles_dropped(self, reason: str, n: int = 1) -> None:
        self._drop(self._profiles_dropped, reason, n)

    def samples_dropped(self, reason: str, n: int = 1) -> None:
        self._drop(self._samples_dropped, reason, n)

    def _drop(self, counts: Dict[str, int], reason: str, n: int) -> None:
        with self._lock:
            counts[reason] += n

    def snapshot(self) -> dict:
        # repr(count(5)) is "count(5)": its only public way to read the value without advancing it.
        requests = int(repr(self.requests)[6:-1])
        with self._lock:
            out: dict = {"requests": requests}
            out.update(self._c)
            out["events_dropped"] = dict(self._events_dropped)
            out["profiles_dropped"] = dict(self._profiles_dropped)
            out["samples_dropped"] = dict(self._samples_dropped)
        return out
