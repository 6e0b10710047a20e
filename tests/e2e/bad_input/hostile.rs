//! Hostile input (issue 11): inputs built to cost the server far more than their size, sent to
//! a fresh server over HTTP. Each test checks the answer (status, and a message that names the
//! limit), that the server's peak resident memory (`VmHWM`) stays under a stated bound, and that
//! the good batch stored before is intact. Where tokens do not change the case, the attack comes
//! from one tenant (`mallory`) and the good batch belongs to another (`acme`): another tenant's
//! data is intact, and nothing of the attacker's bad input is stored either.
//!
//! The bounds: 300 MB where the input is refused before anything large is held; 400 MB where the
//! server must first inflate a body it is allowed to inflate (the default budget of bodies in
//! flight is 304 MiB: 32 MiB as sent + 256 MiB decompressed + 16 MiB).

use std::io::Write;

use profwatch_e2e::*;

use super::{assert_intact, expect, seeded, GOOD};
use crate::profiles::{field_bytes, field_varint, packed, varint};

const MB: u64 = 1_000_000;
const MALLORY: &str = "mallory-token-000000001";
const ACME: &str = "acme-token-0000000000001";

/// A fresh server with two tenants; `acme` has stored the good batch. Returns the server, the
/// attacker's client (`mallory`) and the victim's (`acme`).
fn two_tenants(test: &str) -> (Server, Client, Client) {
    let art = artifacts(test);
    let data = art.join("data");
    let (m, a) = (format!("{MALLORY}=mallory"), format!("{ACME}=acme"));
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--token",
            &m,
            "--token",
            &a,
        ],
        &art.join("server.log"),
    );
    let (mallory, acme) = (
        server.client().with_token(MALLORY),
        server.client().with_token(ACME),
    );
    let r = acme.post_events(
        ndjson(&events("good", "1", GOOD)),
        "application/x-ndjson",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    (server, mallory, acme)
}

/// A fresh server (as [`seeded`]) started with the config file `toml`.
fn seeded_with_config(test: &str, toml: &str) -> (Server, Client) {
    let config = artifacts(&format!("{test}_config")).join("profwatch.toml");
    std::fs::write(&config, toml).expect("config");
    seeded(test, &["--config", config.to_str().expect("utf-8 path")])
}

/// The victim's data is intact (see [`assert_intact`]) and the attacker stored nothing.
fn assert_tenants_intact(mallory: &Client, acme: &Client) {
    assert_intact(acme);
    let theirs = mallory.get("/api/v1/services");
    assert_eq!(theirs.status, 200, "{}", theirs.body);
    assert_eq!(
        theirs.json().as_array().map(Vec::len),
        Some(0),
        "nothing of the attacker's input is stored: {}",
        theirs.body
    );
}

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
    let (s, c, acme) = two_tenants("pprof_line_bomb_600k_lines");
    let bomb = line_bomb(600_000);
    assert!(bomb.len() < 64 << 10, "a tiny body: {}", bomb.len());
    expect(
        &post_profile(&c, bomb),
        400,
        "600000 lines; the limit is 128",
    );
    assert_peak_under(&s, 300 * MB, "600k-line bomb");
    assert_tenants_intact(&c, &acme);
}

/// Regression (issue 11): the same bomb with 64,000,000 lines fits the body limits (256 MB
/// inflated) and asked for about 256 GB.
#[test]
fn pprof_line_bomb_64m_lines() {
    let (s, c, acme) = two_tenants("pprof_line_bomb_64m_lines");
    let bomb = line_bomb(64_000_000);
    assert!(bomb.len() < 2 << 20, "a small body: {}", bomb.len());
    expect(
        &post_profile(&c, bomb),
        400,
        "64000000 lines; the limit is 128",
    );
    assert_peak_under(&s, 400 * MB, "64M-line bomb");
    assert_tenants_intact(&c, &acme);
}

/// Regression (issue 11): 24 concurrent gzip bodies, each inflating to 200 MB, took the server
/// to 6.1 GB: the inflate cap was per request and nothing bounded the sum.
#[test]
fn concurrent_inflations_share_one_budget() {
    let (s, c, acme) = two_tenants("concurrent_inflations_share_one_budget");
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
    assert_intact(&acme);
}

/// Regression (issue 11): one NDJSON line with 3M labels peaked at 490 MB before the label
/// limit refused it, because the limit was checked after parsing.
#[test]
fn ndjson_line_with_3m_labels() {
    let (s, c, acme) = two_tenants("ndjson_line_with_3m_labels");
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
    assert_tenants_intact(&c, &acme);
}

/// Regression (issue 11): the multipart boundary had no length limit and was searched
/// naively, so a 400 KB boundary over a 16 MB body kept a core busy for hours.
#[test]
fn multipart_boundary_of_400kb() {
    let (s, c, acme) = two_tenants("multipart_boundary_of_400kb");
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
    assert_tenants_intact(&c, &acme);
}

/// Regression (issue 11): `to - from` overflowed (a panic in debug builds, a wrapped range in
/// release) for ranges such as `from=-9223372036&to=9223372036`.
#[test]
fn time_ranges_that_overflow() {
    let (s, c, acme) = two_tenants("time_ranges_that_overflow");
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
    assert_tenants_intact(&c, &acme);
}

/// A stack's id before issue 11: 64-bit FNV-1a over each frame and a 0 byte, the same for
/// every tenant, the first writer's frames winning.
fn fnv_stack(frames: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in frames.iter().flat_map(|f| f.bytes().chain([0])) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Two root frames whose stacks collide under [`fnv_stack`] (and so do any stacks that go on
/// alike below them), found offline by Pollard's rho with Brent's cycle finding over frames of
/// 16 hex digits (about 2^34 hashes, 7 minutes of one core); the test checks that they do.
const COLLIDING: [&str; 2] = ["346a21903279cf07", "7b98b5b7507b4ded"];

/// Issue 11: with stacks keyed by an unkeyed hash shared by all tenants, a tenant that stored a
/// crafted stack first took the place of another tenant's. Now each tenant reads back its own
/// frames, and one tenant storing both keeps both.
#[test]
fn a_crafted_stack_hash_collision_across_tenants() {
    let (s, mallory, acme) = two_tenants("a_crafted_stack_hash_collision_across_tenants");
    let [a, b] = COLLIDING;
    assert_ne!(a, b);
    assert_eq!(
        fnv_stack(&[a, "work"]),
        fnv_stack(&[b, "work"]),
        "the pair collides under the old id"
    );
    let post = |c: &Client, service: &str, folded: String| {
        let r = c.request(
            "POST",
            &format!("/api/v1/profiles?service={service}&format=folded"),
            &[],
            folded.into_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    let folded = |c: &Client, service: &str| {
        let r = c.get(&format!("/api/v1/profile?service={service}&format=folded"));
        assert_eq!(r.status, 200, "{}", r.body);
        let mut lines: Vec<String> = r.body.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    post(&mallory, "shop", format!("{a};work 7\n"));
    post(&acme, "shop", format!("{b};work 5\n"));
    post(&acme, "both", format!("{a};work 3\n{b};work 4\n"));
    assert_eq!(folded(&acme, "shop"), [format!("{b};work 5")]);
    assert_eq!(folded(&mallory, "shop"), [format!("{a};work 7")]);
    assert_eq!(
        folded(&acme, "both"),
        [format!("{a};work 3"), format!("{b};work 4")]
    );
    assert_peak_under(&s, 300 * MB, "colliding stacks");
    assert_intact(&acme);
}

/// Issue 11: a range reaching past what the store can hold is narrowed to it (`from=0` scans
/// and buckets only the retention), and an answer over `max_answer_rows` rows or
/// `max_answer_bytes` bytes is a 400 naming the limit, while smaller answers are served.
#[test]
fn ranges_are_narrowed_to_the_retention_and_answers_are_capped() {
    let (s, c) = seeded_with_config(
        "ranges_are_narrowed_to_the_retention_and_answers_are_capped",
        "retention = \"1d\"\n[limits]\nmax_answer_rows = 50\nmax_answer_bytes = 4000\n",
    );
    let requests = |r: &Reply| -> f64 {
        r.json()
            .as_array()
            .expect("array")
            .iter()
            .map(|p| p["requests"].as_f64().expect("requests"))
            .sum()
    };
    // From the epoch in one-minute buckets: 29 million buckets (a 400) unless narrowed to the
    // day the store keeps (1,450 buckets; the 100 events of `GET /a` fill about 11).
    let r = c.get("/api/v1/timeseries?service=good&endpoint=GET%20/a&from=0&step=60");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(requests(&r), (GOOD / 3) as f64);
    let r = c.get("/api/v1/endpoints?service=good&from=0&to=9000000000");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(requests(&r), GOOD as f64);
    // One-second buckets per host: 100 points, over the 50 allowed.
    expect(
        &c.get("/api/v1/timeseries?service=good&endpoint=GET%20/a&step=1&group_by=host"),
        400,
        "limits.max_answer_rows",
    );
    expect(
        &c.get("/api/v1/series?service=good&step=1"),
        400,
        "300 points",
    );
    // 3 endpoints × 8 hosts fit the rows, not the bytes.
    expect(
        &c.get("/api/v1/endpoints?service=good&group_by=host"),
        400,
        "limits.max_answer_bytes",
    );
    assert_peak_under(&s, 300 * MB, "narrowed ranges and capped answers");
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
    let (s, c) = seeded_with_config(
        "a_stalled_body_times_out",
        "[limits]\nbody_timeout = \"1s\"\nmax_concurrent_ingest = 1",
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
    let (s, c) = seeded_with_config(
        "slow_headers_are_cut_off",
        "[limits]\nheader_timeout = \"1s\"",
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

/// A client that asks for answers and stops reading them cannot hold a connection (and the
/// answers' buffers) forever: once a write has made no progress for `limits.write_timeout`, the
/// server closes the connection, and keeps serving others. (Idle keep-alives close after
/// `limits.header_timeout`, set long here so that only the write deadline can close it.)
#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let (s, c) = seeded_with_config(
        "a_client_that_stops_reading_is_cut_off",
        "[limits]\nwrite_timeout = \"1s\"\nheader_timeout = \"300s\"",
    );
    use std::io::Read;
    let addr = c.base.trim_start_matches("http://").to_owned();
    let page = c.get("/");
    assert_eq!(page.status, 200);
    // Enough pipelined requests for their answers to fill both sides' socket buffers.
    let n = (64 << 20) / page.body.len().max(1) + 1;
    let mut sock = std::net::TcpStream::connect(&addr).expect("connect");
    let one = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let all = one.repeat(n);
    sock.set_write_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    // The server stops reading requests once its answers cannot be written; what it does not
    // read stays in the buffers.
    let _ = sock.write_all(all.as_bytes());
    std::thread::sleep(std::time::Duration::from_secs(4));
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut got = Vec::new();
    // Closed by the server: an end of stream, or a reset (it closed with requests unread).
    match sock.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the server should have closed the connection: {e} after {} bytes",
            got.len()
        ),
    }
    assert!(
        got.len() < n * page.body.len(),
        "cut off before the last answer: {} of {} bytes",
        got.len(),
        n * page.body.len()
    );
    assert_eq!(c.get("/healthz").status, 200, "others are still served");
    assert_peak_under(&s, 300 * MB, "a client that stops reading");
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
