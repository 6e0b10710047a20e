//! The sidecar's CPU work on one thread, without sockets, tasks or the disk: splitting,
//! parsing, enriching and validating NDJSON, and encoding batches (protobuf + zstd). These are
//! parts of the path, not an ingest rate; `benches/sidecar.rs` measures the rate end to end.
//!
//! `cargo bench -p profwatch-sidecar --bench sidecar_decode`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use profwatch_model::{ndjson, Limits, RequestEvent};
use profwatch_sidecar::enrich::Enricher;
use profwatch_sidecar::listener::{Accepted, Ingest, StreamDecoder};
use profwatch_sidecar::Metrics;

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
                    profwatch_sidecar::batcher::encode(batch.to_vec()).expect("encode"),
                );
            }
        });
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
