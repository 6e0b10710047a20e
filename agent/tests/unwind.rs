//! The SDK sampler unwinds whole stacks in a binary without frame pointers: this test binary
//! (rustc omits frame pointers at every opt-level on x86-64 Linux, debug builds included).
//! A measured request runs `handle_request` → `endpoint` → `price` (the hot leaf); the
//! sampled stacks must hold that chain, and with a stack copy too small for the request's
//! deep recursion, the stacks are marked `[truncated]` instead of being cut silently.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use profwatch_agent::export::MemoryExporter;
use profwatch_agent::sampler::{MemorySink, ProfileBatch};
use profwatch_agent::{Agent, Config, Sampler, SamplerConfig, SamplerError};

#[inline(never)]
fn price(rounds: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ rounds;
    let mut i = 0;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    black_box(x)
}

#[inline(never)]
fn endpoint(rounds: u64) -> u64 {
    black_box(price(black_box(rounds))) + 1
}

#[inline(never)]
fn handle_request(agent: &Agent, rounds: u64) -> u64 {
    let _scope = agent.scope("GET /cart");
    black_box(endpoint(black_box(rounds))) + 2
}

/// Recurses `depth` times with 1 KiB of stack each, then runs `price`.
#[inline(never)]
fn deep(depth: u32, rounds: u64) -> u64 {
    let pad = black_box([depth as u8; 1024]);
    let r = if depth == 0 {
        price(rounds)
    } else {
        deep(depth - 1, rounds)
    };
    r + u64::from(pad[depth as usize % 1024])
}

#[inline(never)]
fn handle_deep_request(agent: &Agent, rounds: u64) -> u64 {
    let _scope = agent.scope("GET /deep");
    black_box(deep(64, black_box(rounds)))
}

/// One sampler runs per process: the tests take turns.
static ONE_SAMPLER: Mutex<()> = Mutex::new(());

/// Runs `request` on this thread until `price` has `want` samples; the profiles.
#[inline(never)]
fn sample(
    stack_bytes: u32,
    want: u64,
    request: fn(&Agent, u64) -> u64,
) -> Option<Vec<ProfileBatch>> {
    let _turn = ONE_SAMPLER.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config::new("shop");
    let agent = Agent::with_exporter(config.clone(), MemoryExporter::new()).expect("agent");
    let sink = MemorySink::new();
    let mut sampler_config = SamplerConfig::default();
    sampler_config.stack_bytes = stack_bytes;
    let sampler = match Sampler::with_sink(&config, sampler_config, sink.clone()) {
        Ok(s) => s,
        Err(SamplerError::Unavailable(e)) => {
            profwatch_testkit::perf_unavailable(&e);
            return None;
        }
        Err(e) => panic!("sampler: {e}"),
    };
    // However long a loaded machine takes; the deadline only ends a test that never gets there.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            black_box(request(&agent, 200_000));
        }
        sampler.flush().expect("flush");
        if in_price(&sink.profiles()) >= want || Instant::now() > deadline {
            break;
        }
    }
    let stats = sampler.stats();
    eprintln!("{stats:?}");
    assert!(stats.unwound + stats.truncated > 0, "{stats:?}");
    assert!(stats.unwind_info_bytes > 0, "{stats:?}");
    Some(sink.profiles())
}

fn in_price(profiles: &[ProfileBatch]) -> u64 {
    profiles
        .iter()
        .flat_map(|p| &p.samples)
        .filter(|s| s.frames.last().is_some_and(|f| f.ends_with("::price")))
        .map(|s| s.samples)
        .sum()
}

/// Samples whose leaf is `price` and whose frames hold `chain` consecutively (each frame's
/// name ending in `::` and the part).
fn with_chain(profiles: &[ProfileBatch], chain: &[&str]) -> u64 {
    profiles
        .iter()
        .flat_map(|p| &p.samples)
        .filter(|s| s.frames.last().is_some_and(|f| f.ends_with("::price")))
        .filter(|s| {
            s.frames.windows(chain.len()).any(|w| {
                w.iter()
                    .zip(chain)
                    .all(|(f, part)| f == part || f.ends_with(&format!("::{part}")))
            })
        })
        .map(|s| s.samples)
        .sum()
}

fn dump(profiles: &[ProfileBatch]) -> String {
    let mut lines: Vec<(u64, String)> = profiles
        .iter()
        .flat_map(|p| &p.samples)
        .map(|s| (s.samples, s.frames.join(";")))
        .collect();
    lines.sort_by_key(|l| std::cmp::Reverse(l.0));
    lines
        .iter()
        .take(10)
        .map(|(n, s)| format!("{n:5} {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_sdk_sampler_unwinds_a_request_to_its_caller_without_frame_pointers() {
    let Some(profiles) = sample(16 * 1024, 100, handle_request) else {
        return;
    };
    let total = in_price(&profiles);
    let chain = [
        "the_sdk_sampler_unwinds_a_request_to_its_caller_without_frame_pointers",
        "sample",
        "handle_request",
        "endpoint",
        "price",
    ];
    let whole = with_chain(&profiles, &chain);
    eprintln!("SDK: {whole} of {total} samples in price unwound to the test function");
    assert!(
        total >= 100,
        "too few samples: {total}\n{}",
        dump(&profiles)
    );
    assert!(
        whole * 10 >= total * 9,
        "{whole} of {total} samples hold the test → sample → handle_request → endpoint → price:\n{}",
        dump(&profiles)
    );
}

#[test]
fn a_request_deeper_than_the_stack_copy_is_marked_truncated() {
    // 64 frames of more than 1 KiB: far more than a 4 KiB copy.
    let Some(profiles) = sample(4 * 1024, 50, handle_deep_request) else {
        return;
    };
    let total = in_price(&profiles);
    let marked = with_chain(&profiles, &["[truncated]", "deep"]);
    assert!(total >= 50, "too few samples: {total}\n{}", dump(&profiles));
    assert_eq!(marked, total, "{}", dump(&profiles));
    assert_eq!(
        with_chain(&profiles, &["handle_deep_request", "deep"]),
        0,
        "the request's frame is beyond the copy: a stack that holds it was not cut:\n{}",
        dump(&profiles)
    );
}
