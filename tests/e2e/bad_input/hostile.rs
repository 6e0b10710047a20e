//! Hostile input (issue 11): inputs built to cost the server far more than their size, sent to
//! a fresh server over HTTP. Each test checks the answer (status, and a message that names the
//! limit), that the server's peak resident memory (`VmHWM`) stays under a stated bound, and that
//! the good batch stored before is intact.
//!
//! The bounds: 300 MB where the input is refused before anything large is held; 400 MB where the
//! server must first inflate a body it is allowed to inflate (the default budget of bodies in
//! flight is 304 MiB: 32 MiB as sent + 256 MiB decompressed + 16 MiB).

use std::io::Write;

use profwatch_e2e::*;

use super::{assert_intact, expect, seeded};
use crate::profiles::{field_bytes, field_varint, packed, varint};

const MB: u64 = 1_000_000;

fn assert_peak_under(server: &Server, bound: u64, what: &str) {
    let peak = server.peak_rss();
    eprintln!("{what}: peak RSS {} MB", peak / MB);
    assert!(
        peak < bound,
        "{what}: the server peaked at {} MB, over {} MB",
        peak / MB,
        bound / MB
    );
}

/// The head of a pprof whose one function is named `name` and whose one sample goes through
/// location 1; the caller appends location 1.
fn pprof_head(name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["", "samples", "count", name] {
        field_bytes(&mut p, 6, s.as_bytes());
    }
    let mut vt = Vec::new();
    field_varint(&mut vt, 1, 1);
    field_varint(&mut vt, 2, 2);
    field_bytes(&mut p, 1, &vt);
    let mut f = Vec::new();
    field_varint(&mut f, 1, 1);
    field_varint(&mut f, 2, 3);
    field_bytes(&mut p, 5, &f);
    let mut s = Vec::new();
    field_bytes(&mut s, 1, &packed(&[1]));
    field_bytes(&mut s, 2, &packed(&[1]));
    field_bytes(&mut p, 2, &s);
    p
}

/// A gzipped pprof whose location 1 lists function 1 (a 1 KiB name) `lines` times: a line
/// costs 4 bytes on the wire, and a copied frame name 1 KiB.
fn line_bomb(lines: u64) -> Vec<u8> {
    const LINE: [u8; 4] = [0x22, 2, 0x08, 1];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut head = pprof_head(&"f".repeat(1024));
    varint(&mut head, 4 << 3 | 2);
    varint(&mut head, 2 + 4 * lines);
    field_varint(&mut head, 1, 1);
    gz.write_all(&head).expect("gzip");
    let chunk: Vec<u8> = LINE.repeat(1 << 18);
    let mut left = lines;
    while left > 0 {
        let n = left.min(1 << 18);
        gz.write_all(&chunk[..(n * 4) as usize]).expect("gzip");
        left -= n;
    }
    gz.finish().expect("gzip")
}

fn post_profile(c: &Client, body: Vec<u8>) -> Reply {
    c.request(
        "POST",
        "/api/v1/profiles?service=bomb",
        &[("content-type", "application/octet-stream")],
        body,
    )
}

/// Regression (issue 11): a 2.4 KB gzipped pprof listing a 1 KiB name 600,000 times in one
/// location was refused only after the server peaked at 1.2 GB.
#[test]
fn pprof_line_bomb_600k_lines() {
    let (s, c) = seeded("pprof_line_bomb_600k_lines", &[]);
    let bomb = line_bomb(600_000);
    assert!(bomb.len() < 64 << 10, "a tiny body: {}", bomb.len());
    expect(
        &post_profile(&c, bomb),
        400,
        "600000 lines; the limit is 128",
    );
    assert_peak_under(&s, 300 * MB, "600k-line bomb");
    assert_intact(&c);
}

/// Regression (issue 11): the same bomb with 64,000,000 lines fits the body limits (256 MB
/// inflated) and asked for about 256 GB.
#[test]
fn pprof_line_bomb_64m_lines() {
    let (s, c) = seeded("pprof_line_bomb_64m_lines", &[]);
    let bomb = line_bomb(64_000_000);
    assert!(bomb.len() < 2 << 20, "a small body: {}", bomb.len());
    expect(
        &post_profile(&c, bomb),
        400,
        "64000000 lines; the limit is 128",
    );
    assert_peak_under(&s, 400 * MB, "64M-line bomb");
    assert_intact(&c);
}

/// Regression (issue 11): 24 concurrent gzip bodies, each inflating to 200 MB, took the server
/// to 6.1 GB: the inflate cap was per request and nothing bounded the sum.
#[test]
fn concurrent_inflations_share_one_budget() {
    let (s, c) = seeded("concurrent_inflations_share_one_budget", &[]);
    // 200 MB of newlines: NDJSON of blank lines, valid and empty once inflated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let chunk = vec![b'\n'; 1 << 20];
    for _ in 0..200 {
        gz.write_all(&chunk[..MB as usize]).expect("gzip");
    }
    let body = gz.finish().expect("gzip");
    let barrier = std::sync::Barrier::new(24);
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..24)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    c.post_events(body.clone(), "application/x-ndjson", Some("gzip"))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect()
    });
    let mut ok = 0;
    for r in &replies {
        match r.status {
            200 => ok += 1,
            429 => {
                assert!(r.retry_after.is_some(), "429 without Retry-After");
                let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
                assert!(
                    msg.contains("max_inflight_bytes") || msg.contains("max_concurrent_ingest"),
                    "{msg}"
                );
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    eprintln!("{ok} of 24 inflated, {} refused with 429", 24 - ok);
    assert!(
        ok >= 1,
        "the budget must let requests through one at a time"
    );
    assert_peak_under(&s, 400 * MB, "24 concurrent 200 MB inflations");
    assert_intact(&c);
}

/// Regression (issue 11): one NDJSON line with 3M labels peaked at 490 MB before the label
/// limit refused it, because the limit was checked after parsing.
#[test]
fn ndjson_line_with_3m_labels() {
    let (s, c) = seeded("ndjson_line_with_3m_labels", &[]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(br#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"labels":{"#)
        .expect("gzip");
    let mut chunk = String::new();
    for i in 0..3_000_000u32 {
        if i > 0 {
            chunk.push(',');
        }
        chunk.push_str(&format!("\"k{i}\":\"v\""));
        if chunk.len() > 1 << 20 {
            gz.write_all(chunk.as_bytes()).expect("gzip");
            chunk.clear();
        }
    }
    chunk.push_str("}}\n");
    gz.write_all(chunk.as_bytes()).expect("gzip");
    let body = gz.finish().expect("gzip");
    expect(
        &c.post_events(body, "application/x-ndjson", Some("gzip")),
        400,
        "more than 16 labels; the limit is 16",
    );
    assert_peak_under(&s, 300 * MB, "3M labels in one line");
    assert_intact(&c);
}

/// Regression (issue 11): the multipart boundary had no length limit and was searched
/// naively, so a 400 KB boundary over a 16 MB body kept a core busy for hours.
#[test]
fn multipart_boundary_of_400kb() {
    let (s, c) = seeded("multipart_boundary_of_400kb", &[]);
    let mut boundary = "-".repeat(399_999);
    boundary.push('x');
    let ct = format!("multipart/form-data; boundary={boundary}");
    let r = c.request(
        "POST",
        "/ingest?name=bomb.cpu&format=pprof",
        &[("content-type", &ct)],
        vec![b'-'; 16 << 20],
    );
    expect(&r, 400, "boundary is 400000 bytes; RFC 2046 allows 1 to 70");
    assert_peak_under(&s, 300 * MB, "400 KB boundary");
    assert_intact(&c);
}

/// Regression (issue 11): `to - from` overflowed (a panic in debug builds, a wrapped range in
/// release) for ranges such as `from=-9223372036&to=9223372036`.
#[test]
fn time_ranges_that_overflow() {
    let (s, c) = seeded("time_ranges_that_overflow", &[]);
    let wide = "from=-9223372036&to=9223372036";
    for path in [
        format!("/api/v1/services?{wide}"),
        format!("/api/v1/endpoints?service=good&{wide}"),
        format!("/api/v1/timeseries?service=good&endpoint=GET%20/a&{wide}"),
        format!("/api/v1/timeseries?service=good&endpoint=GET%20/a&{wide}&step=1"),
        format!("/api/v1/series?service=good&{wide}"),
        format!("/api/v1/profile?service=good&{wide}"),
        format!("/api/v1/top?service=good&{wide}"),
        format!("/api/v1/diff?service=good&{wide}"),
        format!("/api/v1/compare?service=good&baseline=1&candidate=2&{wide}"),
    ] {
        expect(&c.get(&path), 400, "too long");
    }
    for path in [
        "/api/v1/endpoints?service=good&to=-9223372036",
        "/api/v1/profile?service=good&to=-9223372036",
        "/api/v1/compare?service=good&baseline=1&candidate=2&to=-9223372036",
    ] {
        expect(&c.get(path), 400, "too early");
    }
    assert_peak_under(&s, 300 * MB, "overflowing ranges");
    assert_intact(&c);
}

/// Regression (issue 11): without tokens, a page on another site could POST to the API
/// (`Origin: http://evil.example`, `Content-Type: text/plain`) and a rebound name
/// (`Host: evil.example`) was served.
#[test]
fn csrf_and_dns_rebinding_in_loopback_mode() {
    let (s, c) = seeded("csrf_and_dns_rebinding_in_loopback_mode", &[]);
    let host = c.base.trim_start_matches("http://").to_owned();
    let own = format!("http://{host}");
    let evil = [
        ("origin", "http://evil.example"),
        ("content-type", "text/plain"),
    ];
    expect(
        &c.request("POST", "/api/v1/analyze", &evil, b"x".to_vec()),
        403,
        "Origin",
    );
    let events = ndjson(&events("bad", "1", 3));
    expect(
        &c.request(
            "POST",
            "/api/v1/events",
            &[
                ("origin", "http://evil.example"),
                ("content-type", "application/x-ndjson"),
            ],
            events.clone(),
        ),
        403,
        "Origin",
    );
    let rebound = [("host", "evil.example")];
    expect(
        &c.request("GET", "/api/v1/services", &rebound, Vec::new()),
        421,
        "localhost",
    );
    let rebound_port = format!("evil.example:{}", s.url.rsplit(':').next().unwrap_or(""));
    expect(
        &c.request(
            "POST",
            "/api/v1/events",
            &[
                ("host", rebound_port.as_str()),
                ("content-type", "application/x-ndjson"),
            ],
            events,
        ),
        421,
        "localhost",
    );
    // The dashboard (same origin), local names, and clients without Origin keep working.
    let same = [("origin", own.as_str())];
    let r = c.request("POST", "/api/v1/analyze", &same, Vec::new());
    assert_eq!(r.status, 200, "{}", r.body);
    let local = [("host", "localhost")];
    assert_eq!(c.request("GET", "/", &local, Vec::new()).status, 200);
    assert_eq!(
        c.request("POST", "/api/v1/analyze", &[], Vec::new()).status,
        200
    );
    assert_peak_under(&s, 300 * MB, "CSRF and rebinding");
    assert_intact(&c);
}

/// Regression (issue 11): a frame name holding `;` or a newline spoofed frames and lines of
/// the folded output, and of the SVG drawn from it.
#[test]
fn frame_names_cannot_spoof_output() {
    let (s, c) = seeded("frame_names_cannot_spoof_output", &[]);
    let name = "evil;forged\nroot;fake 999999\n<script>alert(1)</script>";
    let mut p = pprof_head(name);
    let mut loc = Vec::new();
    field_varint(&mut loc, 1, 1);
    let mut line = Vec::new();
    field_varint(&mut line, 1, 1);
    field_bytes(&mut loc, 4, &line);
    field_bytes(&mut p, 4, &loc);
    let r = c.request(
        "POST",
        "/api/v1/profiles?service=spoof",
        &[("content-type", "application/octet-stream")],
        p,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let folded = c.get("/api/v1/profile?service=spoof&format=folded");
    assert_eq!(folded.status, 200, "{}", folded.body);
    assert_eq!(
        folded.body, "evil\\x3bforged\\x0aroot\\x3bfake 999999\\x0a<script>alert(1)</script> 1\n",
        "one line, one frame"
    );
    let svg = c.get("/api/v1/profile?service=spoof&format=svg");
    assert_eq!(svg.status, 200, "{}", svg.body);
    assert!(
        !svg.body.contains("<script>alert"),
        "unescaped name in the SVG"
    );
    assert!(svg.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !svg.body.contains(">fake 999999"),
        "a forged frame was drawn"
    );
    assert_peak_under(&s, 300 * MB, "spoofing frame names");
    assert_intact(&c);
}

/// A body that stops arriving is refused with 408 once `limits.body_timeout` has passed, and
/// its bytes and request slot are given back (the next request is served).
#[test]
fn a_stalled_body_times_out() {
    let config = artifacts("a_stalled_body_times_out_config").join("profwatch.toml");
    std::fs::write(
        &config,
        "[limits]\nbody_timeout = \"1s\"\nmax_concurrent_ingest = 1\n",
    )
    .expect("config");
    let (s, c) = seeded(
        "a_stalled_body_times_out",
        &["--config", config.to_str().expect("utf-8 path")],
    );
    use std::io::Read;
    let addr = c.base.trim_start_matches("http://").to_owned();
    let mut sock = std::net::TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n\
         Content-Length: 1000\r\n\r\n{{\"service\":"
    );
    sock.write_all(head.as_bytes()).expect("write");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = vec![0u8; 4096];
    let n = sock
        .read(&mut answer)
        .expect("an answer before the socket's own timeout");
    let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    let r = c.post_events(Vec::new(), "application/x-ndjson", None);
    assert_eq!(r.status, 200, "the one ingest slot came back: {}", r.body);
    assert_peak_under(&s, 300 * MB, "stalled body");
    assert_intact(&c);
}

/// A client that sends its headers a byte at a time cannot hold a connection forever: after
/// `limits.header_timeout` the server closes it, and keeps serving others.
#[test]
fn slow_headers_are_cut_off() {
    let config = artifacts("slow_headers_are_cut_off_config").join("profwatch.toml");
    std::fs::write(&config, "[limits]\nheader_timeout = \"1s\"\n").expect("config");
    let (s, c) = seeded(
        "slow_headers_are_cut_off",
        &["--config", config.to_str().expect("utf-8 path")],
    );
    use std::io::Read;
    let addr = c.base.trim_start_matches("http://").to_owned();
    let mut sock = std::net::TcpStream::connect(&addr).expect("connect");
    sock.write_all(b"POST /api/v1/events HTTP/1.1\r\nHost: ")
        .expect("write");
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = Vec::new();
    sock.read_to_end(&mut answer)
        .expect("the server closes the connection before the socket's own timeout");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_peak_under(&s, 300 * MB, "slow headers");
    assert_intact(&c);
}

/// Guessing tokens: after 20 refusals within a minute, the address gets 429 with Retry-After
/// for a minute, even with a right token; another address is not held up.
#[test]
fn failed_authentications_are_limited_per_address() {
    let token = "right-token-0123456789";
    let art = artifacts("failed_authentications_are_limited_per_address");
    let data = art.join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--token",
            &format!("{token}=acme"),
        ],
        &art.join("server.log"),
    );
    let base = server.client().base;
    let from = |ip: [u8; 4]| {
        reqwest::blocking::Client::builder()
            .local_address(std::net::IpAddr::from(ip))
            .build()
            .expect("client")
    };
    let get = |client: &reqwest::blocking::Client, token: &str| {
        client
            .get(format!("{base}/api/v1/services"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .expect("send")
    };
    let guesser = from([127, 0, 0, 1]);
    for i in 0..20 {
        let r = get(&guesser, &format!("guess-{i:016}"));
        assert_eq!(r.status(), 403, "guess {i}");
    }
    let r = get(&guesser, token);
    assert_eq!(r.status(), 429, "blocked, even with the right token");
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    let body = r.text().unwrap_or_default();
    assert!(body.contains("failed authentications"), "{body}");
    // Another address (127.0.0.2 reaches the loopback listener too) is served.
    let other = get(&from([127, 0, 0, 2]), token);
    assert_eq!(other.status(), 200);
}
