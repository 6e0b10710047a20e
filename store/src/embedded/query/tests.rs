use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{RequestEvent, Tenant};

use profwatch_model::query::{
    BuildsQuery, CostSamplesQuery, EndpointStats, EndpointsQuery, GroupBy, ServicesQuery,
    TimeRange, TimeseriesQuery,
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

/// Segments written by an earlier run get their rollup from the first query that can use it,
/// and the answers equal those read from rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopened_segments_get_rollups_and_answer_as_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = |rollups: bool| {
        let mut c = EmbeddedConfig::new(dir.path());
        c.flush_rows = 1000;
        c.rollups = rollups;
        c
    };
    let now = now_ns();
    let evs: Vec<RequestEvent> = events(5000)
        .into_iter()
        .map(|mut e| {
            // Few distinct costs and one endpoint per service: cells of many requests.
            e.cpu_ns = 1000 * (1 + e.cpu_ns % 3);
            e.endpoint = "GET /".into();
            e
        })
        .collect();
    let store = EmbeddedStore::open(cfg(false)).expect("open");
    store.write(&Tenant("t".into()), evs).await.expect("write");
    store.shutdown().await.expect("shutdown");
    drop(store);
    let q = EndpointsQuery {
        tenant: Tenant("t".into()),
        service: "svc1".into(),
        range: TimeRange {
            from: now - 3600 * NANOS_PER_SEC,
            to: now + 60 * NANOS_PER_SEC,
        },
        group_by: GroupBy::Host,
    };
    let by_build = EndpointsQuery {
        group_by: GroupBy::Build,
        ..q.clone()
    };
    let raw = EmbeddedStore::open(cfg(false)).expect("reopen");
    let want = raw.endpoints(&q).await.expect("raw");
    let want_by_build = raw.endpoints(&by_build).await.expect("raw by build");
    raw.shutdown().await.expect("shutdown");
    drop(raw);
    let rolled = EmbeddedStore::open(cfg(true)).expect("reopen");
    let got = rolled.endpoints(&q).await.expect("rolled");
    let segments: Vec<_> = rolled
        .sources()
        .into_iter()
        .filter_map(|s| match s {
            crate::embedded::query::Source::Segment(seg) => Some(seg),
            _ => None,
        })
        .collect();
    assert!(!segments.is_empty());
    assert!(
        segments.iter().all(|s| matches!(s.rollup(), Some(Some(_)))),
        "every segment has its rollup now"
    );
    assert!(
        segments.iter().all(|s| s.endpoint_rollup().is_none()),
        "grouped by host, no segment needed its rollup per endpoint"
    );
    let same = |got: &[EndpointStats], want: &[EndpointStats]| {
        assert_eq!(got.len(), want.len());
        for (a, b) in got.iter().zip(want) {
            assert_eq!((&a.endpoint, &a.group), (&b.endpoint, &b.group));
            assert!((a.stats.requests - b.stats.requests).abs() < 1e-9);
            assert!((a.stats.cpu_ns.mean - b.stats.cpu_ns.mean).abs() < 1e-6);
            assert_eq!(a.stats.cpu_ns.p50, b.stats.cpu_ns.p50);
            assert_eq!(a.stats.cpu_ns.p99, b.stats.cpu_ns.p99);
        }
    };
    same(&got, &want);
    // By build, every segment gets and uses its rollup per endpoint and hour.
    let got = rolled.endpoints(&by_build).await.expect("rolled by build");
    assert!(
        segments
            .iter()
            .all(|s| matches!(s.endpoint_rollup(), Some(Some(_)))),
        "every segment has its rollup per endpoint now"
    );
    same(&got, &want_by_build);
    rolled.shutdown().await.expect("shutdown");
}
