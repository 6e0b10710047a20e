//! Behaviour particular to the embedded store: flushing, compaction, crash leftovers, retention,
//! exclusive ownership of the data dir.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use profwatch_model::profile::{ProfileBatch, ProfileQuery, SampleLabels, StackSample};
use profwatch_model::query::{EndpointsQuery, GroupBy, TimeRange};
use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::{RequestEvent, Tenant};
use profwatch_store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_store::{Store, StoreError};

fn cfg(dir: &Path) -> EmbeddedConfig {
    let mut c = EmbeddedConfig::new(dir);
    c.compact_rows = 1_000_000;
    c
}

fn events(n: usize, age_s: i64, build: &str) -> Vec<RequestEvent> {
    let now = now_ns();
    (0..n)
        .map(|i| RequestEvent {
            ts: now - age_s * NANOS_PER_SEC - i as i64,
            service: "svc".into(),
            endpoint: format!("GET /{}", i % 4),
            build: build.into(),
            dc: "dc".into(),
            host: "h".into(),
            status: 200,
            cpu_ns: 1000 + i as u64,
            instructions: (i % 2 == 0).then_some(5000 + i as u64),
            wall_ns: 1,
            weight: 1.0,
            labels: Default::default(),
        })
        .collect()
}

fn tenant() -> Tenant {
    Tenant("t".into())
}

fn profile(build: &str) -> Vec<ProfileBatch> {
    vec![ProfileBatch {
        ts: now_ns() - 60 * NANOS_PER_SEC,
        labels: SampleLabels {
            service: "svc".into(),
            endpoint: "GET /0".into(),
            build: build.into(),
            ..Default::default()
        },
        samples: (0..20u64)
            .map(|k| StackSample {
                frames: vec!["main".into(), format!("f{}", k % 5), format!("g{k}")],
                samples: k + 1,
                cpu_ns: 0,
            })
            .collect(),
    }]
}

async fn answer(store: &EmbeddedStore) -> String {
    let pq = ProfileQuery {
        tenant: tenant(),
        service: "svc".into(),
        range: TimeRange {
            from: now_ns() - 3 * 86_400 * NANOS_PER_SEC,
            to: now_ns() + NANOS_PER_SEC,
        },
        filters: vec![],
    };
    let p = store.profile(&pq).await.expect("profile");
    let stacks: Vec<String> = p
        .rows
        .iter()
        .map(|r| format!("{}|{}|{}", r.labels.build, r.frames.join(";"), r.samples))
        .collect();
    events_answer(store).await + &stacks.join(",")
}

async fn events_answer(store: &EmbeddedStore) -> String {
    let q = EndpointsQuery {
        tenant: tenant(),
        service: "svc".into(),
        range: TimeRange {
            from: now_ns() - 3 * 86_400 * NANOS_PER_SEC,
            to: now_ns() + NANOS_PER_SEC,
        },
        group_by: GroupBy::Build,
    };
    serde_json::to_string(&store.endpoints(&q).await.expect("query")).expect("json")
}

/// The data files of the segments folder, checking that each has its `.crc32` checksum beside
/// it and that no checksum is left without its file.
fn segment_files(dir: &Path) -> Vec<String> {
    let all: Vec<String> = std::fs::read_dir(dir.join("segments"))
        .expect("segments")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let (sums, mut v): (Vec<String>, Vec<String>) =
        all.into_iter().partition(|n| n.ends_with(".crc32"));
    let mut want: Vec<String> = v.iter().map(|n| format!("{n}.crc32")).collect();
    want.sort();
    let mut sums = sums;
    sums.sort();
    assert_eq!(sums, want, "one checksum per segment file");
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_segments_and_keeps_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
    for b in 0..6 {
        store
            .write(&tenant(), events(1000, 60, &format!("b{b}")))
            .await
            .expect("write");
        if b % 2 == 0 {
            store
                .write_profiles(&tenant(), profile(&format!("b{b}")))
                .await
                .expect("write profiles");
        }
        store.flush().await.expect("flush");
    }
    assert_eq!(
        segment_files(dir.path()).len(),
        9,
        "6 event segments and 3 profile segments"
    );
    let before = answer(&store).await;
    assert!(before.contains("b4|main;f0;g0|1"), "{before}");
    store.maintain().expect("compact");
    let after_files = segment_files(dir.path());
    assert_eq!(
        after_files,
        [
            "prof-000000000001-000000000006.parquet",
            "seg-000000000001-000000000006.parquet"
        ]
    );
    assert_eq!(answer(&store).await, before);
    store.shutdown().await.expect("shutdown");
    let reopened = EmbeddedStore::open(cfg(dir.path())).expect("reopen");
    assert_eq!(answer(&reopened).await, before);
}

/// A crash between writing a compacted segment and deleting its inputs leaves both; on open
/// the inputs are recognised as covered and removed, so nothing is counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leftover_compaction_inputs_are_removed_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let aside = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
    for b in 0..4 {
        store
            .write(&tenant(), events(500, 60, &format!("b{b}")))
            .await
            .expect("write");
        store.flush().await.expect("flush");
    }
    // The inputs as a crash after the compaction's commit leaves them: data files and checksums.
    let inputs: Vec<String> = segment_files(dir.path())
        .into_iter()
        .flat_map(|f| [format!("{f}.crc32"), f])
        .collect();
    for f in &inputs {
        std::fs::copy(dir.path().join("segments").join(f), aside.path().join(f)).expect("copy");
    }
    let before = answer(&store).await;
    store.maintain().expect("compact");
    store.shutdown().await.expect("shutdown");
    drop(store);
    for f in &inputs {
        std::fs::copy(aside.path().join(f), dir.path().join("segments").join(f)).expect("restore");
    }
    assert_eq!(segment_files(dir.path()).len(), 5);
    let reopened = EmbeddedStore::open(cfg(dir.path())).expect("reopen");
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(answer(&reopened).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_old_segments_and_hides_old_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = cfg(dir.path());
    c.retention = Duration::from_secs(86_400);
    let store = EmbeddedStore::open(c).expect("open");
    store
        .write(&tenant(), events(100, 2 * 86_400, "old"))
        .await
        .expect("write");
    store.flush().await.expect("flush");
    store
        .write(&tenant(), events(100, 60, "new"))
        .await
        .expect("write");
    store.flush().await.expect("flush");
    assert_eq!(segment_files(dir.path()).len(), 2);
    let a = answer(&store).await;
    assert!(
        !a.contains("\"old\""),
        "rows past retention are never answered: {a}"
    );
    assert!(a.contains("\"new\""));
    store.maintain().expect("retention");
    assert_eq!(
        segment_files(dir.path()),
        ["seg-000000000002-000000000002.parquet"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_has_one_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _first = EmbeddedStore::open(cfg(dir.path())).expect("open");
    match EmbeddedStore::open(cfg(dir.path())) {
        Err(StoreError::Unavailable(msg)) => assert!(msg.contains("in use"), "{msg}"),
        other => panic!("a second owner must be refused, got {other:?}"),
    }
}

/// Writes after shutdown are refused, and a WAL left by a crash is replayed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unflushed_wal_is_replayed_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
    store
        .write(&tenant(), events(1234, 60, "b"))
        .await
        .expect("write");
    let before = answer(&store).await;
    // Simulate a crash: leak the store so nothing is flushed or cleaned up, then drop the lock
    // by copying the data dir.
    let copy = tempfile::tempdir().expect("tempdir");
    for sub in ["wal", "segments"] {
        std::fs::create_dir_all(copy.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(dir.path().join(sub)).expect("list") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), copy.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    store.shutdown().await.expect("shutdown");
    assert!(matches!(
        store.write(&tenant(), events(1, 60, "b")).await,
        Err(StoreError::Closed)
    ));
    let recovered = EmbeddedStore::open(cfg(copy.path())).expect("recover");
    assert_eq!(answer(&recovered).await, before);
    recovered.shutdown().await.expect("shutdown");
    drop(recovered);
    let again = EmbeddedStore::open(cfg(copy.path())).expect("reopen");
    assert_eq!(
        answer(&again).await,
        before,
        "replayed rows must not be counted twice"
    );
}

/// Keys are remembered across a flush and a restart (they travel in the WAL and the segment
/// footer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_survive_flush_and_restart() {
    use profwatch_store::Written;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
    assert_eq!(
        store
            .write_once(&tenant(), "k1", events(10, 60, "b"))
            .await
            .expect("write"),
        Written::Stored
    );
    store.flush().await.expect("flush");
    assert_eq!(
        store
            .write_once(&tenant(), "k2", events(10, 60, "b"))
            .await
            .expect("write"),
        Written::Stored
    );
    store.shutdown().await.expect("shutdown");
    drop(store);
    let reopened = EmbeddedStore::open(cfg(dir.path())).expect("reopen");
    for k in ["k1", "k2"] {
        assert_eq!(
            reopened
                .write_once(&tenant(), k, events(10, 60, "b"))
                .await
                .expect("write"),
            Written::Duplicate,
            "{k}"
        );
    }
    assert_eq!(
        reopened
            .write_once(&tenant(), "k3", events(10, 60, "b"))
            .await
            .expect("write"),
        Written::Stored
    );
}

/// Regression test: a record whose interval could not be computed was stored with NaN bounds
/// (`null` in its JSON file), and the store then refused to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_without_an_interval_survives_a_restart() {
    use profwatch_model::regression::{RegressionRecord, RegressionState};
    let dir = tempfile::tempdir().expect("tempdir");
    let record = RegressionRecord {
        id: "0123456789abcdef0123456789abcdef".into(),
        tenant: "t".into(),
        service: "svc".into(),
        endpoint: "GET /0".into(),
        metric: "cpu_ns".into(),
        baseline: "1".into(),
        candidate: "2".into(),
        effect: 1.2,
        effect_low: None,
        effect_high: None,
        ratio_of_means: None,
        p_value: 0.001,
        q_value: 0.002,
        baseline_median: 1.0,
        candidate_median: 1.2,
        baseline_requests: 1000,
        candidate_requests: 1000,
        culprits: Vec::new(),
        first_seen: 1,
        last_seen: 2,
        state: RegressionState::Open,
        updated: 2,
        incident: None,
        changed_at: None,
        resolution: None,
        passes_gone: 0,
        kind: profwatch_model::regression::RegressionKind::Cpu,
        function: None,
    };
    {
        let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
        store.put_regression(&record).await.expect("put");
        store.shutdown().await.expect("shutdown");
    }
    let store = EmbeddedStore::open(cfg(dir.path())).expect("reopen");
    assert_eq!(
        store.regressions(&tenant()).await.expect("list"),
        vec![record]
    );
    store.shutdown().await.expect("shutdown");
}

/// A bit flipped anywhere in a segment (data pages or footer) is caught at open: the segment is
/// moved to quarantine/, answers leave its rows out and carry a warning, and the other
/// segments answer as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_in_a_segment_quarantines_it_and_the_rest_answers() {
    let positions = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999];
    for (k, at) in positions.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
            store
                .write(&tenant(), events(300, 60, "good"))
                .await
                .expect("write");
            store.flush().await.expect("flush");
            store
                .write(&tenant(), events(200, 60, "bad"))
                .await
                .expect("write");
            store.flush().await.expect("flush");
            store.shutdown().await.expect("shutdown");
        }
        let mut files = segment_files(dir.path());
        files.retain(|f| f.starts_with("seg-"));
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        let victim = dir.path().join("segments").join(&files[1]);
        let mut bytes = std::fs::read(&victim).expect("read");
        let i = ((bytes.len() - 1) as f64 * at) as usize;
        bytes[i] ^= 1 << (k % 8);
        std::fs::write(&victim, &bytes).expect("write");

        let store = EmbeddedStore::open(cfg(dir.path())).expect("opens despite the damage");
        let warnings = store.warnings();
        assert_eq!(warnings.len(), 1, "flip at {i}: {warnings:?}");
        assert!(warnings[0].contains(&files[1]), "{warnings:?}");
        assert!(dir.path().join("quarantine").join(&files[1]).exists());
        let answer = events_answer(&store).await;
        assert!(answer.contains("\"good\""), "{answer}");
        assert!(!answer.contains("\"bad\""), "flip at {i}: {answer}");
        store.shutdown().await.expect("shutdown");
    }
}

/// Regression test: a segment holding only stack samples (no events) was dropped by the first
/// retention pass, because its events' time bounds were empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_of_profiles_only_survives_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
    store
        .write_profiles(&tenant(), profile("only"))
        .await
        .expect("write");
    store.flush().await.expect("flush");
    let before = answer(&store).await;
    assert!(before.contains("only|"), "{before}");
    store.maintain().expect("retention and compaction");
    assert_eq!(answer(&store).await, before);
    store.shutdown().await.expect("shutdown");
}

/// A data directory whose segments were written under other stack ids (before the directory
/// had its `stack.key`, or under a lost one) opens with a new key; its stacks and the ones
/// written after keep their frames and add up, through a compaction and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacks_written_under_another_stack_key_keep_their_frames_and_add_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(cfg(dir.path())).expect("open");
    store
        .write_profiles(&tenant(), profile("same"))
        .await
        .expect("write profiles");
    store.flush().await.expect("flush");
    store.shutdown().await.expect("shutdown");
    let key = dir.path().join("stack.key");
    let old_key = std::fs::read(&key).expect("a key was made");
    std::fs::remove_file(&key).expect("remove the key");

    let store = EmbeddedStore::open(cfg(dir.path())).expect("open with a new key");
    assert_ne!(std::fs::read(&key).expect("new key"), old_key);
    store
        .write_profiles(&tenant(), profile("same"))
        .await
        .expect("write profiles");
    store.flush().await.expect("flush");
    // Each stack twice (once per key), ordered by frames.
    let want: Vec<String> = (0..20u64)
        .map(|k| (format!("main;f{};g{k}", k % 5), 2 * (k + 1)))
        .collect::<BTreeMap<_, _>>()
        .into_iter()
        .map(|(f, n)| format!("{f}|{n}"))
        .collect();
    let totals = |p: profwatch_model::profile::StackProfile| {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for r in p.rows {
            assert_eq!(r.labels.build, "same");
            *by.entry(r.frames.join(";")).or_default() += r.samples;
        }
        by.into_iter()
            .map(|(f, n)| format!("{f}|{n}"))
            .collect::<Vec<_>>()
    };
    let pq = ProfileQuery {
        tenant: tenant(),
        service: "svc".into(),
        range: TimeRange {
            from: now_ns() - 86_400 * NANOS_PER_SEC,
            to: now_ns() + NANOS_PER_SEC,
        },
        filters: vec![],
    };
    assert_eq!(totals(store.profile(&pq).await.expect("profile")), want);
    store.maintain().expect("compact");
    assert_eq!(totals(store.profile(&pq).await.expect("profile")), want);
    store.shutdown().await.expect("shutdown");
    let reopened = EmbeddedStore::open(cfg(dir.path())).expect("reopen");
    assert_eq!(totals(reopened.profile(&pq).await.expect("profile")), want);
}

/// Upgrade in place: a data directory from before keyed stack ids (`tests/fixtures/
/// embedded-fnv-stacks`: 64-bit FNV ids, no `stack_hi` column, no `stack.key`) opens, gets its
/// key, answers each tenant with its own frames, takes the same stacks again under new ids,
/// and adds them up through a compaction and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_from_before_keyed_stack_ids_opens_and_keeps_its_stacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/embedded-fnv-stacks");
    std::fs::create_dir(dir.path().join("segments")).expect("segments");
    for e in std::fs::read_dir(fixture.join("segments")).expect("fixture") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dir.path().join("segments").join(e.file_name())).expect("copy");
    }
    let open = || {
        let mut c = cfg(dir.path());
        c.retention = Duration::from_secs(36_500 * 86_400);
        EmbeddedStore::open(c).expect("open")
    };
    // 2026-12-01T00:00:00Z, as in the fixture.
    let ts = 1_796_083_200 * NANOS_PER_SEC;
    let query = |t: &str| ProfileQuery {
        tenant: Tenant(t.into()),
        service: "svc".into(),
        range: TimeRange {
            from: ts - NANOS_PER_SEC,
            to: ts + NANOS_PER_SEC,
        },
        filters: vec![],
    };
    let totals = |p: profwatch_model::profile::StackProfile| {
        let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for r in p.rows {
            let e = by.entry(r.frames.join(";")).or_default();
            e.0 += r.samples;
            e.1 += r.cpu_ns;
        }
        by
    };
    let want = |leaf: &str, times: u64| {
        (0..5u64)
            .map(|k| {
                (
                    format!("main;f{k};{leaf}"),
                    (times * (k + 1), times * 10 * (k + 1)),
                )
            })
            .collect::<BTreeMap<_, _>>()
    };

    let store = open();
    assert!(dir.path().join("stack.key").exists(), "the key is made");
    assert_eq!(
        totals(store.profile(&query("a")).await.expect("a")),
        want("a_private", 1)
    );
    assert_eq!(
        totals(store.profile(&query("b")).await.expect("b")),
        want("b_private", 1)
    );
    let again = vec![ProfileBatch {
        ts,
        labels: SampleLabels {
            service: "svc".into(),
            endpoint: "GET /0".into(),
            build: "old".into(),
            ..Default::default()
        },
        samples: (0..5u64)
            .map(|k| StackSample {
                frames: vec!["main".into(), format!("f{k}"), "a_private".into()],
                samples: k + 1,
                cpu_ns: 10 * (k + 1),
            })
            .collect(),
    }];
    store
        .write_profiles(&Tenant("a".into()), again)
        .await
        .expect("write");
    store.flush().await.expect("flush");
    store.maintain().expect("compact");
    assert_eq!(
        totals(store.profile(&query("a")).await.expect("a")),
        want("a_private", 2)
    );
    store.shutdown().await.expect("shutdown");
    let store = open();
    assert_eq!(
        totals(store.profile(&query("a")).await.expect("a")),
        want("a_private", 2)
    );
    assert_eq!(
        totals(store.profile(&query("b")).await.expect("b")),
        want("b_private", 1)
    );
}
