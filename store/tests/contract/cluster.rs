//! What only a cluster has: rows spread over the shards, the same answers as one server, and
//! schema handling across nodes.

use std::sync::Arc;

use profwatch_model::query::{EndpointsQuery, GroupBy, ServicesQuery, TimeseriesQuery};
use profwatch_model::RequestEvent;
use profwatch_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_store::Store;
use profwatch_testkit::clickhouse_cluster::CLUSTER;

use crate::harness;
use crate::suite::{self, all_time, tenant};

/// The same workload as the contract suite, spread over 40 endpoints so both shards get some.
fn spread_workload(n: usize) -> Vec<RequestEvent> {
    suite::workload(n, 5)
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e.endpoint = format!("{} #{}", e.endpoint, i % 40);
            e
        })
        .collect()
}

/// `SELECT count() FROM db.table` on each node directly.
fn counts_per_shard(db: &str, table: &str) -> Vec<u64> {
    let cluster = harness::cluster().expect("cluster");
    (0..2)
        .map(|node| {
            cluster
                .query(node, &format!("SELECT count() FROM {db}.{table}"))
                .unwrap_or_else(|e| panic!("count on node {node}: {e}"))
                .parse()
                .expect("a count")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_on_both_shards_and_reads_see_all_of_them() {
    let Some(h) = harness::clickhouse_cluster("spread").await else {
        return;
    };
    let events = spread_workload(4000);
    suite::write_all(&h.store, &events).await;
    let db = h.database().to_owned();

    let per_shard = counts_per_shard(&db, "events_local");
    assert!(
        per_shard.iter().all(|n| *n > 0),
        "events on each shard: {per_shard:?}"
    );
    assert_eq!(per_shard.iter().sum::<u64>(), events.len() as u64);
    // Each endpoint's rows are on one shard (the sharding key), so per-endpoint reads of a
    // node's local table are whole.
    let cluster = harness::cluster().expect("cluster");
    for node in 0..2 {
        let other = cluster
            .query(
                1 - node,
                &format!("SELECT groupUniqArray(endpoint) FROM {db}.events_local"),
            )
            .expect("query");
        let mine = cluster
            .query(
                node,
                &format!("SELECT arrayJoin(groupUniqArray(endpoint)) FROM {db}.events_local"),
            )
            .expect("query");
        for endpoint in mine.lines() {
            assert!(
                !other.contains(&format!("'{endpoint}'")),
                "{endpoint} is on both shards"
            );
        }
    }

    // Profiles spread too, and read back whole through the Distributed tables.
    let b = suite::base();
    let batches: Vec<_> = (0..40)
        .map(|i| suite::profile_batch(b, &format!("GET /p{i}"), "812", &[("main;work", 3)]))
        .collect();
    h.store
        .write_profiles(&tenant(), batches)
        .await
        .expect("profiles");
    let samples = counts_per_shard(&db, "samples_local");
    assert!(
        samples.iter().all(|n| *n > 0),
        "samples on each shard: {samples:?}"
    );
    let profile = h
        .store
        .profile(&suite::pq(&[], all_time()))
        .await
        .expect("profile");
    let total: u64 = profile.rows.iter().map(|r| r.samples).sum();
    assert_eq!(total, 120);
    h.finish().await;
}

fn close(a: f64, b: f64, what: &str) {
    let tol = 1e-9 * a.abs().max(b.abs()).max(1.0);
    assert!(
        (a - b).abs() <= tol,
        "{what}: cluster {a} vs one server {b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_equal_the_single_server_answer() {
    let Some(single) = harness::clickhouse("same_answer").await else {
        return;
    };
    let Some(cluster) = harness::clickhouse_cluster("same_answer").await else {
        return;
    };
    let events = spread_workload(6000);
    suite::write_all(&single.store, &events).await;
    suite::write_all(&cluster.store, &events).await;

    let services = ServicesQuery {
        tenant: tenant(),
        range: all_time(),
    };
    let (a, b) = (
        cluster.store.services(&services).await.expect("services"),
        single.store.services(&services).await.expect("services"),
    );
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.service, y.service);
        close(x.requests, y.requests, "requests");
    }

    for group_by in [GroupBy::None, GroupBy::Build, GroupBy::Dc, GroupBy::Host] {
        let q = EndpointsQuery {
            tenant: tenant(),
            service: "shop".into(),
            range: all_time(),
            group_by,
        };
        let a = cluster.store.endpoints(&q).await.expect("endpoints");
        let b = single.store.endpoints(&q).await.expect("endpoints");
        assert_eq!(a.len(), b.len(), "{group_by:?}");
        assert!(a.len() >= 40);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.endpoint, &x.group), (&y.endpoint, &y.group));
            let what = format!("{} {:?}", x.endpoint, x.group);
            let (s, t) = (&x.stats, &y.stats);
            close(s.requests, t.requests, &what);
            close(s.cpu_ns.mean, t.cpu_ns.mean, &what);
            close(s.cpu_ns.p50, t.cpu_ns.p50, &what);
            close(s.cpu_ns.p90, t.cpu_ns.p90, &what);
            close(s.cpu_ns.p99, t.cpu_ns.p99, &what);
            assert_eq!(s.instructions.is_some(), t.instructions.is_some(), "{what}");
            if let (Some(i), Some(j)) = (&s.instructions, &t.instructions) {
                close(i.mean, j.mean, &what);
                close(i.p99, j.p99, &what);
            }
        }
    }

    let q = TimeseriesQuery {
        tenant: tenant(),
        service: "shop".into(),
        endpoint: events[0].endpoint.clone(),
        range: all_time(),
        step: 300 * 1_000_000_000,
        group_by: GroupBy::Build,
    };
    let a = cluster.store.timeseries(&q).await.expect("timeseries");
    let b = single.store.timeseries(&q).await.expect("timeseries");
    assert!(!a.is_empty());
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.time, &x.group), (y.time, &y.group));
        close(x.stats.cpu_ns.p90, y.stats.cpu_ns.p90, "timeseries p90");
        close(x.stats.requests, y.stats.requests, "timeseries requests");
    }
    single.finish().await;
    cluster.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_idempotent_across_nodes_and_layouts_do_not_mix() {
    let Some(h) = harness::clickhouse_cluster("schema").await else {
        return;
    };
    let db = h.database().to_owned();
    let urls = harness::cluster().expect("cluster").urls();

    // A second collector entering through the other node: no migration runs again, and it
    // sees what the first wrote.
    suite::write_all(&h.store, &spread_workload(300)).await;
    let mut cfg = ClickHouseConfig::new(urls[0].clone(), db.clone());
    cfg.cluster = Some(CLUSTER.to_owned());
    let second: Arc<dyn Store> = Arc::new(ClickHouseStore::connect(cfg).await.expect("second"));
    let services = ServicesQuery {
        tenant: tenant(),
        range: all_time(),
    };
    let seen = second.services(&services).await.expect("services");
    assert_eq!(seen.len(), 1);
    assert!((seen[0].requests - 300.0).abs() < 1e-9);
    for node in 0..2 {
        let versions = harness::cluster()
            .expect("cluster")
            .query(
                node,
                &format!("SELECT count(), uniqExact(version) FROM {db}.schema_migrations"),
            )
            .expect("schema_migrations");
        let (rows, distinct) = versions.split_once('\t').expect("two columns");
        assert_eq!(rows, distinct, "node {node}: a migration ran twice");
    }

    // The same database without --clickhouse-cluster is refused with a clear message.
    let err = ClickHouseStore::connect(ClickHouseConfig::new(urls[0].clone(), db.clone()))
        .await
        .expect_err("single-server mode on cluster tables");
    assert!(err.to_string().contains("holds cluster tables"), "{err}");

    // An unknown cluster name is a clear error too.
    let mut cfg = ClickHouseConfig::new(urls[0].clone(), format!("{db}_x"));
    cfg.cluster = Some("no_such_cluster".to_owned());
    let err = ClickHouseStore::connect(cfg)
        .await
        .expect_err("unknown cluster");
    assert!(err.to_string().contains("no cluster named"), "{err}");
    h.finish().await;
}

/// A database made for one server is refused in cluster mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_server_tables_are_refused_in_cluster_mode() {
    let Some(_) = harness::cluster() else {
        return;
    };
    let urls = harness::cluster().expect("cluster").urls();
    let db = "pw_cluster_single_then_cluster".to_owned();
    let single = ClickHouseStore::connect(ClickHouseConfig::new(urls[0].clone(), db.clone()))
        .await
        .expect("single-server tables");
    drop(single);
    let mut cfg = ClickHouseConfig::new(urls[0].clone(), db.clone());
    cfg.cluster = Some(CLUSTER.to_owned());
    let err = ClickHouseStore::connect(cfg)
        .await
        .expect_err("cluster mode over single-server tables");
    assert!(err.to_string().contains("single-server tables"), "{err}");
    harness::cluster()
        .expect("cluster")
        .query(0, &format!("DROP DATABASE IF EXISTS {db}"))
        .expect("drop");
}
