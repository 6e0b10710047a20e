//! Bad input gets the right 4xx with a message, never a panic, and never disturbs the good
//! data beside it. Each case runs against a server that already holds a good batch, and checks
//! afterwards that the server is alive and that batch is intact.

use std::io::Write;

use profwatch_e2e::*;

mod hostile;

pub(super) const GOOD: usize = 300;

/// A server with `GOOD` events of service `good` stored.
fn seeded(test: &str, args: &[&str]) -> (Server, Client) {
    let art = artifacts(test);
    let data = art.join("data");
    let mut all = vec!["--data-dir", data.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let server = Server::start(&all, &art.join("server.log"));
    let client = server.client();
    let r = client.post_events(
        ndjson(&events("good", "1", GOOD)),
        "application/x-ndjson",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    (server, client)
}

fn assert_intact(client: &Client) {
    assert_eq!(
        client.get("/healthz").status,
        200,
        "the server must still answer"
    );
    assert_eq!(
        client.total_requests("good", 1),
        GOOD as f64,
        "the good data must be unchanged"
    );
    let services = client.get("/api/v1/services");
    assert_eq!(
        services.json().as_array().map(Vec::len),
        Some(1),
        "nothing of the bad batch is stored: {}",
        services.body
    );
}

fn expect(r: &Reply, status: u16, needle: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        msg.contains(needle),
        "message {msg:?} should mention {needle:?}"
    );
}

#[test]
fn malformed_protobuf() {
    let (_s, c) = seeded("malformed_protobuf", &[]);
    let mut body = protobuf(&events("bad", "1", 10));
    body.truncate(body.len() - 7);
    expect(
        &c.post_events(body, "application/x-protobuf", None),
        400,
        "protobuf",
    );
    expect(
        &c.post_events(vec![0xff; 64], "application/x-protobuf", None),
        400,
        "protobuf",
    );
    assert_intact(&c);
}

#[test]
fn broken_ndjson_line_in_the_middle() {
    let (_s, c) = seeded("broken_ndjson_line_in_the_middle", &[]);
    let mut body = ndjson(&events("bad", "1", 5));
    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    let mut broken = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if i == 2 {
            broken.extend_from_slice(b"{\"service\": \"bad\", \"endpoint\": ");
        } else {
            broken.extend_from_slice(l);
        }
        broken.push(b'\n');
    }
    body = broken;
    expect(
        &c.post_events(body, "application/x-ndjson", None),
        400,
        "line 3",
    );
    assert_intact(&c);
}

#[test]
fn wrong_types() {
    let (_s, c) = seeded("wrong_types", &[]);
    let cases = [
        r#"{"service":"bad","endpoint":"GET /","cpu_ns":"lots"}"#,
        r#"{"service":7,"endpoint":"GET /","cpu_ns":1}"#,
        r#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"labels":["a"]}"#,
        r#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"ts":true}"#,
        r#"["not","an","object"]"#,
    ];
    for case in cases {
        let r = c.post_events(case.as_bytes().to_vec(), "application/x-ndjson", None);
        expect(&r, 400, "line 1");
    }
    assert_intact(&c);
}

#[test]
fn negative_or_overflowing_numbers() {
    let (_s, c) = seeded("negative_or_overflowing_numbers", &[]);
    for (case, needle) in [
        (r#"{"service":"bad","endpoint":"GET /","cpu_ns":-5}"#, "-5"),
        (
            r#"{"service":"bad","endpoint":"GET /","cpu_ns":18446744073709551616}"#,
            "line 1",
        ),
        (
            r#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"status":70000}"#,
            "line 1",
        ),
        (
            r#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"weight":-1}"#,
            "weight",
        ),
        (
            r#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"weight":1e309}"#,
            "line 1",
        ),
        (
            r#"{"service":"bad","endpoint":"GET /","cpu_ns":99999999999999999}"#,
            "cpu_ns",
        ),
        (
            r#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"ts":-1}"#,
            "ts",
        ),
    ] {
        expect(
            &c.post_events(case.as_bytes().to_vec(), "application/x-ndjson", None),
            400,
            needle,
        );
    }
    let mut e = events("bad", "1", 1);
    e[0].weight = f64::NAN;
    expect(
        &c.post_events(protobuf(&e), "application/x-protobuf", None),
        400,
        "weight",
    );
    assert_intact(&c);
}

#[test]
fn huge_label_value_or_too_many_labels() {
    let (_s, c) = seeded("huge_label_value_or_too_many_labels", &[]);
    let mut e = events("bad", "1", 3);
    e[1].labels.insert("flag".into(), "x".repeat(1 << 20));
    expect(
        &c.post_events(protobuf(&e), "application/x-protobuf", None),
        400,
        "flag",
    );
    let mut e = events("bad", "1", 3);
    for i in 0..10_000 {
        e[2].labels.insert(format!("k{i}"), "v".into());
    }
    expect(
        &c.post_events(ndjson(&e), "application/x-ndjson", None),
        400,
        "labels",
    );
    assert_intact(&c);
}

#[test]
fn invalid_utf8() {
    let (_s, c) = seeded("invalid_utf8", &[]);
    let mut line = br#"{"service":"bad","endpoint":"GET /"#.to_vec();
    line.extend_from_slice(&[0xff, 0xfe]);
    line.extend_from_slice(br#"","cpu_ns":1}"#);
    expect(
        &c.post_events(line, "application/x-ndjson", None),
        400,
        "UTF-8",
    );
    // The same in a protobuf string field: field 2 (service), length 2, bytes ff fe.
    let body = vec![0x0a, 0x04, 0x12, 0x02, 0xff, 0xfe];
    expect(
        &c.post_events(body, "application/x-protobuf", None),
        400,
        "protobuf",
    );
    assert_intact(&c);
}

#[test]
fn gzip_bomb() {
    let (_s, c) = seeded("gzip_bomb", &[]);
    // 1 GiB of zeros, compressed to about 1 MiB.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..1024 {
        enc.write_all(&zeros).expect("compress");
    }
    let bomb = enc.finish().expect("finish");
    assert!(
        bomb.len() < 4 << 20,
        "the bomb should be small: {}",
        bomb.len()
    );
    expect(
        &c.post_events(bomb, "application/x-protobuf", Some("gzip")),
        413,
        "decompresses",
    );
    expect(
        &c.post_events(
            b"not gzip at all".to_vec(),
            "application/x-ndjson",
            Some("gzip"),
        ),
        400,
        "gzip",
    );
    assert_intact(&c);
}

#[test]
fn oversized_body() {
    let (_s, c) = seeded("oversized_body", &[]);
    // The server answers 413 as soon as it knows, without reading the rest, so the client must
    // read the answer while (or instead of) sending: a raw socket does both.
    let addr = c.base.trim_start_matches("http://").to_owned();
    // Announced too large: refused from the header alone.
    let r = raw_post(&addr, "Content-Length: 34603008\r\n", 0);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert!(r.contains("larger than"), "{r}");
    // Chunked, no length announced: refused once 32 MiB have arrived.
    let r = raw_post(&addr, "Transfer-Encoding: chunked\r\n", 33 << 20);
    assert!(r.starts_with("HTTP/1.1 413"), "{r}");
    assert_intact(&c);
}

/// POSTs ndjson headers plus `body_bytes` of spaces (chunked when asked) on a raw socket,
/// writing from a second thread, and returns what the server answered.
fn raw_post(addr: &str, extra_header: &str, body_bytes: usize) -> String {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\n{extra_header}\r\n"
    );
    sock.write_all(head.as_bytes()).expect("write head");
    let mut writer = sock.try_clone().expect("clone");
    let chunked = extra_header.contains("chunked");
    let feeder = std::thread::spawn(move || {
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0;
        while sent < body_bytes {
            let framed = if chunked {
                let mut f = format!("{:x}\r\n", chunk.len()).into_bytes();
                f.extend_from_slice(&chunk);
                f.extend_from_slice(b"\r\n");
                f
            } else {
                chunk.clone()
            };
            if writer.write_all(&framed).is_err() {
                return; // the server stopped reading: expected once it has answered
            }
            sent += chunk.len();
        }
    });
    sock.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((headers, body)) = text.split_once("\r\n\r\n") {
            let len = headers
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                break;
            }
        }
    }
    let _ = sock.shutdown(std::net::Shutdown::Both);
    let _ = feeder.join();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn missing_or_foreign_token() {
    let art = artifacts("missing_or_foreign_token");
    let data = art.join("data");
    let server = Server::start(
        &[
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--token",
            "token-of-acme-0001=acme",
            "--token",
            "token-of-globex-0001=globex",
        ],
        &art.join("server.log"),
    );
    let anon = server.client();
    let acme = server.client().with_token("token-of-acme-0001");
    let globex = server.client().with_token("token-of-globex-0001");
    let r = acme.post_events(
        ndjson(&events("good", "1", GOOD)),
        "application/x-ndjson",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    expect(
        &anon.post_events(ndjson(&events("bad", "1", 3)), "application/x-ndjson", None),
        401,
        "Authorization",
    );
    expect(&anon.get("/api/v1/services"), 401, "Authorization");
    let wrong = server.client().with_token("not-a-real-token");
    expect(
        &wrong.post_events(ndjson(&events("bad", "1", 3)), "application/x-ndjson", None),
        403,
        "token",
    );
    // Globex's token cannot write as acme.
    let r = globex.post_with(
        ndjson(&events("bad", "1", 3)),
        "application/x-ndjson",
        None,
        &[("x-scope-orgid", "acme")],
    );
    expect(&r, 403, "tenant");
    // A tenant field in the body is refused: the token decides.
    let body = br#"{"service":"bad","endpoint":"GET /","cpu_ns":1,"tenant":"acme"}"#.to_vec();
    expect(
        &globex.post_events(body, "application/x-ndjson", None),
        400,
        "bearer token",
    );

    assert_eq!(acme.total_requests("good", 1), GOOD as f64);
    assert_eq!(
        globex.get("/api/v1/services").body,
        "[]",
        "globex sees none of acme's data"
    );
    assert_eq!(
        acme.get("/api/v1/services").json().as_array().map(Vec::len),
        Some(1)
    );
}

#[test]
fn unknown_content_type_or_encoding() {
    let (_s, c) = seeded("unknown_content_type_or_encoding", &[]);
    let body = ndjson(&events("bad", "1", 3));
    expect(
        &c.post_events(body.clone(), "text/csv", None),
        415,
        "Content-Type",
    );
    expect(
        &c.post_events(body.clone(), "application/x-ndjson", Some("br")),
        415,
        "Content-Encoding",
    );
    assert_intact(&c);
}

#[test]
fn bad_query_parameters() {
    let (_s, c) = seeded("bad_query_parameters", &[]);
    expect(&c.get("/api/v1/endpoints"), 400, "service");
    expect(
        &c.get("/api/v1/endpoints?service=good&from=yesterday"),
        400,
        "from",
    );
    expect(
        &c.get("/api/v1/endpoints?service=good&group_by=color"),
        400,
        "group_by",
    );
    expect(
        &c.get("/api/v1/endpoints?service=good&from=200&to=100"),
        400,
        "before",
    );
    expect(
        &c.get("/api/v1/timeseries?service=good&endpoint=GET%20/a&step=0"),
        400,
        "step",
    );
    expect(
        &c.get("/api/v1/timeseries?service=good&endpoint=GET%20/a&from=0&step=1"),
        400,
        "buckets",
    );
    expect(
        &c.get("/api/v1/endpoints?service=good&servcie=x"),
        400,
        "servcie",
    );
    expect(&c.get("/api/v1/nope"), 404, "route");
    assert_intact(&c);
}
