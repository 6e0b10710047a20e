//! What function-level change points cost an analysis pass: one service with 3 endpoints and
//! 6 hours of requests, its pass timed without profiles and with a profile every 10 minutes per
//! endpoint (`STACKS` distinct stacks each, 20 deep), on the embedded store in a temporary
//! directory, warm (the same store answers every iteration). The difference is the function
//! step: one profile query for the window, then one per bucket with requests, the series of
//! the top functions, and their change points.
//!
//! `cargo bench -p profwatch-collector --bench analysis`

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use profwatch_collector::analysis::{AnalysisConfig, RegressionTracker};
use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{Labels, RequestEvent, Tenant};
use profwatch_store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_store::Store;

const ENDPOINTS: [&str; 3] = ["GET /cart", "GET /search", "POST /order"];
const HOURS: i64 = 6;
const BUCKET_S: i64 = 600;
/// Distinct stacks per profile.
const STACKS: usize = 2000;

fn events(end: i64) -> Vec<RequestEvent> {
    let n = (HOURS * 3600) as usize; // one request a second per endpoint
    ENDPOINTS
        .iter()
        .flat_map(|endpoint| {
            (0..n).map(move |i| RequestEvent {
                ts: end - (n - i) as i64 * NANOS_PER_SEC,
                service: "shop".into(),
                endpoint: (*endpoint).into(),
                build: "1".into(),
                dc: "dc1".into(),
                host: format!("h{}", i % 8),
                status: 200,
                cpu_ns: 1_000_000 + (i as u64 * 7919) % 100_000,
                instructions: None,
                wall_ns: 1_000_000,
                weight: 1.0,
                labels: Labels::new(),
            })
        })
        .collect()
}

fn profiles(end: i64) -> Vec<ProfileBatch> {
    let buckets = HOURS * 3600 / BUCKET_S;
    let mut out = Vec::new();
    for endpoint in ENDPOINTS {
        for b in 0..buckets {
            let samples = (0..STACKS)
                .map(|s| StackSample {
                    frames: (0..20)
                        .map(|d| format!("mod{}::fn_{}", d, (s * 31 + d * 7) % (50 + d)))
                        .chain(std::iter::once(format!("leaf_{}", s % 300)))
                        .collect(),
                    samples: 1 + (s as u64 % 20),
                    cpu_ns: 10_000_000,
                })
                .collect();
            out.push(ProfileBatch {
                ts: end - (buckets - b) * BUCKET_S * NANOS_PER_SEC + BUCKET_S * NANOS_PER_SEC / 2,
                labels: SampleLabels {
                    service: "shop".into(),
                    endpoint: endpoint.into(),
                    build: "1".into(),
                    ..SampleLabels::default()
                },
                samples,
            });
        }
    }
    out
}

fn pass(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let end = now_ns();
    let tenant = Tenant::default_tenant();
    let mut g = c.benchmark_group("analysis_pass_6h_3_endpoints");
    g.sample_size(10);
    for with_profiles in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open"));
        rt.block_on(async {
            store.write(&tenant, events(end)).await.expect("events");
            if with_profiles {
                for chunk in profiles(end).chunks(6) {
                    store
                        .write_profiles(&tenant, chunk.to_vec())
                        .await
                        .expect("profiles");
                }
            }
        });
        let tracker = RegressionTracker::new(Arc::clone(&store), AnalysisConfig::default(), None);
        let name = if with_profiles {
            "events_and_profiles"
        } else {
            "events_only"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(tracker.run_pass(std::slice::from_ref(&tenant)))
                    .expect("pass")
            })
        });
        rt.block_on(store.shutdown()).expect("shutdown");
    }
    g.finish();
}

criterion_group!(benches, pass);
criterion_main!(benches);
