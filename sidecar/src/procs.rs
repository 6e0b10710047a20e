//! Local processes chosen by name (`--profile-name`, `--memory-name`), and a process's name as
//! a `service` label: the one rule the profiler and the memory watcher share.
//!
//! Invariant: a process matches only if its comm or its executable's file name is one of the
//! names *and* it belongs to one of the uids; kernel threads (no executable) never match.

use profwatch_agent::sampler::procfs::{self, ProcInfo};
use profwatch_model::Limits;

/// Whether process `pid` (whose `/proc` entry said `info`) is one of `names` and belongs to
/// one of `uids`.
pub(crate) fn matches(pid: u32, info: &ProcInfo, names: &[String], uids: &[u32]) -> bool {
    // Kernel threads have no executable and no user memory or stacks.
    let Some(exe) = procfs::exe_name(pid) else {
        return false;
    };
    names.iter().any(|n| *n == info.comm || *n == exe)
        && procfs::owner(pid).is_some_and(|uid| uids.contains(&uid))
}

/// Process `pid`'s executable file name, else its comm; empty when it is gone.
pub(crate) fn name(pid: u32) -> String {
    procfs::exe_name(pid)
        .or_else(|| procfs::info(pid).map(|i| i.comm))
        .unwrap_or_default()
}

/// A process name as a `service` label: printable, within the collector's length limit.
pub(crate) fn service_name(name: &str) -> String {
    let max = Limits::default().max_name_len;
    let mut out: String = name
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if out.len() > max {
        let mut end = max;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    if out.is_empty() {
        "unknown".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_valid_labels() {
        assert_eq!(service_name("postgres"), "postgres");
        assert_eq!(service_name("a\tb"), "a?b");
        assert_eq!(service_name(""), "unknown");
        assert_eq!(service_name(&"é".repeat(100)).len(), 128);
    }

    #[test]
    fn this_process_matches_its_name_and_uid_only() {
        let pid = std::process::id();
        let info = procfs::info(pid).expect("this process");
        let me = name(pid);
        let uid = procfs::owner(pid).expect("owner");
        assert!(matches(pid, &info, std::slice::from_ref(&me), &[uid]));
        assert!(!matches(pid, &info, &[me], &[uid.wrapping_add(1)]));
        assert!(!matches(pid, &info, &["no-such-name".into()], &[uid]));
    }
}
