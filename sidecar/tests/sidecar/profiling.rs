//! Profiles through the sidecar: `--profile-pid` sampling of another process (this test binary
//! re-executed as a CPU-busy child), the startup error for a pid that does not exist, and the
//! SDK's profiles relayed through the socket and the spool.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use profwatch_agent::sampler::{ProfileBatch, SidecarSink};
use profwatch_agent::{Agent, Config, ExportTarget, Sampler, SamplerConfig, SamplerError};
use profwatch_model::profile::{SampleLabels, StackSample};
use profwatch_sidecar::{DropReason, Sidecar, SidecarError};

use crate::support::*;

/// Set in the child: run [`spin_child`] for real.
const CHILD_ENV: &str = "PROFWATCH_TEST_SPIN_CHILD";
/// What the child prints once its first spinning thread runs.
const READY: &str = "spin-child-ready";

/// The child's first hot function: a xorshift loop with no calls inside, so it is the leaf of
/// the samples taken in it (no frame pointers needed).
#[inline(never)]
fn spin_early(rounds: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ rounds;
    let mut i = 0;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    x
}

/// The hot function of a thread the child starts after the sidecar attached.
#[inline(never)]
fn spin_late(rounds: u64) -> u64 {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d ^ rounds;
    let mut i = 0;
    while i < rounds {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        i += 1;
    }
    x
}

fn spin(until: Instant, f: fn(u64) -> u64) -> u64 {
    let mut acc = 0;
    while Instant::now() < until {
        acc ^= f(2_000_000);
    }
    acc
}

/// Not a test on its own: the body of the child process the profiling test starts (a no-op
/// unless `PROFWATCH_TEST_SPIN_CHILD` is set). Spins in `spin_early` at once and, from a new
/// thread, in `spin_late` after 2 s; dies with its parent, and after 120 s at the latest.
#[test]
fn spin_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    die_with_parent();
    let until = Instant::now() + Duration::from_secs(120);
    // The spinning thread is created 2 s from now, after the sidecar attached.
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        std::thread::Builder::new()
            .name("spin-late".into())
            .spawn(move || spin(until, spin_late))
            .expect("thread")
            .join()
            .expect("late")
    });
    println!("{READY}");
    let acc = spin(until, spin_early);
    std::hint::black_box(acc ^ late.join().expect("late"));
}

#[allow(unsafe_code)]
fn die_with_parent() {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

/// The child process, killed and reaped when dropped.
struct SpinChild(Child);

impl SpinChild {
    /// Starts this test binary as the spinning child and waits until it spins.
    async fn start() -> SpinChild {
        Self::start_as(&std::env::current_exe().expect("test binary")).await
    }

    /// As [`SpinChild::start`], running the test binary from `exe` (a link of another name).
    async fn start_as(exe: &std::path::Path) -> SpinChild {
        let mut child = Command::new(exe)
            .args([
                "profiling::spin_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l.contains(READY))
        });
        let ready = tokio::time::timeout(Duration::from_secs(60), ready).await;
        assert!(
            matches!(ready, Ok(Ok(true))),
            "the child did not start spinning"
        );
        SpinChild(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for SpinChild {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pid no process has now.
fn free_pid() -> u32 {
    (1..4_000_000u32)
        .rev()
        .find(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        .expect("a free pid")
}

fn is_perf_unavailable(e: &SidecarError) -> bool {
    let text = e.to_string();
    text.contains("perf_event_open") && !text.contains("no such process")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_is_sampled_symbolised_and_shipped_until_it_exits() {
    let mut child = SpinChild::start().await;
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    cfg.profile.pids = vec![child.pid()];
    cfg.profile.export_interval = Duration::from_secs(1);
    cfg.profile.thread_rescan = Duration::from_millis(200);
    let sidecar = match Sidecar::start(cfg).await {
        Ok(s) => s,
        Err(e) if is_perf_unavailable(&e) => {
            profwatch_testkit::perf_unavailable(&e);
            return;
        }
        Err(e) => panic!("start: {e}"),
    };
    assert_eq!(sidecar.metrics().snapshot("", "").profiled_processes, 1);

    let seen = |function: &str| {
        mock.profiles()
            .iter()
            .flat_map(|p| p.stacks())
            .filter(|(stack, _)| stack.contains(function))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let found = eventually(Duration::from_secs(90), || {
        seen("spin_early") > 0 && seen("spin_late") > 0
    })
    .await;
    let profiles = mock.profiles();
    assert!(
        found,
        "stacks in spin_early: {}, in spin_late (a thread started after attaching): {}; \
         profiles: {profiles:#?}",
        seen("spin_early"),
        seen("spin_late")
    );
    for p in &profiles {
        let service = p.param("service").unwrap_or_default();
        assert!(service.starts_with("sidecar"), "the exe name: {service}");
        assert_eq!(p.param("host"), Some("test-host"));
        assert_eq!(p.param("dc"), Some("test-dc"));
        assert_eq!(p.param("endpoint"), None, "no request attribution");
        assert_eq!(p.param("build"), None);
        assert_eq!(p.param("format"), Some("folded"));
        assert_eq!(p.param("sample_rate"), Some("99"));
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.content_encoding.as_deref(), Some("zstd"));
        assert!(p.key.is_some(), "spooled profiles carry their record id");
    }
    let leaves: Vec<String> = profiles
        .iter()
        .flat_map(|p| p.stacks())
        .filter_map(|(stack, _)| stack.rsplit(';').next().map(str::to_owned))
        .filter(|leaf| leaf.contains("spin_"))
        .collect();
    assert!(
        leaves.iter().any(|l| l.contains("profiling::spin_early")),
        "the hot function is the leaf, symbolised with its path: {leaves:?}"
    );

    child.kill();
    assert!(
        eventually(Duration::from_secs(30), || {
            sidecar.metrics().snapshot("", "").profiled_processes == 0
        })
        .await,
        "an exited process is dropped"
    );
    let m = sidecar.metrics().snapshot("", "");
    assert!(m.profile_samples > 0 && m.shipped_profiles > 0, "{m:?}");
    sidecar.shutdown().await.expect("shutdown");
}

/// `--profile-name` with `--profile-uid`: a process found by its executable's name and its
/// user, started after the sidecar, is sampled and shipped under that name; a sidecar looking
/// for the same name under another user, side by side, samples nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_found_by_name_is_sampled_and_shipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The test binary under a name of its own, so only the child matches (not this process).
    let exe = dir.path().join("pw-spin-by-name");
    let test_binary = std::env::current_exe().expect("test binary");
    if std::fs::hard_link(&test_binary, &exe).is_err() {
        std::fs::copy(&test_binary, &exe).expect("copy the test binary");
    }
    let uid = profwatch_agent::sampler::procfs::owner(std::process::id()).expect("own uid");
    let by_name = |url: &str, spool: &str, uid: u32| {
        let mut cfg = config(url, &dir.path().join(spool));
        cfg.profile.names = vec!["pw-spin-by-name".into()];
        cfg.profile.uids = vec![uid];
        cfg.profile.export_interval = Duration::from_secs(1);
        cfg.profile.name_rescan = Duration::from_millis(200);
        cfg.socket = dir.path().join(format!("{spool}.sock"));
        cfg
    };
    let mock = MockCollector::start().await;
    let other_mock = MockCollector::start().await;
    let other_user = Sidecar::start(by_name(&other_mock.url, "other", uid.wrapping_add(1)))
        .await
        .expect("a sidecar with nothing found yet starts");
    let sidecar = match Sidecar::start(by_name(&mock.url, "spool", uid)).await {
        Ok(s) => s,
        Err(e) if is_perf_unavailable(&e) => {
            profwatch_testkit::perf_unavailable(&e);
            return;
        }
        Err(e) => panic!("start: {e}"),
    };
    let _child = SpinChild::start_as(&exe).await;
    let found = eventually(Duration::from_secs(90), || {
        mock.profiles().iter().any(|p| {
            p.param("service") == Some("pw-spin-by-name")
                && p.stacks().iter().any(|(s, _)| s.contains("spin_early"))
        })
    })
    .await;
    assert!(found, "profiles: {:#?}", mock.profiles());
    assert!(
        mock.profiles()
            .iter()
            .all(|p| p.param("service") == Some("pw-spin-by-name")),
        "only the named process is sampled"
    );
    // Both rescan every 200 ms: the other sidecar had the same chances to find the child.
    assert_eq!(
        other_user.metrics().snapshot("", "").profiled_processes,
        0,
        "a process of another user is not sampled"
    );
    assert!(other_mock.profiles().is_empty());
    sidecar.shutdown().await.expect("shutdown");
    other_user.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pid_is_a_clear_startup_error_unless_another_target_remains() {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = free_pid();

    let mut cfg = config(&mock.url, dir.path());
    cfg.profile.pids = vec![missing];
    let err = Sidecar::start(cfg).await.expect_err("nothing to profile");
    assert_eq!(
        err.to_string(),
        format!("no process to profile: cannot profile pid {missing}: no such process")
    );

    // Another pid can be sampled (this test process): start, and sample it alone.
    let mut cfg = config(&mock.url, dir.path());
    cfg.profile.pids = vec![missing, std::process::id()];
    match Sidecar::start(cfg).await {
        Ok(sidecar) => {
            assert_eq!(sidecar.metrics().snapshot("", "").profiled_processes, 1);
            sidecar.shutdown().await.expect("shutdown");
        }
        Err(e) if is_perf_unavailable(&e) => {
            profwatch_testkit::perf_unavailable(&e);
        }
        Err(e) => panic!("start with one good pid: {e}"),
    }

    // A watched name may match later: no error either.
    let mut cfg = config(&mock.url, dir.path());
    cfg.profile.pids = vec![missing];
    cfg.profile.names = vec!["no-such-process-profwatch".into()];
    let sidecar = Sidecar::start(cfg).await.expect("a name is still watched");
    assert_eq!(sidecar.metrics().snapshot("", "").profiled_processes, 0);
    sidecar.shutdown().await.expect("shutdown");
}

/// The SDK sampler's hot function for the relay test.
#[inline(never)]
fn relay_hot(rounds: u64) -> u64 {
    let mut x: u64 = 0x1234_5678_9abc_def1 ^ rounds;
    let mut i = 0;
    while i < rounds {
        x ^= x << 7;
        x ^= x >> 9;
        i += 1;
    }
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_profiles_reach_the_collector_through_the_sidecar() {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    let mut agent_config = Config::new("relay-svc");
    agent_config.build = "7".into();
    agent_config.host = String::new();
    agent_config.export = ExportTarget::Sidecar {
        socket: sidecar.socket_path().to_owned(),
    };
    let mut sampler_config = SamplerConfig::default();
    sampler_config.export_interval = Duration::from_secs(60);
    let work = {
        let agent_config = agent_config.clone();
        tokio::task::spawn_blocking(move || {
            let agent = Agent::new(agent_config.clone()).expect("agent");
            let sampler = match Sampler::start(&agent_config, sampler_config) {
                Ok(s) => s,
                Err(SamplerError::Unavailable(e)) => return Err(e.to_string()),
                Err(e) => panic!("sampler: {e}"),
            };
            let until = Instant::now() + Duration::from_secs(3);
            let mut acc = 0;
            while Instant::now() < until {
                let _request = agent.scope("GET /relay");
                acc ^= relay_hot(1_000_000);
            }
            std::hint::black_box(acc);
            agent.flush().expect("agent flush");
            sampler.flush().expect("sampler flush");
            Ok(sampler.stats())
        })
    };
    let stats = match work.await.expect("work") {
        Ok(stats) => stats,
        Err(e) => {
            profwatch_testkit::perf_unavailable(&e);
            sidecar.shutdown().await.expect("shutdown");
            return;
        }
    };
    assert!(stats.profiles_exported > 0, "{stats:?}");
    let relayed = |p: &ProfileAttempt| {
        p.param("endpoint") == Some("GET /relay")
            && p.stacks().iter().any(|(s, _)| s.contains("relay_hot"))
    };
    assert!(
        eventually(Duration::from_secs(30), || mock
            .profiles()
            .iter()
            .any(relayed))
        .await,
        "{stats:?}; profiles: {:#?}",
        mock.profile_attempts()
    );
    let p = mock
        .profiles()
        .into_iter()
        .find(relayed)
        .expect("a relayed profile");
    assert_eq!(p.param("service"), Some("relay-svc"));
    assert_eq!(p.param("build"), Some("7"));
    assert_eq!(p.param("host"), Some("test-host"), "filled by the sidecar");
    assert_eq!(p.param("dc"), Some("test-dc"));
    assert_eq!(p.param("sample_rate"), Some("99"));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.content_encoding.as_deref(), Some("zstd"));
    let m = sidecar.metrics().snapshot("", "");
    assert!(m.received_profiles > 0 && m.spooled_profiles > 0, "{m:?}");
    sidecar.shutdown().await.expect("shutdown");
}

fn profile(service: &str, leaf: &str) -> ProfileBatch {
    ProfileBatch {
        ts: profwatch_model::timefmt::now_ns(),
        labels: SampleLabels {
            service: service.into(),
            endpoint: "GET /x".into(),
            ..SampleLabels::default()
        },
        samples: vec![StackSample {
            frames: vec!["main".into(), leaf.into()],
            samples: 5,
            cpu_ns: 0,
        }],
    }
}

/// Writes profiles with the SDK's sink from a blocking thread.
async fn relay(sidecar: &Sidecar, profiles: Vec<ProfileBatch>) {
    let path = sidecar.socket_path().to_owned();
    tokio::task::spawn_blocking(move || {
        use profwatch_agent::sampler::ProfileSink;
        SidecarSink::new(path).export(&profiles, 99)
    })
    .await
    .expect("sink task")
    .expect("written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_profiles_survive_an_outage_and_a_restart_with_their_keys() {
    let mock = MockCollector::start().await;
    mock.set_profile_status(503);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    relay(
        &sidecar,
        vec![profile("svc", "outage_leaf"), profile("svc2", "other_leaf")],
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || sidecar.spool().stats().records
            == 2)
        .await
    );
    assert!(
        eventually(Duration::from_secs(10), || !mock
            .profile_attempts()
            .is_empty())
        .await
    );
    sidecar.shutdown().await.expect("shutdown");
    let first_key = mock.profile_attempts()[0].key.clone();

    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("restart");
    assert_eq!(
        sidecar.spool().stats().records,
        2,
        "the spool survived the restart"
    );
    mock.set_profile_status(200);
    assert!(eventually(Duration::from_secs(10), || mock.profiles().len() == 2).await);
    let delivered = mock.profiles();
    assert_eq!(delivered[0].key, first_key, "re-sent with the same key");
    assert_eq!(delivered[0].param("service"), Some("svc"));
    assert_eq!(delivered[0].stacks(), [("main;outage_leaf".to_owned(), 5)]);
    assert_eq!(delivered[1].param("service"), Some("svc2"));
    assert!(
        eventually(Duration::from_secs(5), || sidecar.spool().stats().records
            == 0)
        .await
    );
    let m = sidecar.metrics().snapshot("", "");
    assert_eq!((m.shipped_profiles, m.shipped_events), (2, 0));
    assert_eq!(
        sidecar
            .metrics()
            .profiles_dropped_count(DropReason::CollectorRejected),
        0
    );
    sidecar.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_the_collector_refuses_is_dead_lettered_and_counted_alone() {
    let mock = MockCollector::start().await;
    mock.set_profile_status(400);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    relay(&sidecar, vec![profile("svc", "refused_leaf")]).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            sidecar.metrics().snapshot("", "").dead_lettered_profiles == 1
        })
        .await
    );
    assert_eq!(
        sidecar
            .metrics()
            .profiles_dropped_count(DropReason::CollectorRejected),
        0,
        "kept in the dead-letter folder, not dropped"
    );
    assert_eq!(
        sidecar
            .metrics()
            .dropped_count(DropReason::CollectorRejected),
        0
    );
    send_unix(&sidecar, line("svc", "after").into_bytes()).await;
    assert!(eventually(Duration::from_secs(10), || mock.stored().len() == 1).await);
    sidecar.shutdown().await.expect("shutdown");
}
