//! Profile hot paths: pprof ingest (decode + convert, samples per second), and the JSON tree
//! and SVG flame graph of a profile with 100k distinct stacks. Before timing, it prints the JSON
//! tree's peak heap (the allocator is `profwatch_testkit::alloc::PeakAlloc`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use profwatch_model::profile::{ProfileRow, SampleLabels, StackProfile};
use profwatch_model::Limits;
use profwatch_profile::decode::{pprof_to_batches, DecodeOptions};
use profwatch_profile::encode::{to_pprof_gz, Span};
use profwatch_profile::{folded, render, tree, ProfileLimits};
use profwatch_testkit::alloc::{peak_bytes, PeakAlloc};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// `n` distinct stacks, 8 to 40 frames deep, over 2000 function names (deterministic).
fn synthetic(n: usize) -> StackProfile {
    let names: Vec<String> = (0..2000)
        .map(|i| format!("pkg{}::module::function_{i}", i % 37))
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let labels = SampleLabels {
        service: "bench".into(),
        ..SampleLabels::default()
    };
    let mut rows: Vec<ProfileRow> = (0..n)
        .map(|i| {
            let depth = 8 + next() % 33;
            let mut frames: Vec<String> = (0..depth)
                .map(|d| names[(d * 7 + next() % 50) % names.len()].clone())
                .collect();
            frames.push(format!("leaf_{i}"));
            ProfileRow {
                labels: labels.clone(),
                frames: frames.into(),
                samples: 1 + (next() % 100) as u64,
                cpu_ns: 10_000_000,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.frames.cmp(&b.frames));
    StackProfile { rows, span: None }
}

fn ingest(c: &mut Criterion) {
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/pprof/sample.cpu.pb.gz"
    ));
    let big = to_pprof_gz(&synthetic(100_000), Span { from: 0, to: 1 });
    let base = SampleLabels {
        service: "bench".into(),
        ..SampleLabels::default()
    };
    let limits = ProfileLimits::default();
    let label_limits = Limits::default();
    let opt = DecodeOptions {
        base: &base,
        limits: &limits,
        label_limits: &label_limits,
        now: 1,
    };
    let mut g = c.benchmark_group("pprof_ingest");
    if let Ok(fixture) = fixture {
        let n = pprof_to_batches(&fixture, &opt)
            .map(|b| b.iter().map(|b| b.samples.len()).sum::<usize>())
            .unwrap_or(0);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("go_fixture", |b| {
            b.iter(|| pprof_to_batches(&fixture, &opt))
        });
    }
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("synthetic_100k_samples_gz", |b| {
        b.iter(|| pprof_to_batches(&big, &opt))
    });
    g.finish();
}

fn render_100k(c: &mut Criterion) {
    let p = synthetic(100_000);
    let merged = p.merged();
    let frames: usize = merged.iter().map(|(f, ..)| f.len()).sum();
    let (t, peak) = peak_bytes(|| tree::build(merged.iter().copied(), 8192));
    println!(
        "json_tree: {} stacks, {frames} frames, {} nodes kept of {}; peak heap of the build {:.1} MiB",
        merged.len(),
        t.nodes,
        t.nodes + t.pruned,
        peak as f64 / f64::from(1 << 20)
    );
    let mut g = c.benchmark_group("render_100k_stacks");
    g.sample_size(10);
    g.bench_function("json_tree", |b| {
        b.iter(|| {
            let t = tree::build(merged.iter().copied(), 8192);
            serde_json::to_vec(&t).map(|v| v.len())
        })
    });
    g.bench_function("svg", |b| {
        b.iter(|| {
            let text = folded::write(merged.iter().map(|(f, n, _)| (*f, *n)));
            render::svg(&text, "bench", "samples").map(|v| v.len())
        })
    });
    g.finish();
}

criterion_group!(benches, ingest, render_100k);
criterion_main!(benches);
