//! Injected I/O failures at each write and sync of the WAL and the segment writer, through the
//! whole store: every failure ends in a refused write (503 at the HTTP layer) and no
//! acknowledged batch is ever lost, including across a crash right after it.
//!
//! A crash is modelled by copying the data directory while the store runs (what a `kill -9`
//! leaves: the files as the kernel holds them) and opening the copy.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use profwatch_model::query::{EndpointsQuery, GroupBy, TimeRange};
use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{RequestEvent, Tenant};

use super::faults::arm;
use super::{EmbeddedConfig, EmbeddedStore};
use crate::{Store, StoreError};

const PER_BATCH: usize = 10;

fn tenant() -> Tenant {
    Tenant("t".into())
}

/// Batch `i`: `PER_BATCH` events of build `b<i>`, so each batch is counted on its own.
fn batch(i: usize) -> Vec<RequestEvent> {
    let now = now_ns();
    (0..PER_BATCH)
        .map(|k| RequestEvent {
            ts: now - 60 * NANOS_PER_SEC - k as i64,
            service: "svc".into(),
            endpoint: "GET /".into(),
            build: format!("b{i:03}"),
            dc: "dc".into(),
            host: "h".into(),
            status: 200,
            cpu_ns: 1000,
            instructions: None,
            wall_ns: 1,
            weight: 1.0,
            labels: Default::default(),
        })
        .collect()
}

fn config(dir: &Path) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(dir);
    c.flush_interval = Duration::from_secs(3600);
    c
}

/// Requests per build.
async fn counts(store: &EmbeddedStore) -> BTreeMap<String, f64> {
    let q = EndpointsQuery {
        tenant: tenant(),
        service: "svc".into(),
        range: TimeRange {
            from: now_ns() - 86_400 * NANOS_PER_SEC,
            to: now_ns() + NANOS_PER_SEC,
        },
        group_by: GroupBy::Build,
    };
    store
        .endpoints(&q)
        .await
        .expect("query")
        .into_iter()
        .map(|e| (e.group.expect("grouped by build"), e.stats.requests))
        .collect()
}

fn expected(acked: &[usize]) -> BTreeMap<String, f64> {
    acked
        .iter()
        .map(|i| (format!("b{i:03}"), PER_BATCH as f64))
        .collect()
}

/// What a `kill -9` now would leave: a copy of the data directory (without its lock).
fn crash_image(dir: &Path, into: &Path) {
    for entry in walk(dir) {
        let rel = entry.strip_prefix(dir).expect("under dir");
        if rel == Path::new("LOCK") {
            continue;
        }
        let to = into.join(rel);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&entry, &to).expect("copy");
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn open(dir: &Path) -> EmbeddedStore {
    let c = config(dir);
    tokio::task::spawn_blocking(move || EmbeddedStore::open(c))
        .await
        .expect("join")
        .expect("open")
}

/// Regression test for the full-disk case: a failed append, space back, 20 more batches
/// acknowledged, then a crash. Before the fix, replay stopped at the torn append and the 20
/// acknowledged batches were gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_then_recovery_then_a_crash_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    let mut acked = Vec::new();
    store.write(&tenant(), batch(0)).await.expect("write");
    acked.push(0);
    arm("wal-append", dir.path(), ErrorKind::StorageFull, 3);
    for i in 1..=3 {
        let err = store
            .write(&tenant(), batch(i))
            .await
            .expect_err("disk full");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }
    for i in 4..24 {
        store
            .write(&tenant(), batch(i))
            .await
            .expect("space is back");
        acked.push(i);
    }
    let image = tempfile::tempdir().expect("tempdir");
    crash_image(dir.path(), image.path());
    let recovered = open(image.path()).await;
    assert_eq!(counts(&recovered).await, expected(&acked));
    recovered.shutdown().await.expect("shutdown");
    store.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_wal_sync_refuses_writes_until_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path()).await;
    store.write(&tenant(), batch(0)).await.expect("write");
    arm("wal-sync", dir.path(), ErrorKind::Other, 1);
    let err = store
        .write(&tenant(), batch(1))
        .await
        .expect_err("sync fails");
    assert!(matches!(err, StoreError::WalFailed { .. }), "{err}");
    // The fault is spent; the store still refuses, and says it is not ready.
    let err = store.write(&tenant(), batch(2)).await.expect_err("refused");
    assert!(matches!(err, StoreError::WalFailed { .. }), "{err}");
    assert!(store.ready().await.is_err());
    assert!(store.flush().await.is_err(), "no new WAL generation either");
    let image = tempfile::tempdir().expect("tempdir");
    crash_image(dir.path(), image.path());
    drop(store);

    // A restart recovers what reached the disk: the acknowledged batch, and perhaps the one
    // whose sync failed (never acknowledged; a retry with its key is deduplicated).
    let recovered = open(image.path()).await;
    let got = counts(&recovered).await;
    assert_eq!(got.get("b000"), Some(&(PER_BATCH as f64)), "{got:?}");
    assert!(!got.contains_key("b002"), "{got:?}");
    recovered
        .write(&tenant(), batch(3))
        .await
        .expect("writes again");
    recovered.shutdown().await.expect("shutdown");
}

/// A segment that cannot be written or synced keeps its memtable and WAL: the flush is retried
/// and nothing is lost, before or after a crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_segment_writes_are_retried_and_lose_nothing() {
    for point in ["segment-sync", "segment-rename"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open(dir.path()).await;
        let acked: Vec<usize> = (0..5).collect();
        for &i in &acked {
            store.write(&tenant(), batch(i)).await.expect("write");
        }
        arm(point, dir.path(), ErrorKind::StorageFull, 2);
        let image = tempfile::tempdir().expect("tempdir");
        store.flush().await.expect("flush (after retries)");
        crash_image(dir.path(), image.path());
        assert_eq!(counts(&store).await, expected(&acked), "{point}");
        let recovered = open(image.path()).await;
        assert_eq!(counts(&recovered).await, expected(&acked), "{point}");
        recovered.shutdown().await.expect("shutdown");
        store.shutdown().await.expect("shutdown");
    }
}
