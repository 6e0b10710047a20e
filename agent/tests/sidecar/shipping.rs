//! Delivery: batching, enrichment, Idempotency-Key, retries, permanent refusals, restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use profwatch_agent::sidecar::{DropReason, Sidecar};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_batched_enriched_and_carry_unique_keys() {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    cfg.token = Some("tok".into());
    let sidecar = Sidecar::start(cfg).await.expect("start");
    let body: String = (0..250).map(|i| line("svc", &format!("b{i}"))).collect();
    send_unix(&sidecar, body.into_bytes()).await;

    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 250).await);
    let attempts = mock.attempts();
    assert_eq!(attempts.len(), 3, "250 events in batches of at most 100");
    assert!(attempts.iter().all(|a| a.events.len() <= 100));
    let keys: BTreeSet<_> = attempts
        .iter()
        .map(|a| a.key.clone().expect("key"))
        .collect();
    assert_eq!(keys.len(), 3, "each batch has its own Idempotency-Key");
    assert!(attempts
        .iter()
        .all(|a| a.auth.as_deref() == Some("Bearer tok")));
    let stored = mock.stored();
    let builds: Vec<_> = stored.iter().map(|e| e.build.clone()).collect();
    let expected: Vec<_> = (0..250).map(|i| format!("b{i}")).collect();
    assert_eq!(builds, expected, "in order, each once");
    let e = &stored[0];
    assert_eq!((e.host.as_str(), e.dc.as_str()), ("test-host", "test-dc"));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    assert_eq!(
        e.labels.get("kernel").map(String::as_str),
        Some(kernel.trim())
    );
    assert!(e.labels.contains_key("cpu_model"), "{:?}", e.labels);

    // The collector has every event; the sidecar counts a batch once it has read the answer.
    let counted = || {
        let m = sidecar.metrics().snapshot("", "");
        (m.received, m.shipped_events, m.shipped_batches)
    };
    assert!(
        eventually(Duration::from_secs(5), || counted() == (250, 250, 3)).await,
        "{:?}",
        counted()
    );
    assert!(
        eventually(Duration::from_secs(5), || sidecar.spool().stats()
            == (0, 0, 0))
        .await
    );
    sidecar.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_answers_are_retried_with_the_same_key_and_retry_after() {
    let mock = MockCollector::start().await;
    mock.script(&[(503, None), (429, Some(1)), (500, None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    let started = std::time::Instant::now();
    send_unix(&sidecar, line("svc", "r").repeat(10).into_bytes()).await;

    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 10).await);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured"
    );
    let attempts = mock.attempts();
    assert_eq!(attempts.len(), 4);
    let keys: BTreeSet<_> = attempts.iter().map(|a| a.key.clone()).collect();
    assert_eq!(keys.len(), 1, "a retry re-sends the same batch id");
    assert_eq!(sidecar.metrics().snapshot("", "").retries, 3);
    sidecar.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_is_dropped_counted_and_does_not_block_the_rest() {
    let mock = MockCollector::start().await;
    mock.script(&[(400, None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    send_unix(&sidecar, line("svc", "refused").repeat(5).into_bytes()).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            sidecar
                .metrics()
                .dropped_count(DropReason::CollectorRejected)
                == 5
        })
        .await
    );
    send_unix(&sidecar, line("svc", "ok").repeat(7).into_bytes()).await;
    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 7).await);
    assert!(mock.stored().iter().all(|e| e.build == "ok"));
    assert!(eventually(Duration::from_secs(5), || sidecar.spool().stats().0 == 0).await);
    sidecar.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_and_a_restart_lose_nothing_and_duplicate_nothing() {
    let mock = MockCollector::start().await;
    mock.set_default(503);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    let body: String = (0..300).map(|i| line("svc", &format!("o{i}"))).collect();
    send_unix(&sidecar, body.into_bytes()).await;
    assert!(eventually(Duration::from_secs(10), || sidecar.spool().stats().2 == 300).await);
    assert!(
        eventually(Duration::from_secs(10), || sidecar
            .metrics()
            .snapshot("", "")
            .retries
            > 0)
        .await
    );
    sidecar.shutdown().await.expect("shutdown");
    assert!(mock.stored().is_empty());

    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("restart");
    assert_eq!(
        sidecar.spool().stats().2,
        300,
        "the spool survived the restart"
    );
    mock.set_default(200);
    assert!(eventually(Duration::from_secs(10), || mock.stored().len() >= 300).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let builds: BTreeSet<_> = mock.stored().iter().map(|e| e.build.clone()).collect();
    assert_eq!((mock.stored().len(), builds.len()), (300, 300));
    sidecar.shutdown().await.expect("shutdown");
}
