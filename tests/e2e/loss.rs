//! Nothing acknowledged is ever lost.

use std::time::Duration;

use profwatch_e2e::*;

/// Embedded: `kill -9` right after a 200 for a 100k-event batch; after a restart all are there.
#[test]
fn embedded_kill9_after_ack_loses_nothing() {
    let art = artifacts("embedded_kill9_after_ack_loses_nothing");
    let data = art.join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let mut server = Server::start(&["--data-dir", data_arg], &art.join("server.log"));
    let client = server.client();
    let batch = events("killme", "b1", 100_000);
    let r = client.post_events(
        gzip(&protobuf(&batch)),
        "application/x-protobuf",
        Some("gzip"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["stored"], 100_000);
    server.kill9();

    let server = Server::start(&["--data-dir", data_arg], &art.join("server-restarted.log"));
    assert_eq!(server.client().total_requests("killme", 1), 100_000.0);
    let log = std::fs::read_to_string(art.join("server-restarted.log")).unwrap_or_default();
    assert!(
        log.contains("recovered events from the WAL"),
        "expected a WAL replay:\n{log}"
    );
}

/// Embedded: several acknowledged batches, a graceful stop (flush to Parquet), then a kill -9
/// after more batches: everything acknowledged survives both.
#[test]
fn embedded_restart_after_flush_and_crash() {
    let art = artifacts("embedded_restart_after_flush_and_crash");
    let data = art.join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let mut server = Server::start(&["--data-dir", data_arg], &art.join("1.log"));
    for i in 0..5 {
        let r = server.client().post_events(
            ndjson(&events("svc", &format!("b{i}"), 2000)),
            "application/x-ndjson",
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(server.terminate(), "graceful shutdown failed; see 1.log");
    let segments = std::fs::read_dir(data.join("segments"))
        .expect("segments dir")
        .count();
    assert!(segments >= 1, "graceful shutdown must flush to a segment");

    let mut server = Server::start(&["--data-dir", data_arg], &art.join("2.log"));
    assert_eq!(server.client().total_requests("svc", 1), 10_000.0);
    let r = server.client().post_events(
        zstd(&protobuf(&events("svc", "b9", 3000))),
        "application/x-protobuf",
        Some("zstd"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    server.kill9();

    let server = Server::start(&["--data-dir", data_arg], &art.join("3.log"));
    assert_eq!(server.client().total_requests("svc", 1), 13_000.0);
}

/// ClickHouse: stop ClickHouse while batches arrive. The server answers 503 (never 200) for what
/// it could not write, and every batch answered 200 is in ClickHouse, whole.
#[test]
fn clickhouse_outage_never_acks_unwritten_batches() {
    if clickhouse_url().is_none() {
        return;
    }
    let art = artifacts("clickhouse_outage_never_acks_unwritten_batches");
    // A ClickHouse of this test's own, so stopping it disturbs no other test, on a loopback
    // address no other test or server uses (so its fixed ports cannot be taken).
    let ch_dir = art.join("clickhouse");
    let (host, port) = ("127.0.0.13", "8123");
    let script = repo_root().join("scripts").join("clickhouse.sh");
    let ch = |cmd: &str| {
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg(cmd)
            .env("PROFWATCH_CH_DIR", &ch_dir)
            .env("PROFWATCH_CH_HOST", host)
            .env("PROFWATCH_CH_HTTP_PORT", port)
            .env("PROFWATCH_CH_TCP_PORT", "19000")
            .status()
            .expect("run clickhouse.sh");
        assert!(status.success(), "clickhouse.sh {cmd} failed");
    };
    /// Stops this test's ClickHouse however the test ends (a panic included), so no server
    /// outlives it and answers the next run on the same address with a deleted data dir.
    struct StopOnDrop<F: Fn(&str)>(F);
    impl<F: Fn(&str)> Drop for StopOnDrop<F> {
        fn drop(&mut self) {
            (self.0)("stop");
        }
    }
    let ch = StopOnDrop(ch);
    let ch = |cmd: &str| (ch.0)(cmd);
    ch("start");
    let ch_url = format!("http://{host}:{port}");
    let server = Server::start(
        &[
            "--clickhouse-url",
            &ch_url,
            "--clickhouse-database",
            "pw_outage",
        ],
        &art.join("server.log"),
    );
    let client = server.client();

    let mut acked: Vec<String> = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        if i == 20 {
            ch("stop");
        }
        if i == 40 {
            ch("start");
        }
        let build = format!("batch-{i}");
        let r = client.post_events(
            gzip(&protobuf(&events("outage", &build, 1000))),
            "application/x-protobuf",
            Some("gzip"),
        );
        match r.status {
            200 => acked.push(build),
            503 | 429 => {
                assert!(
                    r.retry_after.is_some(),
                    "a {} must say Retry-After",
                    r.status
                );
                refused += 1;
            }
            other => panic!("batch {i}: unexpected {other}: {}", r.body),
        }
        if (20..40).contains(&i) {
            assert_ne!(
                r.status, 200,
                "batch {i} was acknowledged while ClickHouse was down"
            );
        }
    }
    assert!(refused >= 20, "the outage should have refused batches");
    assert!(
        acked.len() >= 30,
        "batches before and after the outage should be acknowledged: {}",
        acked.len()
    );

    let counts = clickhouse_query(
        &ch_url,
        "SELECT build, count() FROM pw_outage.events WHERE service = 'outage' GROUP BY build FORMAT TSV",
    )
    .expect("count rows");
    let mut stored = std::collections::HashMap::new();
    for line in counts.lines() {
        let (b, n) = line.split_once('\t').expect("tsv");
        stored.insert(b.to_owned(), n.parse::<u64>().expect("count"));
    }
    for b in &acked {
        assert_eq!(
            stored.get(b),
            Some(&1000),
            "acknowledged {b} must be whole in ClickHouse"
        );
    }
    let _ = clickhouse_query(&ch_url, "DROP DATABASE IF EXISTS pw_outage");
    drop(server);
    ch("stop");
    let _ = Duration::ZERO;
}
