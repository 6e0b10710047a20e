//! The stack sampler end to end: a real axum service with the SDK layer, a CPU-heavy and a
//! light endpoint polled concurrently on a 2-worker runtime, profiles collected in memory.
//!
//! Frame pointers: rustc's x86-64 Linux target omits them at every opt-level, debug builds
//! included; the sampler unwinds the copied stacks with the unwind tables, so the heavy
//! endpoint's stacks hold the whole tree: tokio's worker, the layer, the endpoint's function
//! (`heavy`), its hot leaf.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use profwatch_agent::export::MemoryExporter;
use profwatch_agent::sampler::{MemorySink, ProfileBatch};
use profwatch_agent::{Agent, Config, Sampler, SamplerConfig, SamplerError};

const HEAVY: &str = "GET /heavy";
const LIGHT: &str = "GET /light";

/// The heavy endpoint's hot function: a xorshift loop with no calls inside, so that it is the
/// leaf of the samples taken in it.
#[inline(never)]
fn heavy_hot(rounds: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ rounds;
    let mut i = 0;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    std::hint::black_box(x)
}

/// The light endpoint's (much smaller) hot function.
#[inline(never)]
fn light_hot(rounds: u64) -> u64 {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ rounds;
    let mut i = 0;
    while i < rounds {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        i += 1;
    }
    std::hint::black_box(x)
}

async fn heavy() -> String {
    profwatch_agent::set_label("new_ranker", "on");
    let mut acc = 0;
    // Several polls, yielding in between: other requests run on this worker thread between
    // this request's polls.
    for _ in 0..4 {
        acc ^= heavy_hot(400_000);
        tokio::task::yield_now().await;
    }
    acc.to_string()
}

async fn light() -> String {
    profwatch_agent::set_label("new_ranker", "off");
    let acc = light_hot(5_000);
    tokio::task::yield_now().await;
    acc.to_string()
}

fn get_once(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).is_ok() && response.starts_with("HTTP/1.1 200")
}

fn has_frame(frames: &[String], name: &str) -> bool {
    frames.iter().any(|f| f.contains(name))
}

/// Samples in stacks containing `function`, by endpoint label.
fn samples_in(profiles: &[ProfileBatch], function: &str) -> (u64, u64, u64) {
    let (mut heavy, mut light, mut other) = (0, 0, 0);
    for p in profiles {
        for s in p.samples.iter().filter(|s| has_frame(&s.frames, function)) {
            match p.labels.endpoint.as_str() {
                HEAVY => heavy += s.samples,
                LIGHT => light += s.samples,
                _ => other += s.samples,
            }
        }
    }
    (heavy, light, other)
}

#[test]
fn samples_carry_the_labels_of_the_request_running_on_their_thread() {
    let mut config = Config::new("shop");
    config.build = "812".into();
    config.dc = "eu1".into();
    config.host = "test-host".into();
    let agent = Agent::with_exporter(config.clone(), MemoryExporter::new()).expect("agent");
    let sink = MemorySink::new();
    let mut sampler_config = SamplerConfig::default();
    sampler_config.export_interval = Duration::from_secs(2);
    // A debug build's futures make big frames: this many bytes reach the worker's root.
    sampler_config.stack_bytes = profwatch_agent::sampler::MAX_STACK_BYTES;
    sampler_config.ring_pages = 256;
    let sampler = match Sampler::with_sink(&config, sampler_config, sink.clone()) {
        Ok(s) => s,
        Err(SamplerError::Unavailable(e)) => {
            profwatch_testkit::perf_unavailable(&e);
            return;
        }
        Err(e) => panic!("sampler: {e}"),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = Router::new()
        .route("/heavy", get(heavy))
        .route("/light", get(light))
        .layer(agent.layer());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(async move { axum::serve(listener, app).await });

    // Clients on their own threads, so the two workers only run the service.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [("/heavy", 3), ("/light", 3)]
        .into_iter()
        .flat_map(|(path, n)| std::iter::repeat_n(path, n))
        .map(|path| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    ok += u64::from(get_once(addr, path));
                }
                ok
            })
        })
        .collect();
    // Load until heavy_hot has 100 samples, however long a loaded machine takes to give them
    // (the deadline only ends a test that would never get there).
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        sampler.flush().expect("sampler flush");
        let (ok, as_light, unlabelled) = samples_in(&sink.profiles(), "heavy_hot");
        if ok + as_light + unlabelled >= 100 || Instant::now() > deadline {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let served: Vec<u64> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    assert!(
        served.iter().all(|n| *n > 0),
        "every client got answers: {served:?}"
    );

    agent.flush().expect("agent flush");
    sampler.flush().expect("sampler flush");
    let stats = sampler.stats();
    let profiles = sink.profiles();
    drop(sampler);
    runtime.shutdown_timeout(Duration::from_secs(1));

    eprintln!("{stats:?}");
    for p in &profiles {
        let total: u64 = p.samples.iter().map(|s| s.samples).sum();
        eprintln!(
            "{:?} {:?}: {total} samples",
            p.labels.endpoint, p.labels.extra
        );
    }
    if std::env::var_os("SAMPLER_DUMP").is_some() {
        for p in &profiles {
            for s in &p.samples {
                eprintln!(
                    "{:?} {} {}",
                    p.labels.endpoint,
                    s.frames.join(";"),
                    s.samples
                );
            }
        }
    }
    assert!(stats.threads >= 2, "{stats:?}");

    let (heavy_ok, heavy_as_light, heavy_unlabelled) = samples_in(&profiles, "heavy_hot");
    let heavy_total = heavy_ok + heavy_as_light + heavy_unlabelled;
    assert!(
        heavy_total >= 100,
        "enough samples in heavy_hot: {heavy_total}"
    );
    assert!(
        heavy_ok * 100 >= heavy_total * 90,
        "≥ 90% of heavy_hot's samples carry {HEAVY}: {heavy_ok} of {heavy_total} \
         ({heavy_as_light} as {LIGHT}, {heavy_unlabelled} unlabelled)"
    );
    assert_eq!(
        heavy_as_light, 0,
        "no heavy sample is attributed to the light endpoint"
    );
    let (light_as_heavy, light_ok, _) = samples_in(&profiles, "light_hot");
    assert_eq!(
        light_as_heavy, 0,
        "no light sample is attributed to the heavy endpoint"
    );
    eprintln!(
        "heavy_hot: {heavy_ok} of {heavy_total} samples labelled {HEAVY}, {heavy_as_light} as \
         {LIGHT}, {heavy_unlabelled} unlabelled; light_hot: {light_ok} as {LIGHT}"
    );

    // The heavy endpoint's profile: labelled like its requests, heavy_hot leads self cost.
    let heavy_profiles: Vec<&ProfileBatch> = profiles
        .iter()
        .filter(|p| p.labels.endpoint == HEAVY)
        .collect();
    assert!(!heavy_profiles.is_empty());
    for p in &heavy_profiles {
        assert_eq!(
            (
                p.labels.service.as_str(),
                p.labels.build.as_str(),
                p.labels.dc.as_str(),
                p.labels.host.as_str()
            ),
            ("shop", "812", "eu1", "test-host")
        );
        assert_eq!(
            p.labels.extra.get("new_ranker").map(String::as_str),
            Some("on")
        );
    }
    let mut self_cost: std::collections::BTreeMap<&str, u64> = Default::default();
    for p in &heavy_profiles {
        for s in &p.samples {
            if let Some(leaf) = s.frames.last() {
                *self_cost.entry(leaf.as_str()).or_default() += s.samples;
            }
        }
    }
    let (leader, n) = self_cost.iter().max_by_key(|(_, n)| **n).expect("a leaf");
    eprintln!("self-cost leader of {HEAVY}: {leader} ({n} samples)");
    assert!(leader.contains("heavy_hot"), "{self_cost:?}");

    // The tree: the worker thread's root, the endpoint's function, its leaf.
    let (mut in_hot, mut whole) = (0, 0);
    let mut depths: Vec<(usize, u64)> = Vec::new();
    for s in heavy_profiles.iter().flat_map(|p| &p.samples) {
        depths.push((s.frames.len(), s.samples));
        if !s.frames.last().is_some_and(|f| f.contains("heavy_hot")) {
            continue;
        }
        in_hot += s.samples;
        let endpoint = s
            .frames
            .iter()
            .position(|f| f.contains("sampler::heavy") && !f.contains("heavy_hot"));
        let root = s.frames.first().is_some_and(|f| f != "[truncated]");
        if endpoint.is_some_and(|i| i > 2) && root {
            whole += s.samples;
        }
    }
    depths.sort_unstable();
    let all: u64 = depths.iter().map(|d| d.1).sum();
    let quantile = |q: f64| {
        let mut seen = 0;
        depths
            .iter()
            .find(|(_, n)| {
                seen += n;
                seen as f64 >= q * all as f64
            })
            .map_or(0, |d| d.0)
    };
    eprintln!(
        "{HEAVY}: {whole} of {in_hot} samples in heavy_hot under its endpoint function and \
         unwound to the root; frames per stack: p10 {}, median {}, p90 {}",
        quantile(0.1),
        quantile(0.5),
        quantile(0.9)
    );
    assert!(
        whole * 10 >= in_hot * 9,
        "{whole} of {in_hot} samples in heavy_hot hold its caller `heavy` below the runtime's \
         frames, unwound to the root"
    );
    assert!(quantile(0.5) >= 5, "median depth {}", quantile(0.5));
}
