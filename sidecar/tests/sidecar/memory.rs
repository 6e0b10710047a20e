//! Memory readings of real processes against what they are known to hold: a C program
//! (`tests/fixtures/memory.c`, built with gcc) that writes every page of a 64 MiB anonymous
//! mapping, alone (private pages) or then forked (pages shared copy-on-write by the pair).
//! Each reading, from `smaps_rollup` and from `smaps` summed, is within 10% of the truth.
//!
//! Then the watch end to end: the real sidecar reads the fixture every interval (by pid, by
//! name, or because it said hello on the socket) and ships its samples through the spool to a
//! mock collector; the fixture's exit drops it from the watch without an error.
//!
//! gcc is needed (scripts/test.sh installs it).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use profwatch_model::memory::MemoryBytes;
use profwatch_sidecar::memory::{self, smaps, DefaultLabels, OwnLabels, Source};

use std::time::Duration;

use profwatch_sidecar::Sidecar;

use profwatch_model::hello::Hello;
use profwatch_sidecar::metrics::HelloOutcome;
use profwatch_sidecar::RejectReason;

use crate::support::{build, config, eventually, get_text, send_udp, MockCollector};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const MIB: u64 = 1 << 20;
/// The fixture's allocation.
const TRUTH: u64 = 64 * MIB;

fn build_fixture(dir: &Path) -> PathBuf {
    build_named(dir, "memory")
}

/// The fixture as an executable called `name` (what `--memory-name` matches).
fn build_named(dir: &Path, name: &str) -> PathBuf {
    let exe = dir.join(name);
    let src = format!("{FIXTURES}/memory.c");
    build(
        "gcc",
        &["-O2", "-o", exe.to_str().expect("utf-8 path"), &src],
    );
    exe
}

/// The fixture, running; killed (with its child) and reaped when dropped.
struct Fixture {
    process: Child,
    pid: u32,
    child: u32,
}

impl Fixture {
    fn start(exe: &Path, mode: &str) -> Fixture {
        Fixture::start_with(exe, mode, None)
    }

    /// With `hello`, the fixture says hello on that socket before it is ready.
    fn start_with(exe: &Path, mode: &str, hello: Option<&Path>) -> Fixture {
        let mut args = vec![(TRUTH / MIB).to_string(), mode.to_owned()];
        args.extend(hello.map(|p| p.to_str().expect("utf-8 path").to_owned()));
        let mut process = Command::new(exe)
            .args(&args)
            .env("PROFWATCH_SERVICE", "memory-fixture")
            .env("PROFWATCH_BUILD", "b1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the fixture");
        let stdout = process.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the fixture's ready line");
        let ids: Vec<u32> = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("the fixture said {line:?}"))
            .split_whitespace()
            .map(|w| w.parse().expect("a pid"))
            .collect();
        Fixture {
            process,
            pid: ids[0],
            child: ids[1],
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn within_10_percent(what: &str, got: u64, truth: u64) {
    let error = got.abs_diff(truth) as f64 / truth as f64;
    assert!(
        error <= 0.10,
        "{what}: read {} KiB, the truth is {} KiB ({:.1}% off)",
        got / 1024,
        truth / 1024,
        error * 100.0
    );
}

/// The rollup and the summed smaps of `pid`.
fn both_readings(pid: u32) -> [(Source, MemoryBytes); 2] {
    let (rollup, source) = smaps::read(Path::new("/proc"), pid).expect("read the rollup");
    let file = std::fs::File::open(format!("/proc/{pid}/smaps")).expect("open smaps");
    let summed = smaps::parse(BufReader::new(file), smaps::MAX_SMAPS_BYTES).expect("parse smaps");
    [(source, rollup), (Source::Smaps, summed)]
}

#[test]
fn a_private_allocation_reads_as_private_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::start(&build_fixture(dir.path()), "private");
    for (source, b) in both_readings(fixture.pid) {
        let what = format!("{source:?}");
        within_10_percent(&format!("{what} private"), b.private(), TRUTH);
        within_10_percent(&format!("{what} rss"), b.rss, TRUTH);
        within_10_percent(&format!("{what} pss"), b.pss, TRUTH);
        assert!(b.shared() < TRUTH / 10, "{what}: {b:?}");
    }
    let sample = memory::read_sample(
        Path::new("/proc"),
        fixture.pid,
        &OwnLabels::default(),
        &DefaultLabels {
            service: Some("from-flags".into()),
            build: "flag-build".into(),
            dc: "flag-dc".into(),
        },
        "host-1",
        1,
    )
    .expect("sample");
    assert_eq!(
        (
            sample.service.as_str(),
            sample.build.as_str(),
            sample.dc.as_str(),
            sample.host.as_str(),
            sample.pid
        ),
        ("memory-fixture", "b1", "flag-dc", "host-1", fixture.pid),
        "the environment's labels, else the flags'"
    );
    within_10_percent("sample private", sample.bytes.private(), TRUTH);
}

#[test]
fn a_forked_pair_reads_its_copy_on_write_pages_as_shared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Fixture::start(&build_fixture(dir.path()), "fork");
    assert!(fixture.child > 0);
    for pid in [fixture.pid, fixture.child] {
        for (source, b) in both_readings(pid) {
            let what = format!("pid {pid} {source:?}");
            within_10_percent(&format!("{what} shared"), b.shared(), TRUTH);
            within_10_percent(&format!("{what} pss"), b.pss, TRUTH / 2);
            assert!(b.private() < TRUTH / 10, "{what}: {b:?}");
        }
    }
}

#[test]
fn a_process_that_exited_reads_as_gone() {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("reap");
    let err = smaps::read(Path::new("/proc"), pid).expect_err("an exited process");
    assert!(err.is_gone(), "{err}");
}

/// Runs a sidecar watching the fixture (by pid or by name) until the mock collector holds
/// samples of it; then kills the fixture and checks it leaves the watch quietly.
async fn watch_ships_samples(by_name: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    // A name no other test's process has.
    let exe = build_named(dir.path(), "memory-byname");
    let mut fixture = Fixture::start(&exe, "private");
    let mock = MockCollector::start().await;
    let mut cfg = config(&mock.url, dir.path());
    if by_name {
        cfg.memory.names = vec!["memory-byname".into()];
        cfg.memory.uids = vec![my_uid()];
    } else {
        cfg.memory.pids = vec![fixture.pid];
    }
    cfg.memory.interval = Duration::from_millis(200);
    cfg.memory.build = "flag-build".into();
    let sidecar = Sidecar::start(cfg).await.expect("start");
    let of_fixture = |mock: &MockCollector| {
        mock.memory()
            .into_iter()
            .filter(|s| s.pid == fixture.pid)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || of_fixture(&mock).len() >= 2).await,
        "no memory samples of the fixture shipped: {:?}",
        mock.memory_attempts()
    );
    let samples = of_fixture(&mock);
    for s in &samples {
        assert_eq!(
            (
                s.service.as_str(),
                s.build.as_str(),
                s.dc.as_str(),
                s.host.as_str()
            ),
            ("memory-fixture", "b1", "test-dc", "test-host")
        );
        within_10_percent("shipped private", s.bytes.private(), TRUTH);
    }
    assert!(
        mock.memory_attempts().iter().all(|a| a.1.is_some()),
        "every POST carries an Idempotency-Key"
    );

    let _ = fixture.process.kill();
    let _ = fixture.process.wait();
    assert!(
        eventually(Duration::from_secs(30), || {
            sidecar.metrics().snapshot("", "").memory_processes == 0
        })
        .await,
        "the exited fixture is still watched"
    );
    let shipped = sidecar.metrics().snapshot("", "");
    assert_eq!(shipped.last_error, None, "an exit is not an error");
    assert!(shipped.memory_samples_shipped >= 2, "{shipped:?}");
    assert_eq!(shipped.memory_samples_invalid, 0);
    sidecar.shutdown().await.expect("shutdown");
}

/// This process's user id: the fixture runs as the same user.
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").expect("/proc/self").uid()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_ships_a_pid_s_samples_and_drops_it_when_it_exits() {
    watch_ships_samples(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_finds_processes_by_name() {
    watch_ships_samples(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_memory_batch_is_dead_lettered_and_counted_as_memory_samples() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = build_fixture(dir.path());
    let fixture = Fixture::start(&exe, "private");
    let mock = MockCollector::start().await;
    mock.set_memory_status(422);
    let mut cfg = config(&mock.url, dir.path());
    cfg.memory.pids = vec![fixture.pid];
    cfg.memory.interval = Duration::from_millis(200);
    let sidecar = Sidecar::start(cfg).await.expect("start");
    assert!(
        eventually(Duration::from_secs(30), || {
            sidecar
                .metrics()
                .snapshot("", "")
                .memory_samples_dead_lettered
                >= 1
        })
        .await,
        "{:?}",
        sidecar.metrics().snapshot("", "")
    );
    let snapshot = sidecar.metrics().snapshot("", "");
    assert_eq!(
        (
            snapshot.dead_lettered_events,
            snapshot.dead_lettered_profiles
        ),
        (0, 0),
        "memory samples are their own unit"
    );
    sidecar.shutdown().await.expect("shutdown");
    drop(fixture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pid_that_does_not_exist_is_a_start_error_unless_a_name_is_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockCollector::start().await;
    let mut child = Command::new("true").spawn().expect("spawn true");
    let gone = child.id();
    child.wait().expect("reap");
    let mut cfg = config(&mock.url, dir.path());
    cfg.memory.pids = vec![gone];
    let err = Sidecar::start(cfg).await.expect_err("nothing to watch");
    assert!(
        matches!(err, profwatch_sidecar::SidecarError::Memory { .. }),
        "{err}"
    );
}

/// A process that says hello on the socket is watched without any flag, under its hello's
/// labels (over its environment's) and its own pid (not the one its hello claims).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_says_hello_is_watched_with_its_hello_s_labels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = build_fixture(dir.path());
    let mock = MockCollector::start().await;
    let mut cfg = config(&mock.url, dir.path());
    cfg.memory.interval = Duration::from_millis(200);
    cfg.memory.build = "flag-build".into();
    let sidecar = Sidecar::start(cfg).await.expect("start");
    let socket = sidecar.socket_path().to_owned();
    let fixture =
        tokio::task::spawn_blocking(move || Fixture::start_with(&exe, "private", Some(&socket)))
            .await
            .expect("start the fixture");
    let of_fixture = |mock: &MockCollector| {
        mock.memory()
            .into_iter()
            .filter(|s| s.pid == fixture.pid)
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(30), || of_fixture(&mock).len() >= 2).await,
        "no memory samples of the fixture shipped: {:?}; {:?}",
        mock.memory_attempts(),
        sidecar.metrics().snapshot("", "")
    );
    for s in of_fixture(&mock) {
        assert_eq!(
            (
                s.service.as_str(),
                s.build.as_str(),
                s.dc.as_str(),
                s.host.as_str()
            ),
            ("hello-svc", "h7", "hello-dc", "test-host"),
            "the hello's labels, over the environment's (memory-fixture, b1) and the flags'"
        );
        within_10_percent("shipped private", s.bytes.private(), TRUTH);
    }
    assert!(
        mock.memory().iter().all(|s| s.pid == fixture.pid),
        "only the fixture is watched; the pid its hello claims (1) is not"
    );
    let m = sidecar.metrics();
    assert_eq!(m.hello_count(HelloOutcome::Registered), 1);
    assert_eq!(m.rejected_count(RejectReason::BadHello), 0);
    sidecar.shutdown().await.expect("shutdown");
    drop(fixture);
}

/// UDP tells no sender pid: a hello datagram is refused and counted, and registers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_over_udp_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = MockCollector::start().await;
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    let hello = Hello {
        pid: Some(std::process::id()),
        service: Some("udp-svc".into()),
        ..Hello::default()
    };
    send_udp(sidecar.udp_addr().expect("udp"), &hello.frame());
    let m = sidecar.metrics().clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            m.rejected_count(RejectReason::HelloOverUdp) == 1
        })
        .await,
        "{:?}",
        m.snapshot("", "")
    );
    let status = get_text(&sidecar, "/metrics").await;
    assert!(
        status.contains("profwatch_agent_events_rejected_total{reason=\"hello_over_udp\"} 1"),
        "{status}"
    );
    let snapshot = m.snapshot("", "");
    assert_eq!(snapshot.memory_processes, 0);
    assert!(snapshot.memory_hellos.iter().all(|(_, n)| *n == 0));
    sidecar.shutdown().await.expect("shutdown");
}
