//! What a scope ([`crate::scope`]) and an instrumented future ([`crate::instrument`]) share:
//! the measured stretches of one request ([`Measure`], used by futures and the tower layer,
//! which are measured poll by poll), and recording a finished request ([`record`]): the
//! sampler's attribution ends, then the event goes to the export queue.
//!
//! Invariants: counters are read immediately around each stretch, on the thread that runs it;
//! recording never blocks (see [`Agent::submit`]).

use std::time::Instant;

use profwatch_model::timefmt::now_ns;

use crate::agent::Agent;
use crate::context;
use crate::counters::{self, CounterMode, Sample};
use crate::endpoint::EndpointName;
use crate::export::worker::Record;
use crate::labels::LabelSet;
use crate::sampler;

/// A request that has ended, as [`record`] takes it.
pub(crate) struct Finished {
    pub(crate) endpoint: EndpointName,
    pub(crate) weight: f64,
    pub(crate) started: Instant,
    pub(crate) labels: LabelSet,
    pub(crate) status: u16,
    pub(crate) cpu_ns: u64,
    pub(crate) instructions: Option<u64>,
}

/// Ends the sampler's attribution of the request tagged `tag` and queues its event; the event's
/// time is when the request started.
pub(crate) fn record(agent: &Agent, tag: &sampler::RequestTag, f: Finished) {
    let wall_ns = f.started.elapsed().as_nanos() as u64;
    sampler::finish(tag, &f.endpoint, &f.labels);
    agent.submit(Record {
        ts: now_ns().saturating_sub(wall_ns as i64),
        endpoint: f.endpoint,
        status: f.status,
        cpu_ns: f.cpu_ns,
        instructions: f.instructions,
        wall_ns,
        weight: f.weight,
        labels: f.labels,
    });
}

/// The accumulated cost of one request measured across polls.
#[derive(Debug)]
pub(crate) struct Measure {
    agent: Agent,
    endpoint: EndpointName,
    weight: f64,
    started: Instant,
    labels: LabelSet,
    status: Option<u16>,
    cpu_ns: u64,
    instructions: Option<u64>,
    /// The stack sampler's attribution state (see `crate::sampler`).
    tag: sampler::RequestTag,
}

impl Measure {
    /// `Some` when the agent samples this request.
    pub(crate) fn start(agent: &Agent, endpoint: EndpointName) -> Option<Measure> {
        let weight = agent.sample()?;
        Some(Measure {
            agent: agent.clone(),
            endpoint,
            weight,
            started: Instant::now(),
            labels: LabelSet::new(),
            status: None,
            cpu_ns: 0,
            instructions: Some(0),
            tag: sampler::RequestTag::default(),
        })
    }

    /// Runs `f` (one poll, or the service call) with this request as the thread's current
    /// one, adding the CPU it costs.
    #[inline]
    pub(crate) fn run<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let mode = self.agent.counters();
        let id = context::push(true, std::mem::take(&mut self.labels), self.status);
        let entered = sampler::enter(&mut self.tag);
        let running = Running {
            measure: self,
            id,
            entered: Some(entered),
            mode,
            start: counters::read(mode),
        };
        let out = f();
        drop(running);
        out
    }

    /// Records the request with `status` (else the status set inside it, else `fallback`).
    pub(crate) fn finish(self, status: Option<u16>, fallback: u16) {
        record(
            &self.agent,
            &self.tag,
            Finished {
                endpoint: self.endpoint,
                weight: self.weight,
                started: self.started,
                labels: self.labels,
                status: status.or(self.status).unwrap_or(fallback),
                cpu_ns: self.cpu_ns,
                instructions: self.instructions,
            },
        );
    }
}

/// Ends one measured stretch, also when the poll panics.
struct Running<'m> {
    measure: &'m mut Measure,
    id: u64,
    entered: Option<sampler::Entered>,
    mode: CounterMode,
    start: Sample,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let delta = self.start.until(&counters::read(self.mode));
        let m = &mut *self.measure;
        if let Some(entered) = self.entered.take() {
            sampler::leave(entered, &mut m.tag);
        }
        if let Some((labels, status)) = context::pop(self.id) {
            m.labels = labels;
            m.status = status;
        }
        m.cpu_ns = m.cpu_ns.saturating_add(delta.cpu_ns);
        m.instructions = match (m.instructions, delta.instructions) {
            (Some(total), Some(d)) => Some(total.saturating_add(d)),
            _ => None,
        };
    }
}
