//! Scopes, instrumented futures and the layer's naming and sampling.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use profwatch_agent::export::MemoryExporter;
use profwatch_agent::{Agent, Config, CounterMode, CounterPath, Sampling};

use crate::support::{burn, http_get};

fn agent(sampling: Sampling) -> (Agent, MemoryExporter) {
    let sink = MemoryExporter::new();
    let mut config = Config::new("svc");
    config.sampling = sampling;
    (
        Agent::with_exporter(config, sink.clone()).expect("agent"),
        sink,
    )
}

/// Whether a measured CPU time matches what the test burned: within 10%, or within 4 ms on a
/// loaded machine (the scope's own bookkeeping and preemption add a little). A request that
/// counted another's CPU, or its own sleep, would be off by far more.
fn close(value: u64, truth: u64) -> bool {
    let slack = (truth as f64 * 0.10).max(4_000_000.0);
    (value as f64 - truth as f64).abs() <= slack
}

#[test]
fn a_scope_counts_cpu_not_sleep() {
    let (agent, sink) = agent(Sampling::All);
    let burned;
    {
        let guard = agent.scope("job");
        burned = burn(20_000_000);
        std::thread::sleep(Duration::from_millis(30));
        profwatch_agent::set_label("flag", "on");
        guard.set_status(204);
    }
    agent.flush().expect("flush");
    let events = sink.take();
    let e = &events[0];
    // The 30 ms sleep must not count: that would put cpu_ns at 50 ms or more.
    assert!(close(e.cpu_ns, burned), "{e:?} burned {burned}");
    assert!(e.wall_ns >= 50_000_000, "{e:?}");
    assert_eq!((e.status, e.labels["flag"].as_str()), (204, "on"));
}

#[test]
fn sampling_one_in_n_sets_the_weight() {
    let (agent, sink) = agent(Sampling::OneIn(4));
    for _ in 0..40 {
        let _guard = agent.scope("job");
    }
    agent.flush().expect("flush");
    let events = sink.take();
    assert_eq!(events.len(), 10);
    assert!(events.iter().all(|e| e.weight == 4.0));
}

#[test]
fn interleaved_futures_on_one_thread_keep_their_own_cpu() {
    let (agent, sink) = agent(Sampling::All);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let task = |name: &'static str, chunks: u32| {
        agent.instrument(name, async move {
            let mut burned = 0;
            for _ in 0..chunks {
                burned += burn(1_000_000);
                tokio::task::yield_now().await;
            }
            profwatch_agent::set_status(200);
            burned
        })
    };
    let (small, big) = rt.block_on(async { tokio::join!(task("small", 10), task("big", 40)) });
    agent.flush().expect("flush");
    let events = sink.take();
    for (name, burned) in [("small", small), ("big", big)] {
        let e = events.iter().find(|e| e.endpoint == name).expect("event");
        assert!(close(e.cpu_ns, burned), "{name}: {e:?} burned {burned}");
        assert_eq!(e.status, 200);
    }
}

#[test]
fn a_dropped_future_is_recorded_as_cancelled() {
    let (agent, sink) = agent(Sampling::All);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let slow = agent.instrument("slow", tokio::time::sleep(Duration::from_secs(60)));
        let _ = tokio::time::timeout(Duration::from_millis(10), slow).await;
    });
    agent.flush().expect("flush");
    assert_eq!(sink.take()[0].status, profwatch_agent::CANCELLED_STATUS);
}

#[test]
fn the_layer_names_routes_by_template_and_never_by_id() {
    let (agent, sink) = agent(Sampling::All);
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/", get(|| async { "root" }))
        .layer(agent.layer());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || rt.block_on(async { axum::serve(listener, app).await }));
    assert_eq!(http_get(addr, "/users/42"), 200);
    assert_eq!(http_get(addr, "/"), 200);
    assert_eq!(http_get(addr, "/orders/42/items"), 404);
    assert_eq!(http_get(addr, "/42"), 404);
    agent.flush().expect("flush");
    let mut names: Vec<_> = sink
        .take()
        .into_iter()
        .map(|e| (e.endpoint, e.status))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("GET /".to_owned(), 200),
            ("GET /orders/*".to_owned(), 404),
            ("GET /users/{id}".to_owned(), 200),
            ("GET unmatched".to_owned(), 404),
        ]
    );
}

#[test]
fn the_clock_fallback_can_be_forced() {
    let mut config = Config::from_lookup(|k| match k {
        "PROFWATCH_SERVICE" => Some("svc".into()),
        "PROFWATCH_COUNTERS" => Some("clock".into()),
        _ => None,
    })
    .expect("config");
    config.export = profwatch_agent::ExportTarget::Discard;
    assert_eq!(config.counters, CounterMode::Clock);
    let agent = Agent::new(config).expect("agent");
    assert_eq!(agent.counter_path(), CounterPath::ClockGettime);
}

#[test]
fn without_an_agent_the_global_api_is_inert() {
    // No test in this binary installs a global agent.
    assert!(profwatch_agent::global().is_none());
    let guard = profwatch_agent::scope("job");
    assert!(!guard.is_sampled());
    assert!(!profwatch_agent::set_label("k", "v"));
    let path = profwatch_agent::counter_path();
    eprintln!("counter path on this machine: {path}");
}
