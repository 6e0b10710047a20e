//! Sidecar ingest rate from the local Unix socket: NDJSON lines written by a client thread,
//! parsed, validated, enriched, batched, zstd-compressed and fsynced into the spool by a
//! sidecar running on a single-threaded tokio runtime (one core; the spool writes run on
//! tokio's blocking pool). Throughput is in events per second, measured until every event of
//! the iteration is in the spool.
//!
//! `cargo bench -p profwatch-agent --bench sidecar`

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use profwatch_agent::sidecar::enrich::Enricher;
use profwatch_agent::sidecar::listener::{Accepted, Ingest, StreamDecoder};
use profwatch_agent::sidecar::{Metrics, Sidecar, SidecarConfig};
use profwatch_model::{ndjson, Limits, RequestEvent};

const EVENTS: usize = 100_000;

fn payload() -> Vec<u8> {
    let now = profwatch_model::timefmt::now_ns();
    let mut out = Vec::new();
    for i in 0..EVENTS {
        let e = RequestEvent {
            ts: now - i as i64 * 1000,
            service: "checkout".into(),
            endpoint: ["GET /cart/{id}", "POST /orders", "GET /users/{id}"][i % 3].into(),
            build: format!("build-{}", i % 4),
            dc: String::new(),
            host: String::new(),
            status: 200,
            cpu_ns: 1_000_000 + i as u64 % 977,
            instructions: None,
            wall_ns: 2_000_000,
            weight: 1.0,
            labels: [("new_ranker".to_owned(), "on".to_owned())].into(),
        };
        out.extend_from_slice(ndjson::to_line(&e, false).as_bytes());
    }
    out
}

fn ingest(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SidecarConfig::new(
        "http://127.0.0.1:9",
        dir.path().join("agent.sock"),
        dir.path().join("spool"),
    )
    .expect("config");
    cfg.spool_max_bytes = 8 << 30;
    let (ready_tx, ready_rx) = mpsc::channel::<(Arc<Metrics>, std::path::PathBuf)>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let sidecar = Sidecar::start(cfg).await.expect("sidecar");
            let _ = ready_tx.send((sidecar.metrics().clone(), sidecar.socket_path().to_owned()));
            std::future::pending::<()>().await;
        });
    });
    let (metrics, socket) = ready_rx.recv().expect("sidecar started");
    let body = payload();
    let mut group = c.benchmark_group("sidecar");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("uds_ndjson_to_spool", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let target = metrics.snapshot("", "").spooled_events + EVENTS as u64;
                let start = Instant::now();
                let mut s = UnixStream::connect(&socket).expect("connect");
                s.write_all(&body).expect("write");
                drop(s);
                while metrics.snapshot("", "").spooled_events < target {
                    std::thread::sleep(Duration::from_micros(200));
                }
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

/// The listener's CPU work alone, on the calling thread: split, parse, enrich, validate.
fn decode(c: &mut Criterion) {
    let ingest = Ingest {
        enricher: Enricher::new("web-1", Some("eu1"), true),
        limits: Limits::default(),
        metrics: Arc::new(Metrics::new()),
        max_line_bytes: 64 << 10,
        max_frame_bytes: 4 << 20,
    };
    let body = payload();
    let mut group = c.benchmark_group("sidecar");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.bench_function("decode_enrich_validate", |b| {
        b.iter(|| {
            let mut decoder = StreamDecoder::default();
            let mut out = Accepted {
                events: Vec::with_capacity(EVENTS),
                ..Accepted::default()
            };
            for chunk in body.chunks(64 << 10) {
                decoder.feed(chunk, &ingest, &mut out);
            }
            assert_eq!(out.events.len(), EVENTS);
            out
        });
    });
    group.bench_function("encode_batch_zstd", |b| {
        let mut decoder = StreamDecoder::default();
        let mut out = Accepted::default();
        decoder.feed(&body, &ingest, &mut out);
        b.iter(|| {
            for batch in out.events.chunks(5000) {
                std::hint::black_box(
                    profwatch_agent::sidecar::batcher::encode(batch.to_vec()).expect("encode"),
                );
            }
        });
    });
    group.finish();
}

criterion_group!(benches, decode, ingest);
criterion_main!(benches);
