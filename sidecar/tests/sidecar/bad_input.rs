//! Bad local input is counted and refused alone; the events beside it go through.

use std::time::Duration;

use profwatch_model::wire;
use profwatch_sidecar::{RejectReason, Sidecar};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_and_datagrams_do_not_stop_the_good_ones() {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");

    let mut stream = Vec::new();
    stream.extend_from_slice(line("svc", "u1").as_bytes());
    stream.extend_from_slice(b"{\"service\": \"svc\", oops\n");
    stream.extend_from_slice(line("svc", "u2").as_bytes());
    stream.extend_from_slice(format!("{{\"service\":\"{}\"}}\n", "x".repeat(100_000)).as_bytes());
    stream.extend_from_slice(line("svc", "u3").as_bytes());
    stream.extend_from_slice(b"{\"service\":\"svc\",\"endpoint\":\"GET /\"}\n");
    stream.extend_from_slice(
        b"{\"service\":\"svc\",\"endpoint\":\"GET /\",\"cpu_ns\":1,\"weight\":-1}\n",
    );
    let frame = wire::encode_batch(&[event("svc", "u4"), event("svc", "u5")]);
    stream.push(0);
    stream.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    stream.extend_from_slice(&frame);
    stream.extend_from_slice(line("svc", "u6").as_bytes());
    send_unix(&sidecar, stream).await;

    let udp = sidecar.udp_addr().expect("udp");
    send_udp(udp, line("svc", "d1").as_bytes());
    send_udp(udp, b"not json at all");
    send_udp(udp, &[0, 0x0a, 0xff]);
    let mut datagram = vec![0];
    datagram.extend_from_slice(&wire::encode_batch(&[event("svc", "d2")]));
    send_udp(udp, &datagram);
    send_udp(
        udp,
        format!("{}{}", line("svc", "d3"), line("svc", "d4")).as_bytes(),
    );

    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 10).await);
    let mut builds: Vec<_> = mock.stored().iter().map(|e| e.build.clone()).collect();
    builds.sort();
    assert_eq!(
        builds,
        ["d1", "d2", "d3", "d4", "u1", "u2", "u3", "u4", "u5", "u6"]
    );
    let m = sidecar.metrics();
    assert_eq!(m.rejected_count(RejectReason::BadJson), 2);
    assert_eq!(m.rejected_count(RejectReason::TooLong), 1);
    assert_eq!(m.rejected_count(RejectReason::MissingField), 1);
    assert_eq!(m.rejected_count(RejectReason::Invalid), 1);
    assert_eq!(m.rejected_count(RejectReason::BadFrame), 1);

    assert!(
        eventually(Duration::from_secs(5), || m.snapshot("", "").shipped_events
            == 10)
        .await
    );
    profwatch_model::tls::install_crypto_provider();
    let text = reqwest::get(format!(
        "http://{}/metrics",
        sidecar.metrics_addr().expect("metrics")
    ))
    .await
    .expect("metrics")
    .text()
    .await
    .expect("text");
    assert!(
        text.contains("profwatch_agent_events_rejected_total{reason=\"bad_json\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("profwatch_agent_events_received_total 10"),
        "{text}"
    );
    assert!(
        text.contains("profwatch_agent_events_shipped_total 10"),
        "{text}"
    );
    sidecar.shutdown().await.expect("shutdown");
}
