//! Whole call chains through `--profile-pid` without frame pointers: a C program built with
//! `gcc -O2 -fomit-frame-pointer` and a Rust program built with `-C force-frame-pointers=no`
//! (its chain through a generic function and an inlined one), each profiled by the real
//! sidecar into a mock collector; and a stack deeper than the copied bytes, marked truncated.
//!
//! gcc and rustc are needed (scripts/test.sh installs gcc); perf sampling may be skipped only
//! through `PROFWATCH_SKIP_PERF=1` (a recorded skip).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use profwatch_sidecar::{Sidecar, SidecarError, StatusSnapshot};

use crate::support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn build_c(dir: &Path) -> PathBuf {
    let exe = dir.join("chain-c");
    let src = format!("{FIXTURES}/chain.c");
    build(
        "gcc",
        &[
            "-O2",
            "-fomit-frame-pointer",
            "-g",
            "-o",
            exe.to_str().expect("utf-8 path"),
            &src,
        ],
    );
    exe
}

fn build_rust(dir: &Path) -> PathBuf {
    let exe = dir.join("chain-rs");
    let src = format!("{FIXTURES}/chain.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    build(
        &rustc,
        &[
            "--edition=2021",
            "-C",
            "opt-level=2",
            "-C",
            "force-frame-pointers=no",
            "-C",
            "debuginfo=line-tables-only",
            "-o",
            exe.to_str().expect("utf-8 path"),
            &src,
        ],
    );
    exe
}

/// A started fixture program, killed and reaped when dropped.
struct Program(Child);

impl Program {
    async fn start(exe: &Path, args: &[&str]) -> Program {
        let mut child = Command::new(exe)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the program");
        let stdout = child.stdout.take().expect("stdout");
        let ready = tokio::task::spawn_blocking(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|l| l == "ready")
        });
        let ready = tokio::time::timeout(Duration::from_secs(60), ready).await;
        assert!(matches!(ready, Ok(Ok(true))), "the program did not start");
        Program(child)
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Profiles `pid` with the sidecar until `enough` holds for the shipped stacks (folded
/// lines and their samples); the stacks and the sidecar's metrics then, or `None` when perf
/// sampling is unavailable and skipping was asked.
async fn profile(
    pid: u32,
    stack_bytes: u32,
    enough: impl Fn(&[(String, u64)]) -> bool,
) -> Option<(Vec<(String, u64)>, StatusSnapshot)> {
    let mock = MockCollector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&mock.url, dir.path());
    cfg.profile.pids = vec![pid];
    cfg.profile.export_interval = Duration::from_secs(1);
    cfg.profile.stack_bytes = stack_bytes;
    let sidecar = match Sidecar::start(cfg).await {
        Ok(s) => s,
        Err(e) if is_perf_unavailable(&e) => {
            profwatch_testkit::perf_unavailable(&e);
            return None;
        }
        Err(e) => panic!("start: {e}"),
    };
    let stacks =
        || -> Vec<(String, u64)> { mock.profiles().iter().flat_map(|p| p.stacks()).collect() };
    eventually(Duration::from_secs(120), || enough(&stacks())).await;
    let metrics = sidecar.metrics().snapshot("", "");
    sidecar.shutdown().await.expect("shutdown");
    Some((stacks(), metrics))
}

fn is_perf_unavailable(e: &SidecarError) -> bool {
    let text = e.to_string();
    text.contains("perf_event_open") && !text.contains("no such process")
}

/// Samples of the stacks whose leaf frame contains `leaf`, and of those whose frames hold
/// `chain` (frame names containing each part, consecutive, in this order).
fn share(stacks: &[(String, u64)], leaf: &str, chain: &[&str]) -> (u64, u64) {
    let mut total = 0;
    let mut whole = 0;
    for (stack, n) in stacks {
        let frames: Vec<&str> = stack.split(';').collect();
        if !frames.last().is_some_and(|f| f.contains(leaf)) {
            continue;
        }
        total += n;
        let found = frames.windows(chain.len()).any(|w| {
            w.iter()
                .zip(chain)
                .all(|(frame, part)| frame_is(frame, part))
        });
        if found {
            whole += n;
        }
    }
    (total, whole)
}

/// Whether `frame` is function `name` (the whole name, or its last path segment, with or
/// without generic arguments).
fn frame_is(frame: &str, name: &str) -> bool {
    let base = frame.split('<').next().unwrap_or(frame);
    base == name || base.ends_with(&format!("::{name}"))
}

fn dump(stacks: &[(String, u64)]) -> String {
    let mut sorted: Vec<_> = stacks.to_vec();
    sorted.sort_by_key(|l| std::cmp::Reverse(l.1));
    sorted
        .iter()
        .take(15)
        .map(|(s, n)| format!("{n:6} {s}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_program_without_frame_pointers_unwinds_to_main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = build_c(dir.path());
    let program = Program::start(&exe, &[]).await;
    let chain = ["main", "outer_fn", "middle_fn", "inner_hot_fn"];
    let Some((stacks, metrics)) = profile(program.0.id(), 16 * 1024, |s| {
        share(s, "inner_hot_fn", &chain).0 >= 200
    })
    .await
    else {
        return;
    };
    let (total, whole) = share(&stacks, "inner_hot_fn", &chain);
    eprintln!(
        "C chain: {whole} of {total} samples in inner_hot_fn unwound to main; unwind tables \
         held: {} bytes",
        metrics.profile_unwind_info_bytes
    );
    assert!(metrics.profile_unwind_info_bytes > 0, "{metrics:?}");
    assert!(total >= 200, "too few samples: {total}\n{}", dump(&stacks));
    assert!(
        whole * 10 >= total * 9,
        "{whole} of {total} samples have the whole chain main;outer_fn;middle_fn;inner_hot_fn:\n{}",
        dump(&stacks)
    );
    assert!(
        !stacks
            .iter()
            .any(|(s, _)| s.contains("[truncated]") && s.contains("outer_fn")),
        "a shallow stack is never marked truncated:\n{}",
        dump(&stacks)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_release_binary_unwinds_through_generic_and_inlined_frames() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = build_rust(dir.path());
    let program = Program::start(&exe, &[]).await;
    let chain = ["main", "outer", "generic", "inlined_step", "hot"];
    let Some((stacks, _)) = profile(program.0.id(), 16 * 1024, |s| {
        share(s, "hot", &chain).0 >= 200
    })
    .await
    else {
        return;
    };
    let (total, whole) = share(&stacks, "hot", &chain);
    eprintln!("Rust chain: {whole} of {total} samples in hot unwound to main");
    assert!(total >= 200, "too few samples: {total}\n{}", dump(&stacks));
    assert!(
        whole * 10 >= total * 9,
        "{whole} of {total} samples have main;outer;generic;inlined_step;hot:\n{}",
        dump(&stacks)
    );
    assert!(
        stacks
            .iter()
            .any(|(s, _)| s.contains(";chain::generic<u64>;")),
        "the generic function is named with its path and type:\n{}",
        dump(&stacks)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_deeper_than_the_copy_is_marked_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = build_c(dir.path());
    let program = Program::start(&exe, &["deep"]).await;
    // 80 frames of 2 KiB each: more than 160 KiB, against a 16 KiB copy.
    let Some((stacks, metrics)) = profile(program.0.id(), 16 * 1024, |s| {
        share(s, "inner_hot_fn", &["recurse", "inner_hot_fn"]).0 >= 100
    })
    .await
    else {
        return;
    };
    let (total, marked) = share(&stacks, "inner_hot_fn", &["[truncated]", "recurse"]);
    eprintln!("deep stacks: {marked} of {total} samples in inner_hot_fn marked [truncated]");
    // Counted when read: all of them, but for a few samples of the program's start.
    let (read, truncated) = (metrics.profile_samples, metrics.profile_samples_truncated);
    assert!(
        truncated > 0 && truncated * 10 >= read * 9,
        "truncated samples are counted: {truncated} of {read}"
    );
    assert!(total >= 100, "too few samples: {total}\n{}", dump(&stacks));
    assert_eq!(
        marked,
        total,
        "every deep stack starts at [truncated], above the recursion:\n{}",
        dump(&stacks)
    );
    assert!(
        !stacks
            .iter()
            .any(|(s, _)| s.contains("inner_hot_fn") && s.contains(";main;")),
        "main is beyond the copy: a stack that reaches it was not really cut:\n{}",
        dump(&stacks)
    );
}
