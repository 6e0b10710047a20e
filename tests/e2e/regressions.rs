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

/// A server on an embedded store in `art/data`, without scheduled passes (tests ask for them),
/// alerting a JSON receiver; the messages it got.
fn alerting_server(art: &std::path::Path) -> (Server, Arc<Mutex<Vec<serde_json::Value>>>) {
    let (hook, alerts) = receiver();
    (server_alerting(art, &format!("json={hook}"), &[]), alerts)
}

/// An embedded-store server in `art` that analyses only when asked and alerts `sink`
/// (`KIND=URL`), with `extra` arguments.
pub(crate) fn server_alerting(art: &std::path::Path, sink: &str, extra: &[&str]) -> Server {
    let data = art.join("data");
    let mut args = vec![
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--analysis-interval",
        "0s",
        "--alert",
        sink,
    ];
    args.extend_from_slice(extra);
    Server::start(&args, &art.join("server.log"))
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
    let (server, alerts) = alerting_server(&art);
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

/// One bad build that makes four endpoints of two services dearer is one incident through the
/// real server: `/api/v1/incidents` lists it with its four regressions, and the alert receiver
/// hears one alert that lists them all, and nothing more on later passes. Build 3 brings every
/// endpoint back: each record resolves itself as fixed in build 3, in one resolved alert.
#[test]
fn one_bad_build_is_one_incident_and_one_alert() {
    let art = artifacts("one_bad_build_is_one_incident_and_one_alert");
    let (server, alerts) = alerting_server(&art);
    let c = server.client();
    let now = profwatch_model::timefmt::now_ns();
    let mut rng = Rng::new(17);
    let endpoints = [
        ("shop", "GET /a", 1.10),
        ("shop", "GET /b", 1.12),
        ("shop", "GET /c", 1.0),
        ("cart", "GET /d", 1.15),
        ("cart", "GET /e", 1.10),
    ];
    let mut events_of = |builds: &[(&str, i64)]| {
        let mut events = Vec::new();
        for (build, start_min) in builds.iter().copied() {
            for (service, endpoint, dearer) in endpoints {
                for i in 0..2000u64 {
                    let factor = if build == "2" { dearer } else { 1.0 };
                    let cpu = 2_000_000.0 * factor * (0.3 * rng.normal()).exp();
                    let host = i % 12;
                    events.push(RequestEvent {
                        ts: now - start_min * 60_000_000_000 + i as i64 * 9_000_000,
                        service: service.into(),
                        endpoint: endpoint.into(),
                        build: build.into(),
                        dc: if host.is_multiple_of(2) { "eu1" } else { "us1" }.into(),
                        host: format!("web-{host}"),
                        status: 200,
                        cpu_ns: cpu as u64,
                        instructions: None,
                        wall_ns: cpu as u64,
                        weight: 1.0,
                        labels: Default::default(),
                    });
                }
            }
        }
        events
    };
    let post = |events: Vec<RequestEvent>| {
        for chunk in events.chunks(5000) {
            let r = c.post_events(protobuf(chunk), "application/x-protobuf", None);
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    post(events_of(&[("1", 50), ("2", 25)]));
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
    assert_eq!(report["new_regressions"], 4, "{report:#}");
    assert_eq!(report["new_incidents"], 1, "{report:#}");

    let incidents = c.get("/api/v1/incidents").json();
    let list = incidents.as_array().expect("array");
    assert_eq!(list.len(), 1, "{incidents:#}");
    let inc = &list[0];
    assert_eq!(inc["cause"]["build"], "2");
    assert_eq!(inc["state"], "open");
    assert_eq!(inc["services"], serde_json::json!(["cart", "shop"]));
    let mut regressed: Vec<&str> = inc["regressions"]
        .as_array()
        .expect("regressions")
        .iter()
        .filter_map(|r| r["endpoint"].as_str())
        .collect();
    regressed.sort_unstable();
    assert_eq!(regressed, ["GET /a", "GET /b", "GET /d", "GET /e"]);
    let id = inc["id"].as_str().expect("id");
    assert_eq!(c.get(&format!("/api/v1/incidents/{id}")).json()["id"], id);
    assert_eq!(c.get("/api/v1/incidents/nope").status, 404);
    assert_eq!(
        c.get("/api/v1/incidents?state=resolved").json(),
        serde_json::json!([])
    );
    assert_eq!(c.get("/api/v1/incidents?service=cart").json()[0]["id"], id);
    assert_eq!(c.get("/api/v1/incidents?nope=1").status, 400);
    for r in c
        .get("/api/v1/regressions")
        .json()
        .as_array()
        .expect("array")
    {
        assert_eq!(r["incident"], id, "every record names its incident");
    }

    assert!(eventually(Duration::from_secs(20), || !alerts
        .lock()
        .expect("lock")
        .is_empty()));
    let again = analyze();
    assert_eq!(
        (
            again["new_regressions"].as_u64(),
            again["new_incidents"].as_u64()
        ),
        (Some(0), Some(0)),
        "{again:#}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let got = alerts.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "one alert for the incident: {got:#?}");
    assert_eq!(got[0]["status"], "firing");
    assert_eq!(got[0]["incident"], id);
    assert_eq!(got[0]["regressions"].as_array().map(Vec::len), Some(4));

    // Build 3 costs what build 1 did.
    post(events_of(&[("3", 10)]));
    let fixed = analyze();
    assert_eq!(fixed["fixed"], 4, "{fixed:#}");
    assert!(eventually(Duration::from_secs(20), || alerts
        .lock()
        .expect("lock")
        .len()
        >= 2));
    let inc = c.get(&format!("/api/v1/incidents/{id}")).json();
    assert_eq!(inc["state"], "resolved", "{inc:#}");
    for r in inc["regressions"].as_array().expect("regressions") {
        assert_eq!(
            r["resolution"],
            serde_json::json!({"kind": "fixed", "build": "3"}),
            "{r:#}"
        );
    }
    assert_eq!(analyze()["resolved_regressions"], 0, "resolved once");
    std::thread::sleep(Duration::from_millis(500));
    let got = alerts.lock().expect("lock").clone();
    assert_eq!(
        got.len(),
        2,
        "one resolved alert for the incident: {got:#?}"
    );
    assert_eq!(got[1]["status"], "resolved");
    assert_eq!(got[1]["regressions"].as_array().map(Vec::len), Some(4));
    let summary = got[1]["summary"].as_str().expect("summary");
    assert!(summary.contains("resolved (fixed in build 3)"), "{summary}");
}

/// A slow drift with no new build: the change point in the endpoint's series is found, placed
/// where it happened, confirmed by a compare of the windows around it, and recorded once. Two
/// endpoints that change at the same moment are one incident, caused by that time.
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
    for endpoint in ["GET /slow", "GET /slower"] {
        for m in 0..180i64 {
            for k in 0..20u64 {
                let ts = now - (180 - m) * minute + k as i64 * 2_000_000_000;
                let factor = if ts >= now - 80 * minute { 1.12 } else { 1.0 };
                let cpu = 3_000_000.0 * factor * (0.2 * rng.normal()).exp();
                let host = (m as u64 * 20 + k) % 12;
                events.push(RequestEvent {
                    ts,
                    service: "drift".into(),
                    endpoint: endpoint.into(),
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
    assert_eq!(report["new_regressions"], 2, "{report:#}");
    assert_eq!(report["new_incidents"], 1, "{report:#}");
    let list = c.get("/api/v1/regressions").json();
    let rec = list
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["endpoint"] == "GET /slow")
        .expect("GET /slow's record");
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
    let incidents = c.get("/api/v1/incidents").json();
    assert_eq!(incidents.as_array().map(Vec::len), Some(1), "{incidents:#}");
    let t = incidents[0]["cause"]["time"]
        .as_i64()
        .expect("a time incident");
    assert!((t - at_ns).abs() <= 30 * minute, "{incidents:#}");
    assert_eq!(
        incidents[0]["regressions"].as_array().map(Vec::len),
        Some(2)
    );
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

/// Function-level detection through the real server: six hours of one endpoint whose requests
/// cost the same throughout, with folded profiles every 10 minutes; from two hours ago the
/// function `small` (2% of the samples) costs 5% more. It is recorded as a function-level
/// regression of that endpoint; the endpoint itself is not.
#[test]
fn a_functions_rise_is_found_while_its_endpoint_stays_flat() {
    let art = artifacts("a_functions_rise_is_found_while_its_endpoint_stays_flat");
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
    let bucket = 10 * minute;
    let start = (now - 360 * minute) / bucket * bucket;
    let changed = start + 24 * bucket;
    let mut rng = Rng::new(23);
    let mut events = Vec::new();
    for m in 0..360i64 {
        for k in 0..6i64 {
            let cpu = 3_000_000.0 * (0.2 * rng.normal()).exp();
            let host = (m * 6 + k) % 12;
            events.push(RequestEvent {
                ts: start + m * minute + k * 10_000_000_000,
                service: "fn".into(),
                endpoint: "GET /f".into(),
                build: "only".into(),
                dc: "eu1".into(),
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
    for b in 0..36i64 {
        let ts = start + b * bucket + bucket / 2;
        let small = if ts >= changed { 4200.0 } else { 4000.0 };
        let mut n = |mean: f64| (mean + mean.sqrt() * rng.normal()).max(0.0) as u64;
        let folded = format!(
            "main;handle;big {}\nmain;handle;small {}\nmain;handle {}\n",
            n(200_000.0),
            n(small),
            n(20_000.0)
        );
        let r = http
            .post(format!(
                "{}/api/v1/profiles?format=folded&service=fn&endpoint=GET%20/f&build=only&ts={}",
                c.base,
                ts / 1_000_000_000
            ))
            .body(folded)
            .send()
            .expect("post profile");
        assert!(r.status().is_success(), "{:?}", r.text());
    }
    let analyze = || -> serde_json::Value {
        http.post(format!("{}/api/v1/analyze", c.base))
            .send()
            .expect("analyze")
            .json()
            .expect("json")
    };
    let report = analyze();
    let list = c.get("/api/v1/regressions").json();
    assert_eq!(report["new_regressions"], 1, "{report:#} {list:#}");
    let rec = &list[0];
    assert_eq!(rec["function"], "small", "{rec:#}");
    assert_eq!(rec["endpoint"], "GET /f");
    assert_eq!(rec["metric"], "samples");
    let at = rec["changed_at"].as_i64().expect("changed_at");
    assert!((at - changed).abs() <= 2 * bucket, "{rec:#}");
    assert_eq!(analyze()["new_regressions"], 0, "recorded once");
}

/// A regression whose effect disappears while its build still serves (a cache warming up)
/// closes itself as "went away" after two passes without it, through the real server, and the
/// alert receiver hears that once.
#[test]
fn a_regression_that_goes_away_closes_itself_and_is_alerted_once() {
    let art = artifacts("a_regression_that_goes_away_closes_itself_and_is_alerted_once");
    let (server, alerts) = alerting_server(&art);
    let c = server.client();
    let now = profwatch_model::timefmt::now_ns();
    let mut rng = Rng::new(29);
    let mut events_of = |build: &str, start_min: i64, n: u64, factor: f64| {
        (0..n)
            .map(|i| {
                let cpu = 2_000_000.0 * factor * (0.3 * rng.normal()).exp();
                let host = i % 12;
                RequestEvent {
                    ts: now - start_min * 60_000_000_000 + i as i64 * 10_000_000,
                    service: "cache".into(),
                    endpoint: "GET /warm".into(),
                    build: build.into(),
                    dc: if host.is_multiple_of(2) { "eu1" } else { "us1" }.into(),
                    host: format!("web-{host}"),
                    status: 200,
                    cpu_ns: cpu as u64,
                    instructions: None,
                    wall_ns: cpu as u64,
                    weight: 1.0,
                    labels: Default::default(),
                }
            })
            .collect::<Vec<_>>()
    };
    let post = |events: Vec<RequestEvent>| {
        for chunk in events.chunks(5000) {
            let r = c.post_events(protobuf(chunk), "application/x-protobuf", None);
            assert_eq!(r.status, 200, "{}", r.body);
        }
    };
    post(events_of("1", 50, 3000, 1.0));
    post(events_of("2", 25, 3000, 1.12));
    let http = profwatch_e2e::http_client();
    let analyze = || -> serde_json::Value {
        http.post(format!("{}/api/v1/analyze", c.base))
            .send()
            .expect("analyze")
            .json()
            .expect("json")
    };
    assert_eq!(analyze()["new_regressions"], 1);
    // The cache is warm: build 2 now costs what build 1 did, for many more requests.
    post(events_of("2", 15, 60_000, 1.0));
    let first = analyze();
    assert_eq!(first["went_away"], 0, "one pass is not enough: {first:#}");
    let second = analyze();
    assert_eq!(
        (second["went_away"].as_u64(), second["fixed"].as_u64()),
        (Some(1), Some(0)),
        "{second:#}"
    );
    let list = c.get("/api/v1/regressions").json();
    assert_eq!(list[0]["state"], "resolved", "{list:#}");
    assert_eq!(list[0]["resolution"]["kind"], "went_away", "{list:#}");
    assert!(eventually(Duration::from_secs(20), || alerts
        .lock()
        .expect("lock")
        .len()
        >= 2));
    assert_eq!(analyze()["resolved_regressions"], 0);
    std::thread::sleep(Duration::from_millis(500));
    let got = alerts.lock().expect("lock").clone();
    let statuses: Vec<&str> = got.iter().filter_map(|a| a["status"].as_str()).collect();
    assert_eq!(statuses, ["firing", "resolved"], "{got:#?}");
    let summary = got[1]["summary"].as_str().expect("summary");
    assert!(summary.starts_with("resolved (went away)"), "{summary}");
}
