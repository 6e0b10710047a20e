"""The exporter and transports: the bytes of agent/PROTOCOL.md, whole messages only, and
every drop counted by reason instead of raised or waited for."""

import json
import os
import socket
import struct
import threading
import time

from helpers import MemoryTransport, eventually, parse_profile, split_hello, unix_listener

import profwatch
from profwatch._config import make_config
from profwatch._exporter import Exporter
from profwatch._stats import Stats
from profwatch._transport import UnixStream, Udp, make_transport
from profwatch._config import parse_sidecar


def ev(ts, endpoint, status, cpu_ns, instructions, wall_ns):
    return (ts, endpoint, status, cpu_ns, instructions, wall_ns)


def _exporter(transport, **cfg):
    cfg.setdefault("service", "shop")
    return Exporter(make_config(env={}, **cfg), Stats(), transport)


def test_event_lines_are_the_protocol_json():
    e = _exporter(MemoryTransport(), build="812", dc="eu1", sample_rate=0.25)
    line = e.encode(ev(1700000000000000000, 'GET /cart/{id} "x"', 200, 1830000, 4100000, 4100001))
    assert line.endswith("\n")
    assert json.loads(line) == {
        "service": "shop",
        "build": "812",
        "dc": "eu1",
        "ts": 1700000000000000000,
        "endpoint": 'GET /cart/{id} "x"',
        "status": 200,
        "cpu_ns": 1830000,
        "wall_ns": 4100001,
        "instructions": 4100000,
        "weight": 4.0,
    }
    plain = json.loads(_exporter(MemoryTransport()).encode(ev(1, "GET /", 0, 5, None, 6)))
    assert plain == {"service": "shop", "ts": 1, "endpoint": "GET /", "status": 0, "cpu_ns": 5, "wall_ns": 6}


def test_events_are_chunked_in_whole_lines():
    t = MemoryTransport()
    t.event_chunk = 1000
    e = _exporter(t)
    for i in range(100):
        e.add_event(ev(i, "GET /x", 200, i, None, i))
    e.drain()
    assert len(t.messages) > 5
    assert all(len(m) <= 1000 and m.endswith(b"\n") for m in t.messages)
    assert [ev["ts"] for ev in t.events()] == list(range(100))
    assert e.stats.snapshot()["events_sent"] == 100


def test_drops_are_counted_by_reason():
    t = MemoryTransport()
    e = _exporter(t)
    t.fail = "no_sidecar"
    for i in range(3):
        e.add_event(ev(i, "GET /x", 200, 1, None, 1))
    e.add_profile(b"format=folded&sample_rate=99&service=shop\na 1\n")
    e.drain()
    s = e.stats.snapshot()
    assert s["events_dropped"]["no_sidecar"] == 3 and s["events_sent"] == 0
    assert s["profiles_dropped"]["no_sidecar"] == 1


def test_the_queue_is_bounded(monkeypatch):
    import profwatch._exporter as exp

    monkeypatch.setattr(exp, "EVENT_QUEUE", 5)
    e = _exporter(MemoryTransport())
    for i in range(8):
        e.add_event(ev(i, "GET /x", 200, 1, None, 1))
    assert len(e.events) == 5
    assert e.stats.snapshot()["events_dropped"]["queue_full"] == 3


def test_no_sidecar_on_the_socket_is_counted_not_raised():
    t = UnixStream("/nonexistent/agent.sock")
    assert t.write(b"x\n") == "no_sidecar"


def _read_messages(data):
    """Splits a stream into JSON lines and profile frames, failing on anything torn except
    the last message (cut short when the connection closes, as the sidecar allows)."""
    lines, frames, i = [], [], 0
    while i < len(data):
        if data[i] == 2:  # the connection's hello
            (n,) = struct.unpack(">I", data[i + 1 : i + 5])
            i += 5 + n
        elif data[i] == 1:
            (n,) = struct.unpack(">I", data[i + 1 : i + 5])
            if i + 5 + n > len(data):
                break
            frames.append(data[i + 5 : i + 5 + n])
            i += 5 + n
        else:
            j = data.find(b"\n", i)
            if j < 0:
                break
            lines.append(json.loads(data[i:j]))
            i = j + 1
    return lines, frames


def test_each_connection_starts_with_a_hello_of_the_pid_and_labels():
    srv, path = unix_listener()
    t = make_transport(parse_sidecar("unix://" + path), {"service": "shop", "build": "812", "dc": ""})
    e = _exporter(t)
    e.add_event(ev(1, "GET /x", 200, 1, None, 1))
    e.drain()
    conn = srv.accept()[0]
    t.close()
    e.add_event(ev(2, "GET /x", 200, 1, None, 1))
    e.drain()  # a new connection: a new hello
    conn2 = srv.accept()[0]
    t.close()
    for c, ts in ((conn, 1), (conn2, 2)):
        data = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        hello, rest = split_hello(data)
        assert hello == {"pid": os.getpid(), "service": "shop", "build": "812"}, "no empty dc"
        assert [json.loads(l)["ts"] for l in rest.splitlines()] == [ts]
    srv.close()


def test_a_full_socket_drops_whole_messages_and_never_interleaves_them():
    srv, path = unix_listener()
    t = UnixStream(path)
    t.grace = 0  # the sidecar never reads here: drop at once
    e = _exporter(t)
    e.transport.event_chunk = 8192
    conn_box = []
    accepted = threading.Thread(target=lambda: conn_box.append(srv.accept()[0]))
    accepted.start()
    profile = b"format=folded&sample_rate=99&service=shop\n" + b"a;b;c 1\n" * 5000
    for round_ in range(200):  # the sidecar reads nothing meanwhile
        for i in range(200):
            e.add_event(ev(round_ * 1000 + i, "GET /x", 200, 1, None, 1))
        e.add_profile(profile)
        e.drain()
    accepted.join()
    s = e.stats.snapshot()
    assert s["events_dropped"]["socket_full"] > 0, s
    conn = conn_box[0]
    t.close()
    data = b""
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    lines, frames = _read_messages(data)
    assert len(lines) + 8192 // 40 >= s["events_sent"]  # the last chunk may be cut short
    assert frames and all(f == profile for f in frames)
    assert [ev["ts"] for ev in lines] == sorted(ev["ts"] for ev in lines)
    srv.close()


def test_a_sidecar_a_moment_behind_loses_nothing():
    """A full socket buffer is waited on (UnixStream.grace) before anything is dropped."""
    srv, path = unix_listener()
    t = UnixStream(path)
    t.grace = 5.0  # far longer than the reader's pause, so that a loaded machine passes too
    e = _exporter(t)
    received = []

    def late_reader():
        conn = srv.accept()[0]
        time.sleep(0.05)  # the socket's buffer fills meanwhile
        while True:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            received.append(chunk)

    reader = threading.Thread(target=late_reader)
    reader.start()
    for i in range(20000):  # ~2 MB of lines, several times the socket's buffer
        e.add_event(ev(i, "GET /x", 200, 1, None, 1))
    e.drain()
    t.close()
    reader.join()
    s = e.stats.snapshot()
    assert s["events_sent"] == 20000 and sum(s["events_dropped"].values()) == 0, s
    lines, _ = _read_messages(b"".join(received))
    assert [ev["ts"] for ev in lines] == list(range(20000))
    srv.close()


def test_udp_carries_events_and_profiles_as_datagrams():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    t = Udp(rx.getsockname())
    e = _exporter(t)
    e.add_event(ev(1, "GET /x", 200, 1, None, 1))
    e.add_profile(b"format=folded&sample_rate=99&service=shop\na;b 3\n")
    e.drain()
    rx.settimeout(10)
    first, second = rx.recv(65536), rx.recv(65536)
    assert json.loads(first)["endpoint"] == "GET /x", "no hello over UDP: the sidecar refuses it"
    assert second[:1] == b"\x01"
    assert parse_profile(second[1:]) == ({"format": "folded", "sample_rate": "99", "service": "shop"}, {"a;b": 3})
    rx.close()


def test_profiles_larger_than_a_datagram_are_dropped_and_counted():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    e = _exporter(Udp(rx.getsockname()))
    e.add_profile(b"x" * 70000)
    e.drain()
    assert e.stats.snapshot()["profiles_dropped"]["too_large"] == 1
    rx.close()


def test_the_app_keeps_serving_without_a_sidecar():
    """A real socket path where nothing listens: requests succeed, events are counted dropped."""
    from wsgiref.util import setup_testing_defaults

    profwatch.configure(service="nosidecar", sidecar="unix:///nonexistent/dir/agent.sock", profile_hz=99)
    try:

        def app(environ, start_response):
            start_response("200 OK", [])
            return [b"ok"]

        wrapped = profwatch.WSGIMiddleware(app, route=lambda env: "/x")
        for _ in range(20):
            env = {}
            setup_testing_defaults(env)
            body = wrapped(env, lambda *a: None)
            assert b"".join(body) == b"ok"
            body.close()
        profwatch.flush()
        s = profwatch.stats()
        assert s["requests"] == 20
        eventually(lambda: profwatch.stats()["events_dropped"]["no_sidecar"] == 20, what="20 events counted as dropped")
    finally:
        profwatch.shutdown()
