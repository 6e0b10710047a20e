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

    // A port nothing listens on: that sink fails, the others must not wait for it.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_url = format!("http://{}", dead.local_addr().expect("addr"));
    drop(dead);

    let sinks = vec![
        Sink {
            kind: SinkKind::Json,
            url: format!("{base}/flaky"),
        },
        Sink {
            kind: SinkKind::Slack,
            url: format!("{base}/slack"),
        },
        Sink {
            kind: SinkKind::Alertmanager,
            url: format!("{base}/am"),
        },
        Sink {
            kind: SinkKind::Json,
            url: dead_url,
        },
    ];
    let cfg = DeliveryConfig {
        first_backoff: Duration::from_millis(20),
        max_attempts: 4,
        base_url: "http://pw:4040".into(),
        ..Default::default()
    };
    let d = Dispatcher::start(sinks, cfg);
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
        text.contains("+5.2%") && text.contains("cart::price<T>") && text.contains("812"),
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
