"""Shared by the unit and end-to-end tests."""

from __future__ import annotations

import struct
import time
from typing import Callable, List, Optional, Tuple

from profwatch._transport import Transport


def burn(ms: float) -> None:
    """Spends ``ms`` milliseconds of this thread's CPU time in pure Python."""
    end = time.thread_time_ns() + int(ms * 1_000_000)
    while time.thread_time_ns() < end:
        pass


def stretch(req, work: Callable[[], object]):
    """Runs ``work()`` as one stretch of ``req`` on this thread's meter; returns ``req``."""
    from profwatch._meter import meter

    m = meter()
    m.enter(req)
    try:
        work()
    finally:
        m.exit(req)
    return req


def serve(rt, route: str, work: Callable[[], object]):
    """One GET request through the runtime ``rt``, named ``route``: started, ``work()`` as its
    one stretch, finished; returns the request."""
    req = rt.start_request("GET", lambda _: route, None)
    stretch(req, work)
    rt.finish(req)
    return req


def split_hello(data):
    """The hello frame that starts a connection's bytes, as a dict, and the bytes after it."""
    import json
    import struct

    assert data[:1] == b"\x02", "the connection does not start with a hello: %r" % data[:40]
    (n,) = struct.unpack(">I", data[1:5])
    return json.loads(data[5 : 5 + n]), data[5 + n :]


def unix_listener():
    """A listening Unix stream socket in a fresh directory: ``(socket, path)``."""
    import os
    import socket
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="pw-unit-"), "agent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    return srv, path


def eventually(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition", interval: float = 0.05):
    """Polls ``predicate`` until it returns something truthy, which is returned; fails the
    test with ``what`` after ``timeout`` seconds (a deadline, not a measurement)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s (last value: %r)" % (what, last))


class MemoryTransport(Transport):
    """Keeps every message written; ``fail`` makes writes answer that drop reason."""

    event_chunk = 256 * 1024
    profile_max = 4 * 1024 * 1024
    framed = True

    def __init__(self) -> None:
        self.messages: List[bytes] = []
        self.fail: Optional[str] = None

    def write(self, data: bytes) -> Optional[str]:
        if self.fail is not None:
            return self.fail
        self.messages.append(bytes(data))
        return None

    def events(self) -> List[dict]:
        import json

        out = []
        for m in self.messages:
            if m[:1] != b"\x01":
                out += [json.loads(line) for line in m.decode().splitlines() if line]
        return out

    def profiles(self) -> List[Tuple[dict, dict]]:
        return [parse_profile(m[5:]) for m in self.messages if m[:1] == b"\x01" and struct.unpack(">I", m[1:5])[0] == len(m) - 5]


def parse_profile(payload: bytes) -> Tuple[dict, dict]:
    """A profile payload → (query labels, {folded stack: count})."""
    from urllib.parse import parse_qsl

    text = payload.decode("utf-8")
    head, _, body = text.partition("\n")
    stacks = {}
    for line in body.splitlines():
        stack, _, n = line.rpartition(" ")
        stacks[stack] = stacks.get(stack, 0) + int(n)
    return dict(parse_qsl(head)), stacks
