//! The collector's Prometheus metrics, served at `/metrics`. One [`Metrics`] per server (no
//! global registry), so tests can run servers side by side.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Why events or a batch were refused; the `reason` label of `profwatch_events_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Auth,
    BodyTooLarge,
    Decompress,
    ContentType,
    Decode,
    Invalid,
    Overloaded,
    StoreError,
    /// The body did not arrive in time.
    Timeout,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Auth => "auth",
            RejectReason::BodyTooLarge => "body_too_large",
            RejectReason::Decompress => "decompress",
            RejectReason::ContentType => "content_type",
            RejectReason::Decode => "decode",
            RejectReason::Invalid => "invalid",
            RejectReason::Overloaded => "overloaded",
            RejectReason::StoreError => "store_error",
            RejectReason::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The analysis passes this process ran, by outcome (`ok` or `failed`).
#[derive(Debug, Clone, Default)]
pub struct AnalysisPasses(Family<OutcomeLabel, Counter>);

impl AnalysisPasses {
    pub fn done(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.0.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    events_accepted: Counter,
    batches_accepted: Counter,
    rejected_batches: Family<ReasonLabel, Counter>,
    rejected_events: Family<ReasonLabel, Counter>,
    write_latency: Histogram,
    request_latency: Histogram,
    queue_depth: Gauge<i64, std::sync::atomic::AtomicI64>,
    stack_collisions: Gauge<i64, std::sync::atomic::AtomicI64>,
    analysis_passes: AnalysisPasses,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("profwatch");
        let events_accepted = Counter::default();
        registry.register(
            "events_accepted",
            "Events stored and acknowledged",
            events_accepted.clone(),
        );
        let batches_accepted = Counter::default();
        registry.register(
            "batches_accepted",
            "Batches stored and acknowledged",
            batches_accepted.clone(),
        );
        let rejected_batches = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "batches_rejected",
            "Ingest requests refused, by reason",
            rejected_batches.clone(),
        );
        let rejected_events = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "events_rejected",
            "Events refused, by reason (events of a body that could not be decoded are not counted)",
            rejected_events.clone(),
        );
        let write_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "store_write_seconds",
            "Time to make one batch durable in the store",
            write_latency.clone(),
        );
        let request_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "ingest_request_seconds",
            "Time from the start of an accepted ingest request to its acknowledgement \
             (reading, decoding and storing the batch)",
            request_latency.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "store_queue_depth",
            "Batches accepted by the store but not yet durable",
            queue_depth.clone(),
        );
        let stack_collisions = Gauge::default();
        registry.register(
            "store_stack_collisions",
            "Stacks that met another stack's id since the store opened (each kept apart under \
             the next id); anything but 0 is worth a look",
            stack_collisions.clone(),
        );
        let analysis_passes = AnalysisPasses::default();
        registry.register(
            "analysis_passes",
            "Scheduled analysis passes this process ran, by outcome",
            analysis_passes.0.clone(),
        );
        Metrics {
            analysis_passes,
            registry,
            events_accepted,
            batches_accepted,
            rejected_batches,
            rejected_events,
            write_latency,
            request_latency,
            queue_depth,
            stack_collisions,
        }
    }

    /// Registers the query cache's counters (before the registry is shared).
    pub fn register_cache(&mut self, c: &crate::cache::CacheStats) {
        let r = &mut self.registry;
        r.register(
            "query_cache_hits",
            "Answers served fresh from the query cache",
            c.hits.clone(),
        );
        r.register(
            "query_cache_misses",
            "Queries run by a request holding the lease",
            c.misses.clone(),
        );
        r.register(
            "query_cache_lease_waits",
            "Requests that waited for another's identical query",
            c.lease_waits.clone(),
        );
        r.register(
            "query_cache_stale_served",
            "Stale answers served while one request refreshed them",
            c.stale_served.clone(),
        );
        r.register(
            "query_cache_evictions",
            "Answers dropped to keep the cache within its byte bound",
            c.evictions.clone(),
        );
    }

    /// A stored batch: `write_seconds` in the store, `request_seconds` in all.
    pub fn accepted(&self, events: usize, write_seconds: f64, request_seconds: f64) {
        self.events_accepted.inc_by(events as u64);
        self.batches_accepted.inc();
        self.write_latency.observe(write_seconds);
        self.request_latency.observe(request_seconds);
    }

    pub fn rejected(&self, reason: RejectReason, events: usize) {
        let label = ReasonLabel {
            reason: reason.as_str().to_owned(),
        };
        self.rejected_batches.get_or_create(&label).inc();
        if events > 0 {
            self.rejected_events
                .get_or_create(&label)
                .inc_by(events as u64);
        }
    }

    /// Renders the registry in the Prometheus text format, updating the store's gauges first.
    pub fn render(&self, queue_depth: usize, stack_collisions: u64) -> String {
        self.queue_depth.set(queue_depth as i64);
        self.stack_collisions
            .set(i64::try_from(stack_collisions).unwrap_or(i64::MAX));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The counter of scheduled analysis passes, for the scheduler.
    pub fn analysis_passes(&self) -> AnalysisPasses {
        self.analysis_passes.clone()
    }

    pub fn events_accepted(&self) -> u64 {
        self.events_accepted.get()
    }
}
