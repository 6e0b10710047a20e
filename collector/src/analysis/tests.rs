//! The pass's stated invariants, against a temporary embedded store: one record per finding
//! across passes, a human's state kept, a resolution kept, stale records resolved (fixed),
//! records whose effect went away closed (build compares, change points and function rises), one
//! incident per bad build, function-level change points (a function's rise found, a cost
//! shift not), and memory per worker (a heavier build found and fixed, an equal one not).

use std::sync::Arc;
use std::time::Duration;

use profwatch_model::regression::{RegressionState, Resolution};
use profwatch_model::rng::Rng;
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
    requests_of(SERVICE, ENDPOINT, build, cpu_ns, n, end, minutes)
}

/// [`requests`] of another service and endpoint.
fn requests_of(
    service: &str,
    endpoint: &str,
    build: &str,
    cpu_ns: f64,
    n: usize,
    end: i64,
    minutes: i64,
) -> Vec<RequestEvent> {
    (0..n)
        .map(|i| {
            let wobble = ((i * 7919) % 101) as f64 / 100.0 - 0.5; // -0.5..0.5
            RequestEvent {
                ts: end - (minutes * 60 * NANOS_PER_SEC) * (n - i) as i64 / n as i64,
                service: service.into(),
                endpoint: endpoint.into(),
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

/// A record's id says nothing about its finding: the same finding in another store has
/// another id, 128 random bits in hex.
#[tokio::test]
async fn a_records_id_cannot_be_told_from_its_finding() {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let f = fixture();
        regressed(&f).await;
        f.pass().await;
        let records = f.records().await;
        assert_eq!(records.len(), 1, "{records:?}");
        ids.push(records[0].id.clone());
    }
    for id in &ids {
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    assert_ne!(ids[0], ids[1]);
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
    assert_eq!((report.fixed, report.went_away), (1, 0), "{report:?}");
    assert_eq!(report.new_regressions, 0, "3 is cheaper than 2: {report:?}");
    let records = f.records().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].candidate, "2");
    assert_eq!(records[0].state, RegressionState::Resolved);
    assert_eq!(
        records[0].resolution,
        Some(Resolution::Fixed { build: "3".into() })
    );
}

/// Build 2's extra cost disappears while build 2 still serves (a cache warmed up): one pass
/// without it counts, the second closes the record as "went away", not as fixed by a build.
#[tokio::test]
async fn a_regression_that_goes_away_while_its_build_serves_closes_itself() {
    let f = fixture();
    regressed(&f).await;
    assert_eq!(f.pass().await.new_regressions, 1);
    f.write(requests("2", 1e6, 15_000, now_ns(), 30)).await;
    let first = f.pass().await;
    assert_eq!(
        first.resolved_regressions, 0,
        "one pass is not enough: {first:?}"
    );
    let records = f.records().await;
    assert_eq!(
        (records[0].state, records[0].passes_gone),
        (RegressionState::Open, 1)
    );
    let second = f.pass().await;
    assert_eq!((second.went_away, second.fixed), (1, 0), "{second:?}");
    let records = f.records().await;
    assert_eq!(records[0].state, RegressionState::Resolved);
    assert_eq!(records[0].resolution, Some(Resolution::WentAway));
    let third = f.pass().await;
    assert_eq!(
        (third.new_regressions, third.resolved_regressions),
        (0, 0),
        "closed once: {third:?}"
    );
}

/// Two endpoints of one build step up by half at the same moment (no rollout: a time-caused
/// change point each). One comes back down (a spike, a neighbour): two passes with its latest
/// window like the one before the change close its record as "went away". The other stays up:
/// its record stays open, whatever the passes.
#[tokio::test]
async fn a_change_point_whose_effect_is_gone_closes_itself_and_one_that_stays_does_not() {
    let f = fixture();
    let now = now_ns();
    let min = 60 * NANOS_PER_SEC;
    // The last 50 minutes hold 600 requests: a compare needs 500 a side, and the window
    // slides with the clock between the write and each pass.
    for (endpoint, latest_cost) in [("GET /spike", 1e6), ("GET /step", 1.5e6)] {
        let at = |cost, n, end, minutes| requests_of(SERVICE, endpoint, "1", cost, n, end, minutes);
        f.write(at(1e6, 1800, now - 180 * min, 180)).await;
        f.write(at(1.5e6, 1300, now - 50 * min, 130)).await;
        f.write(at(latest_cost, 600, now, 50)).await;
    }
    let first = f.pass().await;
    assert_eq!(first.new_regressions, 2, "{first:?}");
    let records = f.records().await;
    assert!(
        records
            .iter()
            .all(|r| r.changed_at.is_some() && r.passes_gone == 0),
        "{records:?}"
    );
    let second = f.pass().await;
    assert_eq!(second.went_away, 0, "one pass is not enough: {second:?}");
    let third = f.pass().await;
    assert_eq!(third.went_away, 1, "{third:?}");
    let fourth = f.pass().await;
    assert_eq!(
        (fourth.new_regressions, fourth.resolved_regressions),
        (0, 0),
        "closed once, not found again: {fourth:?}"
    );
    let mut states: Vec<_> = f
        .records()
        .await
        .into_iter()
        .map(|r| (r.endpoint, r.state, r.resolution))
        .collect();
    states.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        states,
        [
            (
                "GET /spike".to_owned(),
                RegressionState::Resolved,
                Some(Resolution::WentAway)
            ),
            ("GET /step".to_owned(), RegressionState::Open, None),
        ]
    );
}

/// A pass that shows the regression again resets the count of passes without it.
#[tokio::test]
async fn a_regression_seen_again_is_not_gone() {
    let f = fixture();
    regressed(&f).await;
    f.pass().await;
    let mut r = f.records().await.remove(0);
    r.passes_gone = 1;
    f.store.put_regression(&r).await.expect("put");
    let report = f.pass().await;
    assert_eq!(report.went_away, 0, "{report:?}");
    let records = f.records().await;
    assert_eq!(
        (records[0].state, records[0].passes_gone),
        (RegressionState::Open, 0)
    );
}

/// One build that makes five endpoints of two services dearer is one incident: every record
/// names it, the pass reports one new incident, and the next pass none.
#[tokio::test]
async fn one_bad_build_across_services_is_one_incident() {
    let f = fixture();
    let now = now_ns();
    for (service, endpoint) in [
        ("shop", "GET /a"),
        ("shop", "GET /b"),
        ("shop", "GET /c"),
        ("cart", "GET /d"),
        ("cart", "GET /e"),
    ] {
        let at = |build, cost, end| requests_of(service, endpoint, build, cost, 600, end, 60);
        f.write(at("1", 1e6, now - 7200 * NANOS_PER_SEC)).await;
        f.write(at("2", 1.3e6, now - 3600 * NANOS_PER_SEC)).await;
    }
    let report = f.pass().await;
    assert_eq!(
        (report.new_regressions, report.new_incidents),
        (5, 1),
        "{report:?}"
    );
    let records = f.records().await;
    let incidents: std::collections::HashSet<Option<String>> =
        records.iter().map(|r| r.incident.clone()).collect();
    assert_eq!(incidents.len(), 1, "{records:#?}");
    let want = profwatch_model::regression::IncidentCause::Build("2".into()).id(&f.tenant.0);
    assert_eq!(incidents.into_iter().next().flatten(), Some(want));
    let again = f.pass().await;
    assert_eq!(again.new_incidents, 0, "{again:?}");
}

/// Six hours of one endpoint whose requests cost the same throughout, with a profile every
/// 10 minutes: `main;handle;big` ~200k self samples per bucket, `main;handle;small` ~4k (2%),
/// `main;handle` itself ~20k. From two hours ago `small` gains `gain` samples per bucket, taken
/// from `handle`'s own when `shifted` (a cost shift) or added when not.
async fn function_rise(f: &Fixture, gain: f64, shifted: bool) -> i64 {
    use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
    let now = now_ns();
    let bucket = 600 * NANOS_PER_SEC;
    let start = (now - 6 * 3600 * NANOS_PER_SEC) / bucket * bucket;
    let changed = start + 24 * bucket;
    f.write(requests("1", 1e6, 6 * 60 * 6, now, 6 * 60)).await;
    let mut rng = Rng::new(5);
    let mut batches = Vec::new();
    for b in 0..36i64 {
        let ts = start + b * bucket + bucket / 2;
        let after = ts >= changed;
        let (small, handle) = match (after, shifted) {
            (false, _) => (4000.0, 20_000.0),
            (true, false) => (4000.0 + gain, 20_000.0),
            (true, true) => (4000.0 + gain, 20_000.0 - gain),
        };
        let poisson =
            |rng: &mut Rng, mean: f64| (mean + mean.sqrt() * rng.normal()).max(0.0) as u64;
        batches.push(ProfileBatch {
            ts,
            labels: SampleLabels {
                service: SERVICE.into(),
                endpoint: ENDPOINT.into(),
                build: "1".into(),
                ..Default::default()
            },
            samples: [
                ("main;handle;big", poisson(&mut rng, 200_000.0)),
                ("main;handle;small", poisson(&mut rng, small)),
                ("main;handle", poisson(&mut rng, handle)),
            ]
            .iter()
            .map(|(s, n)| StackSample {
                frames: s.split(';').map(str::to_owned).collect(),
                samples: *n,
                cpu_ns: 0,
            })
            .collect(),
        });
    }
    f.store
        .write_profiles(&f.tenant, batches)
        .await
        .expect("profiles");
    changed
}

/// A 5% rise of a function holding 2% of its endpoint is reported as a function-level record,
/// placed where it happened, though the endpoint's cost per request did not change.
#[tokio::test]
async fn a_functions_rise_is_found_while_its_endpoint_stays_flat() {
    let f = fixture();
    let changed = function_rise(&f, 200.0, false).await;
    let report = f.pass().await;
    let records = f.records().await;
    assert_eq!(report.new_regressions, 1, "{report:?} {records:#?}");
    let r = &records[0];
    assert_eq!(r.function.as_deref(), Some("small"), "{r:#?}");
    assert_eq!(
        (r.endpoint.as_str(), r.metric.as_str()),
        (ENDPOINT, "samples")
    );
    assert!((1.02..1.09).contains(&r.effect), "{r:#?}");
    let at = r.changed_at.expect("placed");
    assert!((at - changed).abs() <= 2 * 600 * NANOS_PER_SEC, "{r:#?}");
    assert_eq!(f.pass().await.new_regressions, 0, "recorded once");
    // The rise is still there: the record stays open, pass after pass.
    let later = f.pass().await;
    assert_eq!(later.went_away, 0, "{later:?}");
    let records = f.records().await;
    assert_eq!(
        (records.len(), records[0].state, records[0].passes_gone),
        (1, RegressionState::Open, 0),
        "{records:#?}"
    );
}

/// A function record whose rise is no longer in the profiles (the function's share over the
/// latest windows is what it was before the change) closes itself as "went away" after
/// `went_away_passes` passes: the record found on a rise, put into a store whose profiles never
/// rose.
#[tokio::test]
async fn a_functions_rise_that_is_gone_closes_itself() {
    let rose = fixture();
    function_rise(&rose, 200.0, false).await;
    rose.pass().await;
    let record = rose.records().await.remove(0);
    assert_eq!(record.function.as_deref(), Some("small"), "{record:#?}");

    let f = fixture();
    function_rise(&f, 0.0, false).await;
    f.store.put_regression(&record).await.expect("put");
    let first = f.pass().await;
    assert_eq!(
        (first.new_regressions, first.went_away),
        (0, 0),
        "{first:?}"
    );
    assert_eq!(f.records().await[0].passes_gone, 1);
    let second = f.pass().await;
    assert_eq!(second.went_away, 1, "{second:?}");
    let r = f.records().await.remove(0);
    assert_eq!(
        (r.state, r.resolution.clone()),
        (RegressionState::Resolved, Some(Resolution::WentAway)),
        "{r:#?}"
    );
}

/// The same rise taken from its caller's own cost is a cost shift: nothing is reported.
#[tokio::test]
async fn a_functions_rise_that_is_a_cost_shift_is_not_reported() {
    let f = fixture();
    function_rise(&f, 600.0, true).await;
    let report = f.pass().await;
    assert_eq!(
        report.new_regressions,
        0,
        "{report:?} {:#?}",
        f.records().await
    );
}

/// Memory samples of `build`: 8 hosts with 2 workers each (pids from `first_pid`), every 10 s
/// over the `minutes` before `end`, each worker `private_mib` MiB private (±2%, fixed per
/// worker; ±0.5% per reading) and 40 MiB shared.
fn memory(
    build: &str,
    private_mib: f64,
    end: i64,
    minutes: i64,
    first_pid: u32,
) -> Vec<profwatch_model::memory::MemorySample> {
    use profwatch_model::memory::{MemoryBytes, MemorySample};
    let mut out = Vec::new();
    for worker in 0..16u32 {
        let wobble = ((worker * 7919) % 101) as f64 / 100.0 - 0.5;
        for tick in 0..minutes * 6 {
            // ±0.5% from one reading to the next.
            let jitter = ((tick as u32 * 31 + worker * 17) % 11) as f64 / 10.0 - 0.5;
            let private =
                (private_mib * (1.0 + 0.04 * wobble) * (1.0 + 0.01 * jitter) * 1048576.0) as u64;
            out.push(MemorySample {
                ts: end - (minutes * 60 - tick * 10) * NANOS_PER_SEC,
                service: SERVICE.into(),
                build: build.into(),
                dc: "dc1".into(),
                host: format!("h{}", worker % 8),
                pid: first_pid + worker,
                bytes: MemoryBytes {
                    rss: private + (40 << 20),
                    pss: private + (20 << 20),
                    shared_clean: 40 << 20,
                    shared_dirty: 0,
                    private_clean: 1 << 20,
                    private_dirty: private - (1 << 20),
                    swap: 0,
                },
            });
        }
    }
    out
}

impl Fixture {
    async fn write_memory(&self, samples: Vec<profwatch_model::memory::MemorySample>) {
        self.store
            .write_memory(&self.tenant, None, samples)
            .await
            .expect("write memory");
    }

    async fn memory_records(&self) -> Vec<profwatch_model::regression::RegressionRecord> {
        use profwatch_model::regression::RegressionKind;
        let mut r = self.records().await;
        r.retain(|r| r.kind == RegressionKind::Memory);
        r
    }
}

/// Builds 1 and 2 cost the same CPU; each worker of build 2 holds 15% more private memory.
async fn heavier_workers(f: &Fixture) {
    let now = now_ns();
    let mid = now - 3600 * NANOS_PER_SEC;
    f.write(requests("1", 1e6, 1500, mid, 60)).await;
    f.write(requests("2", 1e6, 1500, now, 60)).await;
    f.write_memory(memory("1", 100.0, mid, 60, 1000)).await;
    f.write_memory(memory("2", 115.0, now, 60, 2000)).await;
}

#[tokio::test]
async fn a_build_that_makes_each_worker_privately_heavier_is_a_memory_regression() {
    let f = fixture();
    heavier_workers(&f).await;
    let report = f.pass().await;
    let records = f.records().await;
    assert_eq!(records.len(), 1, "one record, of memory only: {records:?}");
    let r = &records[0];
    assert_eq!(r.kind, profwatch_model::regression::RegressionKind::Memory);
    assert_eq!(
        (
            r.endpoint.as_str(),
            r.metric.as_str(),
            r.baseline.as_str(),
            r.candidate.as_str()
        ),
        ("", "private_bytes", "1", "2")
    );
    assert!((1.13..1.17).contains(&r.effect), "about +15%: {r:?}");
    let (lo, hi) = (r.effect_low.expect("low"), r.effect_high.expect("high"));
    assert!(lo <= r.effect && r.effect <= hi && lo > 1.0, "{r:?}");
    assert_eq!(report.new_incidents, 1, "{report:?}");
    assert_eq!(
        r.incident_id(),
        profwatch_model::regression::IncidentCause::Build("2".into()).id(&r.tenant)
    );

    // Found again: the same record.
    let again = f.pass().await;
    assert_eq!(
        (again.new_regressions, again.new_incidents),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(f.memory_records().await.len(), 1);
}

#[tokio::test]
async fn workers_of_equal_memory_make_no_memory_record() {
    let f = fixture();
    let now = now_ns();
    let mid = now - 3600 * NANOS_PER_SEC;
    f.write(requests("1", 1e6, 1500, mid, 60)).await;
    f.write(requests("2", 1e6, 1500, now, 60)).await;
    f.write_memory(memory("1", 100.0, mid, 60, 1000)).await;
    f.write_memory(memory("2", 100.5, now, 60, 2000)).await;
    f.pass().await;
    assert!(f.records().await.is_empty(), "{:?}", f.records().await);
}

#[tokio::test]
async fn a_memory_regression_is_fixed_by_a_build_back_within_its_baseline() {
    let f = fixture();
    heavier_workers(&f).await;
    f.pass().await;
    let now = now_ns();
    f.write(requests("3", 1e6, 1500, now, 30)).await;
    f.write_memory(memory("3", 100.0, now, 40, 3000)).await;
    let report = f.pass().await;
    let records = f.memory_records().await;
    assert_eq!(records.len(), 1, "3 is no heavier than 1: {records:?}");
    assert_eq!(records[0].state, RegressionState::Resolved, "{report:?}");
    assert_eq!(
        records[0].resolution,
        Some(Resolution::Fixed { build: "3".into() })
    );
}

#[tokio::test]
async fn a_service_with_memory_samples_only_is_compared_too() {
    let f = fixture();
    let now = now_ns();
    let mid = now - 3600 * NANOS_PER_SEC;
    f.write_memory(memory("1", 100.0, mid, 60, 1000)).await;
    f.write_memory(memory("2", 115.0, now, 60, 2000)).await;
    let report = f.pass().await;
    let records = f.memory_records().await;
    assert_eq!(records.len(), 1, "{report:?}");
    assert_eq!(records[0].service, SERVICE);
}

/// The same workers' private memory steps up by 15% two hours ago (no new build): a memory
/// change point, recorded once, at about that time.
#[tokio::test]
async fn a_step_in_private_memory_over_time_is_a_memory_change_point() {
    let f = fixture();
    let now = now_ns();
    let min = 60 * NANOS_PER_SEC;
    f.write_memory(memory("1", 100.0, now - 120 * min, 180, 1000))
        .await;
    f.write_memory(memory("1", 115.0, now, 120, 1000)).await;
    let report = f.pass().await;
    let records = f.memory_records().await;
    assert_eq!(records.len(), 1, "{report:?} {records:?}");
    let r = &records[0];
    let at = r.changed_at.expect("a change point's record");
    assert!(
        (at - (now - 120 * min)).abs() <= 20 * min,
        "placed near the step: {} min off",
        (at - (now - 120 * min)) / min
    );
    assert!(
        r.candidate.starts_with("after "),
        "no rollout near it: {r:?}"
    );
    assert!((1.12..1.18).contains(&r.effect), "{r:?}");
    let again = f.pass().await;
    assert_eq!(again.new_regressions, 0, "{again:?}");
}
