//! Exporters and the queue: what reaches the collector and the sidecar, and what is dropped
//! and counted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;

use profwatch_agent::export::{Exporter, HttpExporter, MemoryExporter, WireFormat};
use profwatch_agent::{Agent, Config, ExportError, ExportTarget};
use profwatch_model::{ndjson, wire, RequestEvent};

/// One HTTP request as a fake collector saw it.
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One request read off a connection, or `None` when the peer sent no well-formed request.
fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    if !request_line.starts_with("POST ") {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        request_line: request_line.trim_end().to_owned(),
        headers,
        body,
    })
}

/// A collector that answers `status` to each of `n` requests and reports what it got.
/// Connections that carry no well-formed request (a stray connect) are closed and not counted.
fn fake_collector(status: u16, n: usize) -> (String, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut answered = 0;
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Some(seen) = read_request(&stream) else {
                continue;
            };
            answered += 1;
            let answer = if status == 200 {
                "ok"
            } else {
                "batch refused: bad label"
            };
            let _ = tx.send(seen);
            // One write; a client may close as soon as it has read the status line, so a
            // failed write is no error here.
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{answer}",
                answer.len()
            );
            let _ = stream.write_all(response.as_bytes());
            if answered == n {
                break;
            }
        }
    });
    (url, rx)
}

fn event(endpoint: &str) -> RequestEvent {
    RequestEvent {
        ts: profwatch_model::timefmt::now_ns(),
        service: "svc".into(),
        endpoint: endpoint.into(),
        build: "812".into(),
        dc: "eu1".into(),
        host: "web-1".into(),
        status: 200,
        cpu_ns: 1000,
        instructions: Some(5000),
        wall_ns: 2000,
        weight: 2.0,
        labels: [("flag".to_owned(), "on".to_owned())].into(),
    }
}

#[test]
fn http_exporter_posts_both_formats_with_the_token() {
    let (url, seen) = fake_collector(200, 2);
    let events = vec![event("GET /a"), event("POST /b/{id}")];
    for format in [WireFormat::Ndjson, WireFormat::Protobuf] {
        let mut exporter =
            HttpExporter::new(&format!("{url}/"), format, Some("t0ken".into())).expect("url");
        exporter.export(&events).expect("delivered");
        let req = seen.recv_timeout(Duration::from_secs(5)).expect("request");
        assert_eq!(req.request_line, "POST /api/v1/events HTTP/1.1");
        assert_eq!(req.header("authorization"), Some("Bearer t0ken"));
        assert_eq!(req.header("content-type"), Some(format.content_type()));
        let decoded = match format {
            WireFormat::Ndjson => ndjson::parse_body(&req.body).expect("ndjson"),
            WireFormat::Protobuf => wire::decode_batch(&req.body).expect("protobuf"),
        };
        assert_eq!(decoded, events);
    }
}

#[test]
fn http_errors_are_classified() {
    let (url, _seen) = fake_collector(400, 1);
    let mut exporter = HttpExporter::new(&url, WireFormat::Ndjson, None).expect("url");
    let err = exporter.export(&[event("GET /")]).expect_err("400");
    assert!(
        matches!(err, ExportError::Status { status: 400, .. }),
        "{err}"
    );
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("bad label"), "{err}");

    let (url, _seen) = fake_collector(503, 1);
    let mut exporter = HttpExporter::new(&url, WireFormat::Ndjson, None).expect("url");
    assert!(exporter
        .export(&[event("GET /")])
        .expect_err("503")
        .is_retriable());

    // Port 1 on loopback: nothing listens there. (A port bound and released by the test could
    // be taken meanwhile by a parallel test's listener.)
    let url = "http://127.0.0.1:1";
    let mut exporter = HttpExporter::new(url, WireFormat::Ndjson, None).expect("url");
    let err = exporter.export(&[event("GET /")]).expect_err("refused");
    assert!(
        matches!(err, ExportError::Io { .. }) && err.is_retriable(),
        "{err}"
    );
}

#[test]
fn agent_ships_to_the_collector() {
    let (url, seen) = fake_collector(200, 1);
    let mut config = Config::new("checkout");
    config.build = "812".into();
    config.dc = "eu1".into();
    config.host = "web-1".into();
    config.export = ExportTarget::Collector {
        url,
        format: WireFormat::Protobuf,
        token: None,
    };
    let agent = Agent::new(config).expect("agent");
    {
        let guard = agent.scope("GET /cart/{id}");
        guard.set_status(200);
        guard.set_label("flag", "on");
    }
    agent.flush().expect("flush");
    let req = seen.recv_timeout(Duration::from_secs(5)).expect("request");
    let events = wire::decode_batch(&req.body).expect("protobuf");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (
            e.service.as_str(),
            e.endpoint.as_str(),
            e.build.as_str(),
            e.dc.as_str(),
            e.host.as_str()
        ),
        ("checkout", "GET /cart/{id}", "812", "eu1", "web-1")
    );
    assert_eq!((e.status, e.labels["flag"].as_str()), (200, "on"));
    assert_eq!(agent.stats().exported, 1);
}

#[test]
fn agent_ships_ndjson_lines_to_the_sidecar_socket() {
    let dir = std::env::temp_dir().join(format!(
        "profwatch-agent-test-{}-{}",
        std::process::id(),
        profwatch_model::timefmt::now_ns()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("agent.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let mut config = Config::new("checkout");
    config.export = ExportTarget::Sidecar {
        socket: path.clone(),
    };
    let agent = Agent::new(config).expect("agent");
    for endpoint in ["GET /a", "GET /b"] {
        let _guard = agent.scope(endpoint);
    }
    agent.flush().expect("flush");
    let (stream, _) = listener.accept().expect("accept");
    let mut reader = BufReader::new(stream);
    // First the hello: this process's pid and the configured labels, so the sidecar watches
    // its memory.
    let mut head = [0u8; 5];
    reader.read_exact(&mut head).expect("the hello's head");
    assert_eq!(head[0], profwatch_model::hello::HELLO_MARKER);
    let mut payload = vec![0u8; u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize];
    reader
        .read_exact(&mut payload)
        .expect("the hello's payload");
    let hello = profwatch_model::hello::Hello::parse(&payload).expect("a valid hello");
    assert_eq!(hello.pid, Some(std::process::id()));
    assert_eq!(hello.service.as_deref(), Some("checkout"));
    let mut body = String::new();
    for _ in 0..2 {
        reader.read_line(&mut body).expect("line");
    }
    let events = ndjson::parse_body(body.as_bytes()).expect("ndjson lines");
    let endpoints: Vec<_> = events.iter().map(|e| e.endpoint.as_str()).collect();
    assert_eq!(endpoints, ["GET /a", "GET /b"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Blocks every export until released.
struct Stuck(mpsc::Receiver<()>, MemoryExporter);

impl Exporter for Stuck {
    fn export(&mut self, events: &[RequestEvent]) -> Result<(), ExportError> {
        let _ = self.0.recv();
        self.1.export(events)
    }
}

#[test]
fn a_full_queue_drops_and_counts_without_blocking() {
    let (release, wait) = mpsc::channel();
    let sink = MemoryExporter::new();
    let mut config = Config::new("svc");
    config.queue_capacity = 2;
    config.max_batch = 1;
    let agent = Agent::with_exporter(config, Stuck(wait, sink.clone())).expect("agent");
    for _ in 0..10 {
        let _guard = agent.scope("GET /");
    }
    let stats = agent.stats();
    assert_eq!(stats.queued + stats.queue_full, 10, "{stats:?}");
    assert!(stats.queue_full >= 7, "{stats:?}");
    for _ in 0..10 {
        let _ = release.send(());
    }
    drop(release);
    agent.flush().expect("flush");
    assert_eq!(agent.stats().exported, stats.queued);
    assert_eq!(sink.events().len() as u64, stats.queued);
}

#[test]
fn labels_over_the_bound_and_invalid_events_are_counted() {
    let sink = MemoryExporter::new();
    let agent = Agent::with_exporter(Config::new("svc"), sink.clone()).expect("agent");
    {
        let guard = agent.scope("GET /");
        for i in 0..20 {
            guard.set_label(format!("flag{i}"), "on");
        }
    }
    {
        let _guard = agent.scope("x".repeat(300));
    }
    agent.flush().expect("flush");
    let events = sink.take();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].labels.len(), 16);
    let stats = agent.stats();
    assert_eq!(
        (stats.labels_dropped, stats.invalid, stats.exported),
        (4, 1, 1)
    );
}

#[test]
fn bad_names_fail_at_start() {
    let mut config = Config::new("svc");
    config.dc = "a\nb".into();
    assert!(Agent::new(config).is_err());
    assert!(Agent::new(Config::new("")).is_err());
}
