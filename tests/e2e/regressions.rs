//! Regression detection through the real server: a build that makes one endpoint dearer is
//! flagged once, with the function that grew named; acknowledging survives later passes; the
//! CI gate (`profwatch compare`) fails on it; one alert goes out when it is found and one when
//! it is resolved, to a real HTTP receiver.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profwatch_e2e::*;
use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::RequestEvent;
use profwatch_testkit::clickhouse_cluster::{LocalCluster, CLUSTER};

/// A tiny HTTP receiver: answers 200 to every POST and keeps the bodies.
fn receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(Mutex::new(Vec::new()));
    let store = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().expect("clone"));
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(v) = serde_json::from_slice(&body) {
                store.lock().expect("lock").push(v);
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

/// 3000 requests per endpoint and build over 12 hosts in 2 dcs; build 2 makes `GET /a` 8% dearer.
pub(crate) fn workload() -> Vec<RequestEvent> {
    let now = profwatch_model::timefmt::now_ns();
    let mut rng = Rng::new(42);
    let mut out = Vec::new();
    for (build, start_min) in [("1", 50i64), ("2", 25)] {
        for endpoint in ["GET /a", "GET /b"] {
            for i in 0..3000u64 {
                let host = i % 12;
                let base = if endpoint == "GET /a" {
                    2_000_000.0
                } else {
                    5_000_000.0
                };
                let factor = if build == "2" && endpoint == "GET /a" {
                    1.08
                } else {
                    1.0
                };
                let cpu = base * factor * (0.3 * rng.normal()).exp();
                out.push(RequestEvent {
                    ts: now - start_min * 60_000_000_000 + i as i64 * 6_000_000,
                    service: "shop".into(),
                    endpoint: endpoint.into(),
                    build: build.into(),
                    dc: if host.is_multiple_of(2) {
                        "eu1".into()
                    } else {
                        "us1".into()
                    },
                    host: format!("web-{host}"),
                    status: 200,
                    cpu_ns: cpu as u64,
                    instructions: None,
                    wall_ns: cpu as u64 * 2,
                    weight: 1.0,
                    labels: Default::default(),
                });
            }
        }
    }
    out
}

fn profiles() -> Vec<(String, Vec<ProfileBatch>)> {
    let now = profwatch_model::timefmt::now_ns();
    ["1", "2"]
        .iter()
        .map(|build| {
            let hot = if *build == "2" { 1320 } else { 1000 };
            let stacks = [
                ("main;serve;a::handle;a::hot", hot),
                ("main;serve;a::handle;a::cold", 1000),
                ("main;serve;b::handle", 2000),
            ];
            let batch = ProfileBatch {
                ts: now - 20 * 60_000_000_000,
                labels: SampleLabels {
                    service: "shop".into(),
                    endpoint: "GET /a".into(),
                    build: (*build).into(),
                    ..Default::default()
                },
                samples: stacks
                    .iter()
                    .map(|(s, n)| StackSample {
                        frames: s.split(';').map(str::to_owned).collect(),
                        samples: *n,
                        cpu_ns: 0,
                    })
                    .collect(),
            };
            ((*build).to_owned(), vec![batch])
        })
        .collect()
}

fn folded(batch: &ProfileBatch) -> Vec<u8> {
    batch
        .samples
        .iter()
        .map(|s| format!("{} {}\n", s.frames.join(";"), s.samples))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn a_regression_is_found_named_acknowledged_gated_and_alerted_once() {
    let art = artifacts("a_regression_is_found_named_acknowledged_gated_and_alerted_once");
    let (hook, alerts) = receiver();
    let data = art.join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--analysis-interval",
            "0s",
            "--alert",
            &format!("json={hook}"),
        ],
        &art.join("server.log"),
    );
    let c = server.client();
    for chunk in workload().chunks(4000) {
        let r = c.post_events(protobuf(chunk), "application/x-protobuf", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for (build, batches) in profiles() {
        let r = profwatch_e2e::http_client()
            .post(format!(
                "{}/api/v1/profiles?format=folded&service=shop&endpoint=GET%20/a&build={build}",
                c.base
            ))
            .body(folded(&batches[0]))
            .send()
            .expect("post profile");
        assert!(r.status().is_success(), "{:?}", r.text());
    }

    let http = profwatch_e2e::http_client();
    let analyze = || -> serde_json::Value {
        let r = http
            .post(format!("{}/api/v1/analyze", c.base))
            .send()
            .expect("analyze");
        assert!(r.status().is_success());
        r.json().expect("json")
    };
    let report = analyze();
    assert_eq!(report["new_regressions"], 1, "{report:#}");
    let shop = &report["services"][0];
    assert_eq!(
        (shop["baseline"].as_str(), shop["candidate"].as_str()),
        (Some("1"), Some("2"))
    );

    let list = c.get("/api/v1/regressions").json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1, "only GET /a regressed: {list:#?}");
    let r = &list[0];
    assert_eq!(r["endpoint"], "GET /a");
    assert_eq!(r["state"], "open");
    let effect = r["effect"].as_f64().expect("effect");
    assert!((1.04..1.12).contains(&effect), "effect {effect}");
    assert!(r["effect_low"].as_f64().expect("low") > 1.0);
    assert_eq!(
        r["culprits"][0]["function"], "a::hot",
        "the function that grew is named: {r:#}"
    );
    let id = r["id"].as_str().expect("id").to_owned();

    let acked = http
        .post(format!("{}/api/v1/regressions/{id}/ack", c.base))
        .send()
        .expect("ack");
    assert!(acked.status().is_success());
    assert_eq!(
        c.get(&format!("/api/v1/regressions/{id}")).json()["state"],
        "acknowledged"
    );
    let again = analyze();
    assert_eq!(again["new_regressions"], 0);
    let list = c.get("/api/v1/regressions").json();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "no duplicate record"
    );
    assert_eq!(
        list[0]["state"], "acknowledged",
        "a pass keeps the human's state"
    );
    assert_eq!(c.get("/api/v1/regressions/nope").status, 404);

    // The CI gate.
    let gate = |extra: &[&str]| {
        let mut args = vec![
            "compare",
            "--server",
            &c.base,
            "--service",
            "shop",
            "--baseline",
            "build=1",
            "--candidate",
            "build=2",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(profwatch_bin())
            .args(&args)
            .output()
            .expect("run compare")
    };
    let out = gate(&[]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a regression fails the gate:\n{table}"
    );
    assert!(
        table.contains("GET /a") && table.contains("REGRESSION"),
        "{table}"
    );
    let out = gate(&["--endpoint", "GET /b", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["endpoints"][0]["verdict"], "same");
    let out = gate(&["--baseline", "nonsense"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error is not a regression"
    );

    // Resolving sends the second and last alert.
    let resolved = http
        .post(format!("{}/api/v1/regressions/{id}/resolve", c.base))
        .send()
        .expect("resolve");
    assert!(resolved.status().is_success());
    assert!(eventually(Duration::from_secs(20), || alerts
        .lock()
        .expect("lock")
        .len()
        >= 2));
    std::thread::sleep(Duration::from_millis(500));
    let got = alerts.lock().expect("lock").clone();
    let statuses: Vec<&str> = got
        .iter()
        .map(|a| a["status"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(statuses, ["firing", "resolved"], "{got:#?}");
    assert_eq!(got[0]["regression"]["endpoint"], "GET /a");
}

/// A slow drift with no new build: the change point in the endpoint's series is found, placed
/// where it happened, confirmed by a compare of the windows around it, and recorded once.
#[test]
fn a_change_in_time_without_a_new_build_is_found() {
    let art = artifacts("a_change_in_time_without_a_new_build_is_found");
    let data = art.join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--analysis-interval",
            "0s",
        ],
        &art.join("server.log"),
    );
    let c = server.client();
    let now = profwatch_model::timefmt::now_ns();
    let minute = 60_000_000_000i64;
    // Three hours, 20 requests a minute over 12 hosts; 12% dearer from 80 minutes ago.
    let mut rng = Rng::new(7);
    let mut events = Vec::new();
    for m in 0..180i64 {
        for k in 0..20u64 {
            let ts = now - (180 - m) * minute + k as i64 * 2_000_000_000;
            let factor = if ts >= now - 80 * minute { 1.12 } else { 1.0 };
            let cpu = 3_000_000.0 * factor * (0.2 * rng.normal()).exp();
            let host = (m as u64 * 20 + k) % 12;
            events.push(RequestEvent {
                ts,
                service: "drift".into(),
                endpoint: "GET /slow".into(),
                build: "only".into(),
                dc: if host.is_multiple_of(2) {
                    "eu1".into()
                } else {
                    "us1".into()
                },
                host: format!("h{host}"),
                status: 200,
                cpu_ns: cpu as u64,
                instructions: None,
                wall_ns: cpu as u64,
                weight: 1.0,
                labels: Default::default(),
            });
        }
    }
    let r = c.post_events(protobuf(&events), "application/x-protobuf", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let http = profwatch_e2e::http_client();
    let report: serde_json::Value = http
        .post(format!("{}/api/v1/analyze", c.base))
        .send()
        .expect("analyze")
        .json()
        .expect("json");
    assert_eq!(report["new_regressions"], 1, "{report:#}");
    let list = c.get("/api/v1/regressions").json();
    let rec = &list[0];
    assert_eq!(rec["endpoint"], "GET /slow");
    let baseline = rec["baseline"].as_str().expect("baseline");
    let at = baseline.strip_prefix("before ").expect("a window record");
    let at_ns = profwatch_model::timefmt::parse_rfc3339_ns(at).expect("time");
    let off_by = (at_ns - (now - 80 * minute)).abs();
    assert!(
        off_by <= 20 * minute,
        "placed {} minutes from the true change",
        off_by / minute
    );
    let effect = rec["effect"].as_f64().expect("effect");
    assert!((1.06..1.2).contains(&effect), "{effect}");
    let again: serde_json::Value = http
        .post(format!("{}/api/v1/analyze", c.base))
        .send()
        .expect("analyze")
        .json()
        .expect("json");
    assert_eq!(again["new_regressions"], 0, "recorded once");
}

/// Two collectors share one ClickHouse database and analyse every 2 s: a lease makes each
/// interval's pass run once across both, so the regression is recorded once and alerted once.
#[test]
fn two_collectors_record_and_alert_once() {
    let Some(ch) = clickhouse_url() else { return };
    let db = format!("pw_two_{}", std::process::id());
    two_collectors("two_collectors_record_and_alert_once", [&ch, &ch], &[], &db);
    let _ = clickhouse_query(&ch, &format!("DROP DATABASE IF EXISTS {db}"));
}

/// The same on a 2-shard ClickHouse cluster, each collector entering through its own shard.
#[test]
fn two_collectors_on_two_shards_record_and_alert_once() {
    if clickhouse_url().is_none() {
        return;
    }
    let cluster = LocalCluster::start(2).expect("a 2-shard ClickHouse cluster");
    let urls = cluster.urls();
    two_collectors(
        "two_collectors_on_two_shards_record_and_alert_once",
        [&urls[0], &urls[1]],
        &["--clickhouse-cluster", CLUSTER],
        "pw_two_shards",
    );
    let per_shard: Vec<u64> = (0..2)
        .map(|i| {
            cluster
                .query(i, "SELECT count() FROM pw_two_shards.events_local")
                .expect("count")
                .parse()
                .expect("number")
        })
        .collect();
    assert!(per_shard.iter().all(|n| *n > 0), "{per_shard:?}");
}

/// The analysis passes `server` ran successfully, from its `/metrics`.
fn passes_ok(server: &Server) -> u64 {
    let metrics = server.client().get("/metrics").body;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("profwatch_analysis_passes_total{outcome=\"ok\"} "))
        .map_or(0, |n| n.trim().parse().expect("a pass count"))
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn two_collectors(name: &str, ch: [&str; 2], extra: &[&str], db: &str) {
    let art = artifacts(name);
    let (hook, alerts) = receiver();
    let hook = format!("json={hook}");
    let args = |url: &str| -> Vec<String> {
        [
            "--clickhouse-url",
            url,
            "--clickhouse-database",
            db,
            "--analysis-interval",
            "2s",
            "--alert",
            &hook,
        ]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
    };
    let (args_a, args_b) = (args(ch[0]), args(ch[1]));
    let a = Server::start(&strs(&args_a), &art.join("a.log"));
    let b = Server::start(&strs(&args_b), &art.join("b.log"));
    // Ingest through both: they share the store.
    for (i, chunk) in workload().chunks(4000).enumerate() {
        let c = if i % 2 == 0 { a.client() } else { b.client() };
        let r = c.post_events(protobuf(chunk), "application/x-protobuf", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        a.client().get("/api/v1/endpoints?service=shop").body,
        b.client().get("/api/v1/endpoints?service=shop").body
    );
    assert!(
        eventually(Duration::from_secs(60), || !alerts
            .lock()
            .expect("lock")
            .is_empty()),
        "no alert arrived"
    );
    // Several more passes (by either collector): nothing new may be recorded or alerted.
    let passes = || passes_ok(&a) + passes_ok(&b);
    let before = passes();
    assert!(
        eventually(Duration::from_secs(120), || passes() >= before + 3),
        "three more analysis passes did not run"
    );
    let records = a.client().get("/api/v1/regressions").json();
    assert_eq!(records.as_array().map(Vec::len), Some(1), "{records:#}");
    // Passes go on updating `last_seen`; the rest must be the same through either collector.
    let stable = |v: serde_json::Value| -> Vec<(String, String, String)> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["id"].to_string(),
                    r["state"].to_string(),
                    r["first_seen"].to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        stable(b.client().get("/api/v1/regressions").json()),
        stable(records.clone()),
        "both collectors answer the same"
    );
    let got = alerts.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "alerted exactly once: {got:#?}");
    let logs = std::fs::read_to_string(art.join("a.log")).unwrap_or_default()
        + &std::fs::read_to_string(art.join("b.log")).unwrap_or_default();
    assert!(
        logs.matches("regression found").count() == 1,
        "one pass found it:\n{logs}"
    );
    drop((a, b));
}
