//! Test support shared by every profwatch test suite.
//!
//! A test that cannot run here never passes quietly. It either fails with a message that says
//! how to make it run, or, when the environment says to skip that kind of test, it records the
//! skip with [`skip`]: one line in the file named by `PROFWATCH_SKIP_LOG` (the test command sets
//! it and prints the tally at the end) and one on stderr.
//!
//! The rules, the same in every crate:
//! - ClickHouse tests need `PROFWATCH_TEST_CLICKHOUSE_URL`; without it they fail unless
//!   `PROFWATCH_SKIP_CLICKHOUSE=1`. An explicit URL always wins over the skip variable.
//! - Perf-sampling tests fail when a perf event cannot be opened, unless `PROFWATCH_SKIP_PERF=1`.
//!
//! [`clickhouse_cluster`] starts a throwaway 2-shard ClickHouse cluster for the cluster tests;
//! [`alloc`] measures a decoder's peak heap use for the property tests.

pub mod alloc;
pub mod bench;
pub mod clickhouse_cluster;

use std::io::Write;

/// The variable naming the file that collects skips (one `reason<TAB>test` line each).
pub const SKIP_LOG_VAR: &str = "PROFWATCH_SKIP_LOG";
/// Set to `1` to skip the ClickHouse tests when no URL is given.
pub const SKIP_CLICKHOUSE_VAR: &str = "PROFWATCH_SKIP_CLICKHOUSE";
/// The URL of the ClickHouse server the tests use.
pub const CLICKHOUSE_URL_VAR: &str = "PROFWATCH_TEST_CLICKHOUSE_URL";
/// Set to `1` to skip the tests that need perf sampling when it is unavailable.
pub const SKIP_PERF_VAR: &str = "PROFWATCH_SKIP_PERF";

/// Records that the running test skips (all or part of its checks) for `reason`.
///
/// `reason` is a short, stable phrase (it is what the tally groups by); `detail` says why.
pub fn skip(reason: &str, detail: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("<unnamed thread>")
        .to_owned();
    eprintln!("SKIPPED ({reason}): {test}: {detail}");
    let Some(path) = std::env::var_os(SKIP_LOG_VAR) else {
        return;
    };
    // One write of one line per skip, in append mode: lines from parallel tests do not mix.
    let line = format!("{reason}\t{test}\n");
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        panic!("cannot record a skip in {}: {e}", path.to_string_lossy());
    }
}

fn flag(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// The ClickHouse URL for tests, or `None` (a recorded skip) when told to skip ClickHouse.
///
/// # Panics
/// When no URL is set and skipping was not asked for: the test cannot run and must not pass.
pub fn clickhouse_url() -> Option<String> {
    match std::env::var(CLICKHOUSE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ if flag(SKIP_CLICKHOUSE_VAR) => {
            skip(
                "ClickHouse",
                &format!("{CLICKHOUSE_URL_VAR} is not set and {SKIP_CLICKHOUSE_VAR}=1"),
            );
            None
        }
        _ => panic!(
            "{CLICKHOUSE_URL_VAR} is not set. Start a throwaway ClickHouse with \
             `scripts/clickhouse.sh start` and run the tests with \
             {CLICKHOUSE_URL_VAR}=$(scripts/clickhouse.sh url), or set {SKIP_CLICKHOUSE_VAR}=1 \
             to skip the ClickHouse tests (scripts/test.sh does all of this)."
        ),
    }
}

/// Decides what a test does when perf sampling could not be started: records a skip (and
/// returns) when `PROFWATCH_SKIP_PERF=1`, else fails the test with the cause.
///
/// # Panics
/// When skipping was not asked for.
pub fn perf_unavailable(error: &dyn std::fmt::Display) {
    if flag(SKIP_PERF_VAR) {
        skip("perf sampling", &format!("{error} ({SKIP_PERF_VAR}=1)"));
        return;
    }
    panic!(
        "perf sampling could not be started: {error}. If this machine cannot sample \
         (perf_event_paranoid, a container without perf events), set {SKIP_PERF_VAR}=1 to skip \
         these tests explicitly."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_one_line_in_the_log() {
        let dir = std::env::temp_dir().join(format!("pw-testkit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("skips");
        std::env::set_var(SKIP_LOG_VAR, &log);
        skip("something", "for a reason");
        skip("something", "again");
        let text = std::fs::read_to_string(&log).expect("log");
        std::env::remove_var(SKIP_LOG_VAR);
        let _ = std::fs::remove_dir_all(&dir);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines.iter().all(|l| l.starts_with("something\t")), "{text}");
        assert!(lines[0].contains("a_skip_is_one_line_in_the_log"), "{text}");
    }
}
