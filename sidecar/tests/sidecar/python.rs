//! The Python package (`agent/python`, driven by `agent/examples/wsgi_demo.py` straight from
//! the tree) against a running sidecar, over the Unix socket and over UDP. The package's own
//! tests (`agent/python/tests/run.sh`) cover it with real frameworks, servers and collector.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use profwatch_sidecar::Sidecar;

use crate::support::*;

fn run_demo(envs: &[(&str, String)], build: &str, requests: usize) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/examples/wsgi_demo.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--requests", &requests.to_string(), "--build", build])
        .env_remove("PROFWATCH_AGENT_SOCKET")
        .env_remove("PROFWATCH_AGENT_UDP")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "wsgi_demo.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wsgi_middleware_reports_each_request_over_uds_and_udp() {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    let socket = sidecar.socket_path().display().to_string();
    let udp = sidecar.udp_addr().expect("udp").to_string();
    let (s, u) = (socket.clone(), udp.clone());
    tokio::task::spawn_blocking(move || {
        run_demo(&[("PROFWATCH_AGENT_SOCKET", s)], "via-uds", 20);
        run_demo(&[("PROFWATCH_AGENT_UDP", u)], "via-udp", 10);
    })
    .await
    .expect("python");

    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 30).await);
    let stored = mock.stored();
    for (build, n) in [("via-uds", 20), ("via-udp", 10)] {
        let mine: Vec<_> = stored.iter().filter(|e| e.build == build).collect();
        assert_eq!(mine.len(), n, "{build}");
        let burn: Vec<_> = mine.iter().filter(|e| e.endpoint == "GET /burn").collect();
        assert_eq!(burn.len(), n * 4 / 5, "{build}");
        assert!(
            burn.iter().all(|e| e.status == 200 && e.cpu_ns > 100_000),
            "{build}: thread_time_ns of a CPU-bound request"
        );
        assert!(mine
            .iter()
            .any(|e| e.endpoint == "GET <unmatched>" && e.status == 404));
        assert!(mine.iter().all(|e| e.service == "wsgi-demo"
            && e.host == "test-host"
            && e.wall_ns >= e.cpu_ns / 2));
    }
    sidecar.shutdown().await.expect("shutdown");
}
