//! The sidecar's counters: Prometheus text at `/metrics`, a JSON [`StatusSnapshot`] at
//! `/status`, and rate-limited logging of refused local input.
//!
//! One [`Metrics`] per sidecar (no global registry), so tests run sidecars side by side.
//! Every event that enters is accounted for exactly once as received or rejected; every
//! received event ends as shipped, dead-lettered (kept on disk, refused by the collector for
//! good), dropped (with a reason) or still spooled/in memory. A dead letter later removed to
//! make room in its folder is counted once more, as dropped under `dead_letter_full`.
//! Profiles (relayed from apps, or from `--profile-pid`/`--profile-name`) are counted the same
//! way in their own unit, one profile per label set and interval, under `profiles_*`; memory
//! samples (`--memory-pid`/`--memory-name`) in theirs, one per process and interval, under
//! `memory_samples_*`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use profwatch_agent::sampler::process::ReadCounts;
use profwatch_model::timefmt;

use super::spool::Unit;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Why a piece of local input was refused (`reason` of `profwatch_agent_events_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Not valid JSON, or a field of the wrong type.
    BadJson,
    /// A required field (`service`, `endpoint`, `cpu_ns`) is missing.
    MissingField,
    /// A field the event does not have (typo, or `tenant`).
    UnknownField,
    /// The line is not UTF-8.
    BadUtf8,
    /// A line (or datagram) longer than the limit.
    TooLong,
    /// A protobuf frame that does not decode.
    BadFrame,
    /// A protobuf frame longer than the limit.
    FrameTooLarge,
    /// The event breaks the collector's limits (`RequestEvent::validate`).
    Invalid,
    /// A line or frame cut short by the end of the connection.
    Truncated,
    /// A profile frame that does not parse or breaks the collector's limits.
    BadProfile,
    /// A hello frame that is too long, not a JSON object, or carries a label the collector
    /// would refuse; or one from a peer whose pid the socket does not tell.
    BadHello,
    /// A hello sent as a datagram: UDP has no peer credentials to take the pid from.
    HelloOverUdp,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        RejectReason::BadJson,
        RejectReason::MissingField,
        RejectReason::UnknownField,
        RejectReason::BadUtf8,
        RejectReason::TooLong,
        RejectReason::BadFrame,
        RejectReason::FrameTooLarge,
        RejectReason::Invalid,
        RejectReason::Truncated,
        RejectReason::BadProfile,
        RejectReason::BadHello,
        RejectReason::HelloOverUdp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::BadJson => "bad_json",
            RejectReason::MissingField => "missing_field",
            RejectReason::UnknownField => "unknown_field",
            RejectReason::BadUtf8 => "bad_utf8",
            RejectReason::TooLong => "too_long",
            RejectReason::BadFrame => "bad_frame",
            RejectReason::FrameTooLarge => "frame_too_large",
            RejectReason::Invalid => "invalid",
            RejectReason::Truncated => "truncated",
            RejectReason::BadProfile => "bad_profile",
            RejectReason::BadHello => "bad_hello",
            RejectReason::HelloOverUdp => "hello_over_udp",
        }
    }
}

/// What became of a well-formed hello on the socket (`outcome` of
/// `profwatch_agent_memory_hellos_total`); malformed ones are rejected input
/// ([`RejectReason::BadHello`], [`RejectReason::HelloOverUdp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HelloOutcome {
    /// A process not watched before is watched now.
    Registered,
    /// The process was watched already; its hello's labels replace the ones it had.
    Updated,
    /// Refused: the watch holds its most processes ([`crate::memory::MAX_WATCHED`]).
    TooMany,
    /// Refused: the process exited before it could be watched.
    Gone,
    /// Dropped: the watch thread's queue of registrations was full.
    QueueFull,
}

impl HelloOutcome {
    pub const ALL: [HelloOutcome; 5] = [
        HelloOutcome::Registered,
        HelloOutcome::Updated,
        HelloOutcome::TooMany,
        HelloOutcome::Gone,
        HelloOutcome::QueueFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HelloOutcome::Registered => "registered",
            HelloOutcome::Updated => "updated",
            HelloOutcome::TooMany => "too_many",
            HelloOutcome::Gone => "gone",
            HelloOutcome::QueueFull => "queue_full",
        }
    }
}

/// Why received events were thrown away (`reason` of `profwatch_agent_events_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// The collector refused the batch for good (400, 413, 422) and it is larger than the
    /// whole dead-letter folder, so it could not be kept there.
    CollectorRejected,
    /// The spool was full; the oldest batches were evicted.
    SpoolFull,
    /// A spool record failed its checksum.
    SpoolCorrupt,
    /// The spool could not be written.
    SpoolError,
    /// The dead-letter folder was full; its oldest dead letters were removed.
    DeadLetterFull,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::CollectorRejected,
        DropReason::SpoolFull,
        DropReason::SpoolCorrupt,
        DropReason::SpoolError,
        DropReason::DeadLetterFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::CollectorRejected => "collector_rejected",
            DropReason::SpoolFull => "spool_full",
            DropReason::SpoolCorrupt => "spool_corrupt",
            DropReason::SpoolError => "spool_error",
            DropReason::DeadLetterFull => "dead_letter_full",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// A point-in-time copy of the counters; the body of `GET /status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    pub host: String,
    pub collector: String,
    pub uptime_s: u64,
    pub received: u64,
    pub rejected: Vec<(String, u64)>,
    pub spooled_events: u64,
    pub spool_records: u64,
    pub spool_bytes: u64,
    pub spool_events: u64,
    pub shipped_events: u64,
    pub shipped_batches: u64,
    pub retries: u64,
    pub dropped: Vec<(String, u64)>,
    pub last_error: Option<String>,
    /// Profiles apps sent over the socket (the sidecar's own sampling is not counted here).
    #[serde(default)]
    pub received_profiles: u64,
    #[serde(default)]
    pub spooled_profiles: u64,
    #[serde(default)]
    pub shipped_profiles: u64,
    #[serde(default)]
    pub dropped_profiles: Vec<(String, u64)>,
    /// Processes and threads sampled now (`--profile-pid`, `--profile-name`).
    #[serde(default)]
    pub profiled_processes: u64,
    #[serde(default)]
    pub profiled_threads: u64,
    /// Stack samples read from other processes, and samples the kernel dropped.
    #[serde(default)]
    pub profile_samples: u64,
    #[serde(default)]
    pub profile_samples_lost: u64,
    /// Samples whose stack did not unwind to its root (shipped under `[truncated]`).
    #[serde(default)]
    pub profile_samples_truncated: u64,
    /// Bytes of unwind information held for the sampled processes' modules.
    #[serde(default)]
    pub profile_unwind_info_bytes: u64,
    /// Processes whose memory is read now (`--memory-pid`, `--memory-name`).
    #[serde(default)]
    pub memory_processes: u64,
    /// Memory samples read, and refused by the collector's limits before they were spooled.
    #[serde(default)]
    pub memory_samples_read: u64,
    #[serde(default)]
    pub memory_samples_invalid: u64,
    #[serde(default)]
    pub memory_samples_spooled: u64,
    #[serde(default)]
    pub memory_samples_shipped: u64,
    #[serde(default)]
    pub memory_samples_dead_lettered: u64,
    #[serde(default)]
    pub memory_samples_dropped: Vec<(String, u64)>,
    /// Hellos on the socket by outcome (`registered`, `updated`, `too_many`, `gone`,
    /// `queue_full`); malformed ones are in `rejected` (`bad_hello`, `hello_over_udp`).
    #[serde(default)]
    pub memory_hellos: Vec<(String, u64)>,
    /// Events and profiles the collector refused for good (400, 413, 422), moved to the
    /// dead-letter folder.
    #[serde(default)]
    pub dead_lettered_events: u64,
    #[serde(default)]
    pub dead_lettered_profiles: u64,
    /// Dead letters in the folder now, and their bytes.
    #[serde(default)]
    pub dead_letter_records: u64,
    #[serde(default)]
    pub dead_letter_bytes: u64,
    /// Times a batch that kept failing retriably was set aside (moved behind the others).
    #[serde(default)]
    pub set_aside: u64,
    /// Spooled batches that have been set aside since the sidecar started.
    #[serde(default)]
    pub spool_set_aside: u64,
    /// The collector's current run of refusals; `None` once a delivery succeeds.
    #[serde(default)]
    pub refusal: Option<Refusal>,
    /// Who connected to the socket (its `SO_PEERCRED`), most recent first, at most
    /// [`MAX_PEERS`].
    #[serde(default)]
    pub peers: Vec<Peer>,
}

/// Peers remembered in [`StatusSnapshot::peers`].
pub const MAX_PEERS: usize = 64;

/// A process that connected to the socket, by the kernel's account of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// `None` when the kernel gave none (a peer in another pid namespace shows as 0).
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// Connections it opened.
    pub connections: u64,
}

/// The collector has been answering `status` (not 2xx) since `since_ns`, without a delivery
/// in between.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub status: u16,
    /// Unix nanoseconds of the first answer with this status in the run.
    pub since_ns: i64,
    /// Seconds from `since_ns` to the snapshot.
    pub for_s: u64,
}

impl Refusal {
    /// `refused by collector: 401 since 2026-01-01T00:00:00Z (for 42s)`.
    pub fn describe(&self) -> String {
        format!(
            "refused by collector: {} since {} (for {}s)",
            self.status,
            timefmt::format_rfc3339(self.since_ns),
            self.for_s
        )
    }
}

/// The counters of what happens to batches the collector does not acknowledge.
#[derive(Debug)]
struct DeliveryMetrics {
    dead_lettered_events: Counter,
    dead_lettered_profiles: Counter,
    dead_letter_records: Gauge,
    dead_letter_bytes: Gauge,
    set_aside: Counter,
    spool_set_aside: Gauge,
    refusal_status: Gauge,
    refusal_since: Gauge,
    /// Status and start (unix ns) of the current run of refusals.
    refusal: Mutex<Option<(u16, i64)>>,
}

impl DeliveryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = DeliveryMetrics {
            dead_lettered_events: Counter::default(),
            dead_lettered_profiles: Counter::default(),
            dead_letter_records: Gauge::default(),
            dead_letter_bytes: Gauge::default(),
            set_aside: Counter::default(),
            spool_set_aside: Gauge::default(),
            refusal_status: Gauge::default(),
            refusal_since: Gauge::default(),
            refusal: Mutex::new(None),
        };
        registry.register(
            "events_dead_lettered",
            "Events the collector refused for good (400, 413, 422), kept in the dead-letter folder",
            m.dead_lettered_events.clone(),
        );
        registry.register(
            "profiles_dead_lettered",
            "Profiles the collector refused for good (400, 413, 422), kept in the dead-letter folder",
            m.dead_lettered_profiles.clone(),
        );
        registry.register(
            "dead_letter_records",
            "Batches in the dead-letter folder",
            m.dead_letter_records.clone(),
        );
        registry.register(
            "dead_letter_bytes",
            "Bytes in the dead-letter folder",
            m.dead_letter_bytes.clone(),
        );
        registry.register(
            "batches_set_aside",
            "Times a batch that kept failing retriably was moved behind the others",
            m.set_aside.clone(),
        );
        registry.register(
            "spool_set_aside_records",
            "Spooled batches set aside since the sidecar started",
            m.spool_set_aside.clone(),
        );
        registry.register(
            "collector_refusal_status",
            "The status the collector keeps answering instead of 2xx; 0 after a delivery",
            m.refusal_status.clone(),
        );
        registry.register(
            "collector_refusal_since_seconds",
            "Unix time of the first answer of the current run of refusals; 0 after a delivery",
            m.refusal_since.clone(),
        );
        m
    }
}

/// The counters and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    received: Counter,
    rejected: Family<ReasonLabel, Counter>,
    spooled_events: Counter,
    spool_records: Gauge,
    spool_bytes: Gauge,
    spool_events: Gauge,
    shipped_events: Counter,
    shipped_batches: Counter,
    retries: Counter,
    dropped: Family<ReasonLabel, Counter>,
    profiles_received: Counter,
    profiles_spooled: Counter,
    profiles_shipped: Counter,
    profiles_dropped: Family<ReasonLabel, Counter>,
    profiled_processes: Gauge,
    profiled_threads: Gauge,
    profile_samples: Counter,
    profile_samples_lost: Counter,
    profile_samples_truncated: Counter,
    profile_unwind_info_bytes: Gauge,
    delivery: DeliveryMetrics,
    memory: MemoryMetrics,
    last_error: Mutex<Option<String>>,
    peers: Mutex<std::collections::VecDeque<Peer>>,
    log_gate: Mutex<Option<Instant>>,
    log_suppressed: AtomicU64,
    started: Instant,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("profwatch_agent");
        let received = Counter::default();
        registry.register(
            "events_received",
            "Valid events read from the local socket and UDP",
            received.clone(),
        );
        let rejected = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "events_rejected",
            "Local input refused (lines, frames or events), by reason",
            rejected.clone(),
        );
        let spooled_events = Counter::default();
        registry.register(
            "events_spooled",
            "Events written to the disk spool",
            spooled_events.clone(),
        );
        let spool_records = Gauge::default();
        registry.register(
            "spool_records",
            "Batches in the spool",
            spool_records.clone(),
        );
        let spool_bytes = Gauge::default();
        registry.register("spool_bytes", "Bytes in the spool", spool_bytes.clone());
        let spool_events = Gauge::default();
        registry.register("spool_events", "Events in the spool", spool_events.clone());
        let shipped_events = Counter::default();
        registry.register(
            "events_shipped",
            "Events the collector acknowledged (2xx)",
            shipped_events.clone(),
        );
        let shipped_batches = Counter::default();
        registry.register(
            "batches_shipped",
            "Batches the collector acknowledged (2xx)",
            shipped_batches.clone(),
        );
        let retries = Counter::default();
        registry.register(
            "batch_retries",
            "Deliveries that failed retriably (network, 401, 403, 404, 407, 408, 429, 5xx, ...) and will be retried",
            retries.clone(),
        );
        let dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "events_dropped",
            "Received events thrown away, by reason",
            dropped.clone(),
        );
        let profiles_received = Counter::default();
        registry.register(
            "profiles_received",
            "Profiles (one label set each) apps sent over the local socket",
            profiles_received.clone(),
        );
        let profiles_spooled = Counter::default();
        registry.register(
            "profiles_spooled",
            "Profiles written to the disk spool (relayed and sampled by the sidecar)",
            profiles_spooled.clone(),
        );
        let profiles_shipped = Counter::default();
        registry.register(
            "profiles_shipped",
            "Profiles the collector acknowledged (2xx)",
            profiles_shipped.clone(),
        );
        let profiles_dropped = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "profiles_dropped",
            "Profiles thrown away, by reason",
            profiles_dropped.clone(),
        );
        let profiled_processes = Gauge::default();
        registry.register(
            "profiled_processes",
            "Processes sampled now (--profile-pid, --profile-name)",
            profiled_processes.clone(),
        );
        let profiled_threads = Gauge::default();
        registry.register(
            "profiled_threads",
            "Threads of those processes with a sampling event",
            profiled_threads.clone(),
        );
        let profile_samples = Counter::default();
        registry.register(
            "profile_samples",
            "Stack samples read from the sampled processes",
            profile_samples.clone(),
        );
        let profile_samples_lost = Counter::default();
        registry.register(
            "profile_samples_lost",
            "Stack samples the kernel dropped because a ring was full",
            profile_samples_lost.clone(),
        );
        let profile_samples_truncated = Counter::default();
        registry.register(
            "profile_samples_truncated",
            "Stack samples whose unwinding stopped before the stack's root (marked [truncated])",
            profile_samples_truncated.clone(),
        );
        let profile_unwind_info_bytes = Gauge::default();
        registry.register(
            "profile_unwind_info_bytes",
            "Bytes of unwind tables held for the sampled processes' modules",
            profile_unwind_info_bytes.clone(),
        );
        let delivery = DeliveryMetrics::register(&mut registry);
        let memory = MemoryMetrics::register(&mut registry);
        for r in RejectReason::ALL {
            let _ = rejected.get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        for r in DropReason::ALL {
            let _ = dropped.get_or_create(&ReasonLabel { reason: r.as_str() });
            let _ = profiles_dropped.get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        Metrics {
            registry,
            received,
            rejected,
            spooled_events,
            spool_records,
            spool_bytes,
            spool_events,
            shipped_events,
            shipped_batches,
            retries,
            dropped,
            profiles_received,
            profiles_spooled,
            profiles_shipped,
            profiles_dropped,
            profiled_processes,
            profiled_threads,
            profile_samples,
            profile_samples_lost,
            profile_samples_truncated,
            profile_unwind_info_bytes,
            delivery,
            memory,
            last_error: Mutex::new(None),
            peers: Mutex::default(),
            log_gate: Mutex::new(None),
            log_suppressed: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub(crate) fn received(&self, n: usize) {
        self.received.inc_by(n as u64);
    }

    /// Counts a refused piece of local input and logs it, at most once a second.
    pub(crate) fn reject(&self, reason: RejectReason, detail: &dyn std::fmt::Display) {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        if self.log_allowed() {
            let suppressed = self.log_suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(
                reason = reason.as_str(),
                suppressed,
                "refused local input: {detail}"
            );
        } else {
            self.log_suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn log_allowed(&self) -> bool {
        let Ok(mut gate) = self.log_gate.lock() else {
            return false;
        };
        let now = Instant::now();
        match *gate {
            Some(last) if now.duration_since(last) < Duration::from_secs(1) => false,
            _ => {
                *gate = Some(now);
                true
            }
        }
    }

    pub(crate) fn spooled(&self, events: usize) {
        self.spooled_events.inc_by(events as u64);
    }

    pub(crate) fn spool_size(&self, records: u64, bytes: u64, events: u64) {
        self.spool_records.set(clamp(records));
        self.spool_bytes.set(clamp(bytes));
        self.spool_events.set(clamp(events));
    }

    pub(crate) fn shipped(&self, events: u64) {
        self.shipped_events.inc_by(events);
        self.shipped_batches.inc();
    }

    pub(crate) fn retried(&self, error: String) {
        self.retries.inc();
        self.set_last_error(error);
    }

    pub(crate) fn dropped(&self, reason: DropReason, events: u64) {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(events);
    }

    pub(crate) fn profiles_received(&self, n: usize) {
        self.profiles_received.inc_by(n as u64);
    }

    pub(crate) fn profile_spooled(&self) {
        self.profiles_spooled.inc();
    }

    pub(crate) fn profile_shipped(&self) {
        self.profiles_shipped.inc();
    }

    pub(crate) fn profiles_dropped(&self, reason: DropReason, profiles: u64) {
        self.profiles_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc_by(profiles);
    }

    /// Counts `n` of `unit` dropped for `reason`.
    pub(crate) fn dropped_in(&self, reason: DropReason, unit: Unit, n: u64) {
        match unit {
            Unit::Events => self.dropped(reason, n),
            Unit::Profiles => self.profiles_dropped(reason, n),
            Unit::MemorySamples => {
                self.memory
                    .dropped
                    .get_or_create(&ReasonLabel {
                        reason: reason.as_str(),
                    })
                    .inc_by(n);
            }
        }
    }

    /// Counts a record of `n` of `unit` written to the spool.
    pub(crate) fn spooled_in(&self, unit: Unit, n: u64) {
        match unit {
            Unit::Events => self.spooled(n as usize),
            Unit::Profiles => self.profile_spooled(),
            Unit::MemorySamples => {
                self.memory.spooled.inc_by(n);
            }
        }
    }

    /// Counts a record of `n` of `unit` the collector acknowledged.
    pub(crate) fn shipped_in(&self, unit: Unit, n: u64) {
        match unit {
            Unit::Events => self.shipped(n),
            Unit::Profiles => self.profile_shipped(),
            Unit::MemorySamples => {
                self.memory.shipped.inc_by(n);
            }
        }
    }

    /// Counts a record of `n` of `unit` kept in the dead-letter folder.
    pub(crate) fn dead_lettered_in(&self, unit: Unit, n: u64) {
        let counter = match unit {
            Unit::Events => &self.delivery.dead_lettered_events,
            Unit::Profiles => &self.delivery.dead_lettered_profiles,
            Unit::MemorySamples => &self.memory.dead_lettered,
        };
        counter.inc_by(n);
    }

    /// Processes whose memory is read now, and samples read (or found invalid) in a pass.
    pub(crate) fn memory_pass(&self, processes: usize, read: u64, invalid: u64) {
        self.memory.processes.set(clamp(processes as u64));
        self.memory.read.inc_by(read);
        self.memory.invalid.inc_by(invalid);
    }

    /// Counts one hello's outcome.
    pub(crate) fn hello(&self, outcome: HelloOutcome) {
        self.memory
            .hellos
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Hellos with `outcome` so far.
    pub fn hello_count(&self, outcome: HelloOutcome) -> u64 {
        self.memory
            .hellos
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .get()
    }

    /// Memory samples dropped for `reason` so far.
    pub fn memory_dropped_count(&self, reason: DropReason) -> u64 {
        self.memory
            .dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    pub(crate) fn profiler_targets(&self, processes: usize, threads: usize, unwind_info: usize) {
        self.profiled_processes.set(clamp(processes as u64));
        self.profiled_threads.set(clamp(threads as u64));
        self.profile_unwind_info_bytes
            .set(clamp(unwind_info as u64));
    }

    pub(crate) fn profiler_samples(&self, read: ReadCounts) {
        self.profile_samples.inc_by(read.samples);
        self.profile_samples_lost.inc_by(read.lost);
        self.profile_samples_truncated.inc_by(read.truncated);
    }

    pub(crate) fn dead_letter_size(&self, records: u64, bytes: u64) {
        self.delivery.dead_letter_records.set(clamp(records));
        self.delivery.dead_letter_bytes.set(clamp(bytes));
    }

    pub(crate) fn set_aside(&self) {
        self.delivery.set_aside.inc();
    }

    pub(crate) fn spool_set_aside(&self, records: u64) {
        self.delivery.spool_set_aside.set(clamp(records));
    }

    /// The collector answered `status` (not 2xx); starts a run of refusals unless one with the
    /// same status is going on.
    pub(crate) fn refused(&self, status: u16) {
        let Ok(mut refusal) = self.delivery.refusal.lock() else {
            return;
        };
        if refusal.is_some_and(|(s, _)| s == status) {
            return;
        }
        let now = timefmt::now_ns();
        *refusal = Some((status, now));
        self.delivery.refusal_status.set(i64::from(status));
        self.delivery
            .refusal_since
            .set(now / timefmt::NANOS_PER_SEC);
    }

    /// A delivery succeeded: the run of refusals, if any, is over.
    pub(crate) fn refusals_over(&self) {
        if let Ok(mut refusal) = self.delivery.refusal.lock() {
            *refusal = None;
        }
        self.delivery.refusal_status.set(0);
        self.delivery.refusal_since.set(0);
    }

    fn refusal(&self) -> Option<Refusal> {
        let (status, since_ns) = (*self.delivery.refusal.lock().ok()?)?;
        let for_ns = timefmt::now_ns().saturating_sub(since_ns).max(0);
        Some(Refusal {
            status,
            since_ns,
            for_s: u64::try_from(for_ns / timefmt::NANOS_PER_SEC).unwrap_or(0),
        })
    }

    /// Records a connection to the socket by its peer's credentials; a peer first seen is
    /// logged.
    pub(crate) fn peer_connected(&self, pid: Option<i32>, uid: u32, gid: u32) {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let mut peer = match peers
            .iter()
            .position(|p| (p.pid, p.uid, p.gid) == (pid, uid, gid))
        {
            Some(at) => peers.remove(at).unwrap_or_default(),
            None => {
                tracing::info!(?pid, uid, gid, "an app connected to the socket");
                Peer {
                    pid,
                    uid,
                    gid,
                    connections: 0,
                }
            }
        };
        peer.connections += 1;
        peers.push_front(peer);
        peers.truncate(MAX_PEERS);
    }

    pub(crate) fn set_last_error(&self, error: String) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// Events refused for `reason` so far.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.rejected
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Received events dropped for `reason` so far.
    pub fn dropped_count(&self, reason: DropReason) -> u64 {
        self.dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Profiles dropped for `reason` so far.
    pub fn profiles_dropped_count(&self, reason: DropReason) -> u64 {
        self.profiles_dropped
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .get()
    }

    /// A copy of every counter.
    pub fn snapshot(&self, host: &str, collector: &str) -> StatusSnapshot {
        StatusSnapshot {
            host: host.to_owned(),
            collector: collector.to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            received: self.received.get(),
            rejected: RejectReason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.rejected_count(*r)))
                .collect(),
            spooled_events: self.spooled_events.get(),
            spool_records: u64::try_from(self.spool_records.get()).unwrap_or(0),
            spool_bytes: u64::try_from(self.spool_bytes.get()).unwrap_or(0),
            spool_events: u64::try_from(self.spool_events.get()).unwrap_or(0),
            shipped_events: self.shipped_events.get(),
            shipped_batches: self.shipped_batches.get(),
            retries: self.retries.get(),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.dropped_count(*r)))
                .collect(),
            last_error: self.last_error.lock().ok().and_then(|e| e.clone()),
            peers: self
                .peers
                .lock()
                .map(|p| p.iter().cloned().collect())
                .unwrap_or_default(),
            received_profiles: self.profiles_received.get(),
            spooled_profiles: self.profiles_spooled.get(),
            shipped_profiles: self.profiles_shipped.get(),
            dropped_profiles: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.profiles_dropped_count(*r)))
                .collect(),
            profiled_processes: u64::try_from(self.profiled_processes.get()).unwrap_or(0),
            profiled_threads: u64::try_from(self.profiled_threads.get()).unwrap_or(0),
            profile_samples: self.profile_samples.get(),
            profile_samples_lost: self.profile_samples_lost.get(),
            profile_samples_truncated: self.profile_samples_truncated.get(),
            profile_unwind_info_bytes: gauge(&self.profile_unwind_info_bytes),
            memory_processes: gauge(&self.memory.processes),
            memory_samples_read: self.memory.read.get(),
            memory_samples_invalid: self.memory.invalid.get(),
            memory_samples_spooled: self.memory.spooled.get(),
            memory_samples_shipped: self.memory.shipped.get(),
            memory_samples_dead_lettered: self.memory.dead_lettered.get(),
            memory_samples_dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str().to_owned(), self.memory_dropped_count(*r)))
                .collect(),
            memory_hellos: HelloOutcome::ALL
                .iter()
                .map(|o| (o.as_str().to_owned(), self.hello_count(*o)))
                .collect(),
            dead_lettered_events: self.delivery.dead_lettered_events.get(),
            dead_lettered_profiles: self.delivery.dead_lettered_profiles.get(),
            dead_letter_records: gauge(&self.delivery.dead_letter_records),
            dead_letter_bytes: gauge(&self.delivery.dead_letter_bytes),
            set_aside: self.delivery.set_aside.get(),
            spool_set_aside: gauge(&self.delivery.spool_set_aside),
            refusal: self.refusal(),
        }
    }
}

/// The counters of the memory readings (`--memory-pid`, `--memory-name`), in memory samples.
#[derive(Debug)]
struct MemoryMetrics {
    processes: Gauge,
    read: Counter,
    invalid: Counter,
    spooled: Counter,
    shipped: Counter,
    dead_lettered: Counter,
    dropped: Family<ReasonLabel, Counter>,
    hellos: Family<OutcomeLabel, Counter>,
}

impl MemoryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = MemoryMetrics {
            processes: Gauge::default(),
            read: Counter::default(),
            invalid: Counter::default(),
            spooled: Counter::default(),
            shipped: Counter::default(),
            dead_lettered: Counter::default(),
            dropped: Family::default(),
            hellos: Family::default(),
        };
        for r in DropReason::ALL {
            let _ = m.dropped.get_or_create(&ReasonLabel { reason: r.as_str() });
        }
        for o in HelloOutcome::ALL {
            let _ = m.hellos.get_or_create(&OutcomeLabel {
                outcome: o.as_str(),
            });
        }
        registry.register(
            "memory_processes",
            "Processes whose memory is read now (--memory-pid, --memory-name, hellos)",
            m.processes.clone(),
        );
        registry.register(
            "memory_samples_read",
            "Memory samples read from /proc",
            m.read.clone(),
        );
        registry.register(
            "memory_samples_invalid",
            "Memory samples refused by the collector's limits before they were spooled",
            m.invalid.clone(),
        );
        registry.register(
            "memory_samples_spooled",
            "Memory samples written to the disk spool",
            m.spooled.clone(),
        );
        registry.register(
            "memory_samples_shipped",
            "Memory samples the collector acknowledged (2xx)",
            m.shipped.clone(),
        );
        registry.register(
            "memory_samples_dead_lettered",
            "Memory samples the collector refused for good (400, 413, 422), kept in the dead-letter folder",
            m.dead_lettered.clone(),
        );
        registry.register(
            "memory_samples_dropped",
            "Memory samples thrown away, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "memory_hellos",
            "Well-formed hellos on the socket (SDK registrations of their process), by outcome",
            m.hellos.clone(),
        );
        m
    }
}

fn gauge(g: &Gauge) -> u64 {
    u64::try_from(g.get()).unwrap_or(0)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_reason_from_the_start() {
        let m = Metrics::new();
        m.reject(RejectReason::BadJson, &"x");
        m.received(3);
        let text = m.render();
        assert!(
            text.contains("profwatch_agent_events_rejected_total{reason=\"bad_json\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("profwatch_agent_events_dropped_total{reason=\"spool_full\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("profwatch_agent_events_received_total 3"),
            "{text}"
        );
        assert_eq!(m.snapshot("h", "c").received, 3);
    }

    #[test]
    fn a_run_of_refusals_keeps_its_start_until_the_status_changes_or_a_delivery() {
        let m = Metrics::new();
        assert_eq!(m.snapshot("", "").refusal, None);
        m.refused(401);
        let first = m.snapshot("", "").refusal.expect("refused");
        assert_eq!(first.status, 401);
        m.refused(401);
        assert_eq!(
            m.snapshot("", "").refusal.map(|r| r.since_ns),
            Some(first.since_ns),
            "the same status continues the run"
        );
        let text = m.render();
        assert!(
            text.contains("profwatch_agent_collector_refusal_status 401"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "profwatch_agent_collector_refusal_since_seconds {}",
                first.since_ns / timefmt::NANOS_PER_SEC
            )),
            "{text}"
        );
        assert!(first
            .describe()
            .starts_with("refused by collector: 401 since 20"));
        m.refused(403);
        assert_eq!(m.snapshot("", "").refusal.map(|r| r.status), Some(403));
        m.refusals_over();
        assert_eq!(m.snapshot("", "").refusal, None);
        assert!(
            m.render()
                .contains("profwatch_agent_collector_refusal_status 0"),
            "{}",
            m.render()
        );
    }
}
