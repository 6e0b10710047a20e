//! Rollups answer as raw rows: the same queries through a store that reads rollups and one that
//! reads raw rows, over the same data, on each backend, and after an upgrade in place that
//! back-fills them (an embedded directory reopened, a ClickHouse database from before
//! migration 7).

use std::sync::Arc;
use std::time::Duration;

use profwatch_model::query::{
    BuildsQuery, CostStats, EndpointsQuery, GroupBy, SeriesQuery, ServicesQuery, TimeRange,
    TimeseriesQuery,
};
use profwatch_model::sketch::RELATIVE_ACCURACY;
use profwatch_model::timefmt::NANOS_PER_SEC;
use profwatch_model::RequestEvent;
use profwatch_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_store::Store;
use profwatch_testkit::clickhouse_cluster::CLUSTER;

use crate::harness;
use crate::suite::{self, all_time, base, tenant};

const MINUTE: i64 = 60 * NANOS_PER_SEC;
const SECOND: i64 = NANOS_PER_SEC;
const HOUR: i64 = 60 * MINUTE;

/// The suite's workload moved 17 s off the minute, so ranges have partial minutes at both ends,
/// over 12 minutes, with costs rounded to 4 significant bits (cells of many requests and few
/// sketch buckets, so the embedded store keeps its rollups).
fn data(seed: u64) -> Vec<RequestEvent> {
    let round = |x: u64| {
        let shift = (64 - x.leading_zeros()).saturating_sub(4);
        x >> shift << shift
    };
    suite::workload(6000, seed)
        .into_iter()
        .map(|mut e| {
            e.ts = base() + (e.ts - base()) % (12 * MINUTE) + 17 * SECOND;
            e.cpu_ns = round(e.cpu_ns);
            e.instructions = e.instructions.map(round);
            e.weight = if e.cpu_ns % 3 == 0 { 2.5 } else { 1.0 };
            e
        })
        .collect()
}

/// Ranges with partial minutes at both ends, whole minutes, and less than a minute; and, for
/// the hourly rollup, whole hours around the data with partial hours at the ends (cells read
/// whole: their events lie inside), and a range starting inside the data (the first hour's
/// cell holds events before it, so it is read as minutes and raw rows).
pub fn ranges() -> Vec<TimeRange> {
    let b = base();
    let hour = b - b.rem_euclid(HOUR);
    vec![
        TimeRange {
            from: hour - HOUR + 7 * SECOND,
            to: hour + 2 * HOUR + 13 * SECOND,
        },
        TimeRange {
            from: b + 4 * MINUTE + 3 * SECOND,
            to: hour + 3 * HOUR + 5 * SECOND,
        },
        TimeRange {
            from: hour - 2 * HOUR,
            to: hour + 2 * HOUR,
        },
        all_time(),
        TimeRange {
            from: b + 2 * MINUTE + 13 * SECOND,
            to: b + 9 * MINUTE + 41 * SECOND,
        },
        TimeRange {
            from: b + 3 * MINUTE,
            to: b + 11 * MINUTE,
        },
        TimeRange {
            from: b + 5 * MINUTE + 1,
            to: b + 6 * MINUTE - 1,
        },
    ]
}

/// Every summary the store answers, as comparable rows: (what, stats).
async fn answers(store: &dyn Store, ranges: &[TimeRange]) -> Vec<(String, Option<CostStats>, f64)> {
    let mut out = Vec::new();
    let service = || "shop".to_owned();
    for &range in ranges {
        for g in [GroupBy::None, GroupBy::Build, GroupBy::Dc, GroupBy::Host] {
            let rows = store
                .endpoints(&EndpointsQuery {
                    tenant: tenant(),
                    service: service(),
                    range,
                    group_by: g,
                })
                .await
                .expect("endpoints");
            for r in rows {
                let what = format!("endpoints {range:?} {g:?} {} {:?}", r.endpoint, r.group);
                out.push((what, Some(r.stats), 0.0));
            }
        }
        for (step, g) in [
            (MINUTE, GroupBy::None),
            (5 * MINUTE, GroupBy::Build),
            (30 * SECOND, GroupBy::Host),
            (HOUR, GroupBy::Build),
        ] {
            let points = store
                .timeseries(&TimeseriesQuery {
                    tenant: tenant(),
                    service: service(),
                    endpoint: "POST /checkout".into(),
                    range,
                    step,
                    group_by: g,
                })
                .await
                .expect("timeseries");
            for p in points {
                let what = format!("timeseries {range:?} {step} {g:?} {} {:?}", p.time, p.group);
                out.push((what, Some(p.stats), 0.0));
            }
        }
        let series = store
            .endpoint_series(&SeriesQuery {
                tenant: tenant(),
                service: service(),
                range,
                step: 5 * MINUTE,
            })
            .await
            .expect("endpoint series");
        for s in series {
            for p in s.points {
                let what = format!("series {range:?} {} {}", s.endpoint, p.time);
                out.push((what, Some(p.stats), 0.0));
            }
        }
        let services = store
            .services(&ServicesQuery {
                tenant: tenant(),
                range,
            })
            .await
            .expect("services");
        for s in services {
            out.push((
                format!("services {range:?} {}", s.service),
                None,
                s.requests,
            ));
        }
        let builds = store
            .builds(&BuildsQuery {
                tenant: tenant(),
                service: service(),
                range,
            })
            .await
            .expect("builds");
        for b in builds {
            let what = format!(
                "builds {range:?} {} {} {}",
                b.build, b.first_seen, b.last_seen
            );
            out.push((what, None, b.requests));
        }
    }
    out
}

fn close(got: f64, want: f64, rel: f64, what: &str) {
    let err = if want == 0.0 {
        got.abs()
    } else {
        (got / want - 1.0).abs()
    };
    assert!(
        err <= rel,
        "{what}: {got} vs {want} (relative {err:.2e} > {rel})"
    );
}

/// Rollups and raw rows agree: counts and sums up to floating-point order, quantiles within
/// the sketch's error of each other (they are computed from the same buckets, so in practice
/// equal).
fn assert_same(
    rolled: &[(String, Option<CostStats>, f64)],
    raw: &[(String, Option<CostStats>, f64)],
) {
    let keys =
        |a: &[(String, Option<CostStats>, f64)]| a.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(rolled), keys(raw), "the same rows, in the same order");
    // One bucket apart at most: (1 + α) / (1 - α) - 1.
    let q = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY) - 1.0 + 1e-9;
    for ((what, a, n), (_, b, m)) in rolled.iter().zip(raw) {
        close(*n, *m, 1e-9, what);
        let (Some(a), Some(b)) = (a, b) else { continue };
        close(a.requests, b.requests, 1e-9, &format!("{what} requests"));
        close(
            a.cpu_ns.mean,
            b.cpu_ns.mean,
            1e-9,
            &format!("{what} cpu mean"),
        );
        for (x, y, l) in [
            (a.cpu_ns.p50, b.cpu_ns.p50, "p50"),
            (a.cpu_ns.p90, b.cpu_ns.p90, "p90"),
            (a.cpu_ns.p99, b.cpu_ns.p99, "p99"),
        ] {
            close(x, y, q, &format!("{what} cpu {l}"));
        }
        close(
            a.instructions_requests,
            b.instructions_requests,
            1e-9,
            &format!("{what} instructions requests"),
        );
        match (&a.instructions, &b.instructions) {
            (None, None) => {}
            (Some(x), Some(y)) => {
                close(x.mean, y.mean, 1e-9, &format!("{what} instr mean"));
                close(x.p50, y.p50, q, &format!("{what} instr p50"));
                close(x.p99, y.p99, q, &format!("{what} instr p99"));
            }
            _ => panic!("{what}: instructions present on one side only"),
        }
    }
}

/// The rolled-up answers over the whole range also match the exact figures of the events.
async fn assert_true_to(store: &dyn Store, events: &[RequestEvent]) {
    let rows = store
        .endpoints(&EndpointsQuery {
            tenant: tenant(),
            service: "shop".into(),
            range: all_time(),
            group_by: GroupBy::Build,
        })
        .await
        .expect("endpoints");
    assert_eq!(rows.len(), 6);
    for r in rows {
        let mine: Vec<&RequestEvent> = events
            .iter()
            .filter(|e| e.endpoint == r.endpoint && Some(&e.build) == r.group.as_ref())
            .collect();
        suite::check(&r.stats, &mine, &r.endpoint);
    }
}

pub fn embedded_config(dir: &std::path::Path, rollups: bool) -> EmbeddedConfig {
    let mut cfg = EmbeddedConfig::new(dir);
    cfg.flush_rows = 700;
    cfg.flush_interval = Duration::from_millis(50);
    cfg.compact_rows = 20_000;
    cfg.rollups = rollups;
    cfg
}

/// Live (rollups built at flush and compaction), then reopened twice: raw rows, and rollups
/// back-filled from the segments on disk (what an existing data directory gets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_rollups_answer_as_raw_rows_live_and_after_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ranges = ranges();
    let events = data(31);
    let live: Arc<dyn Store> =
        Arc::new(EmbeddedStore::open(embedded_config(dir.path(), true)).expect("open"));
    suite::write_all(&live, &events).await;
    let live_answers = answers(live.as_ref(), &ranges).await;
    live.shutdown().await.expect("shutdown");
    drop(live);

    let raw = EmbeddedStore::open(embedded_config(dir.path(), false)).expect("reopen raw");
    let raw_answers = answers(&raw, &ranges).await;
    raw.shutdown().await.expect("shutdown");
    drop(raw);
    assert_same(&live_answers, &raw_answers);

    let upgraded = EmbeddedStore::open(embedded_config(dir.path(), true)).expect("reopen");
    assert_same(&answers(&upgraded, &ranges).await, &raw_answers);
    assert_true_to(&upgraded, &events).await;
    upgraded.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_rollups_answer_as_raw_rows() {
    let Some(h) = harness::clickhouse("rollups").await else {
        return;
    };
    let url = harness::clickhouse_url().expect("url");
    let ranges = ranges();
    let events = data(37);
    suite::write_all(&h.store, &events).await;
    let mut cfg = ClickHouseConfig::new(url, h.database());
    cfg.rollups = false;
    let raw = ClickHouseStore::connect(cfg).await.expect("connect raw");
    assert_same(
        &answers(h.store.as_ref(), &ranges).await,
        &answers(&raw, &ranges).await,
    );
    assert_true_to(h.store.as_ref(), &events).await;
    // The hourly rollup answers alone: whole hours, and partial hours whose events all lie
    // inside the range, once the raw rows and the minute rollups are gone.
    let hourly = [ranges[0], ranges[2]];
    let before = hourly_answers(h.store.as_ref(), &hourly).await;
    assert!(before.len() >= 12, "{before:?}");
    let admin = clickhouse::Client::default()
        .with_url(harness::clickhouse_url().expect("url"))
        .with_database(h.database().to_owned())
        .with_validation(false);
    for table in ["events", "events_rollup", "events_rollup_endpoint"] {
        let sql = format!("TRUNCATE TABLE {table}");
        admin
            .query(&sql)
            .execute()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    assert_same(&hourly_answers(h.store.as_ref(), &hourly).await, &before);
    h.finish().await;
}

/// The summaries the hourly rollup serves: endpoints by build and in all, a series with a
/// step of an hour, builds.
async fn hourly_answers(
    store: &dyn Store,
    ranges: &[TimeRange],
) -> Vec<(String, Option<CostStats>, f64)> {
    let mut out = Vec::new();
    for &range in ranges {
        for g in [GroupBy::None, GroupBy::Build] {
            let q = EndpointsQuery {
                tenant: tenant(),
                service: "shop".into(),
                range,
                group_by: g,
            };
            for r in store.endpoints(&q).await.expect("endpoints") {
                let what = format!("endpoints {range:?} {g:?} {} {:?}", r.endpoint, r.group);
                out.push((what, Some(r.stats), 0.0));
            }
        }
        let q = TimeseriesQuery {
            tenant: tenant(),
            service: "shop".into(),
            endpoint: "POST /checkout".into(),
            range,
            step: HOUR,
            group_by: GroupBy::Build,
        };
        for p in store.timeseries(&q).await.expect("timeseries") {
            let what = format!("timeseries {range:?} {} {:?}", p.time, p.group);
            out.push((what, Some(p.stats), 0.0));
        }
        let q = BuildsQuery {
            tenant: tenant(),
            service: "shop".into(),
            range,
        };
        for b in store.builds(&q).await.expect("builds") {
            let what = format!(
                "builds {range:?} {} {} {}",
                b.build, b.first_seen, b.last_seen
            );
            out.push((what, None, b.requests));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_cluster_rollups_answer_as_raw_rows() {
    let Some(h) = harness::clickhouse_cluster("rollups").await else {
        return;
    };
    let urls = harness::cluster().expect("cluster").urls();
    let ranges = ranges();
    let events = data(41);
    suite::write_all(&h.store, &events).await;
    let mut cfg = ClickHouseConfig::new(urls[0].clone(), h.database());
    cfg.cluster = Some(CLUSTER.to_owned());
    cfg.rollups = false;
    let raw = ClickHouseStore::connect(cfg).await.expect("connect raw");
    assert_same(
        &answers(h.store.as_ref(), &ranges).await,
        &answers(&raw, &ranges).await,
    );
    assert_true_to(h.store.as_ref(), &events).await;
    h.finish().await;
}

/// A database from before the rollups (migrations 1 to 6, events in it) is upgraded at
/// connect: the rollup is back-filled from the stored events, later inserts reach it through
/// the view, and connecting again back-fills nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_upgrade_back_fills_the_rollup() {
    let Some(h) = harness::clickhouse("rollup_upgrade").await else {
        return;
    };
    let url = harness::clickhouse_url().expect("url");
    let db = h.database().to_owned();
    let ranges = ranges();
    let events = data(43);
    let (old, new) = events.split_at(3500);
    suite::write_all(&h.store, old).await;
    let admin = clickhouse::Client::default()
        .with_url(url.clone())
        .with_database(db.clone())
        .with_validation(false);
    for sql in [
        "DROP TABLE events_rollup_mv",
        "DROP TABLE events_rollup",
        "DROP TABLE events_rollup_endpoint_mv",
        "DROP TABLE events_rollup_endpoint",
        "DROP TABLE events_rollup_endpoint_hour_mv",
        "DROP TABLE events_rollup_endpoint_hour",
        "TRUNCATE TABLE schema_migrations",
        "INSERT INTO schema_migrations SELECT toUInt32(number + 1), 'before rollups', '18.16.1', now() FROM system.numbers LIMIT 6",
    ] {
        admin.query(sql).execute().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let upgraded = ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), db.clone()))
        .await
        .expect("upgrade");
    for table in [
        "events_rollup",
        "events_rollup_endpoint",
        "events_rollup_endpoint_hour",
    ] {
        let rolled: u64 = admin
            .query(&format!("SELECT count() FROM {table}"))
            .fetch_one()
            .await
            .expect("count rollup rows");
        assert!(rolled > 0, "{table} was back-filled");
    }
    let upgraded: Arc<dyn Store> = Arc::new(upgraded);
    suite::write_all(&upgraded, new).await;
    let again = ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), db.clone()))
        .await
        .expect("connect again");
    let mut cfg = ClickHouseConfig::new(url, db);
    cfg.rollups = false;
    let raw = ClickHouseStore::connect(cfg).await.expect("connect raw");
    let raw_answers = answers(&raw, &ranges).await;
    assert_same(&answers(upgraded.as_ref(), &ranges).await, &raw_answers);
    assert_same(&answers(&again, &ranges).await, &raw_answers);
    assert_true_to(&again, &events).await;
    h.finish().await;
}
