//! The sidecar's sampling of other local processes (`--profile-pid`, `--profile-name`): CPU
//! stacks of every thread of each target, aggregated per label set every export interval and
//! handed to the batcher, so they take the spool and the shipper like events do.
//!
//! One thread (`profwatch-profiler`) does all the work: every `read_interval` it reads the
//! rings (each sample's copied user stack is unwound then, from the target's binaries' unwind
//! tables, and new addresses are symbolised, from the same binaries), every
//! `thread_rescan` it lists each target's threads (new threads get an event; a target that
//! exited is read a last time and dropped, logged once), every `name_rescan` it searches
//! `/proc` for `names`, and every `export_interval` it ships one profile per label set.
//!
//! Labels: `service` is `--profile-service` or the process's executable file name (else its
//! comm), `host` and `dc` are the sidecar's, `build` and `endpoint` are empty: without the
//! SDK in the process there is no build and no request to attribute a sample to. Processes
//! with the same labels (several workers of one server) share one profile.
//!
//! Invariants: a target is one process (pid and start time), never its pid's next owner; the
//! sidecar's own process is never matched by name; a name-matched process that cannot be
//! sampled is logged once and not retried (until it restarts); at most `max_threads` threads
//! are sampled. Stopping reads and ships everything held before the thread ends.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use profwatch_model::profile::SampleLabels;
use profwatch_model::timefmt::now_ns;
use tokio::sync::mpsc;

use super::batcher::Input;
use super::config::ProfileConfig;
use super::enrich::Enricher;
use super::error::SidecarError;
use super::metrics::Metrics;
use super::procs::{self, service_name};
use profwatch_agent::sampler::process::{ProcessSampler, ReadCounts};
use profwatch_agent::sampler::stacks::{self, Grouped};
use profwatch_agent::sampler::{procfs, EventSpec, SamplerError};

/// Deepest callchain the kernel records for a sampled process.
const MAX_FRAMES: u16 = 127;

/// The running profiler thread.
#[derive(Debug)]
pub(crate) struct Profiler {
    stop: SyncSender<()>,
    thread: JoinHandle<()>,
}

impl Profiler {
    /// Opens the `--profile-pid` targets and starts the thread. Blocks (reads `/proc`, opens
    /// perf events). Fails when pids were given, none can be sampled, and no name is watched.
    pub(crate) fn start(
        cfg: ProfileConfig,
        enricher: &Enricher,
        tx: mpsc::Sender<Input>,
        metrics: Arc<Metrics>,
    ) -> Result<Profiler, SidecarError> {
        let (host, dc) = (
            enricher.host().to_owned(),
            enricher.dc().unwrap_or_default().to_owned(),
        );
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (stop, stop_rx) = std::sync::mpsc::sync_channel(1);
        // The symboliser is not `Send`: the targets are opened on the thread that reads them.
        let thread = std::thread::Builder::new()
            .name("profwatch-profiler".into())
            .spawn(move || {
                let mut run = Run {
                    spec: EventSpec {
                        frequency_hz: cfg.frequency_hz,
                        max_frames: MAX_FRAMES,
                        data_pages: cfg.ring_pages,
                        stack_bytes: cfg.stack_bytes,
                    },
                    host,
                    dc,
                    targets: BTreeMap::new(),
                    skipped: HashSet::new(),
                    leftover: Grouped::new(),
                    tx,
                    metrics,
                    interval_start_ns: now_ns(),
                    cfg,
                };
                let opened = run.open_pids();
                let ok = opened.is_ok();
                let _ = ready_tx.send(opened);
                if ok {
                    run.run(stop_rx);
                }
            })
            .map_err(|e| SidecarError::Task {
                task: "profiler",
                message: format!("cannot start the thread: {e}"),
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Profiler { stop, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(SidecarError::Task {
                task: "profiler",
                message: "the profiler thread ended while starting".into(),
            }),
        }
    }

    /// Stops sampling after handing over everything held. Blocks until the thread ends.
    pub(crate) fn stop(self) -> Result<(), SidecarError> {
        drop(self.stop);
        self.thread.join().map_err(|_| SidecarError::Task {
            task: "profiler",
            message: "the profiler thread panicked".into(),
        })
    }
}

struct Target {
    sampler: ProcessSampler,
    labels: SampleLabels,
}

struct Run {
    cfg: ProfileConfig,
    spec: EventSpec,
    host: String,
    dc: String,
    /// By pid.
    targets: BTreeMap<u32, Target>,
    /// (pid, start time) of name-matched processes that could not be sampled.
    skipped: HashSet<(u32, u64)>,
    /// Stacks of targets that exited since the last export.
    leftover: Grouped,
    tx: mpsc::Sender<Input>,
    metrics: Arc<Metrics>,
    interval_start_ns: i64,
}

impl Run {
    fn run(mut self, stop: Receiver<()>) {
        let started = Instant::now();
        let mut next_threads = started + self.cfg.thread_rescan;
        let mut next_names = started;
        let mut next_export = started + self.cfg.export_interval;
        loop {
            let now = Instant::now();
            if !self.cfg.names.is_empty() && now >= next_names {
                self.discover();
                next_names = now + self.cfg.name_rescan;
            }
            match stop.recv_timeout(self.cfg.read_interval) {
                Err(RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                    self.read();
                    self.export();
                    self.targets.clear();
                    self.publish();
                    return;
                }
            }
            self.read();
            let now = Instant::now();
            if now >= next_threads {
                self.rescan();
                next_threads = now + self.cfg.thread_rescan;
            }
            if now >= next_export {
                if !self.export() {
                    tracing::warn!("profiler: the sidecar is stopping; sampling ends");
                    return;
                }
                next_export = (next_export + self.cfg.export_interval).max(now);
            }
            self.publish();
        }
    }

    /// Opens the `--profile-pid` targets; an error when there were some, none opened, and
    /// no name is watched.
    fn open_pids(&mut self) -> Result<(), SidecarError> {
        let mut failures = Vec::new();
        for pid in self.cfg.pids.clone() {
            if let Err(e) = self.open(pid) {
                failures.push(e.to_string());
            }
        }
        if self.targets.is_empty() && !self.cfg.pids.is_empty() && self.cfg.names.is_empty() {
            return Err(SidecarError::Profile {
                failures: failures.join("; "),
            });
        }
        for failure in failures {
            tracing::warn!("{failure}; sampling the other targets");
        }
        self.publish();
        Ok(())
    }

    fn threads(&self) -> usize {
        self.targets.values().map(|t| t.sampler.threads()).sum()
    }

    fn publish(&self) {
        let info: usize = self
            .targets
            .values()
            .map(|t| t.sampler.unwind_info_bytes())
            .sum();
        self.metrics
            .profiler_targets(self.targets.len(), self.threads(), info);
    }

    /// Starts sampling `pid`.
    fn open(&mut self, pid: u32) -> Result<(), SamplerError> {
        let info = procfs::info(pid).ok_or(SamplerError::NoSuchProcess { pid })?;
        let name = procfs::exe_name(pid).unwrap_or_else(|| info.comm.clone());
        let budget = self.cfg.max_threads.saturating_sub(self.threads());
        let sampler = ProcessSampler::open(pid, name.clone(), self.spec, budget)?;
        let service = self
            .cfg
            .service
            .clone()
            .unwrap_or_else(|| service_name(&name));
        tracing::info!(
            pid,
            threads = sampler.threads(),
            "profiling {name} as service {service}"
        );
        let labels = SampleLabels {
            service,
            endpoint: String::new(),
            build: String::new(),
            dc: self.dc.clone(),
            host: self.host.clone(),
            extra: Default::default(),
        };
        self.targets.insert(pid, Target { sampler, labels });
        Ok(())
    }

    /// Starts sampling every process named in `names` not sampled yet.
    fn discover(&mut self) {
        let pids = match procfs::pids() {
            Ok(pids) => pids,
            Err(e) => {
                tracing::warn!("profiler: cannot list /proc: {e}");
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
            if self.skipped.contains(&(pid, info.start_time)) {
                continue;
            }
            if !procs::matches(pid, &info, &self.cfg.names, &self.cfg.uids) {
                continue;
            }
            if let Err(e) = self.open(pid) {
                tracing::warn!("{e}; not retried until it restarts");
                self.skipped.insert((pid, info.start_time));
            }
        }
        self.skipped.retain(|key| seen.contains(key));
    }

    fn read(&mut self) {
        let mut all = ReadCounts::default();
        for t in self.targets.values_mut() {
            let got = t.sampler.read();
            all.samples += got.samples;
            all.lost += got.lost;
            all.truncated += got.truncated;
        }
        self.metrics.profiler_samples(all);
    }

    /// New threads, ended threads, exited processes.
    fn rescan(&mut self) {
        let mut gone = Vec::new();
        let mut used = self.threads();
        for (pid, t) in &mut self.targets {
            let before = t.sampler.threads();
            let budget = self.cfg.max_threads.saturating_sub(used);
            let found = t.sampler.rescan(budget);
            self.metrics.profiler_samples(found.read);
            used = (used + t.sampler.threads()).saturating_sub(before);
            if !found.alive {
                gone.push(*pid);
            }
        }
        for pid in gone {
            let Some(mut t) = self.targets.remove(&pid) else {
                continue;
            };
            let totals = t.sampler.totals();
            tracing::info!(
                pid,
                samples = totals.samples,
                "{} exited; no longer profiled",
                t.sampler.name()
            );
            add(&mut self.leftover, &t.labels, t.sampler.take());
        }
    }

    /// Hands one profile per label set to the batcher; false when the batcher is gone.
    fn export(&mut self) -> bool {
        let mut grouped = std::mem::take(&mut self.leftover);
        for t in self.targets.values_mut() {
            add(&mut grouped, &t.labels, t.sampler.take());
        }
        let start = std::mem::replace(&mut self.interval_start_ns, now_ns());
        for profile in stacks::batches(grouped, start, self.cfg.frequency_hz) {
            let input = Input::Profile {
                profile,
                frequency_hz: self.cfg.frequency_hz,
            };
            if self.tx.blocking_send(input).is_err() {
                return false;
            }
        }
        true
    }
}

fn add(grouped: &mut Grouped, labels: &SampleLabels, stacks: Vec<(Vec<String>, u64)>) {
    if stacks.is_empty() {
        return;
    }
    let entry = grouped.entry(labels.clone()).or_default();
    for (frames, n) in stacks {
        *entry.entry(frames).or_default() += n;
    }
}
