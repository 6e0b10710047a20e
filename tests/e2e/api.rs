//! The API as a user meets it: every wire format round-trips, answers have the documented
//! shapes, operations endpoints work, and a graceful stop loses nothing.

use profwatch_e2e::*;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn every_format_and_encoding_is_accepted() {
    let art = artifacts("every_format_and_encoding_is_accepted");
    let server = Server::start(
        &["--data-dir", art.join("data").to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let c = server.client();
    let cases: [(&str, Vec<u8>, &str, Option<&str>); 6] = [
        (
            "nd",
            ndjson(&events("fmt", "nd", 100)),
            "application/x-ndjson",
            None,
        ),
        (
            "nd-gz",
            gzip(&ndjson(&events("fmt", "nd-gz", 100))),
            "application/x-ndjson",
            Some("gzip"),
        ),
        (
            "nd-zst",
            zstd(&ndjson(&events("fmt", "nd-zst", 100))),
            "application/x-ndjson",
            Some("zstd"),
        ),
        (
            "pb",
            protobuf(&events("fmt", "pb", 100)),
            "application/x-protobuf",
            None,
        ),
        (
            "pb-gz",
            gzip(&protobuf(&events("fmt", "pb-gz", 100))),
            "application/x-protobuf",
            Some("gzip"),
        ),
        (
            "pb-zst",
            zstd(&protobuf(&events("fmt", "pb-zst", 100))),
            "application/x-protobuf",
            Some("zstd"),
        ),
    ];
    for (name, body, ct, enc) in cases {
        let r = c.post_events(body, ct, enc);
        assert_eq!(
            (r.status, r.json()["stored"].as_u64()),
            (200, Some(100)),
            "{name}: {}",
            r.body
        );
    }
    let r = c.get(&format!(
        "/api/v1/endpoints?service=fmt&group_by=build&from={}&to={}",
        now_s() - 3600,
        now_s() + 60
    ));
    assert_eq!(r.status, 200);
    let rows = r.json();
    let rows = rows.as_array().expect("array");
    assert_eq!(rows.len(), 18, "3 endpoints x 6 builds: {}", r.body);
    for row in rows {
        for field in [
            "endpoint",
            "group",
            "requests",
            "cpu_ns",
            "instructions_requests",
            "instructions",
        ] {
            assert!(row.get(field).is_some(), "row lacks {field}: {row}");
        }
        for field in ["mean", "p50", "p90", "p99"] {
            assert!(
                row["cpu_ns"][field].as_f64().is_some(),
                "cpu_ns lacks {field}"
            );
        }
    }
    // RFC 3339 ranges and timeseries. A range from 2020 is narrowed to the 30 days retained:
    // 8,640 five-minute buckets fit, 2.6 million one-second buckets do not.
    let r =
        c.get("/api/v1/timeseries?service=fmt&endpoint=GET%20/a&step=5m&from=2020-01-01T00:00:00Z");
    assert_eq!(r.status, 200, "narrowed to the retention: {}", r.body);
    let r =
        c.get("/api/v1/timeseries?service=fmt&endpoint=GET%20/a&step=1&from=2020-01-01T00:00:00Z");
    assert_eq!(r.status, 400, "more than 10k buckets: {}", r.body);
    let r = c.get("/api/v1/timeseries?service=fmt&endpoint=GET%20/a&step=5m&group_by=build");
    assert_eq!(r.status, 200, "{}", r.body);
    let points = r.json();
    let total: f64 = points
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["requests"].as_f64().expect("every point has requests"))
        .sum();
    assert_eq!(
        total,
        6.0 * 34.0,
        "GET /a is every third event: 34 of each 100"
    );
    assert!(points[0]["time"].as_i64().is_some() && points[0]["group"].as_str().is_some());
}

/// `/api/v1/series`: every endpoint of a service, sorted by endpoint, each with its points in
/// time order; the points add up to the events sent and agree with `/timeseries`.
#[test]
fn series_answers_every_endpoint_of_a_service() {
    let art = artifacts("series_answers_every_endpoint_of_a_service");
    let server = Server::start(
        &["--data-dir", art.join("data").to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let c = server.client();
    let r = c.post_events(
        ndjson(&events("series", "1", 300)),
        "application/x-ndjson",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let range = format!("from={}&to={}&step=1m", now_s() - 3600, now_s() + 60);
    let r = c.get(&format!("/api/v1/series?service=series&{range}"));
    assert_eq!(r.status, 200, "{}", r.body);
    let series = r.json();
    let series = series.as_array().expect("an array");
    let names: Vec<&str> = series
        .iter()
        .map(|s| s["endpoint"].as_str().expect("endpoint"))
        .collect();
    assert_eq!(names, ["GET /a", "GET /b", "POST /c"]);
    let mut total = 0.0;
    for s in series {
        let points = s["points"].as_array().expect("points");
        let times: Vec<i64> = points
            .iter()
            .map(|p| p["time"].as_i64().expect("time"))
            .collect();
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "time order: {times:?}"
        );
        let requests: f64 = points
            .iter()
            .map(|p| p["requests"].as_f64().expect("requests"))
            .sum();
        total += requests;
        let endpoint = s["endpoint"]
            .as_str()
            .expect("endpoint")
            .replace(' ', "%20");
        let ts = c.get(&format!(
            "/api/v1/timeseries?service=series&endpoint={endpoint}&{range}"
        ));
        assert_eq!(ts.status, 200, "{}", ts.body);
        assert_eq!(ts.json(), s["points"], "the same points as /timeseries");
    }
    assert_eq!(total, 300.0);
    let r = c.get(&format!("/api/v1/series?{range}"));
    assert_eq!(r.status, 400, "service is required: {}", r.body);
}

#[test]
fn operations_endpoints() {
    let art = artifacts("operations_endpoints");
    let server = Server::start(
        &["--data-dir", art.join("data").to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let c = server.client();
    assert_eq!(c.get("/healthz").status, 200);
    assert_eq!(c.get("/readyz").status, 200);
    let good = c.post_events(
        ndjson(&events("ops", "1", 10)),
        "application/x-ndjson",
        None,
    );
    assert_eq!(good.status, 200, "{}", good.body);
    let bad = c.post_events(b"{".to_vec(), "application/x-ndjson", None);
    assert_eq!(bad.status, 400, "{}", bad.body);
    let m = c.get("/metrics");
    assert_eq!(m.status, 200);
    for needle in [
        "profwatch_events_accepted_total 10",
        "profwatch_batches_rejected_total{reason=\"decode\"} 1",
        "profwatch_store_write_seconds_count 1",
        "profwatch_store_queue_depth",
        "profwatch_store_stack_collisions 0",
    ] {
        assert!(
            m.body.contains(needle),
            "/metrics lacks {needle}:\n{}",
            m.body
        );
    }
}

#[test]
fn config_file_env_and_flags() {
    let art = artifacts("config_file_env_and_flags");
    let cfg = art.join("profwatch.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nretention = \"7d\"\n[tokens]\n\"file-token-12345\" = \"fromfile\"\n",
            art.join("data").display().to_string()
        ),
    )
    .expect("write config");
    let server = Server::start(
        &[
            "--config",
            cfg.to_str().expect("utf-8"),
            "--token",
            "flag-token-12345=fromflag",
        ],
        &art.join("server.log"),
    );
    let from_file = server.client().with_token("file-token-12345");
    let from_flag = server.client().with_token("flag-token-12345");
    assert_eq!(
        from_file
            .post_events(ndjson(&events("cfg", "1", 5)), "application/x-ndjson", None)
            .status,
        200
    );
    assert_eq!(
        from_flag
            .post_events(ndjson(&events("cfg", "1", 7)), "application/x-ndjson", None)
            .status,
        200
    );
    assert_eq!(from_file.total_requests("cfg", 1), 5.0);
    assert_eq!(from_flag.total_requests("cfg", 1), 7.0);
    // An event older than the 7-day retention is refused.
    let mut old = events("cfg", "1", 1);
    old[0].ts -= 8 * 86_400 * 1_000_000_000;
    assert_eq!(
        from_file
            .post_events(ndjson(&old), "application/x-ndjson", None)
            .status,
        400
    );

    // A config that cannot work is refused at start with a message, not a panic.
    std::fs::write(&cfg, "retention = \"forever\"\n").expect("write config");
    let out = std::process::Command::new(profwatch_bin())
        .args(["server", "--config", cfg.to_str().expect("utf-8")])
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("retention") && !err.contains("panicked"),
        "{err}"
    );
}
