//! Alert delivery against a real HTTP receiver on loopback: every format arrives as its sink
//! expects, a sink that fails first is retried, and a dead sink blocks nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::post;
use axum::{Json, Router};
use profwatch_analyzer::alert::{AlertStatus, DeliveryConfig, Dispatcher, Sink, SinkKind};
use profwatch_model::regression::{Culprit, RegressionRecord, RegressionState};

#[derive(Default)]
struct Received {
    calls: Vec<(String, serde_json::Value)>,
    failures_left: u32,
}

async fn receive(
    State(r): State<Arc<Mutex<Received>>>,
    uri: Uri,
    Json(body): Json<serde_json::Value>,
) -> StatusCode {
    let mut r = r.lock().expect("lock");
    if uri.path() == "/flaky" && r.failures_left > 0 {
        r.failures_left -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.calls.push((uri.path().to_owned(), body));
    StatusCode::OK
}

fn record() -> RegressionRecord {
    RegressionRecord {
        id: "00000000000000ab".into(),
        tenant: "acme".into(),
        service: "shop".into(),
        endpoint: "GET /cart/{id}".into(),
        metric: "instructions".into(),
        baseline: "811".into(),
        candidate: "812".into(),
        effect: 1.052,
        effect_low: Some(1.03),
        effect_high: Some(1.07),
        ratio_of_means: Some(1.05),
        p_value: 0.0001,
        q_value: 0.0003,
        baseline_median: 1e6,
        candidate_median: 1.052e6,
        baseline_requests: 10_000,
        candidate_requests: 10_000,
        culprits: vec![Culprit {
            function: "cart::price<T>".into(),
            baseline: 10.0,
            candidate: 60.0,
            delta: 50.0,
        }],
        first_seen: 1_795_000_000_000_000_000,
        last_seen: 1_795_000_000_000_000_000,
        state: RegressionState::Open,
        updated: 1_795_000_100_000_000_000,
        incident: None,
        changed_at: None,
        resolution: None,
        passes_gone: 0,
        kind: profwatch_model::regression::RegressionKind::Cpu,
        function: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_format_reaches_a_real_receiver_and_failures_are_retried() {
    let received = Arc::new(Mutex::new(Received {
        failures_left: 2,
        ..Default::default()
    }));
    let app = Router::new()
        .route("/{*path}", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let base = format!("http://{addr}");

    // Port 1 (tcpmux): nothing listens there, so that sink fails; the others must not wait
    // for it. (No port is probed and released for this.)
    let dead_url = "http://127.0.0.1:1".to_owned();

    let sinks = vec![
        Sink::new(SinkKind::Json, format!("{base}/flaky")),
        Sink::new(SinkKind::Slack, format!("{base}/slack")),
        Sink::new(SinkKind::Alertmanager, format!("{base}/am")),
        Sink::new(SinkKind::Json, dead_url),
    ];
    let cfg = DeliveryConfig {
        first_backoff: Duration::from_millis(20),
        max_attempts: 4,
        base_url: "http://pw:4040".into(),
        ..Default::default()
    };
    let d = Dispatcher::start(sinks, cfg).expect("dispatcher");
    let r = record();
    d.send(AlertStatus::Firing, &r);
    let mut resolved = r.clone();
    resolved.state = RegressionState::Resolved;
    d.send(AlertStatus::Resolved, &resolved);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if received.lock().expect("lock").calls.len() >= 6 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alerts did not arrive: {:?}",
            received.lock().expect("lock").calls
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = received.lock().expect("lock").calls.clone();
    let by = |path: &str| -> Vec<serde_json::Value> {
        calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    };

    let json = by("/flaky");
    assert_eq!(
        json.len(),
        2,
        "one firing and one resolved, after two refused attempts"
    );
    assert_eq!(json[0]["status"], "firing");
    assert_eq!(json[0]["regression"]["endpoint"], "GET /cart/{id}");
    assert_eq!(json[1]["status"], "resolved");

    let slack = by("/slack");
    assert_eq!(slack.len(), 2);
    let text = slack[0]["text"].as_str().expect("text");
    assert!(
        // Slack markup is escaped: `<T>` arrives as `&lt;T&gt;` and shows as `<T>`.
        text.contains("+5.2%") && text.contains("cart::price&lt;T&gt;") && text.contains("812"),
        "{text}"
    );

    let am = by("/am/api/v2/alerts");
    assert_eq!(am.len(), 2, "Alertmanager gets POST /api/v2/alerts");
    let alert = &am[0][0];
    assert_eq!(alert["labels"]["alertname"], "ProfwatchRegression");
    assert_eq!(alert["labels"]["service"], "shop");
    assert!(alert.get("endsAt").is_none(), "a firing alert has no end");
    assert!(
        am[1][0]["endsAt"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z')),
        "a resolved alert ends"
    );

    // The dead sink is counted as failed once its retries run out.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while d.stats.failed.load(std::sync::atomic::Ordering::Relaxed) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead sink never gave up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(d.stats.retries.load(std::sync::atomic::Ordering::Relaxed) >= 2);
}

/// Every request a receiver got: path and JSON body.
type Calls = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Starts a receiver that records every request's path and body, answering 302 (to
/// `/elsewhere`) on `/redirect`.
async fn recorder() -> (String, Calls) {
    let calls: Calls = Arc::default();
    async fn record_call(
        State(calls): State<Calls>,
        uri: Uri,
        Json(body): Json<serde_json::Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        calls
            .lock()
            .expect("lock")
            .push((uri.path().to_owned(), body));
        if uri.path() == "/redirect" {
            return (StatusCode::FOUND, [("location", "/elsewhere")]).into_response();
        }
        StatusCode::OK.into_response()
    }
    let app = Router::new()
        .route("/{*path}", post(record_call))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), calls)
}

/// Redirects are not followed; a sink restricted to tenants hears only theirs; names cannot
/// inject Slack markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_redirects_tenant_scoped_sinks_and_escaped_names() {
    let (base, calls) = recorder().await;
    let mut globex_only = Sink::new(SinkKind::Json, format!("{base}/globex"));
    globex_only.tenants = vec!["globex".into()];
    let sinks = vec![
        Sink::new(SinkKind::Json, format!("{base}/redirect")),
        globex_only,
        Sink::new(SinkKind::Slack, format!("{base}/slack")),
    ];
    let cfg = DeliveryConfig {
        first_backoff: Duration::from_millis(20),
        max_attempts: 3,
        ..Default::default()
    };
    let d = Dispatcher::start(sinks, cfg).expect("dispatcher");
    let mut r = record();
    r.endpoint = "GET /x <!channel> <https://evil.example|click>\nhi".into();
    d.send(AlertStatus::Firing, &r);
    let mut other = record();
    other.tenant = "globex".into();
    other.id = "00000000000000cd".into();
    d.send(AlertStatus::Firing, &other);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let settled = |d: &Dispatcher| {
        let s = &d.stats;
        s.delivered.load(std::sync::atomic::Ordering::Relaxed)
            + s.failed.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Two alerts: three sinks for acme's minus the globex-only one, three for globex's.
    while settled(&d) < 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "alerts did not settle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = calls.lock().expect("lock").clone();
    let paths: Vec<&str> = calls.iter().map(|(p, _)| p.as_str()).collect();
    assert!(
        !paths.contains(&"/elsewhere"),
        "a redirect was followed: {paths:?}"
    );
    assert_eq!(
        paths.iter().filter(|p| **p == "/redirect").count(),
        2,
        "{paths:?}"
    );
    let globex: Vec<&serde_json::Value> = calls
        .iter()
        .filter(|(p, _)| p == "/globex")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(globex.len(), 1, "only globex's alert: {paths:?}");
    assert_eq!(globex[0]["regression"]["tenant"], "globex");
    let slack: Vec<&str> = calls
        .iter()
        .filter(|(p, _)| p == "/slack")
        .filter_map(|(_, b)| b["text"].as_str())
        .collect();
    let injected = slack
        .iter()
        .find(|t| t.contains("channel"))
        .expect("the alert with the crafted name");
    assert!(!injected.contains("<!channel>"), "{injected}");
    assert!(injected.contains("&lt;!channel&gt;"), "{injected}");
    assert!(!injected.contains("<https://evil"), "{injected}");
    assert!(!injected.contains('\n'), "{injected}");
    // The message's own link stays a link.
    assert!(injected.contains("|details>"), "{injected}");
}

/// An incident's regressions reach each sink as one message that lists them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_is_one_message_per_sink_listing_its_regressions() {
    let (base, calls) = recorder().await;
    let sinks = vec![
        Sink::new(SinkKind::Json, format!("{base}/json")),
        Sink::new(SinkKind::Slack, format!("{base}/slack")),
        Sink::new(SinkKind::Alertmanager, format!("{base}/am")),
    ];
    let d = Dispatcher::start(sinks, DeliveryConfig::default()).expect("dispatcher");
    let incident = profwatch_model::regression::IncidentCause::Build("812".into()).id("acme");
    let records: Vec<RegressionRecord> = ["GET /a", "GET /b <!here>", "GET /c"]
        .iter()
        .enumerate()
        .map(|(i, e)| RegressionRecord {
            id: format!("{i:016x}"),
            endpoint: (*e).into(),
            service: if i == 2 { "cart".into() } else { "shop".into() },
            incident: Some(incident.clone()),
            ..record()
        })
        .collect();
    d.send_incident(AlertStatus::Firing, &records);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while calls.lock().expect("lock").len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "alerts did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 3, "one message per sink: {calls:#?}");
    let body = |path: &str| {
        calls
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .expect(path)
    };
    let json = body("/json");
    assert_eq!(json["incident"], incident.as_str());
    assert_eq!(json["regressions"].as_array().map(Vec::len), Some(3));
    let summary = json["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with("3 endpoints of cart, shop got more expensive in build 812"),
        "{summary}"
    );
    let slack = body("/slack")["text"].as_str().expect("text").to_owned();
    for e in ["GET /a", "GET /b &lt;!here&gt;", "GET /c"] {
        assert!(slack.contains(e), "{e} listed: {slack}");
    }
    assert!(!slack.contains("<!here>"), "{slack}");
    let am = body("/am/api/v2/alerts");
    assert_eq!(am.as_array().map(Vec::len), Some(1), "one alert: {am:#}");
    assert_eq!(am[0]["labels"]["incident_id"], incident.as_str());
    assert_eq!(
        am[0]["annotations"]["regressions"]
            .as_str()
            .map(|s| s.lines().count()),
        Some(3)
    );
}

#[test]
fn sink_urls_are_redacted_in_logs_and_debug_output() {
    use profwatch_analyzer::alert::redacted;
    let secret = "https://hooks.slack.com/services/T000/B000/XXXXSECRET";
    assert_eq!(redacted(secret), "https://hooks.slack.com/…");
    assert_eq!(redacted("http://user:pw@am:9093/"), "http://am:9093/…");
    assert_eq!(redacted("http://am:9093"), "http://am:9093");
    let debug = format!("{:?}", Sink::new(SinkKind::Slack, secret));
    assert!(!debug.contains("SECRET"), "{debug}");
}

/// A CA made for the test, and a server certificate it signed for 127.0.0.1 and localhost.
struct TestPki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn test_pki() -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("server params");
    let cert = params.signed_by(&key, &ca, &ca_key).expect("server cert");
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    TestPki {
        ca_pem: ca.pem(),
        server,
    }
}

/// An https receiver: answers 200 to every request and reports each request's head and body.
async fn https_receiver(
    server: rustls::ServerConfig,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                // Read the head, then as much body as content-length says.
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            let _ = tx.send(text);
                            let _ = tls
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                                .await;
                            let _ = tls.shutdown().await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), rx)
}

/// An https sink (a Slack webhook, say) gets its alert over a real TLS handshake, trusting a
/// private CA given in the delivery settings; without that CA the certificate is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_sinks_get_their_alert_over_tls() {
    let pki = test_pki();
    let (base, mut requests) = https_receiver(pki.server).await;
    let cfg = DeliveryConfig {
        first_backoff: Duration::from_millis(20),
        max_attempts: 2,
        extra_roots_pem: pki.ca_pem.into_bytes(),
        ..Default::default()
    };
    let d = Dispatcher::start(
        vec![Sink::new(
            SinkKind::Slack,
            format!("{base}/services/T0/B0/secret"),
        )],
        cfg,
    )
    .expect("dispatcher");
    d.send(AlertStatus::Firing, &record());
    let got = tokio::time::timeout(Duration::from_secs(30), requests.recv())
        .await
        .expect("an https request within 30 s")
        .expect("a request");
    assert!(
        got.starts_with("POST /services/T0/B0/secret HTTP/1.1"),
        "{got}"
    );
    assert!(got.contains("\"text\""), "{got}");

    // The same sink without the CA: the handshake fails and nothing is delivered.
    let untrusted = Dispatcher::start(
        vec![Sink::new(SinkKind::Slack, format!("{base}/untrusted"))],
        DeliveryConfig {
            first_backoff: Duration::from_millis(20),
            max_attempts: 1,
            ..Default::default()
        },
    )
    .expect("dispatcher");
    untrusted.send(AlertStatus::Firing, &record());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while untrusted
        .stats
        .failed
        .load(std::sync::atomic::Ordering::Relaxed)
        < 1
    {
        assert!(std::time::Instant::now() < deadline, "never gave up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(requests.try_recv().is_err(), "no request got through");
}

/// A memory record reads as the service's memory per worker, not as an endpoint's cost, alone
/// and in an incident beside a CPU record.
#[test]
fn a_memory_record_reads_as_memory_per_worker() {
    use profwatch_analyzer::alert::{render, render_incident};
    use profwatch_model::regression::RegressionKind;
    let memory = RegressionRecord {
        id: "m".into(),
        kind: RegressionKind::Memory,
        endpoint: String::new(),
        metric: "private_bytes".into(),
        effect: 1.15,
        effect_low: Some(1.12),
        effect_high: Some(1.18),
        culprits: Vec::new(),
        ..record()
    };
    let one = render(SinkKind::Json, AlertStatus::Firing, &memory, "http://x");
    let summary = one["summary"].as_str().expect("summary");
    assert!(
        summary.starts_with(&format!(
            "{} memory per worker got +15.0% heavier (private bytes per worker) in build {} vs {}",
            memory.service, memory.candidate, memory.baseline
        )),
        "{summary}"
    );
    assert!(!summary.contains("top function"), "{summary}");
    let am = render(
        SinkKind::Alertmanager,
        AlertStatus::Firing,
        &memory,
        "http://x",
    );
    assert_eq!(am[0]["labels"]["kind"], "memory");

    let both = [record(), memory];
    let incident = render_incident(SinkKind::Json, AlertStatus::Firing, &both, "http://x");
    let summary = incident["summary"].as_str().expect("summary");
    assert!(summary.starts_with("2 regressions of "), "{summary}");
    assert!(summary.contains(" got worse "), "{summary}");
    let slack = render_incident(SinkKind::Slack, AlertStatus::Firing, &both, "http://x");
    let text = slack["text"].as_str().expect("text");
    assert!(
        text.contains("memory per worker: +15.0% (private_bytes)"),
        "{text}"
    );
}
