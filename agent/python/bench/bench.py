"""profwatch's overhead on a Flask view and a Django view, with and without the SDK, in the
same run, alternating (the machine may be shared: alternation spreads its noise evenly).

    python bench/bench.py                       # both modes, both frameworks
    python bench/bench.py --mode http --rounds 10 --seconds 4

With profwatch on, every request sends an event and the sampler runs at 99 Hz, to a sink that
reads the sidecar socket and discards (``--sidecar unix:///path`` to use a real sidecar).

- ``inproc``: the WSGI app called in a loop in this process, blocks of requests alternating
  between the bare and the instrumented app. Reports the request path's cost (CPU time of the
  calling thread per request) and the background threads' cost (the exporter and the sampler:
  process CPU minus the calling thread's, per instrumented request).
- ``http``: two gunicorn servers (one sync worker each; one bare, one instrumented) loaded in
  turn by a client in this process (keep-alive is not supported by gunicorn's sync worker, so
  one connection per request). Reports requests per second and requests per CPU-second of
  the worker process, all its threads (from /proc/PID/task/*/schedstat, which the other load
  on a shared machine skews less than wall time).

Loss is ``1 - instrumented / bare`` per pair of neighbouring rounds; the table gives the
median and the spread over pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def sink(path: str) -> threading.Thread:
    """A stand-in sidecar: accepts connections on ``path`` and discards what they send."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)

    def serve(conn):
        while conn.recv(1 << 20):
            pass

    def accept():
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    return t


def _env(sidecar: str, hz: int) -> None:
    os.environ.update(PROFWATCH_SERVICE="bench", PROFWATCH_BUILD="1", PROFWATCH_SIDECAR=sidecar, PROFWATCH_PROFILE_HZ=str(hz))


def _summary(pairs):
    losses = [1 - on / off for off, on in pairs]
    return statistics.median(losses), min(losses), max(losses)


# ---- inproc -------------------------------------------------------------------------------


def inproc(framework: str, rounds: int, block: int) -> dict:
    sys.path.insert(0, HERE)
    import apps
    import profwatch

    bare, pw = (apps.flask_bare, apps.flask_pw) if framework == "flask" else (apps.django_bare, apps.django_pw)
    path = "/hello/%d" + ("/" if framework == "django" else "")
    environ = {
        "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "QUERY_STRING": "", "SERVER_NAME": "bench", "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "bench", "wsgi.url_scheme": "http", "wsgi.input": None,
        "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    import io

    def start_response(status, headers, exc_info=None):
        pass

    def run(app, n):
        for i in range(n):
            env = dict(environ)
            env["PATH_INFO"] = path % i
            env["wsgi.input"] = io.BytesIO()
            result = app(env, start_response)
            for _ in result:
                pass
            close = getattr(result, "close", None)
            if close:
                close()

    run(bare, 500)
    run(pw, 500)  # starts profwatch's threads
    cpu = {"bare": 0, "pw": 0}
    pairs = []
    p0 = time.process_time_ns()
    t0 = time.thread_time_ns()
    for r in range(rounds):
        per = {}
        for name, app in (("bare", bare), ("pw", pw)) if r % 2 == 0 else (("pw", pw), ("bare", bare)):
            s = time.thread_time_ns()
            run(app, block)
            per[name] = time.thread_time_ns() - s
            cpu[name] += per[name]
        pairs.append((block / per["bare"], block / per["pw"]))
    background = (time.process_time_ns() - p0) - (time.thread_time_ns() - t0)
    profwatch.flush()
    stats = profwatch.stats()
    n = rounds * block
    med, lo, hi = _summary(pairs)
    return {
        "framework": framework,
        "mode": "inproc",
        "requests_per_variant": n,
        "bare_us": cpu["bare"] / n / 1e3,
        "pw_us": cpu["pw"] / n / 1e3,
        "request_path_us": (cpu["pw"] - cpu["bare"]) / n / 1e3,
        "background_us": background / n / 1e3,
        "loss_median": med, "loss_min": lo, "loss_max": hi,
        "events_sent": stats["events_sent"], "events_dropped": sum(stats["events_dropped"].values()),
        "samples": stats["samples"],
    }


# ---- http ---------------------------------------------------------------------------------


class Server:
    def __init__(self, framework: str, instrumented: bool, env: dict, log_dir: str) -> None:
        target = "apps:flask_app" if framework == "flask" else "apps:django_app"
        env = dict(env, BENCH_PROFWATCH="1" if instrumented else "0")
        self.log = open(os.path.join(log_dir, "%s-%s.log" % (framework, "pw" if instrumented else "bare")), "w+")
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        self.proc = subprocess.Popen(
            [gunicorn, "--workers", "1", "--bind", "127.0.0.1:0", "--backlog", "256", target],
            cwd=HERE, env=env, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        text = self._wait(r"Booting worker with pid: (\d+)")
        self.worker = int(re.search(r"Booting worker with pid: (\d+)", text).group(1))
        self.port = int(re.search(r"Listening at: http://127.0.0.1:(\d+)", text).group(1))
        self.path = "/hello/%d" + ("/" if framework == "django" else "")

    def _wait(self, pattern: str) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.log.seek(0)
            text = self.log.read()
            if re.search(pattern, text) and "Listening at" in text:
                return text
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + text)
            time.sleep(0.05)
        raise RuntimeError("gunicorn did not start")

    def cpu_s(self) -> float:
        """CPU seconds of every thread of the worker, from the scheduler (nanoseconds)."""
        total = 0
        task = "/proc/%d/task" % self.worker
        for tid in os.listdir(task):
            try:
                with open("%s/%s/schedstat" % (task, tid)) as f:
                    total += int(f.read().split()[0])
            except OSError:  # a thread that just exited
                pass
        return total / 1e9

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def load(port: str, path: str, seconds: float, clients: int) -> int:
    """Requests completed against 127.0.0.1:port in ``seconds`` by ``clients`` threads."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(k):
        i = 0
        while time.monotonic() < stop:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(("GET " + path % i + " HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            if not data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("unexpected answer: %r" % data[:200])
            done[k] += 1
            i += 1

    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done)


def http(framework: str, rounds: int, seconds: float, clients: int, env: dict, log_dir: str) -> dict:
    servers = {"bare": Server(framework, False, env, log_dir), "pw": Server(framework, True, env, log_dir)}
    try:
        for s in servers.values():
            load(s.port, s.path, 1.0, clients)  # warm up
        wall_pairs, cpu_pairs = [], []
        total = {"bare": [0, 0.0], "pw": [0, 0.0]}
        for r in range(rounds):
            per = {}
            for name in ("bare", "pw") if r % 2 == 0 else ("pw", "bare"):
                s = servers[name]
                c0 = s.cpu_s()
                n = load(s.port, s.path, seconds, clients)
                cpu = s.cpu_s() - c0
                per[name] = (n / seconds, n / cpu if cpu else float("nan"))
                total[name][0] += n
                total[name][1] += cpu
            wall_pairs.append((per["bare"][0], per["pw"][0]))
            cpu_pairs.append((per["bare"][1], per["pw"][1]))
    finally:
        for s in servers.values():
            s.stop()
    wm, wlo, whi = _summary(wall_pairs)
    cm, clo, chi = _summary(cpu_pairs)
    us = lambda name: total[name][1] / total[name][0] * 1e6  # noqa: E731
    return {
        "framework": framework,
        "mode": "http",
        "bare_rps": statistics.median(p[0] for p in wall_pairs),
        "pw_rps": statistics.median(p[1] for p in wall_pairs),
        "wall_loss_median": wm, "wall_loss_min": wlo, "wall_loss_max": whi,
        "cpu_loss_median": cm, "cpu_loss_min": clo, "cpu_loss_max": chi,
        "bare_us": us("bare"), "pw_us": us("pw"), "delta_us": us("pw") - us("bare"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["inproc", "http", "both"], default="both")
    p.add_argument("--framework", choices=["flask", "django", "both"], default="both")
    p.add_argument("--rounds", type=int, default=10, help="rounds per variant")
    p.add_argument("--block", type=int, default=3000, help="inproc: requests per round")
    p.add_argument("--seconds", type=float, default=3.0, help="http: seconds per round")
    p.add_argument("--clients", type=int, default=4, help="http: concurrent client threads")
    p.add_argument("--sidecar", help="a running sidecar (unix:// or udp://); default: a discarding sink")
    p.add_argument("--hz", type=int, default=99, help="profile_hz of the instrumented variant (0: no sampler)")
    p.add_argument("--json", action="store_true", help="print one JSON object per result")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="profwatch-bench-")
    sidecar = args.sidecar
    if sidecar is None:
        sock = os.path.join(tmp, "sink.sock")
        sink(sock)
        sidecar = "unix://" + sock
    _env(sidecar, args.hz)
    frameworks = ["flask", "django"] if args.framework == "both" else [args.framework]
    load_avg = os.getloadavg()
    print("# %d CPUs, load average %.1f %.1f %.1f at start; sidecar %s; profile_hz %d" % ((os.cpu_count() or 0,) + load_avg + (sidecar, args.hz)))
    results = []
    for fw in frameworks:
        if args.mode in ("inproc", "both"):
            # A fresh interpreter per framework, so that one's threads do not run during the other's.
            out = subprocess.run(
                [sys.executable, __file__, "--inproc-worker", fw, str(args.rounds), str(args.block)],
                env=dict(os.environ), check=True, capture_output=True, text=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        if args.mode in ("http", "both"):
            results.append(http(fw, args.rounds, args.seconds, args.clients, dict(os.environ), tmp))
    print("# load average %.1f %.1f %.1f at end" % os.getloadavg())
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif r["mode"] == "inproc":
            print(
                "%-6s inproc  bare %6.1f µs/req  profwatch %6.1f µs/req  request path +%.1f µs  threads +%.1f µs  "
                "loss %.1f%% (pairs %.1f%%..%.1f%%)  events sent %d dropped %d  samples %d"
                % (r["framework"], r["bare_us"], r["pw_us"], r["request_path_us"], r["background_us"], 100 * r["loss_median"],
                   100 * r["loss_min"], 100 * r["loss_max"], r["events_sent"], r["events_dropped"], r["samples"])
            )
        else:
            print(
                "%-6s http    bare %6.0f req/s  profwatch %6.0f req/s  wall loss %.1f%% (pairs %.1f%%..%.1f%%)  "
                "worker CPU %.1f → %.1f µs/req (+%.1f µs), per-CPU-s loss %.1f%% (pairs %.1f%%..%.1f%%)"
                % (r["framework"], r["bare_rps"], r["pw_rps"], 100 * r["wall_loss_median"], 100 * r["wall_loss_min"],
                   100 * r["wall_loss_max"], r["bare_us"], r["pw_us"], r["delta_us"], 100 * r["cpu_loss_median"],
                   100 * r["cpu_loss_min"], 100 * r["cpu_loss_max"])
            )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inproc-worker":
        print(json.dumps(inproc(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
