//! Profiles end to end: pprof, folded and Pyroscope (Connect push and legacy `/ingest`) bodies
//! built by their protocols, with real gzip and the real Go CPU profile fixture, over real HTTP;
//! queried back by their labels in every format; and every bad profile refused with a 4xx.
//!
//! Protobuf bodies are encoded by hand here (the e2e crate has no protobuf dependency), with
//! the field numbers of `profile.proto` and `push.proto`.

use std::io::{Read, Write};

use profwatch_e2e::*;

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

// --- a minimal protobuf writer -------------------------------------------------------------

pub(crate) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn field_varint(out: &mut Vec<u8>, tag: u64, v: u64) {
    varint(out, tag << 3);
    varint(out, v);
}

pub(crate) fn field_bytes(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    varint(out, tag << 3 | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn packed(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        varint(&mut out, *v);
    }
    out
}

/// A small pprof: strings, functions (id, name index), locations (id, function id), samples
/// (leaf-first location ids, [samples, cpu_ns], string labels as (key, value) indices).
struct Pprof<'a> {
    strings: &'a [&'a str],
    functions: &'a [(u64, u64)],
    locations: &'a [(u64, u64)],
    samples: Vec<SampleSpec>,
}

/// Leaf-first location ids, [samples, cpu_ns], string labels as (key, value) indices.
type SampleSpec = (Vec<u64>, [u64; 2], Vec<(u64, u64)>);

impl Pprof<'_> {
    /// `strings` must start with "", "samples", "count", "cpu", "nanoseconds".
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for (t, u) in [(1u64, 2u64), (3, 4)] {
            let mut vt = Vec::new();
            field_varint(&mut vt, 1, t);
            field_varint(&mut vt, 2, u);
            field_bytes(&mut p, 1, &vt);
        }
        for (locs, values, labels) in &self.samples {
            let mut s = Vec::new();
            field_bytes(&mut s, 1, &packed(locs));
            field_bytes(&mut s, 2, &packed(values));
            for (k, v) in labels {
                let mut l = Vec::new();
                field_varint(&mut l, 1, *k);
                field_varint(&mut l, 2, *v);
                field_bytes(&mut s, 3, &l);
            }
            field_bytes(&mut p, 2, &s);
        }
        for (id, function) in self.locations {
            let mut line = Vec::new();
            field_varint(&mut line, 1, *function);
            let mut l = Vec::new();
            field_varint(&mut l, 1, *id);
            field_bytes(&mut l, 4, &line);
            field_bytes(&mut p, 4, &l);
        }
        for (id, name) in self.functions {
            let mut f = Vec::new();
            field_varint(&mut f, 1, *id);
            field_varint(&mut f, 2, *name);
            field_bytes(&mut p, 5, &f);
        }
        for s in self.strings {
            field_bytes(&mut p, 6, s.as_bytes());
        }
        p
    }
}

const STRINGS: &[&str] = &[
    "",
    "samples",
    "count",
    "cpu",
    "nanoseconds",
    "main",
    "work",
    "endpoint",
    "GET /a",
];

/// main → work, 5 samples, labelled endpoint=GET /a.
fn small_profile() -> Pprof<'static> {
    Pprof {
        strings: STRINGS,
        functions: &[(1, 5), (2, 6)],
        locations: &[(1, 1), (2, 2)],
        samples: vec![(vec![2, 1], [5, 50_000_000], vec![(7, 8)])],
    }
}

/// The Go CPU profile fixture, inflated, with `time_nanos` set to now (a later scalar field
/// wins in protobuf), gzipped again.
fn fixture_now() -> Vec<u8> {
    let path = repo_root().join("tests/fixtures/pprof/sample.cpu.pb.gz");
    let gz = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(gz.as_slice())
        .read_to_end(&mut raw)
        .expect("gunzip");
    field_varint(&mut raw, 9, (now_s() as u64 - 60) * 1_000_000_000);
    gzip(&raw)
}

fn push_request(labels: &[(&str, &str)], profiles: &[Vec<u8>]) -> Vec<u8> {
    let mut series = Vec::new();
    for (n, v) in labels {
        let mut l = Vec::new();
        field_bytes(&mut l, 1, n.as_bytes());
        field_bytes(&mut l, 2, v.as_bytes());
        field_bytes(&mut series, 1, &l);
    }
    for p in profiles {
        let mut s = Vec::new();
        field_bytes(&mut s, 1, p);
        field_bytes(&mut series, 2, &s);
    }
    let mut req = Vec::new();
    field_bytes(&mut req, 1, &series);
    req
}

// --- HTTP ------------------------------------------------------------------------------------

fn post(c: &Client, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, String, String) {
    let http = profwatch_e2e::http_client();
    let mut req = http.post(format!("{}{path}", c.base)).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().expect("send");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, r.text().unwrap_or_default())
}

fn range() -> String {
    format!("from={}&to={}", now_s() - 3600, now_s() + 60)
}

fn start(test: &str) -> (Server, Client) {
    let art = artifacts(test);
    let server = Server::start(
        &["--data-dir", art.join("data").to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let c = server.client();
    (server, c)
}

#[test]
fn pyroscope_push_is_accepted_and_queryable_by_labels() {
    let (_server, c) = start("pyroscope_push_is_accepted_and_queryable_by_labels");
    let labels = [
        ("__name__", "process_cpu"),
        ("service_name", "pyro"),
        ("version", "v1"),
        ("region", "eu1"),
        ("team", "checkout"),
    ];
    // The real fixture (gzipped pprof) inside a gzipped Connect body.
    let body = gzip(&push_request(
        &labels,
        &[fixture_now(), small_profile().encode()],
    ));
    let (status, ct, text) = post(
        &c,
        "/push.v1.PusherService/Push",
        body,
        &[
            ("content-type", "application/proto"),
            ("content-encoding", "gzip"),
            ("connect-protocol-version", "1"),
        ],
    );
    assert_eq!(
        (status, ct.as_str(), text.as_str()),
        (200, "application/proto", ""),
        "push"
    );
    // A memory series in the same protocol is skipped, not refused.
    let mem = push_request(
        &[("__name__", "memory"), ("service_name", "pyro")],
        &[b"not parsed".to_vec()],
    );
    let (status, _, text) = post(
        &c,
        "/push.v1.PusherService/Push",
        mem,
        &[("content-type", "application/proto")],
    );
    assert_eq!(status, 200, "{text}");

    // By labels: the mapped ones, an extra one, and the sample label of the small profile.
    let top = c.get(&format!(
        "/api/v1/top?service=pyro&build=v1&dc=eu1&team=checkout&{}",
        range()
    ));
    assert_eq!(top.status, 200, "{}", top.body);
    let t = top.json();
    assert!(t["samples"].as_u64().unwrap_or(0) > 5, "{}", top.body);
    assert!(!t["functions"].as_array().expect("functions").is_empty());
    let only = c
        .get(&format!(
            "/api/v1/top?service=pyro&endpoint=GET%20/a&{}",
            range()
        ))
        .json();
    assert_eq!(only["samples"].as_u64(), Some(5), "{only}");
    assert_eq!(only["functions"][0]["name"], "work");
    let none = c
        .get(&format!("/api/v1/top?service=pyro&build=v2&{}", range()))
        .json();
    assert_eq!(none["samples"].as_u64(), Some(0), "{none}");
}

#[test]
fn legacy_ingest_folded_lines_and_multipart_pprof() {
    let (_server, c) = start("legacy_ingest_folded_lines_and_multipart_pprof");
    let from = now_s() - 60;
    let (status, _, text) = post(
        &c,
        &format!("/ingest?name=leg.cpu%7Benv%3Dprod%2Cversion%3D7%7D&from={from}&until={}&sampleRate=100&spyName=gospy", from + 10),
        b"main;a 3\nmain;b 1\n".to_vec(),
        &[("content-type", "text/plain")],
    );
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = post(
        &c,
        "/ingest?name=leg.cpu%7Bversion%3D8%7D&format=lines",
        b"main;a\nmain;a\n".to_vec(),
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let boundary = "b0undary";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n").into_bytes();
    form.extend(gzip(&small_profile().encode()));
    form.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let (status, _, text) = post(
        &c,
        "/ingest?name=leg.cpu%7Bversion%3D9%7D&format=pprof",
        form,
        &[(
            "content-type",
            &format!("multipart/form-data; boundary={boundary}"),
        )],
    );
    assert_eq!(status, 200, "{text}");

    let r = c.get(&format!(
        "/api/v1/profile?service=leg&build=7&env=prod&format=folded&{}",
        range()
    ));
    assert_eq!((r.status, r.body.as_str()), (200, "main;a 3\nmain;b 1\n"));
    let r = c.get(&format!(
        "/api/v1/profile?service=leg&build=7&format=folded&value=cpu_ns&{}",
        range()
    ));
    assert_eq!(
        r.body, "main;a 30000000\nmain;b 10000000\n",
        "100 Hz: 10 ms per sample"
    );
    let r = c.get(&format!(
        "/api/v1/profile?service=leg&build=8&format=folded&{}",
        range()
    ));
    assert_eq!(r.body, "main;a 2\n");
    let r = c.get(&format!(
        "/api/v1/profile?service=leg&build=9&format=folded&{}",
        range()
    ));
    assert_eq!(r.body, "main;work 5\n");
}

#[test]
fn profile_api_answers_every_format() {
    let (_server, c) = start("profile_api_answers_every_format");
    for build in ["b1", "b2"] {
        let (status, _, text) = post(
            &c,
            &format!("/api/v1/profiles?service=api&build={build}&host=h1"),
            fixture_now(),
            &[("content-type", "application/octet-stream")],
        );
        assert_eq!(status, 200, "{text}");
    }
    let (status, _, text) = post(
        &c,
        "/api/v1/profiles?service=api&build=b2&format=folded",
        b"extra;hot 100\n".to_vec(),
        &[],
    );
    assert_eq!(status, 200, "{text}");
    let q = format!("service=api&{}", range());
    let tree = c
        .get(&format!(
            "/api/v1/profile?{q}&build=b1&format=json&max_nodes=10"
        ))
        .json();
    assert_eq!(tree["root"]["name"], "all");
    assert!(
        tree["nodes"].as_u64() == Some(10) && tree["pruned"].as_u64().unwrap_or(0) > 0,
        "{}",
        tree["nodes"]
    );
    assert!(
        tree["root"]["total"].as_u64().unwrap_or(0) > 0
            && tree["root"]["total_cpu_ns"].as_u64().unwrap_or(0) > 0
    );
    let svg = c.get(&format!("/api/v1/profile?{q}&format=svg"));
    assert!(
        svg.status == 200 && svg.body.contains("<svg"),
        "{}",
        svg.status
    );
    let folded = c.get(&format!("/api/v1/profile?{q}&build=b2&format=folded"));
    assert!(folded.body.contains("extra;hot 100\n"));
    let top = c.get(&format!("/api/v1/top?{q}&sort=total&limit=5")).json();
    assert_eq!(top["functions"].as_array().map(Vec::len), Some(5));
    let diff = c
        .get(&format!(
            "/api/v1/diff?{q}&baseline.build=b1&candidate.build=b2&format=json"
        ))
        .json();
    assert_eq!(
        diff["functions"][0]["name"], "hot",
        "the new function is the largest change: {}",
        diff["functions"][0]
    );
    let dsvg = c.get(&format!(
        "/api/v1/diff?{q}&baseline.build=b1&candidate.build=b2&format=svg"
    ));
    assert!(dsvg.status == 200 && dsvg.body.contains("<svg"));

    // pprof out: gzipped profile.proto with the labels; `go tool pprof` reads it when present.
    let http = profwatch_e2e::http_client();
    let pb = http
        .get(format!("{}/api/v1/profile?{q}&format=pprof", c.base))
        .send()
        .expect("get")
        .bytes()
        .expect("body");
    assert_eq!(&pb[..2], &[0x1f, 0x8b]);
    let mut raw = Vec::new();
    flate2::read::MultiGzDecoder::new(pb.as_ref())
        .read_to_end(&mut raw)
        .expect("gunzip");
    let s = String::from_utf8_lossy(&raw);
    assert!(
        s.contains("build") && s.contains("b2") && s.contains("host"),
        "labels are kept"
    );
    let art = repo_root().join("tests/artifacts/profile_api_answers_every_format");
    let file = art.join("profile.pb.gz");
    std::fs::File::create(&file)
        .and_then(|mut f| f.write_all(&pb))
        .expect("write");
    // The test command installs Go and sets PROFWATCH_TEST_REQUIRE_GO; a plain `cargo test`
    // without Go skips this part.
    let go_pprof = |args: &[&str]| {
        std::process::Command::new("go")
            .args(["tool", "pprof"])
            .args(args)
            .arg(&file)
            .env("HOME", &art)
            .output()
    };
    match (go_pprof(&["-top"]), go_pprof(&["-tags"])) {
        (Ok(top), Ok(tags)) => {
            let (top_out, tags_out) = (
                String::from_utf8_lossy(&top.stdout),
                String::from_utf8_lossy(&tags.stdout),
            );
            assert!(
                top.status.success() && tags.status.success(),
                "go tool pprof: {}{}",
                String::from_utf8_lossy(&top.stderr),
                String::from_utf8_lossy(&tags.stderr)
            );
            assert!(top_out.contains("flat%"), "{top_out}");
            // The duration is the span of the data (the fixture, timed a minute ago, to the
            // folded upload), not the query's window of 61 minutes.
            let secs = pprof_duration_secs(&top_out);
            assert!((59.0..=120.0).contains(&secs), "{secs} s in\n{top_out}");
            // pprof itself sees the labels: both builds and the host.
            for label in ["build:", ": b1", ": b2", "host:", ": h1"] {
                assert!(tags_out.contains(label), "{label} in\n{tags_out}");
            }
        }
        (Err(e), _) | (_, Err(e)) => assert!(
            std::env::var_os("PROFWATCH_TEST_REQUIRE_GO").is_none(),
            "go tool pprof is required here (PROFWATCH_TEST_REQUIRE_GO): {e}"
        ),
    }
}

/// The `Duration:` of `go tool pprof -top`'s header in seconds ("Duration: 60.08s, ...",
/// "1.02hrs", "5mins", "300ms").
fn pprof_duration_secs(top: &str) -> f64 {
    let d = top
        .lines()
        .find_map(|l| l.strip_prefix("Duration: "))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("a Duration line in\n{top}"));
    let split = d
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(d.len());
    let (n, unit) = d.split_at(split);
    let n: f64 = n.parse().unwrap_or_else(|e| panic!("{d}: {e}"));
    n * match unit {
        "ns" => 1e-9,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "mins" => 60.0,
        "hrs" => 3600.0,
        other => panic!("unit {other:?} in {d}"),
    }
}

/// The small profile plus one sample field repeated 10M times (a repeated field may appear
/// anywhere in a message).
fn ten_million_samples() -> Vec<u8> {
    let mut p = small_profile().encode();
    let mut one = Vec::new();
    let mut s = Vec::new();
    field_bytes(&mut s, 1, &packed(&[1]));
    field_bytes(&mut s, 2, &packed(&[1, 1]));
    field_bytes(&mut one, 2, &s);
    p.reserve(one.len() * 10_000_000);
    for _ in 0..10_000_000 {
        p.extend_from_slice(&one);
    }
    p
}

#[test]
fn bad_profiles_are_refused() {
    let (_server, c) = start("bad_profiles_are_refused");
    let send = |query: &str, body: Vec<u8>| {
        let (status, _, text) = post(
            &c,
            &format!("/api/v1/profiles?service=bad{query}"),
            body,
            &[],
        );
        (status, text)
    };
    let fixture = {
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(fixture_now().as_slice())
            .read_to_end(&mut raw)
            .expect("gunzip");
        raw
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "truncated protobuf",
            fixture[..fixture.len() / 2].to_vec(),
            400,
        ),
        ("truncated gzip", fixture_now()[..100].to_vec(), 400),
        (
            "location id 0",
            Pprof {
                samples: vec![(vec![0], [1, 1], vec![])],
                ..small_profile()
            }
            .encode(),
            400,
        ),
        (
            "unknown location",
            Pprof {
                samples: vec![(vec![9], [1, 1], vec![])],
                ..small_profile()
            }
            .encode(),
            400,
        ),
        (
            "string index out of range",
            Pprof {
                functions: &[(1, 5), (2, 999)],
                ..small_profile()
            }
            .encode(),
            400,
        ),
        (
            "100k-frame stack",
            Pprof {
                samples: vec![(vec![1; 100_000], [1, 1], vec![])],
                ..small_profile()
            }
            .encode(),
            400,
        ),
        ("gzip bomb", gzip(&vec![0u8; 300 << 20]), 413),
        ("10M samples", gzip(&ten_million_samples()), 413),
    ];
    for (name, body, want) in cases {
        let (status, text) = send("", body);
        assert_eq!(status, want, "{name}: {text}");
        assert!(text.contains("\"error\""), "{name}: {text}");
    }
    let (status, _, text) = post(&c, "/api/v1/profiles", small_profile().encode(), &[]);
    assert_eq!(status, 400, "no service: {text}");
    assert_eq!(send("&format=folded", b"a;b x\n".to_vec()).0, 400);
    assert_eq!(send("&format=jfr", b"x".to_vec()).0, 400);

    // Connect errors on the Pyroscope route.
    let (status, ct, text) = post(
        &c,
        "/push.v1.PusherService/Push",
        b"\x0a\xff\xff".to_vec(),
        &[("content-type", "application/proto")],
    );
    assert_eq!((status, ct.as_str()), (400, "application/json"), "{text}");
    let err: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(err["code"], "invalid_argument");
    assert!(err["message"].as_str().is_some());
    let bad_pprof = push_request(
        &[("service_name", "p")],
        &[fixture[..fixture.len() / 3].to_vec()],
    );
    let (status, _, text) = post(
        &c,
        "/push.v1.PusherService/Push",
        bad_pprof,
        &[("content-type", "application/proto")],
    );
    assert_eq!(status, 400, "{text}");
    let (status, _, _) = post(
        &c,
        "/push.v1.PusherService/Push",
        b"{}".to_vec(),
        &[("content-type", "application/json")],
    );
    assert_eq!(status, 415);
    let (status, _, _) = post(&c, "/ingest?name=x.cpu&format=jfr", b"x".to_vec(), &[]);
    assert_eq!(status, 415);
}

/// A profile re-sent with the same `Idempotency-Key` (a sidecar retrying after a lost answer)
/// is stored once; the key of an event batch does not collide with it.
#[test]
fn a_profile_resent_with_its_idempotency_key_is_stored_once() {
    let (_server, c) = start("a_profile_resent_with_its_idempotency_key_is_stored_once");
    let path = format!("/api/v1/profiles?service=idem&format=folded&ts={}", now_s());
    let send = |key: &str| {
        post(
            &c,
            &path,
            b"main;a 3\n".to_vec(),
            &[("idempotency-key", key)],
        )
    };
    let (status, _, first) = send("host-1/77");
    assert_eq!(status, 200, "{first}");
    assert!(!first.contains("duplicate"), "{first}");
    let (status, _, again) = send("host-1/77");
    assert_eq!(status, 200, "{again}");
    assert!(again.contains("\"duplicate\":true"), "{again}");
    // An event batch with the same key is still stored: the key spaces are apart.
    let ev = format!(
        "{{\"ts\":{},\"service\":\"idem\",\"endpoint\":\"e\",\"cpu_ns\":5,\"wall_ns\":5}}\n",
        now_s() * 1_000_000_000
    );
    let (status, _, text) = post(
        &c,
        "/api/v1/events",
        ev.into_bytes(),
        &[
            ("content-type", "application/x-ndjson"),
            ("idempotency-key", "host-1/77"),
        ],
    );
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"stored\":1"), "{text}");
    let (status, _, bad) = send("bad key with spaces");
    assert_eq!(status, 400, "{bad}");
    let r = c.get(&format!(
        "/api/v1/profile?service=idem&format=folded&{}",
        range()
    ));
    assert_eq!((r.status, r.body.as_str()), (200, "main;a 3\n"));
}

/// `profwatch import` uploads through the real binary: a historic pprof is refused as older
/// than the retention with a message that suggests `--time now`, and imported with it; a
/// folded file and a `perf script` file go in too; the server's totals are exactly the files'.
#[test]
fn import_uploads_files_and_retimes_historic_ones() {
    let art = artifacts("import_uploads_files_and_retimes_historic_ones");
    let server = Server::start(
        &["--data-dir", art.join("data").to_str().expect("utf-8")],
        &art.join("server.log"),
    );
    let fixtures = repo_root().join("tests/fixtures");
    let import = |service: &str, time: Option<&str>, file: &std::path::Path| {
        let mut cmd = std::process::Command::new(profwatch_bin());
        cmd.args([
            "import",
            "--no-progress",
            "--server",
            &server.url,
            "--service",
            service,
        ]);
        if let Some(t) = time {
            cmd.args(["--time", t]);
        }
        cmd.arg(file).output().expect("run profwatch import")
    };
    let pprof = fixtures.join("pprof/sample.cpu.pb.gz");
    let old = import("imported", None, &pprof);
    let stderr = String::from_utf8_lossy(&old.stderr);
    assert!(!old.status.success(), "a 2016 profile is refused: {stderr}");
    assert!(
        stderr.contains("400") && stderr.contains("--time now"),
        "the refusal says why and what to do: {stderr}"
    );
    let now = import("imported", Some("now"), &pprof);
    assert!(
        now.status.success(),
        "{}",
        String::from_utf8_lossy(&now.stderr)
    );
    let folded = fixtures.join("folded/before.txt");
    let out = import("folded", None, &folded);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pprof's samples (its first sample type, `samples`) and the folded file's counts.
    let total = |service: &str| -> u64 {
        let r = server.client().get(&format!(
            "/api/v1/profile?service={service}&format=folded&{}",
            range()
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
            .lines()
            .map(|l| {
                l.rsplit_once(' ')
                    .and_then(|(_, n)| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("not a folded line: {l}"))
            })
            .sum()
    };
    let folded_truth: u64 = std::fs::read_to_string(&folded)
        .expect("fixture")
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(total("folded"), folded_truth);
    // The server's answer to the upload, as `import` prints it, counts what the query finds.
    let printed = String::from_utf8_lossy(&now.stderr);
    let answer: serde_json::Value = printed
        .split_once("uploaded: ")
        .and_then(|(_, json)| serde_json::from_str(json.trim()).ok())
        .unwrap_or_else(|| panic!("import prints the server's answer: {printed}"));
    let samples = answer["samples"].as_u64().expect("samples");
    assert!(samples > 0, "{answer}");
    assert_eq!(
        total("imported"),
        samples,
        "the re-timed pprof is all visible"
    );
}

/// `GET /api/v1/function_series`: a function's self and total CPU per 10-minute bucket and per
/// request, from folded profiles (99 Hz) and request events posted for three buckets; the
/// function's self samples double in the last one while the requests stay. Refusals: no
/// function, too many buckets.
#[test]
fn a_functions_cost_per_request_per_bucket() {
    let (_server, c) = start("a_functions_cost_per_request_per_bucket");
    let step = 600;
    let first = (now_s() - 3 * step) / step * step;
    let period_ns = 1_000_000_000 / 99;
    for (i, (price, render)) in [(10u64, 30u64), (10, 30), (20, 30)].into_iter().enumerate() {
        let ts = first + i as i64 * step + 60;
        let (status, _, text) = post(
            &c,
            &format!(
                "/api/v1/profiles?service=fs&endpoint=GET%20%2Fcart&build=1&format=folded&sample_rate=99&ts={ts}"
            ),
            format!("main;cart;price {price}\nmain;cart;render {render}\nmain;price;price 1\n")
                .into_bytes(),
            &[],
        );
        assert_eq!(status, 200, "{text}");
        let events: Vec<profwatch_model::RequestEvent> = (0..50)
            .map(|k| profwatch_model::RequestEvent {
                ts: (ts + k) * 1_000_000_000,
                service: "fs".into(),
                endpoint: "GET /cart".into(),
                build: "1".into(),
                dc: "eu1".into(),
                host: "h1".into(),
                status: 200,
                cpu_ns: 1_000_000,
                instructions: None,
                wall_ns: 1_000_000,
                weight: 2.0,
                labels: Default::default(),
            })
            .collect();
        let r = c.post_events(ndjson(&events), "application/x-ndjson", None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let q = format!(
        "service=fs&function=price&from={first}&to={}&step=10m",
        first + 3 * step
    );
    for extra in [
        "",
        "&endpoint=GET%20%2Fcart",
        "&endpoint=GET%20%2Fcart&build=1",
    ] {
        let a = c.get(&format!("/api/v1/function_series?{q}{extra}")).json();
        let points = a["points"].as_array().unwrap_or_else(|| panic!("{a}"));
        assert_eq!(points.len(), 3, "{a}");
        assert_eq!(a["step"], step);
        for (i, p) in points.iter().enumerate() {
            let price = if i == 2 { 20 } else { 10 };
            assert_eq!(p["time"], first + i as i64 * step, "{p}");
            // Self: the leaf `price` of the first stack and the recursive one's leaf; total:
            // both stacks, the recursive one once.
            assert_eq!(p["self_samples"], price + 1, "{p}");
            assert_eq!(p["total_samples"], price + 1, "{p}");
            assert_eq!(p["self_cpu_ns"], (price + 1) * period_ns, "{p}");
            assert_eq!(p["requests"], 100.0, "50 requests of weight 2: {p}");
            let per = p["self_cpu_ns_per_request"].as_f64().expect("per request");
            let want = ((price + 1) * period_ns) as f64 / 100.0;
            assert!((per - want).abs() < 1e-6, "{p}");
        }
    }
    // A build without an endpoint: the events cannot say its requests per bucket.
    let a = c
        .get(&format!("/api/v1/function_series?{q}&build=1"))
        .json();
    assert!(a["points"][0]["requests"].is_null(), "{a}");
    assert!(a["points"][0]["self_cpu_ns_per_request"].is_null(), "{a}");
    // Refusals.
    let r = c.get(&format!(
        "/api/v1/function_series?service=fs&from={first}&to={}",
        first + step
    ));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("function"), "{}", r.body);
    let r = c.get(&format!(
        "/api/v1/function_series?service=fs&function=price&from={}&to={}&step=30s",
        first - 86_400,
        first + 3 * step
    ));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("buckets"), "{}", r.body);
}
