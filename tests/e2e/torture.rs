//! Crash and full-disk torture of the embedded store through the real binary.
//!
//! - `kill -9` at random moments while several clients ingest, 50 times over: after every
//!   restart each acknowledged batch is there exactly once, and no batch is partly visible.
//! - A data directory on a small filesystem of its own (a tmpfs this test mounts; it needs
//!   root, as CI has) fills up during ingest, gets space back, takes more batches, and is
//!   killed: nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profwatch_e2e::*;
use profwatch_model::RequestEvent;

const SERVICE: &str = "torture";
const PER_BATCH: usize = 40;

/// Batch `id`: `PER_BATCH` events of endpoint `GET /batch/<id>`, so each batch is counted on
/// its own.
fn batch(id: u64) -> Vec<u8> {
    let now = profwatch_model::timefmt::now_ns();
    let events: Vec<RequestEvent> = (0..PER_BATCH)
        .map(|i| RequestEvent {
            ts: now - i as i64 * 1_000_000,
            service: SERVICE.to_owned(),
            endpoint: format!("GET /batch/{id}"),
            build: "1".to_owned(),
            dc: "dc1".to_owned(),
            host: format!("host-{}", i % 4),
            status: 200,
            cpu_ns: 1_000_000 + i as u64,
            instructions: None,
            wall_ns: 2_000_000,
            weight: 1.0,
            labels: Default::default(),
        })
        .collect();
    ndjson(&events)
}

/// Requests per batch id, from the server's endpoint summary.
fn stored(client: &Client) -> BTreeMap<u64, f64> {
    let now = profwatch_model::timefmt::now_ns() / 1_000_000_000;
    let r = client.get(&format!(
        "/api/v1/endpoints?service={SERVICE}&from={}&to={}",
        now - 3600,
        now + 60
    ));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
        .as_array()
        .expect("an array of endpoints")
        .iter()
        .map(|e| {
            let endpoint = e["endpoint"].as_str().expect("endpoint");
            let id = endpoint
                .strip_prefix("GET /batch/")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("an endpoint nobody sent: {endpoint}"));
            (id, e["requests"].as_f64().expect("requests"))
        })
        .collect()
}

/// Every acknowledged batch is there exactly once; any other batch is there whole or not at
/// all.
fn check(client: &Client, acked: &[u64], sent: u64, when: &str) {
    let got = stored(client);
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|id| !got.contains_key(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{when}: acknowledged batches lost: {lost:?}"
    );
    for (id, requests) in &got {
        assert!(*id < sent, "{when}: batch {id} was never sent");
        assert_eq!(
            *requests, PER_BATCH as f64,
            "{when}: batch {id} is stored {requests} times over {PER_BATCH} events (partly or twice)"
        );
    }
}

/// Clients that post batches until told to stop, recording the acknowledged ones.
struct Writers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(url: &str, n: usize, next: &Arc<AtomicU64>, acked: &Arc<Mutex<Vec<u64>>>) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let (client, stop) = (Client::new(url), stop.clone());
                let (next, acked) = (next.clone(), acked.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let id = next.fetch_add(1, Ordering::SeqCst);
                        let r = client.post_events(batch(id), "application/x-ndjson", None);
                        if r.status == 200 {
                            acked.lock().expect("lock").push(id);
                        } else if r.status == 0 {
                            // The server is gone (killed); nothing more to send.
                            return;
                        }
                    }
                })
            })
            .collect();
        Writers { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("writer");
        }
    }
}

#[test]
fn fifty_kills_under_concurrent_ingest_lose_and_duplicate_nothing() {
    const CYCLES: usize = 50;
    let art = artifacts("fifty_kills_under_concurrent_ingest");
    let data = art.join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let args = ["--data-dir", data_arg, "--analysis-interval", "0s"];
    let next = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    for cycle in 0..CYCLES {
        let mut server = Server::start(&args, &art.join(format!("server-{cycle:02}.log")));
        if cycle % 10 == 0 {
            let acked = acked.lock().expect("lock").clone();
            check(
                &server.client(),
                &acked,
                next.load(Ordering::SeqCst),
                &format!("after {cycle} kills"),
            );
        }
        let writers = Writers::start(&server.url, 3, &next, &acked);
        // A random moment: 50 ms to 1.5 s into the ingest.
        std::thread::sleep(Duration::from_millis(50 + (rng.uniform() * 1450.0) as u64));
        server.kill9();
        writers.stop();
    }
    let server = Server::start(&args, &art.join("server-final.log"));
    let acked = acked.lock().expect("lock").clone();
    let sent = next.load(Ordering::SeqCst);
    check(&server.client(), &acked, sent, "after 50 kills");
    eprintln!(
        "{CYCLES} kills: {} batches acknowledged of {sent} sent; all present exactly once",
        acked.len()
    );
    assert!(
        acked.len() >= CYCLES,
        "too few batches were acknowledged to mean anything: {}",
        acked.len()
    );
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `mib` MiB at `dir`; `None` (a recorded skip) when not root and told to
    /// skip with `PROFWATCH_SKIP_ROOT=1`.
    fn mount(dir: &std::path::Path, mib: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        if status.success() {
            return Some(SmallDisk {
                dir: dir.to_owned(),
            });
        }
        if std::env::var("PROFWATCH_SKIP_ROOT").as_deref() == Ok("1") {
            profwatch_testkit::skip("needs root", "mounting a tmpfs failed");
            return None;
        }
        panic!("mounting a tmpfs at {} failed: this test needs root (CI runs as root); set PROFWATCH_SKIP_ROOT=1 to skip it", dir.display());
    }

    /// Fills the filesystem with one file until writes fail; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0xa5u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        // Whatever is left in smaller pieces.
        while f.write_all(&block[..512]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}

/// Regression test: the disk fills up during ingest (503s), space comes back, 20 batches are
/// acknowledged, then `kill -9`. Before the fix the WAL kept appending behind the torn record of
/// the failed append, and the restart lost all 20.
#[test]
fn a_full_disk_then_space_then_a_crash_loses_nothing_acknowledged() {
    let art = artifacts("a_full_disk_then_space_then_a_crash");
    let Some(disk) = SmallDisk::mount(&art.join("disk"), 48) else {
        return;
    };
    let data = disk.dir.join("data");
    let data_arg = data.to_str().expect("utf-8 path");
    let args = ["--data-dir", data_arg, "--analysis-interval", "0s"];
    let mut server = Server::start(&args, &art.join("server-1.log"));
    let client = server.client();
    let mut acked = Vec::new();
    let mut next = 0u64;
    for _ in 0..5 {
        let r = client.post_events(batch(next), "application/x-ndjson", None);
        assert_eq!(r.status, 200, "{}", r.body);
        acked.push(next);
        next += 1;
    }
    let filler = disk.fill();
    let mut refused = 0;
    for _ in 0..10 {
        let r = client.post_events(batch(next), "application/x-ndjson", None);
        next += 1;
        assert_eq!(r.status, 503, "a full disk refuses for now: {}", r.body);
        assert!(r.retry_after.is_some(), "with Retry-After");
        refused += 1;
    }
    std::fs::remove_file(&filler).expect("space comes back");
    for _ in 0..20 {
        let r = client.post_events(batch(next), "application/x-ndjson", None);
        assert_eq!(r.status, 200, "space is back: {}", r.body);
        acked.push(next);
        next += 1;
    }
    server.kill9();
    let server = Server::start(&args, &art.join("server-2.log"));
    check(
        &server.client(),
        &acked,
        next,
        "after the full disk and the crash",
    );
    eprintln!(
        "full disk: {refused} batches refused with 503, then {} acknowledged and all present after kill -9",
        acked.len()
    );
    drop(server);
}
