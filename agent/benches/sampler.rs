//! Sampler overhead: throughput of a CPU-bound service with and without the stack sampler
//! at 99 Hz. `cargo bench -p profwatch-agent --bench sampler`.
//!
//! Two worker threads run measured requests (an SDK scope around ~200 µs of arithmetic) for
//! a fixed time per round; rounds alternate sampler off / on. Throughput is requests per
//! CPU-second of the whole cost, so that other load on a shared machine does not skew it the
//! way wall-clock throughput would. The cost with the sampler on is the workers' CPU (which
//! includes the kernel's sampling interrupts) plus the sampler thread's CPU read **after the
//! round's final flush**: ring reads, symbolisation, aggregation, and the export itself. The
//! export goes through the real `CollectorSink` (folded text, labels in the query, one HTTP
//! POST per profile) to a fake collector on loopback that reads each request whole and
//! answers 200; the fake collector's own CPU is not counted (it stands for the server). The
//! sampler ships every second here (ten times the default), so a round pays several exports.
//! Only the sampler thread's teardown after the flush (joining it) is left out.
//!
//! Unwinding: each request's work runs [`DEPTH`] frames below the request scope, and every
//! pair also runs a round with the sampler on but `stack_bytes = 0` (the kernel's
//! frame-pointer callchain, no stack copy, no unwinding). The sampler thread's CPU per
//! sample in the two kinds of rounds, and their difference, is the cost of copying and
//! unwinding a stack, warm (every round after the first reuses nothing but the process's
//! page cache: each round starts a new sampler, so each reads the modules' unwind tables
//! again; the first samples of a round pay for that).
//!
//! Environment: `ROUNDS` (pairs, default 6), `ROUND_MS` (default 5000).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use profwatch_agent::counters::thread_cpu_ns;
use profwatch_agent::sampler::{CollectorSink, DiscardSink};
use profwatch_agent::{Agent, Config, ExportTarget, Sampler, SamplerConfig};
use profwatch_testkit::bench::{env_u64, median, thread_cpu_by_name};

const WORKERS: usize = 2;
/// Frames between the request scope and the work.
const DEPTH: u32 = 12;

#[inline(never)]
fn work(rounds: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ rounds;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

/// `work` `depth` frames down.
#[inline(never)]
fn nested(depth: u32, rounds: u64) -> u64 {
    if depth == 0 {
        return work(rounds);
    }
    black_box(nested(depth - 1, black_box(rounds))) ^ u64::from(depth)
}

/// Calibrates the loop to about `target` of CPU.
fn rounds_for(target: Duration) -> u64 {
    let mut n = 10_000;
    loop {
        let t0 = thread_cpu_ns();
        black_box(work(black_box(n)));
        let took = thread_cpu_ns().saturating_sub(t0).max(1);
        if took > 20_000_000 {
            return (n as u128 * target.as_nanos() / took as u128) as u64;
        }
        n *= 2;
    }
}

/// A stand-in for the collector on loopback: reads each request whole (head and
/// `Content-Length` body) and answers 200, counting requests and body bytes.
struct FakeCollector {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl FakeCollector {
    fn start() -> FakeCollector {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake collector");
        let addr = listener.local_addr().expect("address");
        let (requests, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (r, b) = (requests.clone(), bytes.clone());
        std::thread::Builder::new()
            .name("fake-collector".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Some(n) = answer(conn) {
                        r.fetch_add(1, Ordering::Relaxed);
                        b.fetch_add(n, Ordering::Relaxed);
                    }
                }
            })
            .expect("fake collector thread");
        FakeCollector {
            addr,
            requests,
            bytes,
        }
    }
}

/// Reads one request and answers 200; the body's length, `None` if the request broke off.
fn answer(mut conn: TcpStream) -> Option<u64> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    let (head_end, length) = loop {
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(length as u64)
}

struct Round {
    requests: u64,
    worker_cpu_ns: u64,
    wall: Duration,
}

fn round(agent: &Agent, rounds: u64, length: Duration) -> Round {
    let started = Instant::now();
    let results: Vec<(u64, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| {
                    let t0 = thread_cpu_ns();
                    let deadline = Instant::now() + length;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let _guard = agent.scope("GET /work");
                        black_box(nested(DEPTH, black_box(rounds)));
                        n += 1;
                    }
                    (n, thread_cpu_ns().saturating_sub(t0))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0)))
            .collect()
    });
    Round {
        requests: results.iter().map(|r| r.0).sum(),
        worker_cpu_ns: results.iter().map(|r| r.1).sum(),
        wall: started.elapsed(),
    }
}

/// One round with the sampler on, its CPU read after the final flush and export.
struct OnRound {
    round: Round,
    sampler_cpu_ns: u64,
    samples: u64,
    exported: u64,
    flush: Duration,
    unwound: u64,
    truncated: u64,
    unwind_info_bytes: u64,
}

fn round_on(
    agent: &Agent,
    config: &Config,
    sampler_config: &SamplerConfig,
    collector: &FakeCollector,
    rounds: u64,
    length: Duration,
) -> Option<OnRound> {
    let sink = CollectorSink::new(&format!("http://{}", collector.addr), None).expect("sink");
    let sampler = match Sampler::with_sink(config, sampler_config.clone(), sink) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sampler unavailable, nothing to compare: {e}");
            return None;
        }
    };
    let round = round(agent, rounds, length);
    let flush_started = Instant::now();
    if let Err(e) = sampler.flush() {
        eprintln!("the final flush failed: {e}");
    }
    let flush = flush_started.elapsed();
    let sampler_cpu_ns = thread_cpu_by_name("profwatch-sampl");
    let stats = sampler.stats();
    sampler.stop();
    Some(OnRound {
        round,
        sampler_cpu_ns,
        samples: stats.attributed + stats.unattributed,
        exported: stats.profiles_exported,
        flush,
        unwound: stats.unwound,
        truncated: stats.truncated,
        unwind_info_bytes: stats.unwind_info_bytes,
    })
}

/// The request path's own cost: CPU per empty request with the sampler off and on.
fn empty_requests(
    agent: &Agent,
    config: &Config,
    sampler_config: &SamplerConfig,
    pairs: u64,
    length: Duration,
) -> (f64, f64) {
    let (mut off, mut on) = (vec![], vec![]);
    for _ in 0..pairs.min(3) {
        let r = round(agent, 0, length / 2);
        off.push(r.worker_cpu_ns as f64 / r.requests.max(1) as f64);
        let Ok(sampler) = Sampler::with_sink(config, sampler_config.clone(), DiscardSink) else {
            break;
        };
        let r = round(agent, 0, length / 2);
        sampler.stop();
        on.push(r.worker_cpu_ns as f64 / r.requests.max(1) as f64);
    }
    (median(off), median(on))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let pairs = env_u64("ROUNDS", 6);
    let length = Duration::from_millis(env_u64("ROUND_MS", 5000));
    let mut config = Config::new("bench");
    config.export = ExportTarget::Discard;
    let agent = Agent::new(config.clone()).expect("agent");
    let rounds = rounds_for(Duration::from_micros(200));
    let mut sampler_config = SamplerConfig::default();
    sampler_config.export_interval = Duration::from_secs(1);
    let collector = FakeCollector::start();
    let mut fp_config = sampler_config.clone();
    fp_config.stack_bytes = 0;

    let (mut off, mut on, mut off_wall, mut on_wall) = (vec![], vec![], vec![], vec![]);
    let (mut samples, mut exported, mut flushes) = (0, 0, vec![]);
    let (mut sampler_cpu, mut worker_cpu) = (0u64, 0u64);
    let (mut per_sample, mut per_sample_fp) = (vec![], vec![]);
    let (mut unwound, mut truncated, mut info_bytes) = (0, 0, 0);
    for _ in 0..pairs {
        let r = round(&agent, rounds, length);
        off.push(r.requests as f64 / (r.worker_cpu_ns as f64 / 1e9));
        off_wall.push(r.requests as f64 / r.wall.as_secs_f64());
        let Some(o) = round_on(&agent, &config, &sampler_config, &collector, rounds, length) else {
            return;
        };
        sampler_cpu += o.sampler_cpu_ns;
        worker_cpu += o.round.worker_cpu_ns;
        samples += o.samples;
        exported += o.exported;
        flushes.push(o.flush.as_secs_f64() * 1e3);
        let cpu = (o.round.worker_cpu_ns + o.sampler_cpu_ns) as f64 / 1e9;
        on.push(o.round.requests as f64 / cpu);
        on_wall.push(o.round.requests as f64 / o.round.wall.as_secs_f64());
        per_sample.push(o.sampler_cpu_ns as f64 / o.samples.max(1) as f64);
        unwound += o.unwound;
        truncated += o.truncated;
        info_bytes = info_bytes.max(o.unwind_info_bytes);
        let Some(f) = round_on(&agent, &config, &fp_config, &collector, rounds, length) else {
            return;
        };
        per_sample_fp.push(f.sampler_cpu_ns as f64 / f.samples.max(1) as f64);
    }
    let (empty_off, empty_on) = empty_requests(&agent, &config, &sampler_config, pairs, length);
    let (off_m, on_m) = (median(off.clone()), median(on.clone()));
    let (off_w, on_w) = (median(off_wall), median(on_wall));
    println!(
        "sampler overhead, {WORKERS} workers, ~200 µs requests, 99 Hz, export every second to a fake collector on loopback, {pairs} pairs of {} ms rounds",
        length.as_millis()
    );
    println!(
        "  per CPU-second (sampler CPU read after the final flush and export): off {off_m:.0} req/s, on {on_m:.0} req/s, loss {:.2}%",
        100.0 * (1.0 - on_m / off_m)
    );
    println!(
        "  per wall-second: off {off_w:.0} req/s, on {on_w:.0} req/s, loss {:.2}%",
        100.0 * (1.0 - on_w / off_w)
    );
    println!(
        "  samples taken with the sampler on: {samples}; profiles exported: {exported} ({} POSTs, {:.1} kB, received by the fake collector)",
        collector.requests.load(Ordering::Relaxed),
        collector.bytes.load(Ordering::Relaxed) as f64 / 1e3
    );
    println!(
        "  sampler thread CPU, flush and export included: {:.1} ms for {:.1} s of worker CPU ({:.3}%); final flush wall time median {:.1} ms",
        sampler_cpu as f64 / 1e6,
        worker_cpu as f64 / 1e9,
        100.0 * sampler_cpu as f64 / worker_cpu.max(1) as f64,
        median(flushes)
    );
    let (cost, cost_fp) = (median(per_sample.clone()), median(per_sample_fp.clone()));
    println!(
        "  sampler thread CPU per sample ({DEPTH} frames below the request): unwinding a {} KiB stack copy {:.1} µs, frame-pointer callchain only {:.1} µs: unwinding costs {:.1} µs a sample",
        sampler_config.stack_bytes / 1024,
        cost / 1e3,
        cost_fp / 1e3,
        (cost - cost_fp) / 1e3
    );
    println!(
        "  unwound to the root: {unwound}, truncated: {truncated}; unwind information held: {:.1} KiB",
        info_bytes as f64 / 1024.0
    );
    println!(
        "  empty request (scope + enqueue), CPU per request: off {empty_off:.0} ns, on {empty_on:.0} ns"
    );
    println!("  rounds off: {off:.0?}");
    println!("  rounds on:  {on:.0?}");
}
