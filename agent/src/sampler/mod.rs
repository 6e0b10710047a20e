//! The stack sampler: CPU stack samples of the process's request threads, each attributed to
//! the request that was running on that thread at that instant, aggregated per label set and
//! shipped as profiles every export interval.
//!
//! How it works:
//! - [`perf`]: one `perf_event_open` cpu-clock event per thread (default 99 Hz of that
//!   thread's CPU time), each sample with the user registers and a copy of the top of the
//!   user stack ([`SamplerConfig::stack_bytes`]), written to an mmap ring buffer. A thread gets its event the first time it enters a measured request
//!   (a scope, or a poll of an instrumented future or of the layer's response future) while a
//!   [`Sampler`] runs. Threads that never run a measured request are not sampled.
//! - [`hook`]: around each measured stretch the thread reads its ring's write position (an
//!   atomic load of a mapped page): samples written in between belong to that request. Only
//!   stretches that caught a sample send a range to the sampler thread; only requests that
//!   own a range send their labels when they finish. Async requests interleaving on one
//!   worker thread are therefore told apart poll by poll.
//! - [`worker`]: the sampler thread reads the rings, unwinds each sample's stack copy
//!   ([`unwind`]: framehop over each module's `.eh_frame`/`.debug_frame`, frame pointers in
//!   modules without them; unwind information cached per module), joins samples with ranges,
//!   symbolises (blazesym: ELF symbols, DWARF inline frames as frames of their own, Rust and
//!   C++ demangling; cached) and hands one [`ProfileBatch`] per label set to a
//!   [`ProfileSink`].
//!
//! Invariants: the request path never allocates, locks or makes a syscall for the sampler,
//! except once per thread and session (opening the event) and once per finished request that
//! caught a sample (cloning its labels into a bounded channel). A sample carries the labels of
//! the innermost measured request on its thread when it was taken (endpoint, flags set with
//! `set_label` by the end of that request), plus the process's service, build, dc and host; a
//! sample outside any measured request carries an empty endpoint. At most one sampler runs per
//! process. Perf, ring and symbolisation code take a pid/tid, so another process is sampled
//! the same way by [`process`] (the sidecar's `--profile-pid`, `--profile-name`; without that
//! process's SDK there is no request attribution).
//!
//! Unwinding needs no frame pointers (rustc omits them at every opt-level on x86-64 Linux, and
//! so do most distribution binaries): stacks are unwound from the copied stack bytes with the
//! binaries' DWARF call frame information, on the sampler thread, never on the request path.
//! A stack deeper than the copy (or one that cannot be unwound) keeps the frames found and
//! gets a `[truncated]` root frame. On other architectures than x86-64, and with
//! `stack_bytes = 0`, the kernel's frame-pointer callchain is used as it is.
//!
//! When perf events cannot be opened (seccomp, `perf_event_paranoid` > 2, no perf support),
//! [`Sampler::start`] fails with [`SamplerError::Unavailable`]: the SDK keeps measuring
//! requests, without stacks. There is no timer-signal fallback.

mod elf;
mod hook;
mod perf;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "process")]
pub mod procfs;
mod session;
mod sink;
pub mod stacks;
mod stats;
mod symbols;
mod unwind;
mod worker;

use std::io;
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use profwatch_model::profile::ProfileBatch;
pub use sink::{
    folded, frame_payloads, query, CollectorSink, DiscardSink, MemorySink, ProfileSink,
    SidecarSink, MAX_PROFILE_FRAME, PROFILE_FRAME_MARKER,
};
pub use stats::SamplerStats;
pub use symbols::MAX_FRAME_LEN;

pub(crate) use hook::{enter, finish, leave, Entered, RequestTag};
pub use perf::{EventSpec, MAX_STACK_BYTES};
pub use unwind::{UnwindCounts, MAX_UNWIND_INFO_BYTES, MAX_UNWOUND_FRAMES};

use crate::config::{Config, ExportTarget};
use crate::error::AgentError;
use perf::Ring;
use session::Session;
use stats::StatCells;
use worker::{Ctl, Meta, Worker};

/// Samples per second of each thread's CPU time, as `perf record -F 99`.
pub const DEFAULT_FREQUENCY_HZ: u32 = 99;

/// Bytes of user stack copied with each sample by default. An async service's stacks are deep
/// (the demo's tokio, hyper and axum frames take more than 16 KiB in a release build); a stack
/// deeper than the copy keeps its leaf side under a `[truncated]` root.
pub const DEFAULT_STACK_BYTES: u32 = 32 * 1024;

/// The sampler's settings; start from [`SamplerConfig::default`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SamplerConfig {
    /// Samples per second of a thread's CPU time (1 to 10 000).
    pub frequency_hz: u32,
    /// How often profiles are shipped.
    pub export_interval: Duration,
    /// How often the sampler thread reads the rings.
    pub read_interval: Duration,
    /// Deepest callchain recorded (the kernel caps it at `kernel.perf_event_max_stack`).
    pub max_frames: u16,
    /// Data pages of each thread's ring (rounded up to a power of two). Each sample takes
    /// about `stack_bytes` of it until the sampler thread reads it.
    pub ring_pages: usize,
    /// Bytes of user stack copied with each sample and unwound on the sampler thread (at most
    /// [`MAX_STACK_BYTES`], rounded down to a multiple of 8); deeper stacks get a
    /// `[truncated]` root frame. 0: the kernel's frame-pointer callchain only.
    pub stack_bytes: u32,
    /// Messages between the request path and the sampler thread (ranges, finished requests).
    pub channel_capacity: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            frequency_hz: DEFAULT_FREQUENCY_HZ,
            export_interval: Duration::from_secs(10),
            read_interval: Duration::from_millis(100),
            max_frames: 127,
            ring_pages: 128,
            channel_capacity: 4096,
            stack_bytes: DEFAULT_STACK_BYTES,
        }
    }
}

/// Why a sampler could not start or answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SamplerError {
    /// Perf sampling events cannot be opened here; run without stacks.
    #[error("stack sampler unavailable: perf_event_open(cpu-clock sampling) failed: {0}")]
    Unavailable(#[source] io::Error),
    /// Another sampler is running in this process.
    #[error("a profwatch stack sampler is already running in this process")]
    AlreadyRunning,
    /// A setting is out of range.
    #[error("invalid sampler configuration: field `{field}` {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: &'static str,
    },
    /// The collector URL (or token) cannot be used.
    #[error(transparent)]
    Sink(#[from] AgentError),
    /// The sampler thread could not be started.
    #[error("could not start the profwatch sampler thread: {0}")]
    Spawn(#[source] io::Error),
    /// The sampler thread is gone.
    #[error("the profwatch sampler thread has stopped")]
    Stopped,
    /// The process to sample does not exist (or has exited).
    #[error("cannot profile pid {pid}: no such process")]
    NoSuchProcess { pid: u32 },
    /// No thread of the process could get a sampling event.
    #[error(
        "cannot profile pid {pid} ({name}): perf_event_open(cpu-clock) failed: {source}{hint}"
    )]
    ProcessUnavailable {
        pid: u32,
        name: String,
        #[source]
        source: io::Error,
        /// What to change, when the error says it (permissions, kernel support).
        hint: &'static str,
    },
    /// The sidecar already samples as many threads as it may.
    #[error("cannot profile pid {pid} ({name}): the limit of sampled threads is reached")]
    ThreadLimit { pid: u32, name: String },
}

/// A running sampler. Stops (shipping what it holds) when dropped.
#[derive(Debug)]
pub struct Sampler {
    session: Arc<Session>,
    ctl: Option<SyncSender<Ctl>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<StatCells>,
}

impl Sampler {
    /// Starts sampling, shipping where `agent.export` says: the sidecar's socket (which
    /// relays profiles through its spool) for [`ExportTarget::Sidecar`], the collector's
    /// profile API for [`ExportTarget::Collector`], nowhere for [`ExportTarget::Discard`].
    pub fn start(agent: &Config, config: SamplerConfig) -> Result<Sampler, SamplerError> {
        let sink: Box<dyn ProfileSink> = match &agent.export {
            ExportTarget::Sidecar { socket } => Box::new(SidecarSink::new(socket)),
            ExportTarget::Collector { url, token, .. } => {
                Box::new(CollectorSink::new(url, token.clone())?)
            }
            ExportTarget::Discard => Box::new(DiscardSink),
        };
        Sampler::spawn(agent, config, sink)
    }

    /// Starts sampling into `sink`, labelling profiles with `agent`'s service, build, dc and
    /// host.
    pub fn with_sink(
        agent: &Config,
        config: SamplerConfig,
        sink: impl ProfileSink,
    ) -> Result<Sampler, SamplerError> {
        Sampler::spawn(agent, config, Box::new(sink))
    }

    fn spawn(
        agent: &Config,
        config: SamplerConfig,
        sink: Box<dyn ProfileSink>,
    ) -> Result<Sampler, SamplerError> {
        let invalid = |field, problem| Err(SamplerError::InvalidConfig { field, problem });
        if !(1..=10_000).contains(&config.frequency_hz) {
            return invalid("frequency_hz", "must be 1 to 10000");
        }
        if config.export_interval.is_zero() || config.read_interval.is_zero() {
            return invalid("export_interval/read_interval", "must be longer than zero");
        }
        if config.max_frames == 0 || config.ring_pages == 0 || config.channel_capacity == 0 {
            return invalid(
                "max_frames/ring_pages/channel_capacity",
                "must be at least 1",
            );
        }
        if config.stack_bytes > MAX_STACK_BYTES {
            return invalid("stack_bytes", "must be at most 57344 (56 KiB)");
        }
        let spec = EventSpec {
            frequency_hz: config.frequency_hz,
            max_frames: config.max_frames,
            data_pages: config.ring_pages,
            stack_bytes: config.stack_bytes,
        };
        drop(Ring::open(0, &spec).map_err(SamplerError::Unavailable)?);
        let (ranges_tx, ranges_rx) = mpsc::sync_channel(config.channel_capacity);
        let (done_tx, done_rx) = mpsc::sync_channel(config.channel_capacity);
        let (ctl_tx, ctl_rx) = mpsc::sync_channel(4);
        let stats = Arc::new(StatCells::default());
        let session = Session::install(spec, ranges_tx, done_tx, Arc::clone(&stats))
            .ok_or(SamplerError::AlreadyRunning)?;
        let worker = Worker {
            session: Arc::clone(&session),
            ranges_rx,
            done_rx,
            ctl_rx,
            sink,
            meta: Meta {
                service: agent.service.clone(),
                build: agent.build.clone(),
                dc: agent.dc.clone(),
                host: agent.host.clone(),
            },
            stats: Arc::clone(&stats),
            read_interval: config.read_interval,
            export_interval: config.export_interval,
        };
        let thread = std::thread::Builder::new()
            .name("profwatch-sampler".into())
            .spawn(move || worker.run())
            .map_err(|e| {
                session.uninstall();
                SamplerError::Spawn(e)
            })?;
        Ok(Sampler {
            session,
            ctl: Some(ctl_tx),
            thread: Some(thread),
            stats,
        })
    }

    /// What the sampler did so far.
    pub fn stats(&self) -> SamplerStats {
        self.stats.snapshot()
    }

    /// Reads every ring and ships everything held now (samples still waiting for their
    /// request's labels go without them). Blocks until the sink returned.
    pub fn flush(&self) -> Result<(), SamplerError> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.ctl
            .as_ref()
            .ok_or(SamplerError::Stopped)?
            .send(Ctl::Flush(ack_tx))
            .map_err(|_| SamplerError::Stopped)?;
        ack_rx.recv().map_err(|_| SamplerError::Stopped)
    }

    /// Stops sampling and ships what is held.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.session.uninstall();
        self.ctl = None;
        if let Some(thread) = self.thread.take() {
            // A panicked sampler thread has nothing left to ship.
            let _ = thread.join();
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.shutdown();
    }
}
