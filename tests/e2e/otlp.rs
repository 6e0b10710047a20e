//! OTLP profiles end to end: an independent producer (PyPI's `opentelemetry-proto` classes and
//! `grpcio`, `tests/otlp/send.py`) sends to the real binary over OTLP/HTTP (protobuf, and JSON
//! gzipped) and OTLP/gRPC (gzipped); the profiles are queried back through `/api/v1/profile`
//! and `/api/v1/top` by service, build, dc, host, route, extra labels and trace id, with exact
//! totals. Bad requests (an index out of range, a missing zero element, over-deep nesting) get
//! 400 / `INVALID_ARGUMENT` and store nothing; a missing or foreign token gets 401/403 over
//! HTTP and `UNAUTHENTICATED`/`PERMISSION_DENIED` over gRPC.
//!
//! The producer runs in a virtualenv at `<target>/otlp-venv` (created and reused; PyPI is needed
//! the first time). `PROFWATCH_SKIP_OTLP_PYTHON=1` skips these tests (recorded as a skip);
//! without it a missing Python or PyPI fails them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use profwatch_e2e::pki::{https_client, TestCa};
use profwatch_e2e::*;

const TOKEN: &str = "otlp-token-0123456789";
const TRACE_ID: &str = "0102030405060708090a0b0c0d0e0f10";
const SPAN_ID: &str = "1112131415161718";

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn range() -> String {
    format!("from={}&to={}", now_s() - 3600, now_s() + 60)
}

/// The venv's python with the pinned packages, or `None` when told to skip.
fn python() -> Option<PathBuf> {
    if std::env::var("PROFWATCH_SKIP_OTLP_PYTHON").is_ok_and(|v| v == "1") {
        profwatch_testkit::skip(
            "otlp python producer",
            "PROFWATCH_SKIP_OTLP_PYTHON=1: the OTLP producer (PyPI opentelemetry-proto) is not run",
        );
        return None;
    }
    let target = profwatch_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned();
    let venv = target.join("otlp-venv");
    let py = venv.join("bin/python");
    // One test at a time makes the venv: another would find its python before pip is in it.
    static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _setup = SETUP
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !py.exists() {
        let status = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 (set PROFWATCH_SKIP_OTLP_PYTHON=1 to skip these tests)");
        assert!(status.success(), "python3 -m venv {}", venv.display());
    }
    let requirements = repo_root().join("tests/otlp/requirements.txt");
    let status = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .status()
        .expect("pip");
    assert!(
        status.success(),
        "pip install -r {} (PyPI is needed the first time; PROFWATCH_SKIP_OTLP_PYTHON=1 skips)",
        requirements.display()
    );
    Some(py)
}

/// Runs `send.py` with `args` and returns its answer line.
fn send(py: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(py)
        .arg(repo_root().join("tests/otlp/send.py"))
        .args(args)
        .output()
        .expect("run send.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send.py {args:?}: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("send.py printed {stdout:?}: {e}"))
}

/// A server with a token and OTLP/gRPC on a port of its choosing, and that port.
fn start(test: &str) -> (Server, Client, String) {
    let art = artifacts(test);
    start_with(&art, &[])
}

fn start_with(art: &Path, extra: &[&str]) -> (Server, Client, String) {
    let log = art.join("server.log");
    let data = art.join("data");
    let token = format!("{TOKEN}=team");
    let mut args = vec![
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--token",
        &token,
        "--otlp-grpc",
        "127.0.0.1:0",
    ];
    args.extend(extra);
    let server = Server::start(&args, &log);
    let mut grpc = None;
    assert!(
        eventually(Duration::from_secs(30), || {
            let text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
            grpc = text
                .lines()
                .filter(|l| l.contains("OTLP/gRPC listening"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned);
            grpc.is_some()
        }),
        "no OTLP/gRPC address in the log"
    );
    let c = server.client().with_token(TOKEN);
    (server, c, grpc.expect("grpc address"))
}

/// `text` without terminal colour codes (`ESC [ ... m`), which the log may hold.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `(frames, value)` of a folded answer, sorted.
fn folded(c: &Client, query: &str) -> Vec<(String, u64)> {
    let r = c.get(&format!(
        "/api/v1/profile?format=folded&{query}&{}",
        range()
    ));
    assert_eq!(r.status, 200, "{query}: {}", r.body);
    let mut out: Vec<(String, u64)> = r
        .body
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(f, n)| (f.to_owned(), n.parse().expect("count")))
        .collect();
    out.sort();
    out
}

fn lines(expected: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = expected
        .iter()
        .map(|(f, n)| ((*f).to_owned(), *n))
        .collect();
    v.sort();
    v
}

/// What send.py's good request holds, as every transport must store it.
fn assert_stored(c: &Client, service: &str) {
    let s = format!("service={service}");
    assert_eq!(
        folded(c, &s),
        lines(&[
            ("main;idle", 5),
            ("main;serve;handle_cart", 2),
            ("main;serve;handle_checkout;compute_tax", 7),
            ("main;serve;handle_checkout;json_encode;round_cents", 3),
        ]),
        "{service}"
    );
    // CPU time: 10 ms a sample (the profile's period).
    assert_eq!(
        folded(c, &format!("{s}&value=cpu_ns&endpoint=GET%20/cart")),
        lines(&[("main;serve;handle_cart", 20_000_000)]),
    );
    // The resource's fields and extra labels, the route with its method.
    let top = c
        .get(&format!(
            "/api/v1/top?{s}&build=v2.3.1&host=web-7&dc=eu-west-1a\
             &deployment.environment.name=prod&process.runtime.name=cpython&{}",
            range()
        ))
        .json();
    assert_eq!(top["samples"].as_u64(), Some(17), "{top}");
    assert_eq!(top["cpu_ns"].as_u64(), Some(170_000_000), "{top}");
    let checkout = c
        .get(&format!(
            "/api/v1/top?{s}&endpoint=POST%20/checkout/%7Bid%7D&{}",
            range()
        ))
        .json();
    assert_eq!(checkout["samples"].as_u64(), Some(10), "{checkout}");
    let self_of = |name: &str| {
        checkout["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .find(|f| f["name"] == name)
            .and_then(|f| f["self_samples"].as_u64())
    };
    assert_eq!(self_of("compute_tax"), Some(7), "{checkout}");
    assert_eq!(self_of("round_cents"), Some(3), "{checkout}");
    // The traced request alone, by its trace id (and span id), with its sample attribute.
    assert_eq!(
        folded(c, &format!("{s}&trace_id={TRACE_ID}")),
        lines(&[("main;serve;handle_cart", 2)])
    );
    assert_eq!(
        folded(c, &format!("{s}&span_id={SPAN_ID}&thread.name=worker-1")),
        lines(&[("main;serve;handle_cart", 2)])
    );
    let none = c
        .get(&format!("/api/v1/top?{s}&build=v9&{}", range()))
        .json();
    assert_eq!(none["samples"].as_u64(), Some(0), "{none}");
}

#[test]
fn otlp_profiles_arrive_exactly_over_http_json_and_grpc() {
    let Some(py) = python() else { return };
    let (_server, c, grpc) = start("otlp_profiles_arrive_exactly_over_http_json_and_grpc");
    let base = c.base.clone();
    let sends: [(&str, Vec<&str>); 3] = [
        ("otlp-proto", vec!["--http", &base, "--encoding", "proto"]),
        (
            "otlp-json",
            vec!["--http", &base, "--encoding", "json", "--gzip"],
        ),
        ("otlp-grpc", vec!["--grpc", &grpc, "--gzip"]),
    ];
    for (service, how) in &sends {
        let mut args = vec!["--service", service, "--token", TOKEN];
        args.extend(how);
        let answer = send(&py, &args);
        if answer["transport"] == "grpc" {
            assert_eq!(answer["code"], "OK", "{answer}");
        } else {
            assert_eq!(answer["status"], 200, "{answer}");
        }
        // The allocation profile is rejected, the request is not.
        assert_eq!(answer["rejected"], 1, "{answer}");
        let message = answer["message"].as_str().unwrap_or("");
        assert!(message.contains("alloc_space/bytes"), "{answer}");
        assert_stored(&c, service);
    }
}

#[test]
fn bad_otlp_requests_are_refused_and_store_nothing() {
    let Some(py) = python() else { return };
    let (_server, c, grpc) = start("bad_otlp_requests_are_refused_and_store_nothing");
    let base = c.base.clone();
    let cases = [
        ("bad-index", "stack_index is 99"),
        ("missing-zero", "mapping_table[0] must be the zero value"),
        ("deep-nesting", "more than 16 deep"),
    ];
    for (case, needle) in cases {
        for how in [
            vec!["--http", &base, "--encoding", "proto"],
            vec!["--http", &base, "--encoding", "json"],
            vec!["--grpc", &grpc],
        ] {
            let mut args = vec!["--service", "bad", "--token", TOKEN, "--case", case];
            args.extend(&how);
            let answer = send(&py, &args);
            let message = answer["message"].as_str().unwrap_or("");
            assert!(message.contains(needle), "{case}: {answer}");
            if answer["transport"] == "grpc" {
                assert_eq!(answer["code"], "INVALID_ARGUMENT", "{case}: {answer}");
            } else {
                assert_eq!(answer["status"], 400, "{case}: {answer}");
                // google.rpc.Status, code INVALID_ARGUMENT.
                assert_eq!(answer["code"], 3, "{case}: {answer}");
            }
        }
    }
    let top = c
        .get(&format!("/api/v1/top?service=bad&{}", range()))
        .json();
    assert_eq!(top["samples"].as_u64(), Some(0), "{top}");

    // Tokens: none, then another server's.
    for (token, status, code) in [
        ("", 401, "UNAUTHENTICATED"),
        ("not-this-servers-token", 403, "PERMISSION_DENIED"),
    ] {
        let http = send(
            &py,
            &["--service", "bad", "--token", token, "--http", &base],
        );
        assert_eq!(http["status"], status, "{http}");
        let g = send(
            &py,
            &["--service", "bad", "--token", token, "--grpc", &grpc],
        );
        assert_eq!(g["code"], code, "{g}");
    }
    let top = c
        .get(&format!("/api/v1/top?service=bad&{}", range()))
        .json();
    assert_eq!(top["samples"].as_u64(), Some(0), "{top}");
}

/// Failed authentications over gRPC count against the caller's address as HTTP's do: after
/// 20 refused calls (`auth_failures::LIMIT`) the address gets `RESOURCE_EXHAUSTED` over gRPC,
/// even with the right token, and 429 over HTTP.
#[test]
fn failed_grpc_authentications_block_the_address_on_both_listeners() {
    let Some(py) = python() else { return };
    let (_server, c, grpc) =
        start("failed_grpc_authentications_block_the_address_on_both_listeners");
    let guess = ["--service", "guess", "--grpc", &grpc, "--token"];
    for i in 0..20 {
        let g = send(&py, &[&guess[..], &["not-this-servers-token"]].concat());
        assert_eq!(g["code"], "PERMISSION_DENIED", "call {i}: {g}");
    }
    let g = send(&py, &[&guess[..], &[TOKEN]].concat());
    assert_eq!(g["code"], "RESOURCE_EXHAUSTED", "{g}");
    let message = g["message"].as_str().unwrap_or("");
    assert!(message.contains("too many failed authentications"), "{g}");
    let r = c.get("/api/v1/services");
    assert_eq!(r.status, 429, "{}", r.body);
}

/// With `[tls]` the gRPC listener serves TLS (ALPN `h2`) with the server's certificate: a
/// client that trusts the CA gets through, a plaintext one does not.
#[test]
fn otlp_grpc_serves_tls_with_the_servers_certificate() {
    let Some(py) = python() else { return };
    let art = artifacts("otlp_grpc_serves_tls_with_the_servers_certificate");
    let ca = TestCa::new("profwatch test CA");
    let (cert, key) = ca.server(1).write(&art, "server");
    let ca_file = ca.write(&art, "ca");
    let (server, _, grpc) = start_with(
        &art,
        &[
            "--tls-cert",
            cert.to_str().expect("utf-8"),
            "--tls-key",
            key.to_str().expect("utf-8"),
        ],
    );
    let c = Client::with_http(&server.url, https_client(&ca.pem(), None)).with_token(TOKEN);
    let ca_arg = ca_file.to_str().expect("utf-8");
    let answer = send(
        &py,
        &[
            "--service",
            "otlp-tls",
            "--token",
            TOKEN,
            "--grpc",
            &grpc,
            "--grpc-ca",
            ca_arg,
        ],
    );
    assert_eq!(answer["code"], "OK", "{answer}");
    assert_stored(&c, "otlp-tls");
    let plain = send(
        &py,
        &["--service", "otlp-plain", "--token", TOKEN, "--grpc", &grpc],
    );
    assert_eq!(plain["code"], "UNAVAILABLE", "{plain}");
}
