//! Sampling another process: one cpu-clock event per thread of it (the same [`Ring`] as the
//! in-process sampler, opened on that thread's id), stacks counted per callchain and
//! symbolised from that process's binaries (the same [`Symbols`], given its pid). Used by the
//! sidecar's `--profile-pid` and `--profile-name`.
//!
//! Invariants:
//! - A [`ProcessSampler`] follows one process, named by pid and start time, so a pid reused by
//!   another process after an exit is never sampled under the old one's name.
//! - Every thread listed in `/proc/<pid>/task` when [`ProcessSampler::open`] or
//!   [`ProcessSampler::rescan`] runs gets an event, up to the caller's thread budget; a thread
//!   whose event cannot be opened is not retried. A thread that ended is drained before its
//!   ring is dropped.
//! - New addresses are symbolised when they are read, while the process is alive, so the
//!   stacks of a process that exits before the next export still have names.
//! - There is no request attribution: samples carry only the labels the caller gives them.
//!
//! Memory is bounded by the number of distinct callchains between two [`ProcessSampler::take`]
//! calls plus the symbol cache and the process's modules' unwind tables (`unwind`'s bounds).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;

use super::perf::{EventSpec, Record, Ring};
use super::procfs;
use super::stacks;
use super::symbols::Symbols;
use super::unwind::{UnwindCounts, Unwinder};
use super::SamplerError;

/// The sampling events on one process's threads and what they caught.
pub struct ProcessSampler {
    pid: u32,
    start_time: u64,
    name: String,
    spec: EventSpec,
    rings: BTreeMap<u32, Ring>,
    /// Threads whose event could not be opened (not retried).
    failed: HashSet<u32>,
    symbols: Symbols,
    unwinder: Unwinder,
    /// Leaf-first callchain → samples since the last [`ProcessSampler::take`].
    counts: HashMap<Vec<u64>, u64>,
    samples: u64,
    lost: u64,
    warned: bool,
}

impl std::fmt::Debug for ProcessSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessSampler")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .field("threads", &self.rings.len())
            .finish()
    }
}

/// What [`ProcessSampler::rescan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rescanned {
    /// False when the process is gone (exited, a zombie, or its pid reused).
    pub alive: bool,
    /// What the read before the rescan got.
    pub read: ReadCounts,
}

/// Samples read, samples the kernel dropped, and samples whose unwinding stopped early
/// (shipped with a `[truncated]` root frame), by one [`ProcessSampler::read`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCounts {
    pub samples: u64,
    pub lost: u64,
    pub truncated: u64,
}

impl ProcessSampler {
    /// Opens an event on every thread of `pid`, at most `budget` of them. Fails when the
    /// process does not exist or no thread's event could be opened.
    pub fn open(
        pid: u32,
        name: String,
        spec: EventSpec,
        budget: usize,
    ) -> Result<ProcessSampler, SamplerError> {
        let info = procfs::info(pid).ok_or(SamplerError::NoSuchProcess { pid })?;
        let tids = procfs::threads(pid).map_err(|source| SamplerError::ProcessUnavailable {
            pid,
            name: name.clone(),
            hint: hint(&source),
            source,
        })?;
        if budget == 0 {
            return Err(SamplerError::ThreadLimit { pid, name });
        }
        let mut sampler = ProcessSampler {
            pid,
            start_time: info.start_time,
            name,
            spec,
            rings: BTreeMap::new(),
            failed: HashSet::new(),
            symbols: Symbols::new(pid),
            unwinder: Unwinder::new(pid),
            counts: HashMap::new(),
            samples: 0,
            lost: 0,
            warned: false,
        };
        let first_error = sampler.open_threads(&tids, budget);
        if sampler.rings.is_empty() {
            if procfs::info(pid).is_none_or(|i| i.start_time != info.start_time) {
                return Err(SamplerError::NoSuchProcess { pid });
            }
            let source = first_error.unwrap_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the process has no threads")
            });
            return Err(SamplerError::ProcessUnavailable {
                pid,
                name: sampler.name,
                hint: hint(&source),
                source,
            });
        }
        Ok(sampler)
    }

    /// Opens events on `tids` not seen before, up to `budget`; the first error, if any.
    fn open_threads(&mut self, tids: &[u32], budget: usize) -> Option<io::Error> {
        let mut first_error = None;
        let mut opened = 0;
        for &tid in tids {
            if self.rings.contains_key(&tid) || self.failed.contains(&tid) {
                continue;
            }
            if opened >= budget {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        pid = self.pid,
                        "profiling {}: the limit of sampled threads is reached; \
                         further threads are not sampled",
                        self.name
                    );
                }
                break;
            }
            match Ring::open(tid, &self.spec) {
                Ok(ring) => {
                    self.rings.insert(tid, ring);
                    opened += 1;
                }
                // The thread ended between listing and opening.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(e) => {
                    self.failed.insert(tid);
                    if !self.warned && !self.rings.is_empty() {
                        self.warned = true;
                        tracing::warn!(
                            pid = self.pid,
                            tid,
                            "profiling {}: cannot open a sampling event on a thread: {e}",
                            self.name
                        );
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error
    }

    /// The name given at [`ProcessSampler::open`] (for logs).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Threads with an event.
    pub fn threads(&self) -> usize {
        self.rings.len()
    }

    /// Samples read and samples lost so far.
    pub fn totals(&self) -> ReadCounts {
        ReadCounts {
            samples: self.samples,
            lost: self.lost,
            truncated: self.unwinder.counts().truncated,
        }
    }

    /// Whether the process still runs (same pid, same start time, not a zombie).
    pub fn alive(&self) -> bool {
        procfs::info(self.pid).is_some_and(|i| i.start_time == self.start_time)
    }

    /// Reads every ring, drops the rings of threads that ended, opens events on new threads
    /// (up to `budget` more). When the process is gone its rings are still read.
    pub fn rescan(&mut self, budget: usize) -> Rescanned {
        let tids = if self.alive() {
            procfs::threads(self.pid).ok()
        } else {
            None
        };
        let read = self.read();
        let Some(tids) = tids else {
            return Rescanned { alive: false, read };
        };
        let live: HashSet<u32> = tids.iter().copied().collect();
        self.rings.retain(|tid, _| live.contains(tid));
        self.failed.retain(|tid| live.contains(tid));
        self.open_threads(&tids, budget);
        Rescanned { alive: true, read }
    }

    /// Drains every ring into the callchain counts and symbolises new addresses.
    pub fn read(&mut self) -> ReadCounts {
        let mut got = ReadCounts::default();
        let truncated_before = self.unwinder.counts().truncated;
        let mut fresh: Vec<u64> = Vec::new();
        for ring in self.rings.values() {
            let counts = &mut self.counts;
            let unwinder = &mut self.unwinder;
            ring.drain(ring.head(), |record| {
                match record {
                    Record::Lost { count } => got.lost += count,
                    Record::Sample { ips, user, .. } => {
                        let ips = unwinder.callchain(ips, user);
                        if ips.is_empty() {
                            return true;
                        }
                        got.samples += 1;
                        match counts.get_mut(&ips) {
                            Some(n) => *n += 1,
                            None => {
                                fresh.extend(stacks::lookup_addrs(&ips));
                                counts.insert(ips, 1);
                            }
                        }
                    }
                }
                true
            });
        }
        if !fresh.is_empty() {
            self.symbols.resolve(fresh);
        }
        self.samples += got.samples;
        self.lost += got.lost;
        got.truncated = self.unwinder.counts().truncated - truncated_before;
        got
    }

    /// How the samples read so far unwound.
    pub fn unwound(&self) -> UnwindCounts {
        self.unwinder.counts()
    }

    /// Bytes of unwind information held for the process's modules.
    pub fn unwind_info_bytes(&self) -> usize {
        self.unwinder.info_bytes()
    }

    /// The stacks counted since the last call, root-first, with their samples.
    pub fn take(&mut self) -> Vec<(Vec<String>, u64)> {
        let counts = std::mem::take(&mut self.counts);
        self.symbols
            .resolve(counts.keys().flat_map(|ips| stacks::lookup_addrs(ips)));
        counts
            .into_iter()
            .map(|(ips, n)| (stacks::frames(&ips, &self.symbols), n))
            .collect()
    }
}

/// What to do about a failed `perf_event_open` on another process's thread.
fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (run the sidecar as root or with CAP_PERFMON, or as the process's user with \
             kernel.perf_event_paranoid <= 2)"
        }
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) => {
            " (this kernel or VM does not support perf cpu-clock sampling)"
        }
        Some(libc::EMFILE) | Some(libc::ENFILE) => " (out of file descriptors: raise ulimit -n)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EventSpec {
        EventSpec {
            frequency_hz: 99,
            max_frames: 127,
            data_pages: 8,
            stack_bytes: 0,
        }
    }

    #[test]
    fn a_missing_process_is_named_in_the_error() {
        let pid = (1..u32::MAX)
            .map(|i| u32::MAX / 2 - i)
            .find(|p| procfs::info(*p).is_none())
            .expect("a free pid");
        let err = ProcessSampler::open(pid, "x".into(), spec(), 10).expect_err("no process");
        assert_eq!(
            err.to_string(),
            format!("cannot profile pid {pid}: no such process")
        );
    }

    #[test]
    fn hints_name_the_fix() {
        assert!(hint(&io::Error::from_raw_os_error(libc::EACCES)).contains("CAP_PERFMON"));
        assert_eq!(hint(&io::Error::from_raw_os_error(libc::EINVAL)), "");
    }
}
