//! Profiles through the sidecar: the SDK's profiles relayed through the socket and the spool.

use std::time::{Duration, Instant};

use profwatch_agent::sampler::{ProfileBatch, SidecarSink};
use profwatch_agent::sidecar::{DropReason, Sidecar};
use profwatch_agent::{Agent, Config, ExportTarget, Sampler, SamplerConfig, SamplerError};
use profwatch_model::profile::{SampleLabels, StackSample};

use crate::support::*;

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
            eprintln!("SKIPPED: perf sampling is not available here: {e}");
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
    assert!(eventually(Duration::from_secs(10), || sidecar.spool().stats().0 == 2).await);
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
        sidecar.spool().stats().0,
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
    assert!(eventually(Duration::from_secs(5), || sidecar.spool().stats().0 == 0).await);
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
async fn a_profile_the_collector_refuses_is_dropped_and_counted_alone() {
    let mock = MockCollector::start().await;
    mock.set_profile_status(400);
    let dir = tempfile::tempdir().expect("tempdir");
    let sidecar = Sidecar::start(config(&mock.url, dir.path()))
        .await
        .expect("start");
    relay(&sidecar, vec![profile("svc", "refused_leaf")]).await;
    assert!(
        eventually(Duration::from_secs(10), || {
            sidecar
                .metrics()
                .profiles_dropped_count(DropReason::CollectorRejected)
                == 1
        })
        .await
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
