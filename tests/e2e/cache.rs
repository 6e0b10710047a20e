//! The query cache: 100 concurrent identical dashboard queries cost ClickHouse exactly one
//! query, counted by a proxy between the server and ClickHouse.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use profwatch_e2e::*;

/// A TCP proxy to `upstream` that counts occurrences of `needle` in what clients send.
fn counting_proxy(upstream: String, needle: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { continue };
            let Ok(mut server) = TcpStream::connect(&upstream) else {
                continue;
            };
            let (mut client_r, mut server_w) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let c = c.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                let mut tail: Vec<u8> = Vec::new();
                while let Ok(n) = client_r.read(&mut buf) {
                    if n == 0 || server_w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    // Search across read boundaries: keep the last needle-1 bytes.
                    tail.extend_from_slice(&buf[..n]);
                    let hits = tail.windows(needle.len()).filter(|w| *w == needle).count();
                    c.fetch_add(hits, Ordering::SeqCst);
                    let keep = tail.len().min(needle.len() - 1);
                    tail.drain(..tail.len() - keep);
                }
                let _ = server_w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server, &mut client);
            });
        }
    });
    (url, count)
}

#[test]
fn concurrent_identical_queries_cost_one_clickhouse_query() {
    let Some(ch) = clickhouse_url() else { return };
    let art = artifacts("concurrent_identical_queries_cost_one_clickhouse_query");
    let upstream = ch
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let (proxy, count) = counting_proxy(upstream, b"GROUP BY endpoint");
    let db = format!("pw_cache_{}", std::process::id());
    let server = Server::start(
        &[
            "--clickhouse-url",
            &proxy,
            "--clickhouse-database",
            &db,
            "--analysis-interval",
            "0s",
        ],
        &art.join("server.log"),
    );
    let c = server.client();
    let r = c.post_events(
        protobuf(&events("cached", "1", 2000)),
        "application/x-protobuf",
        None,
    );
    assert_eq!(r.status, 200, "{}", r.body);

    count.store(0, Ordering::SeqCst);
    let path = "/api/v1/endpoints?service=cached&group_by=build";
    let answers: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100).map(|_| s.spawn(|| c.get(path))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("join"))
            .collect()
    });
    assert!(
        answers.iter().all(|a| a.status == 200),
        "{:?}",
        answers.iter().find(|a| a.status != 200)
    );
    assert!(
        answers.iter().all(|a| a.body == answers[0].body),
        "every client got the same answer"
    );
    let burst = count.load(Ordering::SeqCst);
    // What one answer costs in ClickHouse statements (a summary reads the rollup for whole
    // minutes and raw rows for the partial minutes at each end): the same query for another
    // service, which the cache cannot answer.
    count.store(0, Ordering::SeqCst);
    let other = c.get("/api/v1/endpoints?service=not-cached&group_by=build");
    assert_eq!(other.status, 200, "{}", other.body);
    let one_answer = count.load(Ordering::SeqCst);
    assert!(one_answer >= 1, "the proxy sees the store's statements");
    assert_eq!(
        burst, one_answer,
        "100 identical queries cost what one answer costs in ClickHouse"
    );

    let m = c.get("/metrics").body;
    let value = |name: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("/metrics has no {name}:\n{m}"))
    };
    assert_eq!(value("profwatch_query_cache_misses_total"), 2, "{m}");
    assert_eq!(
        value("profwatch_query_cache_hits_total")
            + value("profwatch_query_cache_lease_waits_total"),
        99,
        "{m}"
    );
    drop(server);
    let _ = clickhouse_query(&ch, &format!("DROP DATABASE IF EXISTS {db}"));
}
