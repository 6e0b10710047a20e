//! Keyed 128-bit stack ids in ClickHouse (migration 8): a database from before them keeps its
//! profiles readable, every collector of a database names a stack alike, and two tenants'
//! equal stacks never share an id.

use std::sync::Arc;

use profwatch_model::timefmt::NANOS_PER_SEC;
use profwatch_model::Tenant;
use profwatch_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_store::Store;

use crate::harness;
use crate::suite::{all_time, base, pq, profile_batch, tenant};

/// Samples per stack in `p`, by frames joined with `;`.
fn per_stack(p: &profwatch_model::profile::StackProfile) -> Vec<(String, u64)> {
    p.merged()
        .into_iter()
        .map(|(frames, n, _)| (frames.join(";"), n))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_stack_ids_are_keyed_shared_and_upgrade_in_place() {
    let Some(h) = harness::clickhouse("stack_ids").await else {
        return;
    };
    let url = harness::clickhouse_url().expect("url");
    let db = h.database().to_owned();
    let admin = clickhouse::Client::default()
        .with_url(url.clone())
        .with_database(db.clone())
        .with_validation(false);
    // Back to the schema of migration 7, with a profile stored the old way: a 64-bit FNV hash.
    let ts = base();
    for sql in [
        "ALTER TABLE samples DROP COLUMN stack_hash_hi",
        "ALTER TABLE stacks DROP COLUMN hash_hi",
        "DROP TABLE stack_key",
        "TRUNCATE TABLE schema_migrations",
        "INSERT INTO schema_migrations SELECT toUInt32(number + 1), 'before keyed stack ids', '18.16.1', now() FROM system.numbers LIMIT 7",
        "INSERT INTO stacks (tenant, hash, date, frames) VALUES ('acme', 1234567, today(), ['main', 'old'])",
    ] {
        admin.query(sql).execute().await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    admin
        .query(
            "INSERT INTO samples (tenant, service, endpoint, build, dc, host, ts, date, \
             label_keys, label_values, stack_hash, samples, cpu_ns) \
             VALUES ('acme', 'shop', 'GET /cart', '811', 'eu1', 'web-1', ?, today(), \
             ['flag'], ['on'], 1234567, 5, 50000000)",
        )
        .bind(ts)
        .execute()
        .await
        .expect("an old sample");
    h.store.shutdown().await.expect("shutdown");

    let first: Arc<dyn Store> = Arc::new(
        ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), db.clone()))
            .await
            .expect("upgrade"),
    );
    let second = ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), db.clone()))
        .await
        .expect("a second collector");
    let keys: u64 = admin
        .query("SELECT count() FROM stack_key")
        .fetch_one()
        .await
        .expect("count keys");
    assert_eq!(
        keys, 1,
        "one key, made by the first collector, read by the second"
    );

    // The same stack from both collectors, and a new one.
    let batch = |n: u64| {
        vec![profile_batch(
            ts + NANOS_PER_SEC,
            "GET /cart",
            "811",
            &[("main;old", n), ("main;new", 1)],
        )]
    };
    first
        .write_profiles(&tenant(), batch(2))
        .await
        .expect("write");
    second
        .write_profiles(&tenant(), batch(3))
        .await
        .expect("write");
    let p = first.profile(&pq(&[], all_time())).await.expect("profile");
    assert_eq!(
        per_stack(&p),
        [
            ("main;new".to_owned(), 2),
            ("main;old".to_owned(), 5 + 2 + 3)
        ],
        "the old sample joins its old stack row; the new ones theirs"
    );
    let ids = |tenant: &'static str| {
        let admin = admin.clone();
        async move {
            admin
                .query("SELECT DISTINCT hash, hash_hi FROM stacks WHERE tenant = ? ORDER BY hash, hash_hi")
                .bind(tenant)
                .fetch_all::<(u64, u64)>()
                .await
                .expect("stack ids")
        }
    };
    let acme = ids("acme").await;
    assert_eq!(
        acme.len(),
        3,
        "the old id, and one id per new stack whichever collector wrote it: {acme:?}"
    );
    assert!(
        acme.contains(&(1_234_567, 0)),
        "the old row reads with a high half of 0"
    );
    assert!(
        acme.iter().filter(|(_, hi)| *hi != 0).count() == 2,
        "new ids use all 128 bits: {acme:?}"
    );

    // Another tenant's equal stacks get ids of their own.
    let other = Tenant("globex".into());
    first.write_profiles(&other, batch(1)).await.expect("write");
    let globex = ids("globex").await;
    assert_eq!(globex.len(), 2);
    assert!(
        globex.iter().all(|id| !acme.contains(id)),
        "{globex:?} vs {acme:?}"
    );

    second.shutdown().await.expect("shutdown");
    first.shutdown().await.expect("shutdown");
    h.finish().await;
}
