//! Delivery: batching, enrichment, Idempotency-Key, retries, permanent refusals (dead
//! letters), batches set aside, restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use profwatch_sidecar::dead_letter::DeadLetterInfo;
use profwatch_sidecar::{status, DropReason, Sidecar};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_batched_enriched_and_carry_unique_keys() {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    *cfg.token = Some("tok".into());
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
            == profwatch_sidecar::spool::SpoolStats::default())
        .await
    );

    // The socket is 0660 by default, and the kernel's word on who connected is kept.
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(sidecar.socket_path()).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let peers = sidecar.metrics().snapshot("", "").peers;
    let me = std::fs::metadata("/proc/self").expect("/proc/self");
    assert_eq!(
        peers
            .iter()
            .map(|p| (p.pid, p.uid, p.gid, p.connections))
            .collect::<Vec<_>>(),
        [(Some(std::process::id() as i32), me.uid(), me.gid(), 1)],
        "{peers:?}"
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
async fn a_permanent_refusal_is_dead_lettered_counted_and_does_not_block_the_rest() {
    let mock = MockCollector::start().await;
    mock.script(&[(400, None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    send_unix(&sidecar, line("svc", "refused").repeat(5).into_bytes()).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            sidecar.metrics().snapshot("", "").dead_lettered_events == 5
        })
        .await
    );
    assert_eq!(
        sidecar
            .metrics()
            .dropped_count(DropReason::CollectorRejected),
        0,
        "kept in the dead-letter folder, not dropped"
    );
    send_unix(&sidecar, line("svc", "ok").repeat(7).into_bytes()).await;
    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 7).await);
    assert!(mock.stored().iter().all(|e| e.build == "ok"));
    assert!(
        eventually(Duration::from_secs(5), || sidecar.spool().stats().records
            == 0)
        .await
    );
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
    assert!(
        eventually(Duration::from_secs(10), || sidecar.spool().stats().events
            == 300)
        .await
    );
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
        sidecar.spool().stats().events,
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

/// Regression (issue 12): after a token rotation the collector answered 401 and the sidecar
/// deleted the spooled events as rejected; 0 of 300 arrived once the right token was set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_after_a_token_rotation_keeps_every_event_until_the_right_token() {
    let mock = MockCollector::start().await;
    mock.require_token("new-token");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    *cfg.token = Some("old-token".into());
    let sidecar = Sidecar::start(cfg).await.expect("start");
    let body: String = (0..300).map(|i| line("svc", &format!("t{i}"))).collect();
    send_unix(&sidecar, body.into_bytes()).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            sidecar.spool().stats().events == 300
                && mock.attempts().iter().filter(|a| a.status == 401).count() >= 3
        })
        .await,
        "{:?}",
        sidecar.spool().stats()
    );

    let addr = sidecar.metrics_addr().expect("metrics port").to_string();
    let snapshot = status::fetch(&addr).await.expect("status");
    assert_eq!(snapshot.refusal.as_ref().map(|r| r.status), Some(401));
    let summary = status::render(&snapshot);
    assert!(
        summary.contains("delivery    refused by collector: 401 since "),
        "{summary}"
    );
    let metrics = get_text(&sidecar, "/metrics").await;
    assert!(
        metrics.contains("profwatch_agent_collector_refusal_status 401"),
        "{metrics}"
    );
    assert!(
        snapshot.dropped.iter().all(|(_, n)| *n == 0),
        "{snapshot:?}"
    );
    assert_eq!(snapshot.dead_lettered_events, 0);
    sidecar.shutdown().await.expect("shutdown");
    assert!(mock.stored().is_empty());

    // What the restarted sidecar will find: read before it starts, as its shipper delivers at
    // once with the right token (reading its stats after the start raced with that).
    let on_disk = profwatch_sidecar::spool::Spool::open(
        &dir.path().join("spool"),
        1 << 30,
        std::sync::Arc::new(profwatch_sidecar::metrics::Metrics::new()),
    )
    .expect("open the spool")
    .stats();
    assert_eq!(on_disk.events, 300, "nothing was deleted");
    let mut cfg = config(&mock.url, dir.path());
    *cfg.token = Some("new-token".into());
    let sidecar = Sidecar::start(cfg).await.expect("restart");
    assert!(
        eventually(Duration::from_secs(10), || {
            let m = sidecar.metrics().snapshot("", "");
            m.shipped_events == 300
                && sidecar.spool().stats() == profwatch_sidecar::spool::SpoolStats::default()
        })
        .await
    );
    let builds: BTreeSet<_> = mock.stored().iter().map(|e| e.build.clone()).collect();
    assert_eq!(
        (mock.stored().len(), builds.len()),
        (300, 300),
        "300 of 300 arrived, each once"
    );
    let snapshot = sidecar.metrics().snapshot("", "");
    assert_eq!(snapshot.refusal, None, "a delivery ends the refusal");
    assert!(!status::render(&snapshot).contains("refused by collector"));
    sidecar.shutdown().await.expect("shutdown");
}

/// Regression (issue 12): 403, 404 and 407 (a proxy during a deploy) deleted the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_not_found_and_proxy_authentication_are_retried() {
    let mock = MockCollector::start().await;
    mock.script(&[(403, None), (404, None), (407, None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    send_unix(&sidecar, line("svc", "p").repeat(10).into_bytes()).await;

    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 10).await);
    let attempts = mock.attempts();
    let statuses: Vec<u16> = attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [403, 404, 407, 200]);
    let keys: BTreeSet<_> = attempts.iter().map(|a| a.key.clone()).collect();
    assert_eq!(keys.len(), 1, "the same batch each time");
    let m = sidecar.metrics().snapshot("", "");
    assert_eq!(m.retries, 3);
    assert_eq!(m.dead_lettered_events, 0);
    assert!(m.dropped.iter().all(|(_, n)| *n == 0), "{m:?}");
    sidecar.shutdown().await.expect("shutdown");
}

/// Regression (issue 12): a batch that always got a 5xx blocked every batch behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_always_fails_is_set_aside_kept_and_the_rest_are_delivered() {
    let mock = MockCollector::start().await;
    mock.poison(Some("poison"), 500);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    cfg.retry.set_aside_after = 3;
    let sidecar = Sidecar::start(cfg).await.expect("start");
    let poison_attempts = || {
        mock.attempts()
            .iter()
            .filter(|a| a.events.iter().any(|e| e.build == "poison"))
            .count()
    };
    send_unix(&sidecar, line("svc", "poison").repeat(5).into_bytes()).await;
    assert!(eventually(Duration::from_secs(10), || poison_attempts() >= 1).await);
    let body: String = (0..250).map(|i| line("svc", &format!("ok{i}"))).collect();
    send_unix(&sidecar, body.into_bytes()).await;

    assert!(
        eventually(Duration::from_secs(20), || mock.stored().len() == 250).await,
        "the batches behind the failing one were delivered: {} of 250",
        mock.stored().len()
    );
    assert!(mock.stored().iter().all(|e| e.build.starts_with("ok")));
    let seen = poison_attempts();
    assert!(
        eventually(Duration::from_secs(10), || poison_attempts() >= seen + 2).await,
        "the batch set aside is still retried"
    );
    assert_eq!(
        sidecar.spool().stats().events,
        5,
        "the failing batch is still spooled"
    );
    let on_disk = files_in(&dir.path().join("spool").join("batches"));
    assert_eq!(on_disk.len(), 1, "{on_disk:?}");
    let m = sidecar.metrics().snapshot("", "");
    assert!(m.set_aside >= 1, "{m:?}");
    assert_eq!(m.spool_set_aside, 1);
    assert!(m.dropped.iter().all(|(_, n)| *n == 0), "{m:?}");
    assert_eq!(m.dead_lettered_events, 0);
    let metrics = get_text(&sidecar, "/metrics").await;
    assert!(
        metrics.contains("profwatch_agent_spool_set_aside_records 1"),
        "{metrics}"
    );
    assert!(status::render(&m).contains("set aside   1 batches in the spool"));

    mock.poison(None, 200);
    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 255).await);
    assert!(
        eventually(Duration::from_secs(5), || sidecar.spool().stats()
            == profwatch_sidecar::spool::SpoolStats::default())
        .await
    );
    sidecar.shutdown().await.expect("shutdown");
}

/// Sends `n` events of `build` and waits until the sidecar has dead-lettered `total` events.
async fn refused_batch(sidecar: &Sidecar, build: &str, n: usize, total: u64) {
    send_unix(sidecar, line("svc", build).repeat(n).into_bytes()).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            sidecar.metrics().snapshot("", "").dead_lettered_events == total
        })
        .await,
        "{:?}",
        sidecar.metrics().snapshot("", "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_400_413_and_422_go_to_the_dead_letter_folder_with_their_reason() {
    let mock = MockCollector::start().await;
    mock.script(&[(400, None), (413, None), (422, None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    for (i, build) in ["a", "b", "c"].into_iter().enumerate() {
        refused_batch(&sidecar, build, 5, 5 * (i as u64 + 1)).await;
    }
    send_unix(&sidecar, line("svc", "after").repeat(2).into_bytes()).await;
    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 2).await);

    let folder = dir.path().join("spool").join("dead-letter");
    let keys: Vec<String> = mock
        .attempts()
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| a.key.clone().expect("key"))
        .collect();
    let mut expected: Vec<String> = keys
        .iter()
        .flat_map(|k| [format!("{k}.batch"), format!("{k}.json")])
        .collect();
    expected.sort();
    assert_eq!(files_in(&folder), expected);
    for (key, status) in keys.iter().zip([400, 413, 422]) {
        let info: DeadLetterInfo = serde_json::from_slice(
            &std::fs::read(folder.join(format!("{key}.json"))).expect("json"),
        )
        .expect("info");
        assert_eq!(
            (info.status, info.count, info.kind.as_str()),
            (status, 5, "events")
        );
        assert!(info.message.contains("stored"), "{info:?}");
        let batch = std::fs::read(folder.join(format!("{key}.batch"))).expect("batch");
        assert!(
            batch.starts_with(b"PWSPOOL1"),
            "the spool record, unchanged"
        );
    }

    let m = sidecar.metrics().snapshot("", "");
    assert_eq!((m.dead_lettered_events, m.dead_letter_records), (15, 3));
    assert!(m.dropped.iter().all(|(_, n)| *n == 0), "{m:?}");
    let addr = sidecar.metrics_addr().expect("metrics port").to_string();
    let summary = status::render(&status::fetch(&addr).await.expect("status"));
    assert!(summary.contains("dead letter 3 batches"), "{summary}");
    let metrics = get_text(&sidecar, "/metrics").await;
    assert!(
        metrics.contains("profwatch_agent_events_dead_lettered_total 15"),
        "{metrics}"
    );
    assert!(
        metrics.contains("profwatch_agent_dead_letter_records 3"),
        "{metrics}"
    );
    assert!(
        eventually(Duration::from_secs(5), || sidecar.spool().stats().records
            == 0)
        .await
    );
    sidecar.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_folder_stays_within_its_bound_and_counts_what_it_removes() {
    let mock = MockCollector::start().await;
    mock.set_default(400);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    cfg.dead_letter_max_files = 2;
    let sidecar = Sidecar::start(cfg).await.expect("start");
    for i in 0..5u64 {
        refused_batch(&sidecar, &format!("d{i}"), 5, 5 * (i + 1)).await;
    }
    let folder = dir.path().join("spool").join("dead-letter");
    let keys: Vec<String> = mock
        .attempts()
        .iter()
        .map(|a| a.key.clone().expect("key"))
        .collect();
    assert_eq!(keys.len(), 5);
    let newest: BTreeSet<String> = keys[3..]
        .iter()
        .flat_map(|k| [format!("{k}.batch"), format!("{k}.json")])
        .collect();
    assert_eq!(
        files_in(&folder).into_iter().collect::<BTreeSet<_>>(),
        newest,
        "the two newest dead letters are kept"
    );
    let m = sidecar.metrics().snapshot("", "");
    assert_eq!(m.dead_letter_records, 2);
    let bytes: u64 = files_in(&folder)
        .iter()
        .map(|f| std::fs::metadata(folder.join(f)).expect("stat").len())
        .sum();
    assert_eq!(m.dead_letter_bytes, bytes);
    assert_eq!(
        sidecar.metrics().dropped_count(DropReason::DeadLetterFull),
        15,
        "the three oldest were removed and counted"
    );
    sidecar.shutdown().await.expect("shutdown");
}
