//! The agent handle: configuration applied, the queue to the export thread, the counters of
//! what happened to events.
//!
//! Invariants: the request path only ever `try_send`s into a bounded, preallocated queue
//! (`std::sync::mpsc::sync_channel`): it never blocks and never allocates for an event; a
//! full queue drops the event and counts it in [`Stats::queue_full`]. Cloning an `Agent` is
//! cheap and every clone shares the queue; the export thread ends once every clone is gone,
//! after shipping what was queued.

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;

use http::Method;
use profwatch_model::{Labels, Limits, RequestEvent};

use crate::config::{Config, ExportTarget};
use crate::counters::{self, CounterMode, CounterPath};
use crate::endpoint::{EndpointCache, EndpointName};
use crate::error::AgentError;
use crate::export::worker::{Metadata, Msg, Record, Worker};
use crate::export::{DiscardExporter, Exporter, HttpExporter, UnixSocketExporter};
use crate::sampling::RequestSampler;
use crate::stats::{StatCells, Stats};

/// A running SDK instance. Most programs make one ([`crate::init`]); tests make as many as
/// they like.
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<Msg>,
    sampler: RequestSampler,
    counters: CounterMode,
    stats: Arc<StatCells>,
    endpoints: EndpointCache,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("sampler", &self.inner.sampler)
            .field("counters", &self.inner.counters)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Agent {
    /// Starts an agent exporting where `config.export` says.
    pub fn new(config: Config) -> Result<Agent, AgentError> {
        let exporter: Box<dyn Exporter> = match &config.export {
            ExportTarget::Sidecar { socket } => {
                Box::new(UnixSocketExporter::new(socket).with_labels(
                    &config.service,
                    &config.build,
                    &config.dc,
                ))
            }
            ExportTarget::Collector { url, format, token } => {
                Box::new(HttpExporter::new(url, *format, token.clone())?)
            }
            ExportTarget::Discard => Box::new(DiscardExporter),
        };
        Agent::start(config, exporter)
    }

    /// Starts an agent that hands its batches to `exporter` (`config.export` is ignored).
    pub fn with_exporter(config: Config, exporter: impl Exporter) -> Result<Agent, AgentError> {
        Agent::start(config, Box::new(exporter))
    }

    fn start(config: Config, exporter: Box<dyn Exporter>) -> Result<Agent, AgentError> {
        let weight = config.sampling.weight().ok_or(AgentError::InvalidConfig {
            field: "sampling",
            problem: "must be OneIn(n >= 1) or Probability(p in (0, 1])",
        })?;
        for (field, value) in [
            ("queue_capacity", config.queue_capacity),
            ("max_batch", config.max_batch),
        ] {
            if value == 0 {
                return Err(AgentError::InvalidConfig {
                    field,
                    problem: "must be at least 1",
                });
            }
        }
        if config.flush_interval.is_zero() {
            return Err(AgentError::InvalidConfig {
                field: "flush_interval",
                problem: "must be longer than zero",
            });
        }
        let meta = Metadata {
            service: config.service,
            build: config.build,
            dc: config.dc,
            host: config.host,
        };
        check_names(&meta)?;
        let (tx, rx) = mpsc::sync_channel(config.queue_capacity);
        let stats = Arc::new(StatCells::default());
        let worker = Worker {
            rx,
            exporter,
            meta,
            stats: Arc::clone(&stats),
            max_batch: config.max_batch,
            flush_interval: config.flush_interval,
        };
        std::thread::Builder::new()
            .name("profwatch-export".into())
            .spawn(move || worker.run())
            .map_err(AgentError::Spawn)?;
        Ok(Agent {
            inner: Arc::new(Inner {
                tx,
                sampler: RequestSampler::new(config.sampling, weight),
                counters: config.counters,
                stats,
                endpoints: EndpointCache::default(),
            }),
        })
    }

    /// What happened to events so far.
    pub fn stats(&self) -> Stats {
        self.inner.stats.snapshot()
    }

    /// Ships everything queued so far and waits until the exporter has been called. Blocks:
    /// never call it on a request path.
    pub fn flush(&self) -> Result<(), AgentError> {
        let (ack_tx, ack_rx) = mpsc::sync_channel(1);
        self.inner
            .tx
            .send(Msg::Flush(ack_tx))
            .map_err(|_| AgentError::ExporterStopped)?;
        ack_rx.recv().map_err(|_| AgentError::ExporterStopped)
    }

    /// The counter path this agent uses on the calling thread.
    pub fn counter_path(&self) -> CounterPath {
        counters::active_path(self.inner.counters)
    }

    pub(crate) fn counters(&self) -> CounterMode {
        self.inner.counters
    }

    /// Decides whether to measure one request: `Some(weight)` if so.
    #[inline]
    pub(crate) fn sample(&self) -> Option<f64> {
        self.inner.sampler.sample()
    }

    pub(crate) fn endpoint(
        &self,
        method: &Method,
        matched: Option<&str>,
        path: &str,
    ) -> EndpointName {
        self.inner.endpoints.name(method, matched, path)
    }

    /// Queues a finished request; never blocks.
    #[inline]
    pub(crate) fn submit(&self, record: Record) {
        let stats = &self.inner.stats;
        match self.inner.tx.try_send(Msg::Event(record)) {
            Ok(()) => StatCells::add(&stats.queued, 1),
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                StatCells::add(&stats.queue_full, 1)
            }
        }
    }
}

/// Refuses names the collector would refuse, by validating a probe event that carries them.
fn check_names(meta: &Metadata) -> Result<(), AgentError> {
    let now = profwatch_model::timefmt::now_ns();
    RequestEvent {
        ts: now,
        service: meta.service.clone(),
        endpoint: "GET /".into(),
        build: meta.build.clone(),
        dc: meta.dc.clone(),
        host: meta.host.clone(),
        status: 200,
        cpu_ns: 0,
        instructions: None,
        wall_ns: 0,
        weight: 1.0,
        labels: Labels::new(),
    }
    .validate(&Limits::default(), now)
    .map_err(AgentError::InvalidName)
}
