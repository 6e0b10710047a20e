//! Memory per worker end to end: the real `profwatch agent` watches a real process (the
//! sidecar's C fixture, 64 MiB of written private pages, built with gcc) and ships its samples
//! to the real `profwatch server` (embedded store); `GET /api/v1/memory` and
//! `/api/v1/memory/timeseries` answer with that process's memory. And the ingest route's
//! refusals: wrong type, bad JSON, an invalid sample, an unknown grouping; a repeated
//! `Idempotency-Key` stores nothing twice.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use profwatch_e2e::*;

use crate::agent::Agent;

const MIB: f64 = 1_048_576.0;

/// The fixture, running with the labels in its environment; killed when dropped.
struct Fixture(Child, u32);

impl Fixture {
    fn start(dir: &std::path::Path) -> Fixture {
        let exe = dir.join("memory-e2e");
        let src = repo_root().join("sidecar/tests/fixtures/memory.c");
        let out = Command::new("gcc")
            .arg("-O2")
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .unwrap_or_else(|e| panic!("cannot run gcc (install it): {e}"));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(&exe)
            .args(["64", "private"])
            .env("PROFWATCH_SERVICE", "e2e-memory")
            .env("PROFWATCH_BUILD", "b9")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("ready line");
        assert!(line.starts_with("ready "), "{line:?}");
        let pid = child.id();
        Fixture(child, pid)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn memory_of_a_watched_process() {
    let art = artifacts("memory_of_a_watched_process");
    let data = art.join("data");
    let server = Server::start(
        &["--data-dir", data.to_str().expect("utf-8 path")],
        &art.join("server.log"),
    );
    let fixture = Fixture::start(&art);
    let pid = fixture.1.to_string();
    let _agent = Agent::start_with(
        &server.url,
        &art.join("agent"),
        &art.join("agent.log"),
        &[
            "--memory-pid".as_ref(),
            pid.as_str().as_ref(),
            "--memory-interval-secs".as_ref(),
            "1".as_ref(),
        ],
    );
    let client = server.client();
    let mut rows = serde_json::Value::Null;
    let found = eventually(Duration::from_secs(60), || {
        let r = client.get("/api/v1/memory?service=e2e-memory&group_by=build");
        assert_eq!(r.status, 200, "{}", r.body);
        rows = r.json();
        rows.as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(found, "no memory rows; see {}", art.display());
    let row = &rows[0];
    assert_eq!(row["group"], "b9", "{rows}");
    assert_eq!(row["processes"], 1, "{rows}");
    let private = row["private_bytes"].as_f64().expect("private_bytes") / MIB;
    assert!(
        (private - 64.0).abs() <= 6.4,
        "private {private:.1} MiB, truth 64: {rows}"
    );
    let rss = row["rss_bytes"].as_f64().expect("rss_bytes") / MIB;
    assert!(rss >= private, "{rows}");

    let r = client.get("/api/v1/memory/timeseries?service=e2e-memory&step=60");
    assert_eq!(r.status, 200, "{}", r.body);
    let points = r.json();
    let first = &points[0];
    assert!(
        first["time"].as_i64().is_some_and(|t| t % 60 == 0),
        "{points}"
    );
    assert_eq!(
        (&first["group"], &first["processes"]),
        (&"".into(), &1.into()),
        "{points}"
    );
}

#[test]
fn memory_ingest_refuses_bad_input_and_stores_a_keyed_batch_once() {
    let art = artifacts("memory_ingest_refuses_bad_input_and_stores_a_keyed_batch_once");
    let data = art.join("data");
    let server = Server::start(
        &["--data-dir", data.to_str().expect("utf-8 path")],
        &art.join("server.log"),
    );
    let client = server.client();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let sample = |pid: u32| {
        format!(
            r#"{{"ts": {now}, "service": "shop", "build": "1", "dc": "", "host": "h", "pid": {pid},
            "bytes": {{"rss": 3072, "pss": 2048, "shared_clean": 1024, "shared_dirty": 0,
            "private_clean": 0, "private_dirty": 2048, "swap": 0}}}}"#
        )
    };
    let post = |body: String, ct: &str, key: Option<&str>| {
        let mut headers = vec![("content-type", ct)];
        if let Some(k) = key {
            headers.push(("idempotency-key", k));
        }
        client.request("POST", "/api/v1/memory", &headers, body.into_bytes())
    };
    let ok = format!(r#"{{"samples": [{}]}}"#, sample(7));

    let r = post(ok.clone(), "application/x-ndjson", None);
    assert_eq!(r.status, 415, "{}", r.body);
    let r = post("{\"samples\": [".into(), "application/json", None);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("not a memory batch"), "{}", r.body);
    let r = post(
        format!(r#"{{"samples": [{}]}}"#, sample(0)),
        "application/json",
        None,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("sample 0") && r.body.contains("pid"),
        "{}",
        r.body
    );
    let r = post(
        ok.replace("\"swap\": 0", "\"swap\": 0, \"vsz\": 1"),
        "application/json",
        None,
    );
    assert_eq!(r.status, 400, "unknown fields are refused: {}", r.body);

    let r = post(ok.clone(), "application/json", Some("k-1"));
    assert_eq!(
        (r.status, r.json()["stored"].clone()),
        (200, 1.into()),
        "{}",
        r.body
    );
    let r = post(ok, "application/json", Some("k-1"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["duplicate"], true, "{}", r.body);

    let r = client.get("/api/v1/memory?service=shop&group_by=endpoint");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = client.get("/api/v1/memory?service=shop");
    assert_eq!(r.status, 200, "{}", r.body);
    let rows = r.json();
    assert_eq!(rows[0]["processes"], 1, "{rows}");
    assert_eq!(rows[0]["private_bytes"], 2048.0, "{rows}");
    assert_eq!(rows[0]["shared_bytes"], 1024.0, "{rows}");
}
