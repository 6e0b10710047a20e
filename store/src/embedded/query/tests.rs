use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{RequestEvent, Tenant};

use profwatch_model::query::{
    BuildsQuery, CostSamplesQuery, GroupBy, ServicesQuery, TimeRange, TimeseriesQuery,
};

use crate::embedded::{EmbeddedConfig, EmbeddedStore};
use crate::Store;

fn events(n: usize) -> Vec<RequestEvent> {
    let now = now_ns();
    (0..n)
        .map(|i| RequestEvent {
            ts: now - 600 * NANOS_PER_SEC + (i as i64) * 1_000_000,
            service: format!("svc{}", i % 3),
            endpoint: format!("GET /{}", i % 5),
            build: format!("b{}", i % 4),
            dc: "dc".into(),
            host: format!("h{}", i % 7),
            status: 200,
            cpu_ns: 1000 + i as u64,
            instructions: None,
            wall_ns: 1,
            weight: 0.5 + (i % 3) as f64,
            labels: Default::default(),
        })
        .collect()
}

async fn answers(store: &EmbeddedStore, range: TimeRange) -> String {
    let tenant = Tenant("t".into());
    let costs = store
        .cost_samples(&CostSamplesQuery {
            tenant: tenant.clone(),
            service: "svc1".into(),
            range,
            builds: vec!["b1".into(), "b3".into()],
            endpoint: Some("GET /2".into()),
        })
        .await
        .expect("cost samples");
    let series = store
        .timeseries(&TimeseriesQuery {
            tenant: tenant.clone(),
            service: "svc2".into(),
            endpoint: "GET /4".into(),
            range,
            step: 60 * NANOS_PER_SEC,
            group_by: GroupBy::Build,
        })
        .await
        .expect("timeseries");
    // Millisecond buckets over the range: too many for the dense table.
    let fine = store
        .timeseries(&TimeseriesQuery {
            tenant: tenant.clone(),
            service: "svc2".into(),
            endpoint: "GET /4".into(),
            range,
            step: 1_000_000,
            group_by: GroupBy::Build,
        })
        .await
        .expect("timeseries");
    let services = store
        .services(&ServicesQuery {
            tenant: tenant.clone(),
            range,
        })
        .await
        .expect("services");
    let builds = store
        .builds(&BuildsQuery {
            tenant,
            service: "svc1".into(),
            range,
        })
        .await
        .expect("builds");
    let rows: Vec<(&str, &str, usize)> = costs
        .iter()
        .map(|c| (c.endpoint.as_str(), c.build.as_str(), c.rows.len()))
        .collect();
    format!("{services:?} {builds:?} {rows:?} {series:?} {fine:?}")
}

/// Counting queries read a segment's per-series totals when their range covers it, and
/// queries for a few series skip row groups; both answer exactly as a scan of every row
/// does: after a flush (totals kept by the writer), after a restart (totals computed by
/// the first query), and over a range that covers the segment only in part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_from_segment_totals_equal_counts_from_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = TimeRange {
        from: now_ns() - 3_600 * NANOS_PER_SEC,
        to: now_ns() + 3_600 * NANOS_PER_SEC,
    };
    // Several row groups (4096 rows each in unit tests).
    let evs = events(30_000);
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
    store
        .write(&Tenant("t".into()), evs.clone())
        .await
        .expect("write");
    let from_memtable = answers(&store, all).await;
    store.flush().await.expect("flush");
    assert!(std::fs::read_dir(dir.path().join("segments"))
        .expect("segments dir")
        .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("seg-"))));
    assert_eq!(answers(&store, all).await, from_memtable);
    drop(store);
    let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("reopen");
    assert_eq!(answers(&store, all).await, from_memtable);
    assert_eq!(answers(&store, all).await, from_memtable);
    // A range that starts inside the segment: its rows are scanned.
    let part = TimeRange {
        from: evs[1_000].ts,
        ..all
    };
    let expected = {
        let dir = tempfile::tempdir().expect("tempdir");
        let reference = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
        reference
            .write(&Tenant("t".into()), evs[1_000..].to_vec())
            .await
            .expect("write");
        answers(&reference, all).await
    };
    assert_eq!(answers(&store, part).await, expected);
}
