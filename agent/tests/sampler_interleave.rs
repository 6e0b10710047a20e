//! Attribution when requests interleave on one thread: two instrumented futures polled in
//! turn on the test thread, each burning CPU in its own function, and a synchronous scope
//! nested inside one of them. Every sample must carry the labels of the request whose poll
//! (or scope) was running when it was taken.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use profwatch_agent::counters::thread_cpu_ns;
use profwatch_agent::export::MemoryExporter;
use profwatch_agent::sampler::{MemorySink, ProfileBatch};
use profwatch_agent::{Agent, Config, Sampler, SamplerConfig, SamplerError};

/// Burns about `ns` of this thread's CPU in a loop whose body makes no call.
macro_rules! burner {
    ($name:ident, $seed:expr) => {
        #[inline(never)]
        fn $name(ns: u64) -> u64 {
            let until = thread_cpu_ns() + ns;
            let mut x: u64 = $seed;
            loop {
                let mut i = 0;
                while i < 20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    i += 1;
                }
                if thread_cpu_ns() >= until {
                    return std::hint::black_box(x);
                }
            }
        }
    };
}

burner!(a_hot, 0x9e37_79b9_7f4a_7c15);
burner!(b_hot, 0x2545_f491_4f6c_dd1d);
burner!(inner_hot, 0x1234_5678_9abc_def1);

/// Pending `polls - 1` times, burning `burn` each poll.
struct Job {
    agent: Agent,
    polls: u32,
    burn: fn(u64) -> u64,
    nested: bool,
    /// State of the jitter of each poll's burn.
    jitter: u64,
}

impl Job {
    /// `mean` ns ± 45%, pseudo-random. Burns of fixed length made the test thread's CPU time
    /// periodic, and a sampling period of thread CPU time commensurate with it then fell on
    /// the same function every time (seen on a quiet VM: one burner 80–99% of the samples,
    /// another none).
    fn jittered(&mut self, mean: u64) -> u64 {
        self.jitter = self
            .jitter
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let spread = mean * 9 / 10;
        mean - spread / 2 + (self.jitter >> 33) % spread
    }
}

impl Future for Job {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        profwatch_agent::set_label("job", if self.nested { "b" } else { "a" });
        let burn = self.jittered(2_000_000);
        (self.burn)(burn);
        if self.nested {
            let inner = self.jittered(1_000_000);
            let _inner = self.agent.scope("job inner");
            inner_hot(inner);
        }
        self.polls -= 1;
        if self.polls == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

fn count(profiles: &[ProfileBatch], function: &str) -> Vec<(String, u64)> {
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for p in profiles {
        for s in &p.samples {
            if s.frames.iter().any(|f| f.contains(function)) {
                *by.entry(p.labels.endpoint.clone()).or_default() += s.samples;
            }
        }
    }
    by.into_iter().collect()
}

#[test]
fn interleaved_polls_and_nested_scopes_are_told_apart() {
    let config = Config::new("jobs");
    let agent = Agent::with_exporter(config.clone(), MemoryExporter::new()).expect("agent");
    let sink = MemorySink::new();
    let sampler = match Sampler::with_sink(&config, SamplerConfig::default(), sink.clone()) {
        Ok(s) => s,
        Err(SamplerError::Unavailable(e)) => {
            profwatch_testkit::perf_unavailable(&e);
            return;
        }
        Err(e) => panic!("sampler: {e}"),
    };
    let job = |burn, nested| Job {
        agent: agent.clone(),
        polls: 1000,
        burn,
        nested,
        jitter: if nested { 7 } else { 11 },
    };
    let mut a = Box::pin(agent.instrument("job a", job(a_hot, false)));
    let mut b = Box::pin(agent.instrument("job b", job(b_hot, true)));
    let mut cx = Context::from_waker(Waker::noop());
    let (mut a_done, mut b_done) = (false, false);
    while !(a_done && b_done) {
        a_done = a_done || a.as_mut().poll(&mut cx).is_ready();
        b_done = b_done || b.as_mut().poll(&mut cx).is_ready();
    }
    sampler.flush().expect("flush");
    let stats = sampler.stats();
    let profiles = sink.profiles();
    drop(sampler);
    eprintln!("{stats:?}");

    let a_counts = count(&profiles, "a_hot");
    let b_counts = count(&profiles, "b_hot");
    let inner_counts = count(&profiles, "inner_hot");
    eprintln!("a_hot {a_counts:?}\nb_hot {b_counts:?}\ninner_hot {inner_counts:?}");
    for (counts, endpoint) in [
        (&a_counts, "job a"),
        (&b_counts, "job b"),
        (&inner_counts, "job inner"),
    ] {
        assert_eq!(counts.len(), 1, "only {endpoint}: {counts:?}");
        assert_eq!(counts[0].0, endpoint);
        assert!(
            counts[0].1 >= 10,
            "enough samples for {endpoint}: {counts:?}"
        );
    }
    let a_profile = profiles
        .iter()
        .find(|p| p.labels.endpoint == "job a")
        .expect("job a's profile");
    assert_eq!(
        a_profile.labels.extra.get("job").map(String::as_str),
        Some("a")
    );
}
