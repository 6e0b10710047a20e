//! The cost of profiling one busy process (`--profile-pid`): the C program of the unwinding
//! tests (`tests/fixtures/chain.c`, `gcc -O2 -fomit-frame-pointer`, one thread spinning in
//! main → outer_fn → middle_fn → inner_hot_fn) sampled at 99 Hz by a [`ProcessSampler`] driven
//! as the sidecar's profiler thread drives it: a read of the rings every 100 ms (unwinding
//! and symbolising new addresses), the stacks taken every 10 s.
//!
//! Reported per mode (16 KiB stack copies unwound from the unwind tables, and the kernel's
//! frame-pointer callchain alone): this thread's CPU as a share of one core over the
//! window, CPU per sample, the samples unwound to their root and truncated, and the bytes of
//! unwind tables held (the per-process cache). The first read of each mode pays for reading
//! the modules' unwind tables and the first symbolisation (cold); the figures cover the whole
//! window, so with the default 30 s they are mostly warm.
//!
//! `cargo bench -p profwatch-sidecar --bench profiler`; environment: `WINDOW_MS` (30000).
//! Needs gcc and perf sampling (root or `CAP_PERFMON`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use profwatch_agent::counters::thread_cpu_ns;
use profwatch_agent::sampler::process::ProcessSampler;
use profwatch_agent::sampler::EventSpec;
use profwatch_testkit::bench::env_u64;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let window = Duration::from_millis(env_u64("WINDOW_MS", 30_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("chain-c");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/chain.c");
    let built = Command::new("gcc")
        .args(["-O2", "-fomit-frame-pointer", "-g", "-o"])
        .arg(&exe)
        .arg(src)
        .status()
        .expect("run gcc");
    assert!(built.success(), "gcc failed");
    let mut child = Command::new(&exe)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the program");
    let stdout = child.stdout.take().expect("stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l == "ready");
    assert!(ready, "the program did not start");
    println!(
        "profiling one busy process (1 thread, 99 Hz), {} s per mode, reads every 100 ms",
        window.as_secs()
    );
    for (mode, stack_bytes) in [
        ("unwinding 16 KiB copies", 16 * 1024),
        ("frame pointers only", 0),
    ] {
        let spec = EventSpec {
            frequency_hz: 99,
            max_frames: 127,
            data_pages: 64,
            stack_bytes,
        };
        let mut sampler = match ProcessSampler::open(child.id(), "chain-c".into(), spec, 16) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot sample: {e}");
                break;
            }
        };
        let t0 = thread_cpu_ns();
        let started = Instant::now();
        let mut next_take = started + Duration::from_secs(10);
        let mut stacks = 0;
        while started.elapsed() < window {
            std::thread::sleep(Duration::from_millis(100));
            sampler.read();
            if Instant::now() >= next_take {
                stacks += sampler.take().len();
                next_take += Duration::from_secs(10);
            }
        }
        sampler.read();
        stacks += sampler.take().len();
        let cpu = thread_cpu_ns().saturating_sub(t0);
        let wall = started.elapsed();
        let totals = sampler.totals();
        let unwound = sampler.unwound();
        println!(
            "  {mode}: {:.3}% of one core; {:.1} µs CPU per sample ({} samples, {} lost); \
             unwound to the root {}, truncated {}; unwind tables held {:.1} KiB; {} distinct stacks shipped",
            100.0 * cpu as f64 / wall.as_nanos() as f64,
            cpu as f64 / 1e3 / totals.samples.max(1) as f64,
            totals.samples,
            totals.lost,
            unwound.complete,
            unwound.truncated,
            sampler.unwind_info_bytes() as f64 / 1024.0,
            stacks
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
