//! The watch: one thread (`profwatch-memory`) that every interval searches `/proc` for
//! `--memory-name` processes, reads every watched process's memory and hands the pass's
//! samples to the batcher, so they take the spool and the shipper like events do. Between
//! passes it takes the registrations of processes that said hello on the socket
//! ([`Registrar`]); a registered process is read from the next pass on.
//!
//! Invariants: a watched process is one process (pid and start time), never its pid's next
//! owner; a process that exited (or became a zombie) is dropped quietly (a debug line); one that
//! cannot be read for another reason (another user's, without the rights) is logged once and
//! dropped, and a name-matched one is not tried again until it restarts; the sidecar's own
//! process is never matched by name; every sample passes the collector's checks before it is
//! spooled (the others are counted as `memory_samples_invalid`). The thread always runs (hellos
//! need it without any flag). Registrations travel through a bounded queue the listener only
//! `try_send`s into (a full queue drops the hello, counted), and registration never makes the
//! watch hold more than [`MAX_WATCHED`] processes; registering a watched process again replaces
//! its hello's labels.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use profwatch_agent::sampler::procfs;
use profwatch_model::hello::Hello;
use profwatch_model::memory::MemorySample;
use profwatch_model::timefmt::now_ns;
use profwatch_model::Limits;
use tokio::sync::mpsc;

use super::super::batcher::Input;
use super::super::config::MemoryConfig;
use super::super::error::SidecarError;
use super::super::metrics::{HelloOutcome, Metrics, RejectReason};
use super::super::procs;
use super::{read_sample, DefaultLabels, OwnLabels};

/// The most processes the watch holds through registrations (hellos past it are refused and
/// counted as `too_many`).
pub const MAX_WATCHED: usize = 4096;
/// Registrations queued for the watch thread at most.
const QUEUE: usize = 1024;

/// What the watch thread is told.
#[derive(Debug)]
enum Msg {
    /// Watch this process (or relabel it, if watched).
    Register {
        pid: u32,
        start_time: u64,
        labels: OwnLabels,
    },
    Stop,
}

/// The running watch thread.
#[derive(Debug)]
pub(crate) struct Watcher {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
    thread: JoinHandle<()>,
}

/// Hands the processes that said hello to the watch thread; cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Registrar {
    tx: SyncSender<Msg>,
    metrics: Arc<Metrics>,
}

impl Registrar {
    /// Registers the peer of a socket connection that sent `hello`. `peer_pid` is the pid the
    /// socket's credentials give (in the sidecar's pid namespace); the pid the hello claims is
    /// ignored when it differs.
    pub fn hello(&self, peer_pid: Option<i32>, hello: Hello) {
        let Some(pid) = peer_pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            self.metrics.reject(
                RejectReason::BadHello,
                &"a hello from a peer whose pid the socket does not tell (another pid namespace?)",
            );
            return;
        };
        if hello.pid.is_some_and(|claimed| claimed != pid) {
            tracing::debug!(
                pid,
                claimed = hello.pid,
                "a hello claims another pid; the socket's is used"
            );
        }
        let Some(info) = procfs::info(pid) else {
            self.metrics.hello(HelloOutcome::Gone);
            return;
        };
        let msg = Msg::Register {
            pid,
            start_time: info.start_time,
            labels: hello.into(),
        };
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.hello(HelloOutcome::QueueFull);
            }
        }
    }
}

impl Watcher {
    /// Finds the `--memory-pid` processes and starts the thread. Fails when pids were given,
    /// none exists, and no name is watched.
    pub(crate) fn start(
        cfg: MemoryConfig,
        host: String,
        dc: String,
        batcher: mpsc::Sender<Input>,
        metrics: Arc<Metrics>,
    ) -> Result<Watcher, SidecarError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let mut watch = Watch {
            defaults: DefaultLabels {
                service: cfg.service.clone(),
                build: cfg.build.clone(),
                dc,
            },
            host,
            targets: BTreeMap::new(),
            skipped: HashSet::new(),
            tx: batcher,
            metrics: metrics.clone(),
            cfg,
        };
        let mut missing = Vec::new();
        for pid in watch.cfg.pids.clone() {
            match procfs::info(pid) {
                Some(info) => watch.watch(pid, info.start_time, OwnLabels::default()),
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
        let thread = std::thread::Builder::new()
            .name("profwatch-memory".into())
            .spawn(move || watch.run(rx))
            .map_err(|e| SidecarError::Task {
                task: "memory watch",
                message: format!("cannot start the thread: {e}"),
            })?;
        Ok(Watcher {
            tx,
            metrics,
            thread,
        })
    }

    /// What the listener registers processes through.
    pub(crate) fn registrar(&self) -> Registrar {
        Registrar {
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Stops the watch. Blocks until the thread ends.
    pub(crate) fn stop(self) -> Result<(), SidecarError> {
        // The thread drains the queue, so this waits at most for one pass.
        let _ = self.tx.send(Msg::Stop);
        self.thread.join().map_err(|_| SidecarError::Task {
            task: "memory watch",
            message: "the memory watch thread panicked".into(),
        })
    }
}

/// A watched process.
struct Target {
    start_time: u64,
    /// The labels of its hello (none for `--memory-pid`/`--memory-name` processes).
    hello: OwnLabels,
}

struct Watch {
    cfg: MemoryConfig,
    defaults: DefaultLabels,
    host: String,
    targets: BTreeMap<u32, Target>,
    /// (pid, start time) of name-matched processes that could not be read.
    skipped: HashSet<(u32, u64)>,
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
}

impl Watch {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            if !self.cfg.names.is_empty() {
                self.discover();
            }
            if !self.pass() {
                tracing::warn!("memory watch: the sidecar is stopping; reading ends");
                return;
            }
            let next = Instant::now() + self.cfg.interval;
            loop {
                match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
                    Ok(Msg::Register {
                        pid,
                        start_time,
                        labels,
                    }) => self.register(pid, start_time, labels),
                    Err(RecvTimeoutError::Timeout) => break,
                    Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        }
    }

    fn watch(&mut self, pid: u32, start_time: u64, hello: OwnLabels) {
        tracing::info!(pid, "reading the memory of {}", procs::name(pid));
        self.targets.insert(pid, Target { start_time, hello });
    }

    /// A process that said hello: watched from the next pass, or relabelled if watched.
    fn register(&mut self, pid: u32, start_time: u64, hello: OwnLabels) {
        let full = self.targets.len() >= MAX_WATCHED;
        let outcome = match self.targets.get_mut(&pid) {
            Some(target) if target.start_time == start_time => {
                target.hello = hello;
                HelloOutcome::Updated
            }
            // The pid's earlier owner exited: the next pass would have dropped it.
            Some(target) => {
                *target = Target { start_time, hello };
                HelloOutcome::Registered
            }
            None if full => HelloOutcome::TooMany,
            None => {
                self.skipped.remove(&(pid, start_time));
                self.watch(pid, start_time, hello);
                HelloOutcome::Registered
            }
        };
        self.metrics.hello(outcome);
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
                self.watch(pid, info.start_time, OwnLabels::default());
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
        for (&pid, target) in &self.targets {
            let start_time = target.start_time;
            if procfs::info(pid).map(|i| i.start_time) != Some(start_time) {
                tracing::debug!(pid, "exited; no longer read");
                dropped.push(pid);
                continue;
            }
            let now = now_ns();
            let read = read_sample(
                Path::new("/proc"),
                pid,
                &target.hello,
                &self.defaults,
                &self.host,
                now,
            );
            match read {
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
