//! Tests against a real ClickHouse server.
//!
//! They need `PROFWATCH_TEST_CLICKHOUSE_URL` (start a throwaway server with
//! `scripts/clickhouse.sh start`; `scripts/clickhouse.sh url` prints the URL). Without it they
//! fail, unless `PROFWATCH_SKIP_CLICKHOUSE=1`, in which case each records its skip (see
//! `profwatch_testkit`). Each test works in its own database, dropped at the end even when it
//! fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ::clickhouse::sql::Identifier;
use ::clickhouse::Client;
use profwatch_model::query::{
    EndpointsQuery, GroupBy, ServiceSummary, ServicesQuery, TimeRange, TimeseriesQuery,
};
use profwatch_model::timefmt::now_ns;
use profwatch_model::{RequestEvent, Tenant};
use serde::Deserialize;

use super::client::{NS_PER_DAY, NS_PER_SECOND};
use super::cluster::{cluster_name, with_host};
use super::{migrations, ClickHouseConfig, ClickHouseStore, INSERT_PERMITS};
use crate::{Store, StoreError};

fn test_url() -> Option<String> {
    profwatch_testkit::clickhouse_url()
}

fn unique_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "pw_test_{}_{}_{}",
        now_ns(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn config(url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig::new(url, database)
}

/// Runs `body` with the config of a fresh database, then drops that database, whatever the
/// outcome; re-raises the body's panic.
async fn with_database<F, Fut>(body: F)
where
    F: FnOnce(ClickHouseConfig) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = test_url() else { return };
    let database = unique_database();
    let outcome = tokio::spawn(body(config(&url, &database))).await;
    let dropped = Client::default()
        .with_url(url.as_str())
        .with_validation(false)
        .query("DROP DATABASE IF EXISTS ?")
        .bind(Identifier(&database))
        .execute()
        .await;
    if let Err(join_error) = outcome {
        std::panic::resume_unwind(join_error.into_panic());
    }
    dropped.expect("drop the test database");
}

fn event(ts: i64, endpoint: &str, build: &str, cpu_ns: u64, weight: f64) -> RequestEvent {
    RequestEvent {
        ts,
        service: "checkout".into(),
        endpoint: endpoint.into(),
        build: build.into(),
        dc: "eu1".into(),
        host: "web-1".into(),
        status: 200,
        cpu_ns,
        instructions: None,
        wall_ns: cpu_ns * 2,
        weight,
        labels: BTreeMap::new(),
    }
}

fn assert_close(what: &str, got: f64, truth: f64, tolerance: f64) {
    assert!(
        (got / truth - 1.0).abs() <= tolerance,
        "{what}: got {got}, expected {truth} within {tolerance}"
    );
}

#[tokio::test]
async fn connect_is_refused_cleanly_when_nothing_listens() {
    let err = ClickHouseStore::connect(config("http://127.0.0.1:1", "pw_test_unreachable"))
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test]
async fn round_trip() {
    with_database(|cfg| async move {
        let store = ClickHouseStore::connect(cfg.clone())
            .await
            .expect("connect");
        // Migrations are idempotent: connecting again applies nothing and records nothing.
        let store_again = ClickHouseStore::connect(cfg.clone())
            .await
            .expect("reconnect");
        let recorded: u64 = store_again
            .client
            .query("SELECT count() FROM schema_migrations")
            .fetch_one()
            .await
            .expect("count migrations");
        assert_eq!(recorded, migrations::MIGRATIONS.len() as u64);
        assert_eq!(store.kind(), "clickhouse");
        store.ready().await.expect("ready");
        assert!(!store.server_version().is_empty());

        let tenant = Tenant("acme".into());
        let minute = 60 * NS_PER_SECOND;
        let base = (now_ns() - 10 * minute).div_euclid(minute) * minute;
        let mut e1 = event(base, "GET /a", "1", 1_000_000, 1.0);
        e1.labels.insert("flag".into(), "on".into());
        e1.labels.insert("region".into(), "it's \"quoted\"".into());
        let e2 = event(base + 61 * NS_PER_SECOND, "GET /a", "2", 3_000_000, 2.0);
        let mut e3 = event(base + 5 * NS_PER_SECOND, "POST /b", "1", 5_000_000, 1.0);
        e3.instructions = Some(10_000_000);
        store
            .write(&tenant, vec![e1.clone(), e2.clone(), e3.clone()])
            .await
            .expect("write");
        let mut other_service = event(base, "GET /search", "1", 2_000_000, 1.0);
        other_service.service = "search".into();
        store
            .write(&tenant, vec![other_service])
            .await
            .expect("write search");
        store.write(&tenant, Vec::new()).await.expect("empty batch");

        let range = TimeRange {
            from: base,
            to: base + 10 * minute,
        };

        // Grouped by build: counts, means, p50 within 1% of the truth, instructions.
        let by_build = store
            .endpoints(&EndpointsQuery {
                tenant: tenant.clone(),
                service: "checkout".into(),
                range,
                group_by: GroupBy::Build,
            })
            .await
            .expect("endpoints by build");
        let keys: Vec<(&str, Option<&str>)> = by_build
            .iter()
            .map(|r| (r.endpoint.as_str(), r.group.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                ("GET /a", Some("1")),
                ("GET /a", Some("2")),
                ("POST /b", Some("1"))
            ]
        );
        for (row, (requests, cpu)) in
            by_build
                .iter()
                .zip([(1.0, 1_000_000.0), (2.0, 3_000_000.0), (1.0, 5_000_000.0)])
        {
            let s = &row.stats;
            assert_eq!(s.requests, requests, "{row:?}");
            assert_close("mean", s.cpu_ns.mean, cpu, 1e-9);
            for (what, p) in [
                ("p50", s.cpu_ns.p50),
                ("p90", s.cpu_ns.p90),
                ("p99", s.cpu_ns.p99),
            ] {
                assert_close(what, p, cpu, 0.01);
            }
        }
        assert_eq!(by_build[0].stats.instructions, None);
        assert_eq!(by_build[0].stats.instructions_requests, 0.0);
        assert_eq!(by_build[1].stats.instructions, None);
        let with_instructions = by_build[2]
            .stats
            .instructions
            .as_ref()
            .expect("POST /b had instructions");
        assert_eq!(by_build[2].stats.instructions_requests, 1.0);
        assert_close("instructions mean", with_instructions.mean, 1e7, 1e-9);
        assert_close("instructions p50", with_instructions.p50, 1e7, 0.01);

        // Ungrouped: weights count in the mean and the percentiles.
        let plain = store
            .endpoints(&EndpointsQuery {
                tenant: tenant.clone(),
                service: "checkout".into(),
                range,
                group_by: GroupBy::None,
            })
            .await
            .expect("endpoints");
        assert_eq!(plain.len(), 2);
        assert_eq!(plain[0].endpoint, "GET /a");
        assert_eq!(plain[0].group, None);
        assert_eq!(plain[0].stats.requests, 3.0);
        assert_close("weighted mean", plain[0].stats.cpu_ns.mean, 7e6 / 3.0, 1e-9);
        assert_close("weighted p50", plain[0].stats.cpu_ns.p50, 3e6, 0.01);
        assert_close("weighted p99", plain[0].stats.cpu_ns.p99, 3e6, 0.01);

        // The range is half-open: an event exactly at `to` is out.
        let before_e2 = store
            .endpoints(&EndpointsQuery {
                tenant: tenant.clone(),
                service: "checkout".into(),
                range: TimeRange {
                    from: base,
                    to: e2.ts,
                },
                group_by: GroupBy::None,
            })
            .await
            .expect("endpoints before e2");
        assert_eq!(before_e2[0].stats.requests, 1.0);

        // Timeseries: one-minute buckets, starts in unix seconds, sorted by time then group.
        let ts_query = TimeseriesQuery {
            tenant: tenant.clone(),
            service: "checkout".into(),
            endpoint: "GET /a".into(),
            range,
            step: minute,
            group_by: GroupBy::None,
        };
        let points = store.timeseries(&ts_query).await.expect("timeseries");
        let base_s = base / NS_PER_SECOND;
        let summary: Vec<(i64, Option<String>, f64)> = points
            .iter()
            .map(|p| (p.time, p.group.clone(), p.stats.requests))
            .collect();
        assert_eq!(summary, [(base_s, None, 1.0), (base_s + 60, None, 2.0)]);
        assert_close("bucket mean", points[1].stats.cpu_ns.mean, 3e6, 1e-9);
        let hourly = store
            .timeseries(&TimeseriesQuery {
                step: 3600 * NS_PER_SECOND,
                group_by: GroupBy::Host,
                ..ts_query.clone()
            })
            .await
            .expect("hourly timeseries");
        let grouped: Vec<(i64, Option<String>)> =
            hourly.iter().map(|p| (p.time, p.group.clone())).collect();
        let hour_starts: Vec<i64> = [e1.ts, e2.ts]
            .iter()
            .map(|ts| ts.div_euclid(3600 * NS_PER_SECOND) * 3600)
            .collect();
        let mut expected: Vec<(i64, Option<String>)> = hour_starts
            .iter()
            .map(|t| (*t, Some("web-1".to_owned())))
            .collect();
        expected.dedup();
        assert_eq!(grouped, expected);
        let zero_step = store
            .timeseries(&TimeseriesQuery {
                step: 0,
                ..ts_query.clone()
            })
            .await
            .expect_err("a zero step is refused");
        assert!(matches!(zero_step, StoreError::Query(_)), "{zero_step:?}");

        // Services: by name, weighted.
        let services = store
            .services(&ServicesQuery {
                tenant: tenant.clone(),
                range,
            })
            .await
            .expect("services");
        assert_eq!(
            services,
            [
                ServiceSummary {
                    service: "checkout".into(),
                    requests: 4.0
                },
                ServiceSummary {
                    service: "search".into(),
                    requests: 1.0
                }
            ]
        );

        // Tenant isolation.
        let other = Tenant("other".into());
        let none = store
            .services(&ServicesQuery {
                tenant: other.clone(),
                range,
            })
            .await
            .expect("other services");
        assert!(none.is_empty(), "{none:?}");
        let none = store
            .endpoints(&EndpointsQuery {
                tenant: other.clone(),
                service: "checkout".into(),
                range,
                group_by: GroupBy::Build,
            })
            .await
            .expect("other endpoints");
        assert!(none.is_empty(), "{none:?}");
        let none = store
            .timeseries(&TimeseriesQuery {
                tenant: other,
                ..ts_query.clone()
            })
            .await
            .expect("other timeseries");
        assert!(none.is_empty(), "{none:?}");

        // Hostile strings are bound, not spliced.
        let hostile = store
            .endpoints(&EndpointsQuery {
                tenant: Tenant("x' OR 1=1 --".into()),
                service: "checkout') OR ('1'='1".into(),
                range,
                group_by: GroupBy::None,
            })
            .await
            .expect("hostile strings are just values");
        assert!(hostile.is_empty(), "{hostile:?}");

        // Labels round-trip as two aligned arrays.
        #[derive(::clickhouse::Row, Deserialize, Debug, PartialEq)]
        #[clickhouse(crate = "::clickhouse")]
        struct LabelsRow {
            keys: Vec<String>,
            values: Vec<String>,
        }
        let labels: Vec<LabelsRow> = store
            .client
            .query("SELECT label_keys, label_values FROM events WHERE ts = ? AND endpoint = ?")
            .bind(e1.ts)
            .bind("GET /a")
            .fetch_all()
            .await
            .expect("labels");
        assert_eq!(
            labels,
            [LabelsRow {
                keys: vec!["flag".to_owned(), "region".to_owned()],
                values: vec!["on".to_owned(), "it's \"quoted\"".to_owned()]
            }]
        );

        // After shutdown, writes are refused; reads still work.
        store.shutdown().await.expect("shutdown");
        let closed = store
            .write(&tenant, vec![e1])
            .await
            .expect_err("write after shutdown");
        assert!(matches!(closed, StoreError::Closed), "{closed:?}");
        store.ready().await.expect("ready after shutdown");
    })
    .await;
}

#[tokio::test]
async fn retention_drops_whole_old_partitions() {
    with_database(|cfg| async move {
        let store = ClickHouseStore::connect(cfg).await.expect("connect");
        assert_eq!(store.retention_days(), 30);
        let tenant = Tenant("acme".into());
        let now = now_ns();
        let old = now - 40 * NS_PER_DAY;
        store
            .write(
                &tenant,
                vec![
                    event(old, "GET /old", "1", 1_000, 1.0),
                    event(now, "GET /new", "1", 1_000, 1.0),
                ],
            )
            .await
            .expect("write");
        let all = TimeRange {
            from: old - NS_PER_DAY,
            to: now + NS_PER_DAY,
        };
        let q = EndpointsQuery {
            tenant: tenant.clone(),
            service: "checkout".into(),
            range: all,
            group_by: GroupBy::None,
        };
        let before: Vec<String> = store
            .endpoints(&q)
            .await
            .expect("before")
            .into_iter()
            .map(|r| r.endpoint)
            .collect();
        assert_eq!(before, ["GET /new", "GET /old"]);
        // The old day's partition of `events` and of the three rollups: the answer after it
        // reads the hourly rollup for whole hours, so the rollups' rows went too.
        assert_eq!(store.enforce_retention().await.expect("enforce"), 4);
        let after: Vec<String> = store
            .endpoints(&q)
            .await
            .expect("after")
            .into_iter()
            .map(|r| r.endpoint)
            .collect();
        assert_eq!(after, ["GET /new"]);
        assert_eq!(store.enforce_retention().await.expect("again"), 0);
    })
    .await;
}

#[tokio::test]
async fn a_write_without_an_insert_slot_is_overloaded() {
    with_database(|cfg| async move {
        let store = ClickHouseStore::connect(cfg).await.expect("connect");
        let all = u32::try_from(INSERT_PERMITS).expect("small");
        let held = store.inserts.acquire_many(all).await.expect("permits");
        let err = store
            .write(
                &Tenant("acme".into()),
                vec![event(now_ns(), "GET /a", "1", 1, 1.0)],
            )
            .await
            .expect_err("no slot");
        match err {
            StoreError::Overloaded { what, retry_after } => {
                assert_eq!(what, "clickhouse inserts");
                assert_eq!(retry_after, Duration::from_secs(1));
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        drop(held);
        store
            .write(
                &Tenant("acme".into()),
                vec![event(now_ns(), "GET /a", "1", 1, 1.0)],
            )
            .await
            .expect("a slot is free again");
    })
    .await;
}

#[tokio::test]
async fn a_rejected_insert_is_unavailable() {
    with_database(|cfg| async move {
        let store = ClickHouseStore::connect(cfg).await.expect("connect");
        store
            .client
            .query("DROP TABLE events")
            .execute()
            .await
            .expect("drop events");
        let err = store
            .write(
                &Tenant("acme".into()),
                vec![event(now_ns(), "GET /a", "1", 1, 1.0)],
            )
            .await
            .expect_err("the table is gone");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            err.to_string()
                .contains("inserting 1 events for tenant acme"),
            "{err}"
        );
    })
    .await;
}

#[test]
fn shard_urls_keep_the_scheme_port_and_path_of_the_entry_url() {
    assert_eq!(
        with_host("http://127.0.0.1:8123", "10.0.0.7").as_deref(),
        Some("http://10.0.0.7:8123")
    );
    assert_eq!(
        with_host("https://user@ch.example:8443/proxy", "::1").as_deref(),
        Some("https://[::1]:8443/proxy")
    );
    assert_eq!(
        with_host("http://[::1]:8123", "10.0.0.8").as_deref(),
        Some("http://10.0.0.8:8123")
    );
    assert_eq!(with_host("http://ch", "b").as_deref(), Some("http://b"));
    assert_eq!(with_host("ch:8123", "b"), None);
}

#[test]
fn names_spliced_into_cluster_ddl_are_plain_identifiers() {
    assert!(cluster_name("prod_ch_1").is_ok());
    for bad in ["", "1st", "a-b", "a b", "x; DROP TABLE events", "c`"] {
        assert!(cluster_name(bad).is_err(), "{bad:?}");
    }
}

/// A keyed batch inserted twice, as when its collector died between the insert and the key's
/// record and the client's retry came after the claim expired (`keys::write_once`): on a server
/// with deduplication tokens it is stored once, in the raw rows and in the rollup the view
/// feeds; on an older server (18.16) twice, the window `write_once` documents. Batches without
/// a key are never taken for repeats, however alike. The test command runs this on 18.16 and
/// on a current engine (chDB).
#[tokio::test]
async fn a_keyed_batch_inserted_again_is_stored_once_where_the_server_has_tokens() {
    with_database(|cfg| async move {
        use super::dedup::Dedup;
        use super::{events, profiles};
        use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};

        let store = ClickHouseStore::connect(cfg).await.expect("connect");
        let tenant = Tenant("dedup".into());
        let minute = 60 * NS_PER_SECOND;
        // Whole minutes, an hour back: the rollup answers for all of them.
        let base = (now_ns() / minute - 60) * minute;
        let batch = |endpoint: &str| -> Vec<RequestEvent> {
            (0..40)
                .map(|i| {
                    event(
                        base + i * NS_PER_SECOND,
                        endpoint,
                        "1",
                        1_000 + i as u64,
                        1.0,
                    )
                })
                .collect()
        };
        let keyed = Dedup::for_batch(store.dedup, &tenant, Some("batch-7"));
        let unkeyed = Dedup::for_batch(store.dedup, &tenant, None);
        assert_eq!(
            matches!(keyed, Dedup::Token { .. }),
            store.deduplicates_by_token(),
            "{keyed:?} on ClickHouse {}",
            store.server.raw
        );
        for _ in 0..2 {
            events::insert(&store.client, &tenant, &batch("GET /keyed"), &keyed)
                .await
                .expect("keyed insert");
            events::insert(&store.client, &tenant, &batch("GET /unkeyed"), &unkeyed)
                .await
                .expect("unkeyed insert");
        }
        let once_if_tokens = if store.deduplicates_by_token() {
            40
        } else {
            80
        };

        let raw = |endpoint: &'static str| {
            let client = store.client.clone();
            let tenant = tenant.clone();
            async move {
                client
                    .query("SELECT count() FROM events WHERE tenant = ? AND endpoint = ?")
                    .bind(tenant.as_str())
                    .bind(endpoint)
                    .fetch_one::<u64>()
                    .await
                    .expect("count events")
            }
        };
        assert_eq!(
            raw("GET /keyed").await,
            once_if_tokens,
            "keyed batch, raw rows"
        );
        assert_eq!(
            raw("GET /unkeyed").await,
            80,
            "a batch without a key, twice"
        );

        let rollup: Vec<(String, f64)> = store
            .endpoints(&EndpointsQuery {
                tenant: tenant.clone(),
                service: "checkout".into(),
                range: TimeRange {
                    from: base,
                    to: base + 2 * minute,
                },
                group_by: GroupBy::None,
            })
            .await
            .expect("endpoints")
            .into_iter()
            .map(|r| (r.endpoint, r.stats.requests))
            .collect();
        assert_eq!(
            rollup,
            [
                ("GET /keyed".to_owned(), once_if_tokens as f64),
                ("GET /unkeyed".to_owned(), 80.0)
            ],
            "requests as the endpoints summary (rollup) counts them"
        );

        let profile = vec![ProfileBatch {
            ts: base,
            labels: SampleLabels {
                service: "checkout".into(),
                endpoint: "GET /keyed".into(),
                build: "1".into(),
                dc: "eu1".into(),
                host: "web-1".into(),
                extra: Default::default(),
            },
            samples: vec![StackSample {
                frames: vec!["main".into(), "price".into()],
                samples: 3,
                cpu_ns: 30_000_000,
            }],
        }];
        for _ in 0..2 {
            profiles::insert(
                &store.client,
                &store.known_stacks,
                &tenant,
                &profile,
                &keyed,
            )
            .await
            .expect("keyed profile insert");
        }
        let samples: u64 = store
            .client
            .query("SELECT count() FROM samples WHERE tenant = ?")
            .bind(tenant.as_str())
            .fetch_one()
            .await
            .expect("count samples");
        assert_eq!(
            samples,
            once_if_tokens / 40,
            "keyed profile batch, sample rows"
        );
    })
    .await;
}

/// Migration 10 on a real server: on a modern one every column it names carries the codec it
/// chose (and the rows written afterwards read back); on an old one it changes nothing.
#[tokio::test]
async fn columns_carry_their_chosen_codecs_where_the_server_has_codecs() {
    with_database(|cfg| async move {
        let store = ClickHouseStore::connect(cfg).await.expect("connect");
        let ctx = migrations::DdlContext {
            modern: store.server.is_modern(),
            retention_days: 30,
        };
        let chosen = (migrations::MIGRATIONS
            .iter()
            .find(|m| m.version == 10)
            .expect("migration 10")
            .codecs)(&ctx);
        if !store.server.is_modern() {
            assert!(chosen.is_empty(), "{chosen:?}");
            return;
        }
        assert!(chosen.len() >= 19, "{chosen:?}");
        for c in &chosen {
            let (ty, codec): (String, String) = store
                .client
                .query(
                    "SELECT type, compression_codec FROM system.columns \
                     WHERE database = currentDatabase() AND table = ? AND name = ?",
                )
                .bind(c.table)
                .bind(c.column)
                .fetch_one()
                .await
                .unwrap_or_else(|e| panic!("{}.{}: {e}", c.table, c.column));
            let (want_ty, want_codec) = c.ty.split_once(" CODEC").expect("a codec");
            assert_eq!(ty, want_ty, "{}.{}", c.table, c.column);
            // The server spells defaults out: `Delta` as `Delta(8)`.
            let got = codec.replace("Delta(8)", "Delta");
            assert_eq!(
                format!("CODEC{want_codec}"),
                got,
                "{}.{} on ClickHouse {}",
                c.table,
                c.column,
                store.server.raw
            );
        }
        let tenant = Tenant("codecs".into());
        let base = (now_ns() / NS_PER_SECOND - 600) * NS_PER_SECOND;
        let mut e = event(base, "GET /codec", "1", 1_234_567, 1.0);
        e.instructions = Some(7_654_321);
        store.write(&tenant, vec![e]).await.expect("write");
        let back: (u64, Option<u64>, u64, u16) = store
            .client
            .query(
                "SELECT cpu_ns, instructions, wall_ns, status FROM events \
                 WHERE tenant = 'codecs' AND endpoint = 'GET /codec'",
            )
            .fetch_one()
            .await
            .expect("read back");
        assert_eq!(back, (1_234_567, Some(7_654_321), 2_469_134, 200));
    })
    .await;
}

#[tokio::test]
async fn a_range_in_the_last_hour_before_the_end_of_time_is_answered() {
    with_database(|cfg| async move {
        let store = ClickHouseStore::connect(cfg).await.expect("connect");
        // Whole minutes inside, both ends in one hour whose end is past `i64::MAX`: the hourly
        // rollup must not be planned for it.
        let range = TimeRange {
            from: 9_223_371_900 * NS_PER_SECOND,
            to: 9_223_372_036 * NS_PER_SECOND,
        };
        let rows = store
            .endpoints(&EndpointsQuery {
                tenant: Tenant("acme".into()),
                service: "checkout".into(),
                range,
                group_by: GroupBy::Build,
            })
            .await
            .expect("answered");
        assert!(rows.is_empty());
    })
    .await;
}
