//! Sampler overhead: throughput of a CPU-bound service with and without the stack sampler
//! at 99 Hz. `cargo bench -p profwatch-agent --bench sampler`.
//!
//! Two worker threads run measured requests (an SDK scope around ~200 µs of arithmetic) for
//! a fixed time per round; rounds alternate sampler off / on. Throughput is requests per
//! CPU-second of the whole cost (the workers' CPU, which includes the kernel's sampling
//! interrupts, plus the sampler thread's CPU: ring reads, symbolisation, aggregation), so that
//! other load on a shared machine does not skew it the way wall-clock throughput would. The
//! sampler ships every second here (ten times the default) to include symbolisation.
//!
//! Environment: `ROUNDS` (pairs, default 6), `ROUND_MS` (default 5000).

use std::hint::black_box;
use std::time::{Duration, Instant};

use profwatch_agent::counters::thread_cpu_ns;
use profwatch_agent::sampler::DiscardSink;
use profwatch_agent::{Agent, Config, ExportTarget, Sampler, SamplerConfig};

const WORKERS: usize = 2;

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

/// CPU nanoseconds of this process's threads named `name` (from schedstat).
fn thread_cpu_by_name(name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

struct Round {
    requests: u64,
    cpu_ns: u64,
    worker_cpu_ns: u64,
    wall: Duration,
}

fn round(agent: &Agent, rounds: u64, length: Duration, sampler: Option<&Sampler>) -> Round {
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
                        black_box(work(black_box(rounds)));
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
    let wall = started.elapsed();
    let sampler_cpu = if sampler.is_some() {
        thread_cpu_by_name("profwatch-sampl")
    } else {
        0
    };
    Round {
        requests: results.iter().map(|r| r.0).sum(),
        cpu_ns: results.iter().map(|r| r.1).sum::<u64>() + sampler_cpu,
        worker_cpu_ns: results.iter().map(|r| r.1).sum(),
        wall,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

    let (mut off, mut on, mut off_wall, mut on_wall) = (vec![], vec![], vec![], vec![]);
    let mut samples = 0;
    let (mut sampler_cpu, mut worker_cpu) = (0u64, 0u64);
    for _ in 0..pairs {
        let r = round(&agent, rounds, length, None);
        off.push(r.requests as f64 / (r.cpu_ns as f64 / 1e9));
        off_wall.push(r.requests as f64 / r.wall.as_secs_f64());

        let sampler = match Sampler::with_sink(&config, sampler_config.clone(), DiscardSink) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("sampler unavailable, nothing to compare: {e}");
                return;
            }
        };
        let r = round(&agent, rounds, length, Some(&sampler));
        sampler_cpu += r.cpu_ns - r.worker_cpu_ns;
        worker_cpu += r.worker_cpu_ns;
        let flush_started = Instant::now();
        let _ = sampler.flush();
        if std::env::var_os("SAMPLER_STATS").is_some() {
            eprintln!("flush took {:?}", flush_started.elapsed());
        }
        let stats = sampler.stats();
        samples += stats.attributed + stats.unattributed;
        if std::env::var_os("SAMPLER_STATS").is_some() {
            eprintln!("{stats:?}");
        }
        sampler.stop();
        on.push(r.requests as f64 / (r.cpu_ns as f64 / 1e9));
        on_wall.push(r.requests as f64 / r.wall.as_secs_f64());
    }
    // The request path's own cost: empty requests, CPU per request with the sampler off/on.
    let (mut empty_off, mut empty_on) = (vec![], vec![]);
    for _ in 0..pairs.min(3) {
        let r = round(&agent, 0, length / 2, None);
        empty_off.push(r.worker_cpu_ns as f64 / r.requests.max(1) as f64);
        let Ok(sampler) = Sampler::with_sink(&config, sampler_config.clone(), DiscardSink) else {
            return;
        };
        let r = round(&agent, 0, length / 2, Some(&sampler));
        sampler.stop();
        empty_on.push(r.worker_cpu_ns as f64 / r.requests.max(1) as f64);
    }
    let (off_m, on_m) = (median(off.clone()), median(on.clone()));
    let (off_w, on_w) = (median(off_wall), median(on_wall));
    println!(
        "sampler overhead, {WORKERS} workers, ~200 µs requests, 99 Hz, {pairs} pairs of {} ms rounds",
        length.as_millis()
    );
    println!(
        "  per CPU-second: off {off_m:.0} req/s, on {on_m:.0} req/s, loss {:.2}%",
        100.0 * (1.0 - on_m / off_m)
    );
    println!(
        "  per wall-second: off {off_w:.0} req/s, on {on_w:.0} req/s, loss {:.2}%",
        100.0 * (1.0 - on_w / off_w)
    );
    println!("  samples taken with the sampler on: {samples}");
    println!(
        "  sampler thread CPU: {:.1} ms for {:.1} s of worker CPU ({:.3}%)",
        sampler_cpu as f64 / 1e6,
        worker_cpu as f64 / 1e9,
        100.0 * sampler_cpu as f64 / worker_cpu.max(1) as f64
    );
    println!(
        "  empty request (scope + enqueue), CPU per request: off {:.0} ns, on {:.0} ns",
        median(empty_off),
        median(empty_on)
    );
    println!("  rounds off: {off:.0?}");
    println!("  rounds on:  {on:.0?}");
}
