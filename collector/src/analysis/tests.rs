//! The pass's stated invariants, against a temporary embedded store: one record per finding
//! across passes, a human's state kept, a resolution kept, stale records resolved.

use std::sync::Arc;
use std::time::Duration;

use profwatch_model::regression::RegressionState;
use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{Labels, RequestEvent, Tenant};
use profwatch_store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_store::Store;

use super::{AnalysisConfig, RegressionTracker};

const SERVICE: &str = "shop";
const ENDPOINT: &str = "GET /cart";

/// `n` requests of `build` costing about `cpu_ns` each (±5%, deterministic), spread over 8
/// hosts and the `minutes` before `end`.
fn requests(build: &str, cpu_ns: f64, n: usize, end: i64, minutes: i64) -> Vec<RequestEvent> {
    (0..n)
        .map(|i| {
            let wobble = ((i * 7919) % 101) as f64 / 100.0 - 0.5; // -0.5..0.5
            RequestEvent {
                ts: end - (minutes * 60 * NANOS_PER_SEC) * (n - i) as i64 / n as i64,
                service: SERVICE.into(),
                endpoint: ENDPOINT.into(),
                build: build.into(),
                dc: "dc1".into(),
                host: format!("h{}", i % 8),
                status: 200,
                cpu_ns: (cpu_ns * (1.0 + 0.1 * wobble)) as u64,
                instructions: None,
                wall_ns: cpu_ns as u64,
                weight: 1.0,
                labels: Labels::new(),
            }
        })
        .collect()
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    tracker: RegressionTracker,
    tenant: Tenant,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open"));
    let tracker = RegressionTracker::new(Arc::clone(&store), AnalysisConfig::default(), None);
    Fixture {
        _dir: dir,
        store,
        tracker,
        tenant: Tenant::default_tenant(),
    }
}

impl Fixture {
    async fn write(&self, events: Vec<RequestEvent>) {
        self.store.write(&self.tenant, events).await.expect("write");
    }

    async fn records(&self) -> Vec<profwatch_model::regression::RegressionRecord> {
        self.store.regressions(&self.tenant).await.expect("records")
    }

    async fn pass(&self) -> super::PassReport {
        self.tracker
            .run_pass(std::slice::from_ref(&self.tenant))
            .await
            .expect("pass")
    }
}

/// Build 1 costs 1 ms, build 2 (rolled out after it) 1.5 ms; the last hour is left free.
async fn regressed(f: &Fixture) {
    let now = now_ns();
    f.write(requests("1", 1e6, 1500, now - 7200 * NANOS_PER_SEC, 60))
        .await;
    f.write(requests("2", 1.5e6, 1500, now - 3600 * NANOS_PER_SEC, 60))
        .await;
}

#[tokio::test]
async fn a_finding_is_one_record_across_passes_and_keeps_first_seen() {
    let f = fixture();
    regressed(&f).await;
    let first = f.pass().await;
    assert_eq!(first.new_regressions, 1, "{first:?}");
    let before = f.records().await;
    assert_eq!(before.len(), 1);
    assert_eq!(
        (before[0].baseline.as_str(), before[0].candidate.as_str()),
        ("1", "2")
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = f.pass().await;
    assert_eq!((second.new_regressions, second.updated_regressions), (0, 1));
    let after = f.records().await;
    assert_eq!(after.len(), 1, "no duplicate record");
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[0].first_seen, before[0].first_seen);
}

#[tokio::test]
async fn a_humans_acknowledgement_and_resolution_survive_passes() {
    let f = fixture();
    regressed(&f).await;
    f.pass().await;
    let id = f.records().await[0].id.clone();

    f.tracker
        .set_state(&f.tenant, &id, RegressionState::Acknowledged)
        .await
        .expect("ack")
        .expect("record");
    f.pass().await;
    assert_eq!(f.records().await[0].state, RegressionState::Acknowledged);

    let resolved = f
        .tracker
        .set_state(&f.tenant, &id, RegressionState::Resolved)
        .await
        .expect("resolve")
        .expect("record");
    let report = f.pass().await;
    assert_eq!((report.new_regressions, report.updated_regressions), (0, 0));
    let after = f.records().await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].state, RegressionState::Resolved);
    assert_eq!(
        after[0].updated, resolved.updated,
        "a resolved record is left alone"
    );
}

#[tokio::test]
async fn a_record_is_resolved_once_the_newest_build_no_longer_shows_it() {
    let f = fixture();
    regressed(&f).await;
    f.pass().await;
    // Build 3 goes back to build 1's cost.
    f.write(requests("3", 1e6, 1500, now_ns(), 30)).await;
    let report = f.pass().await;
    assert_eq!(report.resolved_regressions, 1, "{report:?}");
    assert_eq!(report.new_regressions, 0, "3 is cheaper than 2: {report:?}");
    let records = f.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].candidate, "2");
    assert_eq!(records[0].state, RegressionState::Resolved);
}
