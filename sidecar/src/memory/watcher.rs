//! The watch: one thread (`profwatch-memory`) that every interval searches `/proc` for
//! `--memory-name` processes, reads every watched process's memory and hands the pass's
//! samples to the batcher, so they take the spool and the shipper like events do.
//!
//! Invariants: a watched process is one process (pid and start time), never its pid's next
//! owner; a process that exited (or became a zombie) is dropped quietly (a debug line); one that
//! cannot be read for another reason (another user's, without the rights) is logged once and
//! dropped, and a name-matched one is not tried again until it restarts; the sidecar's own
//! process is never matched by name; every sample passes the collector's checks before it is
//! spooled (the others are counted as `memory_samples_invalid`).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use profwatch_agent::sampler::procfs;
use profwatch_model::memory::MemorySample;
use profwatch_model::timefmt::now_ns;
use profwatch_model::Limits;
use tokio::sync::mpsc;

use super::super::batcher::Input;
use super::super::config::MemoryConfig;
use super::super::error::SidecarError;
use super::super::metrics::Metrics;
use super::super::procs;
use super::{read_sample, DefaultLabels};

/// The running watch thread.
#[derive(Debug)]
pub(crate) struct Watcher {
    stop: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Watcher {
    /// Finds the `--memory-pid` processes and starts the thread. Fails when pids were given,
    /// none exists, and no name is watched.
    pub(crate) fn start(
        cfg: MemoryConfig,
        host: String,
        dc: String,
        tx: mpsc::Sender<Input>,
        metrics: Arc<Metrics>,
    ) -> Result<Watcher, SidecarError> {
        let mut watch = Watch {
            defaults: DefaultLabels {
                service: cfg.service.clone(),
                build: cfg.build.clone(),
                dc,
            },
            host,
            targets: BTreeMap::new(),
            skipped: HashSet::new(),
            tx,
            metrics,
            cfg,
        };
        let mut missing = Vec::new();
        for pid in watch.cfg.pids.clone() {
            match procfs::info(pid) {
                Some(info) => watch.watch(pid, info.start_time),
                None => missing.push(format!("process {pid} does not exist")),
            }
        }
        if watch.targets.is_empty() && !watch.cfg.pids.is_empty() && watch.cfg.names.is_empty() {
            return Err(SidecarError::Memory {
                failures: missing.join("; "),
            });
        }
        for failure in missing {
            tracing::warn!("{failure}; reading the memory of the others");
        }
        let (stop, stop_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("profwatch-memory".into())
            .spawn(move || watch.run(stop_rx))
            .map_err(|e| SidecarError::Task {
                task: "memory watch",
                message: format!("cannot start the thread: {e}"),
            })?;
        Ok(Watcher { stop, thread })
    }

    /// Stops the watch. Blocks until the thread ends.
    pub(crate) fn stop(self) -> Result<(), SidecarError> {
        drop(self.stop);
        self.thread.join().map_err(|_| SidecarError::Task {
            task: "memory watch",
            message: "the memory watch thread panicked".into(),
        })
    }
}

struct Watch {
    cfg: MemoryConfig,
    defaults: DefaultLabels,
    host: String,
    /// Start time by pid.
    targets: BTreeMap<u32, u64>,
    /// (pid, start time) of name-matched processes that could not be read.
    skipped: HashSet<(u32, u64)>,
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
}

impl Watch {
    fn run(mut self, stop: Receiver<()>) {
        loop {
            if !self.cfg.names.is_empty() {
                self.discover();
            }
            if !self.pass() {
                tracing::warn!("memory watch: the sidecar is stopping; reading ends");
                return;
            }
            match stop.recv_timeout(self.cfg.interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn watch(&mut self, pid: u32, start_time: u64) {
        tracing::info!(pid, "reading the memory of {}", procs::name(pid));
        self.targets.insert(pid, start_time);
    }

    /// Watches every process named in `names` not watched yet.
    fn discover(&mut self) {
        let pids = match procfs::pids() {
            Ok(pids) => pids,
            Err(e) => {
                tracing::warn!("memory watch: cannot list /proc: {e}");
                return;
            }
        };
        let me = std::process::id();
        let mut seen = HashSet::new();
        for pid in pids {
            if pid == me || self.targets.contains_key(&pid) {
                continue;
            }
            let Some(info) = procfs::info(pid) else {
                continue;
            };
            seen.insert((pid, info.start_time));
            if !self.skipped.contains(&(pid, info.start_time))
                && procs::matches(pid, &info, &self.cfg.names, &self.cfg.uids)
            {
                self.watch(pid, info.start_time);
            }
        }
        self.skipped.retain(|key| seen.contains(key));
    }

    /// Reads every watched process once and hands the samples over; false when the batcher
    /// is gone.
    fn pass(&mut self) -> bool {
        let limits = Limits::default();
        let mut samples: Vec<MemorySample> = Vec::with_capacity(self.targets.len());
        let (mut dropped, mut invalid) = (Vec::new(), 0u64);
        for (&pid, &start_time) in &self.targets {
            if procfs::info(pid).map(|i| i.start_time) != Some(start_time) {
                tracing::debug!(pid, "exited; no longer read");
                dropped.push(pid);
                continue;
            }
            let now = now_ns();
            match read_sample(Path::new("/proc"), pid, &self.defaults, &self.host, now) {
                Ok(sample) => match sample.validate(&limits, now) {
                    Ok(()) => samples.push(sample),
                    Err(e) => {
                        invalid += 1;
                        tracing::warn!(pid, "a memory sample the collector would refuse: {e}");
                    }
                },
                Err(e) if e.is_gone() => {
                    tracing::debug!(pid, "exited; no longer read");
                    dropped.push(pid);
                }
                Err(e) => {
                    tracing::warn!(pid, "cannot read its memory: {e}; no longer read");
                    self.skipped.insert((pid, start_time));
                    dropped.push(pid);
                }
            }
        }
        for pid in dropped {
            self.targets.remove(&pid);
        }
        self.metrics
            .memory_pass(self.targets.len(), samples.len() as u64, invalid);
        samples.is_empty() || self.tx.blocking_send(Input::Memory(samples)).is_ok()
    }
}
