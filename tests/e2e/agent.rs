//! The sidecar end to end: an app writes to the real `profwatch agent`, which ships to the
//! real `profwatch server` (embedded store). A 60 s collector outage loses and duplicates
//! nothing, and a `kill -9`
//! of the sidecar while it ships loses nothing that reached its spool. Replaying an entire
//! already-delivered spool (a crash after every 200 and before any deletion) stores nothing
//! twice, thanks to the collector's `Idempotency-Key` dedupe.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use profwatch_e2e::*;

const OUTAGE: Duration = Duration::from_secs(60);
const BATCH: usize = 50;

/// A running `profwatch agent`.
pub(crate) struct Agent {
    child: Child,
    metrics: String,
    socket: PathBuf,
}

impl Agent {
    pub(crate) fn start(collector: &str, dir: &Path, log: &Path) -> Agent {
        Self::start_with(collector, dir, log, &[])
    }

    /// Starts the sidecar with more flags (e.g. TLS files).
    pub(crate) fn start_with(
        collector: &str,
        dir: &Path,
        log: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> Agent {
        let socket = dir.join("agent.sock");
        let mut child = Command::new(profwatch_bin())
            .args([
                "agent",
                "--collector",
                collector,
                "--metrics",
                "127.0.0.1:0",
            ])
            .arg("--socket")
            .arg(&socket)
            .arg("--spool-dir")
            .arg(dir.join("spool"))
            .args(["--dc", "e2e-dc", "--host", "e2e-host"])
            .args(extra)
            .args([
                "--batch-events",
                &BATCH.to_string(),
                "--batch-wait-ms",
                "200",
            ])
            .env("PROFWATCH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn profwatch agent");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log = log.to_owned();
        std::thread::spawn(move || {
            let mut out = std::fs::File::create(&log).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = out.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Some(url) = line.strip_prefix("profwatch agent metrics on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let metrics = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the agent did not report its metrics port");
        Agent {
            child,
            metrics,
            socket,
        }
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let r = Client::new(&self.metrics).get("/status");
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    /// A counter of `/status`; a missing field fails the test (a check for 0 must not pass
    /// because the field went away).
    fn get(&self, field: &str) -> u64 {
        let status = self.status();
        status[field]
            .as_u64()
            .unwrap_or_else(|| panic!("/status has no counter {field}: {status:#}"))
    }

    /// Sends `n` events of `service` as NDJSON lines over the Unix socket.
    pub(crate) fn send(&self, service: &str, build: &str, n: usize) {
        let mut batch = events(service, build, n);
        for e in &mut batch {
            e.host.clear();
            e.dc.clear();
        }
        let mut s = UnixStream::connect(&self.socket).expect("connect to the agent");
        s.write_all(&ndjson(&batch)).expect("write");
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn requests(server: &Server, service: &str) -> f64 {
    server.client().total_requests(service, 1)
}

#[test]
fn agent_survives_a_collector_outage_and_a_kill9() {
    let art = artifacts("agent_survives_a_collector_outage_and_a_kill9");
    let data = art.join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let mut server = Server::start(&["--data-dir", data_arg], &art.join("server-1.log"));
    let listen = server.url.trim_start_matches("http://").to_owned();
    let mut agent = Agent::start(&server.url, &art.join("agent"), &art.join("agent-1.log"));

    // Flowing: app → sidecar → collector, enriched on the way.
    agent.send("e2e-before", "b0", 500);
    assert!(
        eventually(Duration::from_secs(30), || requests(&server, "e2e-before")
            == 500.0),
        "events did not flow; see {}",
        art.display()
    );

    // Outage: events keep coming while the collector is down.
    assert!(server.terminate(), "graceful stop failed");
    let outage_started = Instant::now();
    let mut sent = 0;
    let mut round = 0;
    while outage_started.elapsed() < OUTAGE {
        agent.send("e2e-during", &format!("r{round}"), 200);
        sent += 200;
        round += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(eventually(Duration::from_secs(10), || agent
        .get("spool_events")
        == sent as u64));
    assert!(
        agent.get("retries") > 0,
        "the agent should be retrying: {}",
        agent.status()
    );
    let server = Server::start_on(
        &listen,
        &["--data-dir", data_arg],
        &art.join("server-2.log"),
    );
    assert!(
        eventually(Duration::from_secs(60), || requests(&server, "e2e-during")
            >= sent as f64),
        "the outage's events did not all arrive: {} of {sent}; status {}",
        requests(&server, "e2e-during"),
        agent.status()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        requests(&server, "e2e-during"),
        sent as f64,
        "none arrives twice"
    );
    assert_eq!(
        requests(&server, "e2e-before"),
        500.0,
        "nothing acknowledged was lost"
    );
    assert!(eventually(Duration::from_secs(10), || agent
        .get("spool_records")
        == 0));

    // kill -9 while shipping: fill the spool during a second outage, then kill the agent as
    // soon as the collector starts taking batches, and restart it on the same spool.
    let mut server = server;
    assert!(server.terminate(), "graceful stop failed");
    let n_kill = 4000;
    for i in 0..(n_kill / 500) {
        agent.send("e2e-kill", &format!("k{i}"), 500);
    }
    assert!(eventually(Duration::from_secs(20), || agent
        .get("spool_events")
        == n_kill as u64));
    let spool = art.join("agent").join("spool").join("batches");
    let copy = art.join("spool-copy");
    copy_dir(&spool, &copy);
    let shipped_before = agent.get("shipped_events");
    let server = Server::start_on(
        &listen,
        &["--data-dir", data_arg],
        &art.join("server-3.log"),
    );
    assert!(eventually(Duration::from_secs(60), || agent
        .get("shipped_events")
        > shipped_before));
    agent.kill9();
    let left = requests(&server, "e2e-kill");
    eprintln!("killed the agent with {left} of {n_kill} events of e2e-kill shipped");
    let agent = Agent::start(&server.url, &art.join("agent"), &art.join("agent-2.log"));
    assert!(
        eventually(Duration::from_secs(60), || requests(&server, "e2e-kill")
            >= n_kill as f64),
        "events in the spool were lost: {} of {n_kill}; status {}",
        requests(&server, "e2e-kill"),
        agent.status()
    );
    std::thread::sleep(Duration::from_secs(1));
    let got = requests(&server, "e2e-kill");
    // Exactly once: the batch in flight at the kill is re-sent with the same Idempotency-Key,
    // which the collector answers as a duplicate without storing it again.
    assert_eq!(got, n_kill as f64, "a re-sent batch was stored twice");
    assert_eq!(requests(&server, "e2e-during"), sent as f64);
    assert!(eventually(Duration::from_secs(10), || agent
        .get("spool_records")
        == 0));

    // The worst crash: every batch acknowledged but none deleted. Put the spool back as it was
    // before shipping and restart: all are re-sent, with their keys, and none is stored again.
    let mut agent = agent;
    agent.kill9();
    let _ = std::fs::remove_dir_all(&spool);
    copy_dir(&copy, &spool);
    let agent = Agent::start(&server.url, &art.join("agent"), &art.join("agent-3.log"));
    assert!(eventually(Duration::from_secs(60), || {
        agent.get("shipped_events") == n_kill as u64 && agent.get("spool_records") == 0
    }));
    assert_eq!(
        requests(&server, "e2e-kill"),
        n_kill as f64,
        "a re-sent batch was stored twice"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy");
    for entry in std::fs::read_dir(from).expect("list the spool") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
}
