"""End-to-end fixtures: the real collector (``profwatch server``, embedded store) and the real
sidecar (``profwatch agent``) from ``PROFWATCH_BIN``, and apps under real servers (gunicorn,
uvicorn) in subprocesses.

Every port is chosen by the kernel (``127.0.0.1:0``) and read from the process's own output.
Waits are polls with a deadline. Without ``PROFWATCH_BIN`` these tests fail, unless
``PROFWATCH_TEST_SKIP_E2E=1`` asks for an explicit, reported skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Dict, List, Optional

import pytest

from helpers import eventually

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
BIN_DIR = os.path.dirname(sys.executable)
START_DEADLINE = 120.0


class Process:
    """A subprocess whose stderr (and stdout) lines are kept, and logged to a file."""

    def __init__(self, args: List[str], log_path: str, env: Optional[dict] = None, cwd: Optional[str] = None) -> None:
        self.args = args
        self.log_path = log_path
        self.lines: List[str] = []
        self._log = open(log_path, "a", encoding="utf-8")
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()

    def wait_for_line(self, pattern: str, what: str) -> "re.Match[str]":
        rx = re.compile(pattern)

        def found():
            for line in list(self.lines):
                m = rx.search(line)
                if m:
                    return m
            if self.proc.poll() is not None:
                raise AssertionError("%s exited (%s) before %s; log: %s\n%s" % (self.args[0], self.proc.returncode, what, self.log_path, "\n".join(self.lines[-40:])))
            return None

        return eventually(found, timeout=START_DEADLINE, what=what)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=5)
        self._log.close()


@pytest.fixture(scope="session")
def profwatch_bin() -> str:
    path = os.environ.get("PROFWATCH_BIN", "")
    if not path:
        if os.environ.get("PROFWATCH_TEST_SKIP_E2E") == "1":
            pytest.skip("PROFWATCH_TEST_SKIP_E2E=1: end-to-end tests skipped on request")
        pytest.fail("PROFWATCH_BIN is not set: build it (cargo build -p profwatch) and pass its path, or set PROFWATCH_TEST_SKIP_E2E=1 to skip these tests explicitly")
    assert os.access(path, os.X_OK), "PROFWATCH_BIN=%s is not an executable" % path
    return path


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="profwatch-py-e2e-")
    yield d
    if os.environ.get("PROFWATCH_TEST_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)


class Collector:
    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str, **params: str) -> bytes:
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(self.url + path + ("?" + q if q else ""), timeout=30) as r:
            return r.read()

    def endpoints(self, service: str) -> Dict[str, dict]:
        return {row["endpoint"]: row for row in json.loads(self.get("/api/v1/endpoints", service=service))}

    def folded(self, service: str, endpoint: Optional[str] = None) -> Dict[str, int]:
        """An endpoint's flame graph as folded stacks; with no endpoint, the service's whole
        flame graph (every endpoint, and samples outside requests)."""
        query = {"service": service, "format": "folded"}
        if endpoint is not None:
            query["endpoint"] = endpoint
        text = self.get("/api/v1/profile", **query).decode()
        out: Dict[str, int] = {}
        for line in text.splitlines():
            if line.strip():
                stack, _, n = line.rpartition(" ")
                out[stack] = out.get(stack, 0) + int(n)
        return out

    def samples_of(self, service: str, endpoint: Optional[str], function: str) -> int:
        """Samples of ``endpoint`` (``None``: the whole service) with a frame of ``function``."""
        needle = ":" + function + " ("
        stacks = self.folded(service, endpoint)
        return sum(n for s, n in stacks.items() if needle in s)

    def assert_only_in(self, service: str, function: str, endpoint: str, at_least: int) -> None:
        """``function`` has at least ``at_least`` samples in ``endpoint``'s flame graph and none
        anywhere else in the service (other endpoints, or outside requests)."""

        last = {}

        def settled():
            own = self.samples_of(service, endpoint, function)
            total = self.samples_of(service, None, function)
            last["own"], last["total"] = own, total
            return (own, total) if own >= at_least and own == total else None

        try:
            eventually(settled, what="%s: %d+ samples in %s and none elsewhere" % (function, at_least, endpoint))
        except AssertionError as e:
            needle = ":" + function + " ("
            elsewhere = {s: n for s, n in self.folded(service).items() if needle in s}
            raise AssertionError("%s; %s's samples: %d in %s, %d in the whole service; its stacks: %r"
                                 % (e, function, last.get("own", -1), endpoint, last.get("total", -1), elsewhere)) from None


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROFWATCH_")}
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def collector(profwatch_bin, workdir):
    p = Process(
        [profwatch_bin, "server", "--listen", "127.0.0.1:0", "--data-dir", os.path.join(workdir, "data"), "--analysis-interval", "0s"],
        os.path.join(workdir, "server.log"),
        env=_env(PROFWATCH_LOG="info"),
    )
    m = p.wait_for_line(r"profwatch server listening on (http://\S+)", "the collector's address")
    yield Collector(m.group(1))
    p.stop()


class Sidecar:
    def __init__(self, process: Process, socket_path: str, udp: str, metrics: str) -> None:
        self.process = process
        self.socket = socket_path
        self.udp = udp
        self.metrics = metrics

    def status(self) -> dict:
        with urllib.request.urlopen(self.metrics + "/status", timeout=30) as r:
            return json.loads(r.read())


def start_sidecar(profwatch_bin: str, collector: Collector, directory: str) -> Sidecar:
    os.makedirs(directory, exist_ok=True)
    sock = os.path.join(directory, "agent.sock")
    p = Process(
        [
            profwatch_bin, "agent",
            "--collector", collector.url,
            "--socket", sock,
            "--udp", "127.0.0.1:0",
            "--metrics", "127.0.0.1:0",
            "--spool-dir", os.path.join(directory, "spool"),
            "--batch-wait-ms", "200",
            "--memory-interval-secs", "1",  # the memory of the apps that say hello
            "--dc", "e2e-dc", "--host", "e2e-host",
        ],
        os.path.join(directory, "agent.log"),
        env=_env(PROFWATCH_LOG="info"),
    )
    udp = p.wait_for_line(r"profwatch agent udp (\S+)", "the sidecar's UDP address").group(1)
    metrics = p.wait_for_line(r"profwatch agent metrics on (http://\S+)", "the sidecar's metrics address").group(1)
    p.wait_for_line(r"profwatch agent ready", "the sidecar to be ready")
    return Sidecar(p, sock, udp, metrics)


@pytest.fixture(scope="session")
def sidecar(profwatch_bin, collector, workdir):
    s = start_sidecar(profwatch_bin, collector, os.path.join(workdir, "sidecar"))
    yield s
    s.process.stop()


class App:
    """An app under a real server; ``get`` is a plain HTTP GET to it."""

    def __init__(self, process: Process, base: str, service: str) -> None:
        self.process = process
        self.base = base
        self.service = service

    def get(self, path: str) -> "tuple[int, bytes]":
        try:
            with urllib.request.urlopen(self.base + path, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, (path, status, body[:500])
        return json.loads(body)

    def stop(self) -> None:
        self.process.stop()


def unique_service(name: str) -> str:
    return "%s-%s" % (name, uuid.uuid4().hex[:8])


def start_app(kind: str, target: str, service: str, sidecar_url: str, workdir: str, workers: int = 2, extra_env: Optional[dict] = None, extra_args: Optional[list] = None) -> App:
    """``kind`` is ``gunicorn`` (``workers`` sync workers, app preloaded in the master) or
    ``uvicorn`` (one process, one event loop)."""
    env = _env(
        PROFWATCH_SERVICE=service,
        PROFWATCH_BUILD="e2e-1",
        PROFWATCH_SIDECAR=sidecar_url,
        PROFWATCH_PROFILE_INTERVAL="1",
        PYTHONPATH=APPS,
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    log = os.path.join(workdir, "%s.log" % service)
    if kind == "gunicorn":
        args = [os.path.join(BIN_DIR, "gunicorn"), "--workers", str(workers), "--bind", "127.0.0.1:0", "--preload", "--graceful-timeout", "5"]
        args += (extra_args or []) + [target]
        p = Process(args, log, env=env, cwd=APPS)
        base = p.wait_for_line(r"Listening at: (http://\S+)", "gunicorn's address").group(1)
        eventually(lambda: sum("Booting worker" in l for l in list(p.lines)) >= workers, timeout=START_DEADLINE, what="%d workers" % workers)
    else:
        args = [os.path.join(BIN_DIR, "uvicorn"), "--host", "127.0.0.1", "--port", "0", "--no-access-log"] + (extra_args or []) + [target]
        p = Process(args, log, env=env, cwd=APPS)
        base = p.wait_for_line(r"Uvicorn running on (http://\S+)", "uvicorn's address").group(1)
    app = App(p, base, service)
    eventually(lambda: app.get("/healthz")[0] == 200, timeout=START_DEADLINE, what="the app to answer")
    return app


def running(*args, **kwargs):
    """A module fixture's body: starts an app (the arguments of :func:`start_app`), yields
    it, and stops it once the module's tests are done."""
    app = start_app(*args, **kwargs)
    yield app
    app.stop()


def parallel(fn, args, threads: int = 4) -> list:
    """Runs ``fn(arg)`` for every arg on ``threads`` threads; returns the results in order."""
    results: list = [None] * len(args)
    errors: list = []
    it = iter(enumerate(args))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                try:
                    i, a = next(it)
                except StopIteration:
                    return
            try:
                results[i] = fn(a)
            except Exception as e:  # reported below, after every thread is done
                errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_cpu_ms(row: dict, ms: float, what: str) -> None:
    """The median CPU per request is within ±10% of ``ms``."""
    p50 = row["cpu_ns"]["p50"] / 1e6
    print("%s: median CPU %.2f ms per request (expected %.1f ms), mean %.2f ms, p90 %.2f ms" % (what, p50, ms, row["cpu_ns"]["mean"] / 1e6, row["cpu_ns"]["p90"] / 1e6))
    assert abs(p50 - ms) <= 0.1 * ms, "%s: median CPU %.2f ms per request, expected %.1f ms ±10%% (row: %s)" % (what, p50, ms, row)
