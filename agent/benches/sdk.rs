//! The SDK's cost on a request path: one counter read per path, one synchronous scope
//! (start + drop, event queued), one single-poll instrumented future, an unsampled scope.
//!
//! Paths this machine does not offer are reported and skipped (see `counters::probe`).
//!
//! Each request benchmark is run twice: `*_wall` is criterion's usual wall-clock time;
//! `*_cpu` measures the benchmark thread's own CPU time (`CLOCK_THREAD_CPUTIME_ID` around the
//! whole batch of iterations), which is the cost the request path itself pays, unaffected by
//! other processes on a shared machine or by the export thread running on another core.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use profwatch_agent::counters::{self, CounterMode, CounterPath};
use profwatch_agent::{Agent, Config, ExportTarget, Sampling};

fn agent(mode: CounterMode, sampling: Sampling) -> Agent {
    let mut config = Config::new("bench");
    config.counters = mode;
    config.sampling = sampling;
    config.export = ExportTarget::Discard;
    config.queue_capacity = 65_536;
    config.max_batch = 4096;
    Agent::new(config).expect("agent")
}

/// The modes worth measuring here: `Auto` only when it is a distinct (rdpmc) path.
fn modes() -> Vec<(&'static str, CounterMode)> {
    let probe = counters::probe();
    eprintln!("counters on this machine: {probe:?}");
    let mut modes = vec![("clock_gettime", CounterMode::Clock)];
    if probe.perf_error.is_none() {
        modes.push(("read", CounterMode::Read));
    }
    if probe.path == CounterPath::Rdpmc {
        modes.push(("rdpmc", CounterMode::Auto));
    } else {
        eprintln!("rdpmc fast path not available here: skipped");
    }
    modes
}

/// Runs `f` `iters` times and returns the CPU time this thread spent.
fn cpu_time(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = counters::thread_cpu_ns();
    for _ in 0..iters {
        f();
    }
    Duration::from_nanos(counters::thread_cpu_ns() - start)
}

fn counter_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("counter_read");
    for (name, mode) in modes() {
        group.bench_function(name, |b| b.iter(|| black_box(counters::read(mode))));
    }
    group.finish();
}

fn sync_scope(c: &mut Criterion) {
    for clock in ["wall", "cpu"] {
        let mut group = c.benchmark_group(format!("sync_request_{clock}"));
        let mut cases: Vec<(&str, Agent)> = modes()
            .into_iter()
            .map(|(name, mode)| (name, agent(mode, Sampling::All)))
            .collect();
        cases.push((
            "unsampled",
            agent(CounterMode::Auto, Sampling::OneIn(u32::MAX)),
        ));
        for (name, agent) in &cases {
            let request = || {
                let guard = agent.scope("GET /bench/{id}");
                black_box(&guard);
            };
            group.bench_function(*name, |b| {
                if clock == "wall" {
                    b.iter(request)
                } else {
                    b.iter_custom(|iters| cpu_time(iters, request))
                }
            });
        }
        group.finish();
    }
}

fn async_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_request_one_poll_cpu");
    for (name, mode) in modes() {
        let agent = agent(mode, Sampling::All);
        let request = || {
            let mut cx = Context::from_waker(Waker::noop());
            let fut = pin!(agent.instrument("GET /bench/{id}", std::future::ready(1u32)));
            black_box(matches!(fut.poll(&mut cx), Poll::Ready(1)));
        };
        group.bench_function(name, |b| b.iter_custom(|iters| cpu_time(iters, request)));
    }
    group.finish();
}

criterion_group!(benches, counter_read, sync_scope, async_request);
criterion_main!(benches);
