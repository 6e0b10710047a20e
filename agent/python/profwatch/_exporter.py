"""The exporter: events and profiles queued by the app, encoded and written by one thread.

The request path only appends the finished request to a bounded queue (``collections.deque.append`` is
atomic under the GIL; a full queue drops the event and counts ``queue_full``). The
``profwatch-export`` thread wakes every :data:`INTERVAL` seconds, encodes the events as NDJSON
lines (the fields of agent/PROTOCOL.md; service, build and dc are encoded once) and writes
them, whole lines only, in chunks the transport carries, then the profiles the sampler queued.
Whatever the transport cannot take is dropped and counted by reason: the SDK keeps no spool
(the sidecar does), so a missing sidecar costs events, never memory or the app's time.
"""

from __future__ import annotations

import collections
import json
import struct
import threading
from typing import Any, Deque, Dict, List, Optional

from ._config import Config
from ._stats import Stats
from ._transport import Transport

INTERVAL = 0.25
EVENT_QUEUE = 65536
PROFILE_QUEUE = 1024

#: What the exporter reads of a finished request (:class:`profwatch._meter.Request`): ``ts``,
#: ``endpoint``, ``status``, ``cpu_ns``, ``instructions`` (``None`` if not counted), ``wall_ns``.
Event = Any

_FRAME = struct.Struct(">BI")


class Exporter:
    def __init__(self, config: Config, stats: Stats, transport: Transport) -> None:
        self.stats = stats
        self.transport = transport
        self.events: Deque[Event] = collections.deque()
        self.profiles: Deque[bytes] = collections.deque()
        self._prefix = self._encode_prefix(config)
        self._suffix = "}\n" if config.sample_rate >= 1.0 else ',"weight":%r}\n' % (1.0 / config.sample_rate)
        self._endpoints: Dict[str, str] = {}
        self._lock = threading.Lock()  # one drain at a time (the thread, flush(), atexit)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @staticmethod
    def _encode_prefix(config: Config) -> str:
        fields = [("service", config.service)]
        if config.build:
            fields.append(("build", config.build))
        if config.dc:
            fields.append(("dc", config.dc))
        return "{" + "".join("%s:%s," % (json.dumps(k), json.dumps(v)) for k, v in fields)

    def add_event(self, event: Event) -> None:
        """Request path: queue one event, or drop and count it."""
        if len(self.events) >= EVENT_QUEUE:
            self.stats.events_dropped("queue_full")
        else:
            self.events.append(event)

    def add_profile(self, payload: bytes) -> None:
        if len(self.profiles) >= PROFILE_QUEUE:
            self.stats.profiles_dropped("queue_full")
        else:
            self.profiles.append(payload)

    def start(self) -> None:
        t = threading.Thread(target=self._run, name="profwatch-export", daemon=True)
        self._thread = t
        t.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        self.drain()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.drain()
            except Exception:
                self.stats.add("internal_errors")

    def encode(self, e: Event) -> str:
        endpoint, instructions = e.endpoint, e.instructions
        name = self._endpoints.get(endpoint)
        if name is None:
            name = json.dumps(endpoint)
            if len(self._endpoints) < 4096:
                self._endpoints[endpoint] = name
        ins = "" if instructions is None else ',"instructions":%d' % instructions
        return '%s"ts":%d,"endpoint":%s,"status":%d,"cpu_ns":%d,"wall_ns":%d%s%s' % (
            self._prefix,
            e.ts,
            name,
            e.status,
            e.cpu_ns,
            e.wall_ns,
            ins,
            self._suffix,
        )

    def drain(self) -> None:
        """Writes everything queued now (events, then profiles)."""
        with self._lock:
            self._drain_events()
            self._drain_profiles()

    def _drain_events(self) -> None:
        events, limit = self.events, self.transport.event_chunk
        chunk: List[bytes] = []
        size = 0
        while events:
            line = self.encode(events.popleft()).encode("utf-8")
            if chunk and size + len(line) > limit:
                self._write_events(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._write_events(chunk)

    def _write_events(self, lines: List[bytes]) -> None:
        if not lines:
            return
        err = self.transport.write(b"".join(lines))
        if err is None:
            self.stats.add("events_sent", len(lines))
        else:
            self.stats.events_dropped(err, len(lines))

    def _drain_profiles(self) -> None:
        profiles, transport = self.profiles, self.transport
        while profiles:
            payload = profiles.popleft()
            if len(payload) > transport.profile_max:
                self.stats.profiles_dropped("too_large")
                continue
            if transport.framed:
                message = _FRAME.pack(1, len(payload)) + payload
            else:
                message = b"\x01" + payload
            err = transport.write(message)
            if err is None:
                self.stats.add("profiles_sent")
            else:
                self.stats.profiles_dropped(err)

