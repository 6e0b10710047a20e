"""The connection to the sidecar: a Unix stream socket or UDP datagrams (see agent/PROTOCOL.md).

Invariants:

- Nothing here raises, and nothing blocks for long: sockets are non-blocking, a full stream
  socket is waited on for at most :attr:`UnixStream.grace` per write (in the exporter's
  thread), and :meth:`write` answers ``None`` (handed to the kernel) or the reason the message
  was dropped (``no_sidecar``, ``socket_full``, ``send_error``, ``too_large``), which the
  exporter counts.
- On the stream, a message is never interleaved with another: when the kernel takes only part
  of one, the rest is kept and written before anything else (at the end of the exporter's
  drain, :meth:`Transport.settle`, or before the next message); new messages are dropped
  (``socket_full``) until it is gone. If it cannot be written for :data:`STALL_SECONDS`, the
  connection is closed and reopened; the sidecar counts the cut message as ``truncated`` and
  the messages around it are unaffected.
- Only the exporter thread writes (after ``os.fork`` the child closes its copy of the socket
  without touching the parent's connection, and opens its own).
- Every stream connection starts with a hello frame (``0x02``, the length, a JSON object of
  the process's pid, read at connect time, and its service, build and dc), written before any
  other message, so the sidecar watches the memory of each process that connects, a preforked
  worker included. Datagrams never carry one (the sidecar refuses a hello over UDP).
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import time
from typing import Dict, Optional, Tuple

from ._config import Sidecar

STALL_SECONDS = 5.0
_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
#: The sidecar's limit on a hello's payload.
HELLO_MAX = 4096


def hello_frame(pid: int, labels: Dict[str, str]) -> bytes:
    """The hello frame of agent/PROTOCOL.md: ``pid`` and the non-empty ``labels`` (``service``,
    ``build``, ``dc``)."""
    fields = {"pid": pid}
    fields.update((k, v) for k, v in labels.items() if v)
    payload = json.dumps(fields, separators=(",", ":")).encode("utf-8")
    if len(payload) > HELLO_MAX:  # labels are checked at configure time; never expected
        payload = b'{"pid":%d}' % pid
    return struct.pack(">BI", 2, len(payload)) + payload


class Transport:
    """Where encoded messages go."""

    #: Most bytes of event lines written as one message.
    event_chunk = 256 * 1024
    #: Most bytes of one profile (the frame's payload).
    profile_max = 4 * 1024 * 1024
    #: ``True`` if profile frames carry the 4-byte length (stream), ``False`` for datagrams.
    framed = True

    _sock: Optional[socket.socket] = None

    def write(self, data: bytes) -> Optional[str]:
        raise NotImplementedError

    def settle(self) -> None:
        """Writes what is left of a message cut short by a full buffer, if the transport keeps
        one (waiting a little); the exporter calls it after each drain."""

    def close(self) -> None:
        """Closes the socket, if open (the next write opens a new one)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class UnixStream(Transport):
    """The sidecar's Unix stream socket, reconnected after an error."""

    #: Seconds a write waits for the sidecar to make room in a full socket buffer before the
    #: message is dropped (``socket_full``): the exporter thread waits, never the app, and a
    #: sidecar that is only a moment behind (a busy machine) loses nothing.
    grace = 0.05

    def __init__(self, path: str, labels: Optional[Dict[str, str]] = None) -> None:
        self.path = path
        #: What the hello says besides the pid (``service``, ``build``, ``dc``).
        self.labels = dict(labels or {})
        self._sock: Optional[socket.socket] = None
        self._pending = b""
        self._pending_since = 0.0

    def _connect(self) -> bool:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(self.path)
        except OSError:
            s.close()
            return False
        self._sock = s
        # The hello goes first: written as the rest of a message, before anything else.
        self._pending = hello_frame(os.getpid(), self.labels)
        self._pending_since = time.monotonic()
        return True

    def _reset(self) -> None:
        self.close()
        self._pending = b""

    def _send(self, data: bytes) -> Tuple[int, Optional[str]]:
        assert self._sock is not None
        try:
            return self._sock.send(data, _NOSIGNAL), None
        except (BlockingIOError, InterruptedError):
            return 0, None
        except OSError:
            self._reset()
            return 0, "send_error"

    def _room(self, deadline: float) -> bool:
        """Waits until the socket has room or ``deadline`` (monotonic) passes; ``True`` if
        there is time left to try again."""
        left = deadline - time.monotonic()
        if left <= 0 or self._sock is None:
            return False
        try:
            select.select([], [self._sock], [], left)
        except (OSError, ValueError):
            return False
        return True

    def _write_pending(self, deadline: float) -> Optional[str]:
        """Writes the rest of a message the kernel took part of; ``None`` once it is all
        written, else why not (by ``deadline``)."""
        while self._pending:
            n, err = self._send(self._pending)
            if err:
                return err
            self._pending = self._pending[n:]
            if self._pending and not self._room(deadline):
                if time.monotonic() - self._pending_since > STALL_SECONDS:
                    self._reset()
                return "socket_full"
        return None

    def settle(self) -> None:
        if self._sock is not None:
            self._write_pending(time.monotonic() + self.grace)

    def write(self, data: bytes) -> Optional[str]:
        if self._sock is None and not self._connect():
            return "no_sidecar"
        deadline = time.monotonic() + self.grace
        err = self._write_pending(deadline)  # the rest of a cut message goes first
        if err:
            return err
        n, err = self._send(data)
        while n == 0 and err is None and self._room(deadline):
            n, err = self._send(data)
        if err:
            return err
        if n == 0:
            return "socket_full"
        if n < len(data):
            self._pending = data[n:]
            self._pending_since = time.monotonic()
        return None


class Udp(Transport):
    """Datagrams to the sidecar's UDP port (loopback); the kernel may drop them under load."""

    event_chunk = 65000
    profile_max = 64999
    framed = False

    def __init__(self, address: Tuple[str, int]) -> None:
        self.address = address
        self._sock: Optional[socket.socket] = None

    def write(self, data: bytes) -> Optional[str]:
        if len(data) > self.event_chunk:
            return "too_large"
        try:
            if self._sock is None:
                family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
                self._sock = socket.socket(family, socket.SOCK_DGRAM)
                self._sock.setblocking(False)
            self._sock.sendto(data, self.address)
        except (BlockingIOError, InterruptedError):
            return "socket_full"
        except OSError as e:
            return "no_sidecar" if e.errno in (errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH) else "send_error"
        return None


def make_transport(sidecar: Sidecar, labels: Optional[Dict[str, str]] = None) -> Transport:
    """The transport to ``sidecar``; on the socket, ``labels`` go in each connection's hello."""
    if sidecar.kind == "unix":
        return UnixStream(str(sidecar.address), labels)
    return Udp(sidecar.address)  # type: ignore[arg-type]
