//! Attribution: a real axum app with the layer serves two endpoints whose handlers burn
//! different, known amounts of CPU in chunks, yielding between chunks so concurrent requests
//! interleave on the same worker threads. Each request's recorded `cpu_ns` must match the CPU
//! its handler measured around its own chunks within ±10%, on every counter path and runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use profwatch_agent::export::MemoryExporter;
use profwatch_agent::{Agent, Config, CounterMode, CounterPath};
use tokio::sync::Barrier;

use crate::support::{burn, http_get, thread_cpu_ns};

const CHUNK_NS: u64 = 1_000_000;
const LIGHT_CHUNKS: u32 = 12;
const HEAVY_CHUNKS: u32 = 36;
const PER_ENDPOINT: usize = 3;

#[derive(Default)]
struct Shared {
    /// CPU each request measured around its own chunks, by request id.
    measured: Mutex<HashMap<String, u64>>,
    /// Request id of every chunk, in the order chunks ran.
    chunks: Mutex<Vec<String>>,
}

struct AppState {
    shared: Arc<Shared>,
    barrier: Barrier,
}

async fn work(state: &AppState, id: String, chunks: u32) -> &'static str {
    profwatch_agent::set_label("req", id.clone());
    // Every request is in flight before any burns, so they must interleave.
    state.barrier.wait().await;
    let mut measured = 0;
    for _ in 0..chunks {
        let before = thread_cpu_ns();
        burn(CHUNK_NS);
        measured += thread_cpu_ns() - before;
        state.shared.chunks.lock().expect("lock").push(id.clone());
        tokio::task::yield_now().await;
    }
    state
        .shared
        .measured
        .lock()
        .expect("lock")
        .insert(id, measured);
    "done"
}

async fn light(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> &'static str {
    work(&state, id, LIGHT_CHUNKS).await
}

async fn heavy(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> &'static str {
    work(&state, id, HEAVY_CHUNKS).await
}

fn run(mode: CounterMode, workers: Option<usize>) {
    // Which path the perf modes take here: perf counters, unless perf_event_open fails (then
    // the test says so, or skips when told to); instructions exactly where the CPU counts them.
    let probe = profwatch_agent::counters::probe();
    if mode != CounterMode::Clock {
        if let Some(e) = &probe.perf_error {
            profwatch_testkit::perf_unavailable(e);
            return;
        }
        assert_ne!(probe.path, CounterPath::ClockGettime, "{probe:?}");
    }
    let sink = MemoryExporter::new();
    let mut config = Config::new("attribution");
    config.counters = mode;
    let agent = Agent::with_exporter(config, sink.clone()).expect("agent");
    let shared = Arc::new(Shared::default());
    let state = Arc::new(AppState {
        shared: Arc::clone(&shared),
        barrier: Barrier::new(2 * PER_ENDPOINT),
    });
    let app = Router::new()
        .route("/light/{id}", get(light))
        .route("/heavy/{id}", get(heavy))
        .layer(agent.layer())
        .with_state(state);

    let rt = match workers {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        rt.block_on(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        })
    });

    let clients: Vec<_> = (0..PER_ENDPOINT)
        .flat_map(|i| [("light", i), ("heavy", i)])
        .map(|(kind, i)| std::thread::spawn(move || http_get(addr, &format!("/{kind}/{kind}-{i}"))))
        .collect();
    for client in clients {
        assert_eq!(client.join().expect("client"), 200);
    }
    stop.send(()).expect("server running");
    server.join().expect("server thread").expect("serve");
    agent.flush().expect("flush");

    let chunks = shared.chunks.lock().expect("lock").clone();
    let first_light_end = chunks.iter().rposition(|id| id == "light-0").expect("ran");
    let first_light_start = chunks.iter().position(|id| id == "light-0").expect("ran");
    assert!(
        chunks[first_light_start..first_light_end]
            .iter()
            .any(|id| id.starts_with("heavy")),
        "the requests did not interleave: {chunks:?}"
    );

    let events = sink.take();
    assert_eq!(events.len(), 2 * PER_ENDPOINT, "{events:#?}");
    let measured = shared.measured.lock().expect("lock").clone();
    for event in &events {
        let id = &event.labels["req"];
        let kind = id.split('-').next().expect("kind");
        assert_eq!(event.endpoint, format!("GET /{kind}/{{id}}"));
        assert_eq!((event.status, event.weight), (200, 1.0));
        assert_eq!(event.service, "attribution");
        let truth = measured[id];
        let error = event.cpu_ns as f64 / truth as f64 - 1.0;
        eprintln!(
            "{mode:?}/{workers:?} {id}: recorded {} ns, burned {truth} ns ({:+.2}%)",
            event.cpu_ns,
            error * 100.0
        );
        assert!(
            error.abs() <= 0.10,
            "{mode:?}/{workers:?}: {id} recorded {} ns, burned {truth} ns ({:+.1}%)",
            event.cpu_ns,
            error * 100.0
        );
        assert!(event.wall_ns >= event.cpu_ns, "{event:?}");
        if mode == CounterMode::Clock {
            assert_eq!(event.instructions, None);
        } else {
            assert_eq!(
                event.instructions.is_some(),
                probe.instructions,
                "instructions are counted exactly where the CPU counts them: {probe:?}"
            );
        }
    }
    assert_eq!(agent.stats().exported, 2 * PER_ENDPOINT as u64);
}

#[test]
fn perf_counters_current_thread() {
    run(CounterMode::Auto, None);
}

#[test]
fn perf_counters_two_workers() {
    run(CounterMode::Auto, Some(2));
}

#[test]
fn clock_fallback_current_thread() {
    run(CounterMode::Clock, None);
}

#[test]
fn clock_fallback_two_workers() {
    run(CounterMode::Clock, Some(2));
}
