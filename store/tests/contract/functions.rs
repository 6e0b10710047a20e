//! Cost per function (`Store::function_costs`) against the truth computed from the batches
//! written: ranges with partial minutes at either end, with and without steps (whole minutes
//! and not) and filters, on each backend. Then proof that the rollups answer: the embedded
//! store's from memory once its profile files are gone, ClickHouse's once `samples` is
//! emptied, and after an upgrade that back-fills ClickHouse's from the stored samples.

use std::sync::Arc;

use profwatch_model::functions::{FunctionQuery, FunctionSums, FunctionTotals};
use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::query::TimeRange;
use profwatch_model::rng::Rng;
use profwatch_model::timefmt::NANOS_PER_SEC;
use profwatch_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_store::embedded::EmbeddedStore;
use profwatch_store::Store;
use profwatch_testkit::clickhouse_cluster::CLUSTER;

use crate::harness;
use crate::rollups::embedded_config;
use crate::suite::{all_time, base, tenant};

const MINUTE: i64 = 60 * NANOS_PER_SEC;
const SECOND: i64 = NANOS_PER_SEC;

/// Stacks of a small shop: shared prefixes, a recursive one, a deep recursive one.
fn stacks() -> Vec<Vec<String>> {
    let s = |f: &str| f.split(';').map(str::to_owned).collect::<Vec<_>>();
    let mut deep = s("main;serve;eval");
    for _ in 0..30 {
        deep.extend(s("apply;eval"));
    }
    vec![
        s("main;serve;price;round"),
        s("main;serve;price"),
        s("main;serve;render;escape"),
        s("main;serve;price;price;round"),
        s("main;gc"),
        deep,
    ]
}

/// 12 minutes of batches every 10 s from 3 hosts, 2 endpoints and 2 builds, starting 17 s
/// past a minute, each batch holding some of the stacks.
pub fn data(seed: u64) -> Vec<ProfileBatch> {
    let mut rng = Rng::new(seed);
    let stacks = stacks();
    let mut out = Vec::new();
    for tick in 0..72 {
        for host in ["web-1", "web-2", "web-3"] {
            for (endpoint, build) in [("GET /cart", "811"), ("POST /pay", "812")] {
                let build = if tick % 5 == 0 { "900" } else { build };
                let mut samples = Vec::new();
                for frames in &stacks {
                    if rng.below(3) == 0 {
                        continue;
                    }
                    let n = 1 + rng.below(20) as u64;
                    samples.push(StackSample {
                        frames: frames.clone(),
                        samples: n,
                        cpu_ns: n * 10_101_010 + rng.below(1000) as u64,
                    });
                }
                out.push(ProfileBatch {
                    ts: base() + 17 * SECOND + tick * 10 * SECOND + rng.below(1000) as i64,
                    labels: SampleLabels {
                        service: "shop".into(),
                        endpoint: endpoint.into(),
                        build: build.into(),
                        dc: "eu1".into(),
                        host: host.into(),
                        extra: Default::default(),
                    },
                    samples,
                });
            }
        }
    }
    out
}

/// What the store must answer for `q`, from the batches themselves.
fn truth(batches: &[ProfileBatch], q: &FunctionQuery) -> Vec<FunctionTotals> {
    let mut sums = FunctionSums::default();
    for b in batches {
        let l = &b.labels;
        if b.ts < q.range.from
            || b.ts >= q.range.to
            || l.service != q.service
            || !q.wants(&l.endpoint, &l.build)
        {
            continue;
        }
        for s in &b.samples {
            sums.add_stack(
                q.bucket(b.ts),
                &s.frames,
                s.samples,
                s.cpu_ns,
                q.function.as_deref(),
            );
        }
    }
    sums.into_rows()
}

/// Every query the checks ask: ranges with and without partial minutes, steps of whole
/// minutes and not, filters on endpoint, build and function.
fn queries() -> Vec<FunctionQuery> {
    let ranges = crate::rollups::ranges();
    let mut out = Vec::new();
    for range in ranges {
        for step in [
            None,
            Some(MINUTE),
            Some(5 * MINUTE),
            Some(90 * SECOND),
            Some(60 * MINUTE),
        ] {
            for (endpoint, build, function) in [
                (None, None, None),
                (Some("GET /cart"), None, None),
                (None, Some("900"), None),
                (None, None, Some("price")),
                (Some("POST /pay"), Some("812"), Some("eval")),
            ] {
                out.push(FunctionQuery {
                    tenant: tenant(),
                    service: "shop".into(),
                    range,
                    endpoint: endpoint.map(str::to_owned),
                    build: build.map(str::to_owned),
                    function: function.map(str::to_owned),
                    step,
                });
            }
        }
    }
    out
}

async fn write(store: &dyn Store, batches: &[ProfileBatch]) {
    for chunk in batches.chunks(40) {
        store
            .write_profiles(&tenant(), chunk.to_vec())
            .await
            .expect("write profiles");
    }
}

async fn assert_truthful(store: &dyn Store, batches: &[ProfileBatch], queries: &[FunctionQuery]) {
    for q in queries {
        let got = store.function_costs(q).await.expect("function costs");
        assert_eq!(got, truth(batches, q), "{q:?}");
    }
}

/// Contract: every query answers exactly what the samples hold.
pub async fn function_costs_match_the_samples(store: Arc<dyn Store>) {
    let batches = data(7);
    write(store.as_ref(), &batches).await;
    let queries = queries();
    assert!(
        !truth(&batches, &queries[0]).is_empty(),
        "the data has functions"
    );
    assert_truthful(store.as_ref(), &batches, &queries).await;
    let other = FunctionQuery {
        tenant: profwatch_model::Tenant("someone-else".into()),
        ..queries[0].clone()
    };
    assert!(store
        .function_costs(&other)
        .await
        .expect("other tenant")
        .is_empty());
}

const HOUR: i64 = 60 * MINUTE;

/// The queries of `queries()` that both stores' rollups can answer alone (no step, or whole
/// hours: their unit), over whole hours around all the data.
fn wholes() -> Vec<FunctionQuery> {
    let all = all_time();
    let range = TimeRange {
        from: all.from.div_euclid(HOUR) * HOUR,
        to: (all.to.div_euclid(HOUR) + 1) * HOUR,
    };
    queries()
        .into_iter()
        .filter(|q| q.step.is_none_or(|s| s % HOUR == 0))
        .map(|q| FunctionQuery { range, ..q })
        .collect()
}

/// Reopened, the embedded store builds its segments' rollups on the first query that covers
/// them and keeps them: with the profile files then removed, a query over whole segments
/// still answers in full, from the rollups alone; a store opened afresh has nothing to say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_function_rollups_answer_once_the_profile_files_are_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let batches = data(11);
    let live = EmbeddedStore::open(embedded_config(dir.path(), true)).expect("open");
    write(&live, &batches).await;
    assert_truthful(&live, &batches, &queries()).await;
    live.shutdown().await.expect("shutdown");
    drop(live);

    let reopened = EmbeddedStore::open(embedded_config(dir.path(), true)).expect("reopen");
    let wholes = wholes();
    assert_truthful(&reopened, &batches, &wholes).await;
    let mut removed = 0;
    for entry in walk(dir.path()) {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("prof-")) {
            std::fs::remove_file(&entry).expect("remove a profile file");
            removed += 1;
        }
    }
    assert!(removed > 0, "the store wrote profile segments");
    assert_truthful(&reopened, &batches, &wholes).await;
    reopened.shutdown().await.expect("shutdown");
    drop(reopened);

    let afresh = EmbeddedStore::open(embedded_config(dir.path(), true)).expect("open afresh");
    let got = afresh.function_costs(&wholes[0]).await;
    assert!(
        got.as_ref().map_or(true, Vec::is_empty),
        "without the files and without rollups in memory there is nothing: {got:?}"
    );
    afresh.shutdown().await.expect("shutdown");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The whole-minute queries of `queries()` over the whole range answer the truth with the
/// samples gone: they read the rollup alone. A raw store then answers nothing.
async fn assert_rollup_alone_answers(
    store: &dyn Store,
    raw: &dyn Store,
    admin: &[clickhouse::Client],
    samples_table: &str,
    batches: &[ProfileBatch],
) {
    let wholes = wholes();
    assert_truthful(store, batches, &wholes).await;
    assert_truthful(raw, batches, &wholes).await;
    for node in admin {
        node.query(&format!("TRUNCATE TABLE {samples_table}"))
            .execute()
            .await
            .unwrap_or_else(|e| panic!("truncate {samples_table}: {e}"));
    }
    assert_truthful(store, batches, &wholes).await;
    assert!(raw
        .function_costs(&wholes[0])
        .await
        .expect("raw after truncating")
        .is_empty());
}

fn admin(url: &str, db: &str) -> clickhouse::Client {
    clickhouse::Client::default()
        .with_url(url.to_owned())
        .with_database(db.to_owned())
        .with_validation(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_function_rollup_answers_without_the_samples() {
    let Some(h) = harness::clickhouse("function_rollup").await else {
        return;
    };
    let url = harness::clickhouse_url().expect("url");
    let batches = data(13);
    write(h.store.as_ref(), &batches).await;
    let mut cfg = ClickHouseConfig::new(url.clone(), h.database());
    cfg.rollups = false;
    let raw = ClickHouseStore::connect(cfg).await.expect("connect raw");
    assert_rollup_alone_answers(
        h.store.as_ref(),
        &raw,
        &[admin(&url, h.database())],
        "samples",
        &batches,
    )
    .await;
    h.finish().await;
}

/// Forgets migration 11 on every node and drops its table, as a database from before it.
async fn downgrade(nodes: &[clickhouse::Client], tables: &[&str]) {
    for node in nodes {
        for t in tables {
            node.query(&format!("DROP TABLE IF EXISTS {t}"))
                .execute()
                .await
                .unwrap_or_else(|e| panic!("drop {t}: {e}"));
        }
        for sql in [
            "TRUNCATE TABLE schema_migrations",
            "INSERT INTO schema_migrations SELECT toUInt32(number + 1), 'before function rollups', '18.16.1', now() FROM system.numbers LIMIT 10",
        ] {
            node.query(sql)
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}

/// A database from before migration 11, samples in it, is upgraded at connect: the rollup is
/// back-filled from the samples and their stacks (and answers alone), and a second connect
/// fills nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_upgrade_back_fills_the_function_rollup() {
    let Some(h) = harness::clickhouse("function_upgrade").await else {
        return;
    };
    let url = harness::clickhouse_url().expect("url");
    let db = h.database().to_owned();
    let batches = data(17);
    write(h.store.as_ref(), &batches).await;
    let node = admin(&url, &db);
    downgrade(std::slice::from_ref(&node), &["function_rollup"]).await;
    ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), db.clone()))
        .await
        .expect("upgrade");
    let upgraded = ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), db.clone()))
        .await
        .expect("connect again");
    let mut cfg = ClickHouseConfig::new(url.clone(), db.clone());
    cfg.rollups = false;
    let raw = ClickHouseStore::connect(cfg).await.expect("connect raw");
    assert_rollup_alone_answers(&upgraded, &raw, &[node], "samples", &batches).await;
    h.finish().await;
}

/// The same on the 2-shard cluster (no DDL coordinator: each node fills its local table from
/// its local samples and the stacks of both shards).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_cluster_upgrade_back_fills_the_function_rollup() {
    let Some(h) = harness::clickhouse_cluster("function_upgrade").await else {
        return;
    };
    let urls = harness::cluster().expect("cluster").urls();
    let db = h.database().to_owned();
    let batches = data(19);
    write(h.store.as_ref(), &batches).await;
    let nodes: Vec<clickhouse::Client> = urls.iter().map(|u| admin(u, &db)).collect();
    downgrade(&nodes, &["function_rollup", "function_rollup_local"]).await;
    let cfg = || {
        let mut cfg = ClickHouseConfig::new(urls[0].clone(), db.clone());
        cfg.cluster = Some(CLUSTER.to_owned());
        cfg
    };
    ClickHouseStore::connect(cfg()).await.expect("upgrade");
    let upgraded = ClickHouseStore::connect(cfg())
        .await
        .expect("connect again");
    let mut raw_cfg = cfg();
    raw_cfg.rollups = false;
    let raw = ClickHouseStore::connect(raw_cfg)
        .await
        .expect("connect raw");
    assert_rollup_alone_answers(&upgraded, &raw, &nodes, "samples_local", &batches).await;
    h.finish().await;
}
