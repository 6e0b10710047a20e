"""profwatch's overhead on a Flask view and a Django view, with and without the SDK, in the
same run, alternating (the machine may be shared: alternation spreads its noise evenly).

    python bench/bench.py                       # both modes, both frameworks
    python bench/bench.py --mode http --rounds 10 --seconds 4

With profwatch on, every request sends an event and the sampler runs at 99 Hz, to a sink that
reads the sidecar socket and discards (``--sidecar unix:///path`` to use a real sidecar).

- ``inproc``: the WSGI app called in a loop in a fresh interpreter, small blocks of requests
  alternating between the bare and the instrumented app. Reports the request path's cost (the
  calling thread's CPU time per request: median over pairs of blocks) and the background
  threads' cost (the exporter and the sampler: process CPU minus the calling thread's).
- ``http``: gunicorn servers (one sync worker each) for the bare app and each instrumented
  variant (events only (``profile_hz=0``); events and 99 Hz samples, the main thread sampled
  from SIGPROF; the same with the sampler thread instead), ``--processes`` of each (two
  processes of one program differ in speed by a few percent on their own), loaded in turn by a
  client in this process (keep-alive is not supported by gunicorn's sync worker, so one
  connection per request). Reports requests per second and requests per CPU-second of the
  worker processes, all their threads (from /proc/PID/task/*/schedstat, which the other load
  on a shared machine skews less than wall time), pooled over each variant's processes, and
  the bare processes' spread (the noise floor).

- ``cachegrind`` (needs valgrind; slow): the worker of a bare server, of one with events and
  of one with events and the sampler runs under cachegrind for ``--requests`` and 3 times as
  many requests; the difference gives instructions, simulated cache misses and estimated
  cycles per request, which the machine's noise does not move (see ``cachegrind()``).

Loss is ``1 - instrumented / bare``: pooled over the whole run, and for each round (every
server once, in an order that rotates) with the median and spread over rounds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
#: The SDK measured is the one in this tree (agent/python), not whatever copy is installed.
SDK = os.path.dirname(HERE)


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


def view_rounds(ms: float) -> int:
    """Rounds of ``work.work`` that take ``ms`` milliseconds of CPU here (the fastest of a few
    timings, in this process, before any server starts)."""
    if ms <= 0:
        return 0
    sys.path.insert(0, HERE)
    from work import work

    n = 20000
    best = min(_cpu_of(work, n) for _ in range(7))
    return max(1, int(n * ms * 1e6 / best))


def _cpu_of(f, n: int) -> int:
    t0 = time.thread_time_ns()
    f(n)
    return max(time.thread_time_ns() - t0, 1)


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
    pairs, deltas = [], []
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
        deltas.append((per["pw"] - per["bare"]) / block / 1e3)
    elapsed_cpu = time.process_time_ns() - p0
    background = elapsed_cpu - (time.thread_time_ns() - t0)
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
        "request_path_us": statistics.median(deltas),
        "background_us": background / n / 1e3,
        "background_share": background / elapsed_cpu,
        "loss_median": med, "loss_min": lo, "loss_max": hi,
        "events_sent": stats["events_sent"], "events_dropped": sum(stats["events_dropped"].values()),
        "events_dropped_by_reason": {k: v for k, v in stats["events_dropped"].items() if v},
        "samples": stats["samples"],
    }


# ---- http ---------------------------------------------------------------------------------


class Server:
    """One gunicorn server (one sync worker) of ``framework``; ``variant`` "bare" is the app
    without profwatch. ``wrap`` goes before gunicorn on its command line (valgrind) and
    ``extra`` after its options."""

    def __init__(self, framework: str, variant: str, k: int, hz: int, signal_on: bool, env: dict, log_dir: str,
                 layout: bool = False, wrap: tuple = (), extra: tuple = (), start_timeout: float = 120) -> None:
        target = "apps:flask_app" if framework == "flask" else "apps:django_app"
        env = dict(
            env,
            BENCH_PROFWATCH="0" if variant == "bare" else "1",
            PROFWATCH_PROFILE_HZ=str(hz),
            PROFWATCH_PROFILE_SIGNAL="1" if signal_on else "0",
        )
        if layout:
            # The k-th server of every variant gets the k-th layout: a padded environment (it
            # sits above the stack, so the stack moves) and padded heap (apps.py).
            env.update(BENCH_LAYOUT=str(k), BENCH_ENV_PAD="x" * random.Random(k).randrange(0, 4096))
        self.log = open(os.path.join(log_dir, "%s-%s-%d.log" % (framework, variant.replace(" ", "-"), k)), "w+")
        gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
        self.proc = subprocess.Popen(
            [*wrap, gunicorn, "--workers", "1", "--bind", "127.0.0.1:0", "--backlog", "256", *extra, target],
            cwd=HERE, env=env, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL,
        )
        text = self._wait(r"Booting worker with pid: (\d+)", start_timeout)
        self.worker = int(re.search(r"Booting worker with pid: (\d+)", text).group(1))
        self.port = int(re.search(r"Listening at: http://127.0.0.1:(\d+)", text).group(1))
        self.path = "/hello/%d" + ("/" if framework == "django" else "")

    def _wait(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
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

    def stop(self, timeout: float = 30) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=timeout)


def get(port: int, path: str, timeout: float | None = None) -> None:
    """One request (a new connection: gunicorn's sync worker has no keep-alive); raises unless
    it is answered 200."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(("GET " + path + " HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError("unexpected answer: %r" % data[:200])


def load(port: str, path: str, seconds: float, clients: int) -> int:
    """Requests completed against 127.0.0.1:port in ``seconds`` by ``clients`` threads."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(k):
        i = 0
        while time.monotonic() < stop:
            get(port, path % i)
            done[k] += 1
            i += 1

    ts = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(done)


#: The http mode's variants: (name, profile_hz or None for the bare app, SIGPROF on). The
#: sync worker serves on its main thread, so the default samples it from SIGPROF; the
#: "thread" variant has the sampler thread do it (``profile_signal=0``), as for threaded servers.
def _variants(hz: int, only: str = ""):
    every = [("bare", None, False), ("events", 0, False)]
    if hz:
        every += [("events+%dHz" % hz, hz, True), ("events+%dHz thread" % hz, hz, False)]
    if not only:
        return every
    picked = [v for v in every if v[0] == "bare" or v[0].replace(" ", "-") in only.split(",")]
    if len(picked) < 2:
        raise SystemExit("--variants: pick from %s" % ", ".join(v[0].replace(" ", "-") for v in every[1:]))
    return picked


def http(framework: str, rounds: int, seconds: float, clients: int, hz: int, processes: int, only: str, env: dict, log_dir: str, layouts: bool = False) -> dict:
    """Each variant runs in ``processes`` servers: two processes of one program differ in speed
    by up to ~5% on their own on this VM, as much as the effect measured (where address-space
    randomisation put their code and heap: with it off, ~1.5%, but then every process of a
    variant has the same layout, and its luck is the variant's bias), so each variant's figure
    pools several, and the bare servers' spread is reported as the noise floor (A/A)."""
    variants = _variants(hz, only)
    names = [name for name, _, _ in variants]
    servers = {
        (name, k): Server(framework, name, k, h or 0, sig, env, log_dir, layouts) for k in range(processes) for name, h, sig in variants
    }
    keys = [(name, k) for k in range(processes) for name in names]  # the variants alternate
    try:
        for s in servers.values():
            load(s.port, s.path, 1.0, clients)  # warm up
        per_round = []  # {name: (req/s, req per CPU-s)}, pooled over the variant's servers
        by_server = {key: [0, 0.0] for key in keys}
        for r in range(rounds):
            got = {name: [0, 0.0] for name in names}
            shift = r % len(keys)
            for key in keys[shift:] + keys[:shift]:  # rotate who goes first
                s = servers[key]
                c0 = s.cpu_s()
                n = load(s.port, s.path, seconds, clients)
                cpu = s.cpu_s() - c0
                for acc in (got[key[0]], by_server[key]):
                    acc[0] += n
                    acc[1] += cpu
            per_round.append({name: (n / (seconds * processes), n / cpu if cpu else float("nan")) for name, (n, cpu) in got.items()})
    finally:
        for s in servers.values():
            s.stop()
    out = {"framework": framework, "mode": "http", "processes": processes, "variants": {}}
    for name in names:
        n = sum(by_server[(name, k)][0] for k in range(processes))
        cpu = sum(by_server[(name, k)][1] for k in range(processes))
        each = [by_server[(name, k)][1] / by_server[(name, k)][0] * 1e6 for k in range(processes)]
        row = {"rps": statistics.median(p[name][0] for p in per_round), "cpu_us": cpu / n * 1e6, "cpu_us_by_process": each}
        out["variants"][name] = row
    bare_us = out["variants"]["bare"]["cpu_us"]
    for name in names[1:]:
        row = out["variants"][name]
        row.update(
            wall_loss=_summary([(p["bare"][0], p[name][0]) for p in per_round]),
            cpu_loss=_summary([(p["bare"][1], p[name][1]) for p in per_round]),
            pooled_loss=1 - bare_us / row["cpu_us"],
            delta_us=row["cpu_us"] - bare_us,
        )
    each = out["variants"]["bare"]["cpu_us_by_process"]
    out["aa_spread"] = max(each) / min(each) - 1
    return out


# ---- cachegrind ---------------------------------------------------------------------------

#: cachegrind's counts: instructions, then reads and writes with their L1 and last-level misses.
_CG_EVENTS = ("Ir", "I1mr", "ILmr", "Dr", "D1mr", "DLmr", "Dw", "D1mw", "DLmw")


def _l1_misses(c: dict) -> float:
    return c["I1mr"] + c["D1mr"] + c["D1mw"]


def _ll_misses(c: dict) -> float:
    return c["ILmr"] + c["DLmr"] + c["DLmw"]


def _cycles(c: dict) -> float:
    """cachegrind's own rough estimate of cycles: an L1 miss ~10, a last-level miss ~100."""
    return c["Ir"] + 10 * _l1_misses(c) + 100 * _ll_misses(c)


def _cachegrind_worker(framework: str, pw: bool, hz: int, requests: int, env: dict, log_dir: str) -> dict:
    """One gunicorn server whose worker runs under cachegrind and exits after ``requests``
    requests (``--max-requests``). Returns the worker's counts (all its threads, user space),
    the samples its SDK took and the cyclic GC's passes by generation, at its exit."""
    tag = "%s-%s-%d-%d" % (framework, "pw" if pw else "bare", hz, requests)
    stats_file = os.path.join(log_dir, tag + ".%p.json")
    out = os.path.join(log_dir, tag + ".%p.cg")
    server = Server(
        framework, ("events+%dHz" % hz if hz else "events") if pw else "bare", requests, hz, True, dict(env, BENCH_STATS_FILE=stats_file), log_dir,
        wrap=("valgrind", "--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=" + out, "--log-file=" + out + ".log"),
        extra=("--timeout", "3600", "--max-requests", str(requests)), start_timeout=600,
    )
    try:
        for i in range(requests):
            get(server.port, server.path % i, timeout=600)
        counts, stats_file = out.replace("%p", str(server.worker)), stats_file.replace("%p", str(server.worker))
        deadline = time.monotonic() + 3600
        while not os.path.exists(stats_file) or not _complete(counts):
            if time.monotonic() > deadline:
                raise RuntimeError("the worker under cachegrind did not exit after %d requests" % requests)
            time.sleep(0.2)
    finally:
        server.stop(timeout=600)
    with open(counts) as f:
        summary = next(line for line in f if line.startswith("summary:")).split()[1:]
    with open(stats_file) as f:
        stats = json.load(f)
    return {"counts": dict(zip(_CG_EVENTS, map(int, summary))), "samples": stats.get("samples", 0), "gc": stats["gc_collections"]}


def _complete(path: str) -> bool:
    try:
        with open(path) as f:
            return any(line.startswith("summary:") for line in f)
    except OSError:
        return False


def cachegrind(framework: str, requests: int, hz: int, env: dict, log_dir: str) -> dict:
    """What the SDK adds to a gunicorn worker in counts that the machine's noise does not move:
    instructions, and cachegrind's simulated cache misses and estimated cycles, per request.

    Each variant runs twice, for ``requests`` and ``3 * requests`` requests; the difference of
    the two, over ``2 * requests``, is the per-request cost with startup and exit cancelled.
    The sampler's cost is per sample, not per request, and under valgrind a request takes
    ~100 times the CPU, so it gets ~100 times the samples: the bench takes the cost of a sample
    from the run (instructions with the sampler minus without, over the samples taken) and
    counts it at the native rate, ``hz`` times the native CPU of a request, measured on a bare
    server outside valgrind. User space only: the kernel's share (two clock reads a request,
    the exporter's batched writes, SIGPROF's delivery) is not counted."""
    if not shutil.which("valgrind"):
        raise SystemExit("--mode cachegrind needs valgrind (Debian: apt-get install valgrind)")
    native = Server(framework, "bare", 0, 0, False, env, log_dir)
    try:
        load(native.port, native.path, 1.0, 1)
        c0, n = native.cpu_s(), load(native.port, native.path, 3.0, 1)
        native_s = (native.cpu_s() - c0) / n
    finally:
        native.stop()
    variants = [("bare", False, 0), ("events", True, 0)] + ([("events+sampler", True, hz)] if hz else [])
    runs = [(pw, h, k * requests) for _, pw, h in variants for k in (1, 3)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        got = dict(zip(runs, pool.map(lambda r: _cachegrind_worker(framework, r[0], r[1], r[2], env, log_dir), runs)))

    def per_request(pw, h):
        short, long = got[(pw, h, requests)], got[(pw, h, 3 * requests)]
        return {e: (long["counts"][e] - short["counts"][e]) / (2 * requests) for e in _CG_EVENTS}

    bare, events = per_request(False, 0), per_request(True, 0)
    # The cyclic GC's passes during the measured requests: a full pass over the heap costs as
    # much as many requests, so one variant running one more in this window reads dearer by
    # tens of thousands of instructions a request, whatever the SDK costs.
    gc_passes = {name: [b - a for a, b in zip(got[(pw, h, requests)]["gc"], got[(pw, h, 3 * requests)]["gc"])]
                 for name, pw, h in variants}
    out = {"framework": framework, "mode": "cachegrind", "requests": 2 * requests, "native_request_us": native_s * 1e6,
           "bare": bare, "events": events, "bare_cycles": _cycles(bare), "events_cycles": _cycles(events), "gc_passes": gc_passes}
    if hz:
        sampled = per_request(True, hz)
        samples = got[(True, hz, 3 * requests)]["samples"] - got[(True, hz, requests)]["samples"]
        out["samples_under_valgrind"] = samples
        if samples > 0:
            per_sample = {e: (sampled[e] - events[e]) * 2 * requests / samples for e in _CG_EVENTS}
            native_samples = hz * native_s
            out["sample_cycles"] = _cycles(per_sample)
            out["sample_ir"] = per_sample["Ir"]
            out["native_samples_per_request"] = native_samples
            out["total_ir"] = events["Ir"] + per_sample["Ir"] * native_samples
            out["total_cycles"] = out["events_cycles"] + out["sample_cycles"] * native_samples
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["inproc", "http", "both", "cachegrind"], default="both", help="both: inproc and http; cachegrind is separate (slow, needs valgrind)")
    p.add_argument("--requests", type=int, default=100, help="cachegrind: requests of the short run (the long one serves 3 times as many)")
    p.add_argument("--framework", choices=["flask", "django", "both"], default="both")
    p.add_argument("--rounds", type=int, default=10, help="http: rounds (each loads every server once)")
    p.add_argument("--pairs", type=int, default=200, help="inproc: pairs of alternating blocks")
    p.add_argument("--block", type=int, default=200, help="inproc: requests per block")
    p.add_argument("--seconds", type=float, default=1.0, help="http: seconds per server per round")
    p.add_argument("--clients", type=int, default=4, help="http: concurrent client threads")
    p.add_argument("--variants", default="", help="http: the instrumented variants to run besides bare, comma-separated (default all: events, events+99Hz, events+99Hz-thread)")
    p.add_argument("--processes", type=int, default=4, help="http: servers per variant (their speeds differ on their own)")
    p.add_argument("--layouts", action="store_true", help="http: give each server its own memory layout (padded heap and environment; the k-th server of every variant the same)")
    p.add_argument("--sidecar", help="a running sidecar (unix:// or udp://); default: a discarding sink")
    p.add_argument("--view-ms", type=float, default=0.0, help="CPU milliseconds each view spends (default 0: the worst case)")
    p.add_argument("--hz", type=int, default=99, help="profile_hz of the instrumented variant (0: no sampler)")
    p.add_argument("--json", action="store_true", help="print one JSON object per result")
    args = p.parse_args()
    _variants(args.hz, args.variants)  # a bad --variants fails now, not after the inproc runs
    tmp = tempfile.mkdtemp(prefix="profwatch-bench-")
    sidecar = args.sidecar
    if sidecar is None:
        sock = os.path.join(tmp, "sink.sock")
        sink(sock)
        sidecar = "unix://" + sock
    _env(sidecar, args.hz)
    os.environ["PYTHONPATH"] = os.pathsep.join([SDK] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    os.environ["BENCH_VIEW_ITERS"] = str(view_rounds(args.view_ms))
    frameworks = ["flask", "django"] if args.framework == "both" else [args.framework]
    load_avg = os.getloadavg()
    print("# %d CPUs, load average %.1f %.1f %.1f at start; sidecar %s; profile_hz %d; view %.1f ms" % ((os.cpu_count() or 0,) + load_avg + (sidecar, args.hz, args.view_ms)))
    results = []
    for fw in frameworks:
        if args.mode in ("inproc", "both"):
            # A fresh interpreter per framework, so that one's threads do not run during the other's.
            out = subprocess.run(
                [sys.executable, __file__, "--inproc-worker", fw, str(args.pairs), str(args.block)],
                env=dict(os.environ), check=True, capture_output=True, text=True,
            ).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
        if args.mode in ("http", "both"):
            results.append(http(fw, args.rounds, args.seconds, args.clients, args.hz, args.processes, args.variants, dict(os.environ), tmp, args.layouts))
        if args.mode == "cachegrind":
            results.append(cachegrind(fw, args.requests, args.hz, dict(os.environ), tmp))
    print("# load average %.1f %.1f %.1f at end" % os.getloadavg())
    for r in results:
        if args.json:
            print(json.dumps(r))
        elif r["mode"] == "cachegrind":
            _print_cachegrind(r)
        elif r["mode"] == "inproc":
            print(
                "%-6s inproc  bare %6.1f µs/req  profwatch %6.1f µs/req  request path +%.1f µs (median of pairs)  "
                "loss %.1f%% (pairs %.1f%%..%.1f%%)  profwatch threads +%.1f µs/req (%.1f%% of the CPU)  "
                "events sent %d dropped %d %s  samples %d"
                % (r["framework"], r["bare_us"], r["pw_us"], r["request_path_us"], 100 * r["loss_median"], 100 * r["loss_min"],
                   100 * r["loss_max"], r["background_us"], 100 * r["background_share"], r["events_sent"], r["events_dropped"], r["events_dropped_by_reason"] or "", r["samples"])
            )
        else:
            for name, v in r["variants"].items():
                procs = " ".join("%.0f" % x for x in v["cpu_us_by_process"])
                if name == "bare":
                    print(
                        "%-6s http    %-18s %6.0f req/s  worker CPU %6.1f µs/req (processes: %s; A/A spread %.1f%%)"
                        % (r["framework"], name, v["rps"], v["cpu_us"], procs, 100 * r["aa_spread"])
                    )
                    continue
                print(
                    "%-6s http    %-18s %6.0f req/s  worker CPU %6.1f µs/req (+%.1f µs; processes: %s)  loss per CPU-s %.1f%% "
                    "pooled, %.1f%% median of rounds (%.1f%%..%.1f%%), per wall-s %.1f%% (%.1f%%..%.1f%%)"
                    % ((r["framework"], name, v["rps"], v["cpu_us"], v["delta_us"], procs, 100 * v["pooled_loss"])
                       + tuple(100 * x for x in v["cpu_loss"] + v["wall_loss"]))
                )


def _print_cachegrind(r: dict) -> None:
    b, e = r["bare"], r["events"]
    print(
        "%-6s cachegrind  bare %.0f instructions/req (est. %.0f cycles), native %.0f µs/req; events: %+.0f instructions "
        "(%+.2f%%), L1 misses %+.0f, LL misses %+.0f, est. cycles %+.2f%%"
        % (r["framework"], b["Ir"], r["bare_cycles"], r["native_request_us"], e["Ir"] - b["Ir"], 100 * (e["Ir"] / b["Ir"] - 1),
           _l1_misses(e) - _l1_misses(b), _ll_misses(e) - _ll_misses(b),
           100 * (r["events_cycles"] / r["bare_cycles"] - 1))
    )
    print("%-6s cachegrind  GC passes by generation in the measured requests: %s" % (r["framework"], ", ".join("%s %s" % kv for kv in r["gc_passes"].items())))
    if "total_ir" in r:
        print(
            "%-6s cachegrind  sampler: %.0f instructions (est. %.0f cycles) a sample (%d samples under valgrind), %.3f samples/req "
            "natively; events + sampler: %+.2f%% instructions, %+.2f%% est. cycles"
            % (r["framework"], r["sample_ir"], r["sample_cycles"], r["samples_under_valgrind"], r["native_samples_per_request"],
               100 * (r["total_ir"] / b["Ir"] - 1), 100 * (r["total_cycles"] / r["bare_cycles"] - 1))
        )
    elif "samples_under_valgrind" in r:
        print("%-6s cachegrind  sampler: no samples taken under valgrind" % r["framework"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--inproc-worker":
        print(json.dumps(inproc(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
