//! What the sampling of other processes reads from `/proc`: a process's identity (pid plus
//! start time, so a reused pid is told apart), its state, names and threads.
//!
//! Invariants: nothing here panics on odd `/proc` content (a `comm` with spaces or parentheses,
//! a vanished process, a thread list that changes while it is read); a process that is gone or
//! a zombie reads as `None`.

use std::io;
use std::path::Path;

/// One process as `/proc/<pid>/stat` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    /// Clock ticks after boot when it started: (pid, start time) names one process for good.
    pub start_time: u64,
    /// `/proc/<pid>/comm`: at most 15 bytes.
    pub comm: String,
}

/// Reads `/proc/<pid>/stat`; `None` when the process does not exist, is a zombie or is dead.
pub fn info(pid: u32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &stat)
}

/// `pid (comm) state ppid ... starttime ...`: comm may hold spaces and `)`, so the fields
/// are counted from the last `)`.
fn parse_stat(pid: u32, stat: &str) -> Option<ProcInfo> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 1..)?.split_ascii_whitespace();
    let state = fields.next()?;
    if matches!(state, "Z" | "X" | "x") {
        return None;
    }
    // After the state come fields 4..; `starttime` is field 22, the 19th after the state.
    let start_time = fields.nth(18)?.parse().ok()?;
    Some(ProcInfo {
        pid,
        start_time,
        comm,
    })
}

/// The file name of `/proc/<pid>/exe`, without the ` (deleted)` the kernel appends when the
/// binary was replaced; `None` for kernel threads or when it cannot be read.
pub fn exe_name(pid: u32) -> Option<String> {
    let target = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let name = target.file_name()?.to_string_lossy().into_owned();
    let name = name.strip_suffix(" (deleted)").unwrap_or(&name).to_owned();
    (!name.is_empty()).then_some(name)
}

/// The user id that owns process `pid` (of `/proc/<pid>`: its effective uid, unless it made
/// itself undumpable); `None` once it has exited.
pub fn owner(pid: u32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The thread ids of process `pid`.
pub fn threads(pid: u32) -> io::Result<Vec<u32>> {
    numeric_entries(Path::new(&format!("/proc/{pid}/task")))
}

/// Every process id on the host.
pub fn pids() -> io::Result<Vec<u32>> {
    numeric_entries(Path::new("/proc"))
}

fn numeric_entries(dir: &Path) -> io::Result<Vec<u32>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        // An entry that vanished while listing is simply not there.
        let Ok(entry) = entry else { continue };
        if let Some(id) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
            out.push(id);
        }
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_comm() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
        let info = parse_stat(7, &format!("7 (a) b (c)) {tail}")).expect("parsed");
        assert_eq!(info.comm, "a) b (c)");
        assert_eq!(info.start_time, 424_242);
        assert_eq!(parse_stat(7, &format!("7 (x) Z{}", &tail[1..])), None);
        assert_eq!(parse_stat(7, "7 (x) S 1 2"), None);
        assert_eq!(parse_stat(7, "garbage"), None);
    }

    #[test]
    fn this_process() {
        let me = std::process::id();
        let info = info(me).expect("this process is alive");
        assert!(info.start_time > 0);
        assert!(threads(me).expect("tasks").contains(&me));
        assert!(pids().expect("pids").contains(&me));
        assert!(exe_name(me).is_some());
    }
}
