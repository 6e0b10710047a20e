"""The exporter: events and profiles queued by the app, encoded and written by one thread.

The request path only appends the finished request's event, a tuple, to a bounded queue
(``collections.deque.append`` is atomic under the GIL; a full queue drops the event and counts
``queue_full``). The ``profwatch-export`` thread wakes every :data:`INTERVAL` seconds, encodes
the events as NDJSON lines (the fields of agent/PROTOCOL.md; service, build, dc and weight are
encoded once, in the line's format) and writes them, whole lines only, in chunks the transport
carries (one write for up to 256 KiB of lines), then the profiles the sampler queued.
Whatever the transport cannot take is dropped and counted by reason: the SDK keeps no spool
(the sidecar does), so a missing sidecar costs events, never memory or the app's time.
"""

from __future__ import annotations

import collections
import json
import struct
import threading
from typing import Callable, Deque, Dict, List, Optional, Tuple

from ._config import Config
from ._daemon import Daemon
from ._stats import Stats
from ._transport import Transport

INTERVAL = 0.25
EVENT_QUEUE = 65536
PROFILE_QUEUE = 1024

#: A finished request's event: ``(ts, endpoint, status, cpu_ns, instructions, wall_ns)``, with
#: ``instructions`` ``None`` if not counted.
Event = Tuple[int, str, int, int, Optional[int], int]

_FRAME = struct.Struct(">BI")


class Exporter(Daemon):
    thread_name = "profwatch-export"

    def __init__(self, config: Config, stats: Stats, transport: Transport) -> None:
        super().__init__()
        self.stats = stats
        self.transport = transport
        self.events: Deque[Event] = collections.deque()
        self.profiles: Deque[bytes] = collections.deque()
        # The line's format: the constant fields (service, build, dc, weight) encoded once.
        prefix = self._encode_prefix(config).replace("%", "%%")
        suffix = "}\n" if config.sample_rate >= 1.0 else ',"weight":%r}\n' % (1.0 / config.sample_rate)
        fields = '"ts":%d,"endpoint":%s,"status":%d,"cpu_ns":%d,"wall_ns":%d'
        self._line = prefix + fields + suffix
        self._line_ins = prefix + fields + ',"instructions":%d' + suffix
        self._endpoints: Dict[str, str] = {}
        self._lock = threading.Lock()  # one drain at a time (the thread, flush(), atexit)

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

    def stop(self, timeout: float = 1.0) -> None:
        super().stop(timeout)
        self.drain()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self.drain()
            except Exception:
                self.stats.add("internal_errors")

    def encode(self, e: Event) -> str:
        ts, endpoint, status, cpu_ns, instructions, wall_ns = e
        name = self._endpoints.get(endpoint)
        if name is None:
            name = json.dumps(endpoint)
            if len(self._endpoints) < 4096:
                self._endpoints[endpoint] = name
        if instructions is None:
            return self._line % (ts, name, status, cpu_ns, wall_ns)
        return self._line_ins % (ts, name, status, cpu_ns, wall_ns, instructions)

    def drain(self) -> None:
        """Writes everything queued now (events, then profiles)."""
        with self._lock:
            self._drain_events()
            self._drain_profiles()
            self.transport.settle()

    def _drain_events(self) -> None:
        # Lines are ASCII (json.dumps escapes the rest), so a line's length is its size in bytes.
        events, limit, encode = self.events, self.transport.event_chunk, self.encode
        chunk: List[str] = []
        size = 0
        while events:
            line = encode(events.popleft())
            if chunk and size + len(line) > limit:
                self._write_events(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += len(line)
        self._write_events(chunk)

    def _write_events(self, lines: List[str]) -> None:
        if not lines:
            return
        self._send("".join(lines).encode("ascii"), len(lines), "events_sent", self.stats.events_dropped)

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
            self._send(message, 1, "profiles_sent", self.stats.profiles_dropped)

    def _send(self, message: bytes, n: int, sent: str, dropped: Callable[[str, int], None]) -> None:
        """Writes one message of ``n`` events or profiles and counts them sent or dropped."""
        err = self.transport.write(message)
        if err is None:
            self.stats.add(sent, n)
        else:
            dropped(err, n)

