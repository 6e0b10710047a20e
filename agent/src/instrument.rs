//! Async instrumentation: the CPU of a future is the sum of the counter deltas around each of
//! its polls, on whichever thread polls it.
//!
//! Invariants: counters are sampled immediately before and after each poll, on the polling
//! thread, so work done by other futures between polls (the same worker thread running
//! another request) is never attributed here. During a poll the request's labels are the
//! thread's innermost frame ([`crate::set_label`] works inside the future). Instructions are
//! reported only when every poll had a complete instruction count. A future dropped before
//! completing is still recorded (status 499 unless one was set): its CPU was spent.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use pin_project_lite::pin_project;

use crate::agent::Agent;
use crate::context;
use crate::counters::{self, CounterMode, Sample};
use crate::endpoint::EndpointName;
use crate::export::worker::Record;
use crate::labels::LabelSet;
use crate::sampler;
use crate::scope::unix_ns_now;

/// Status recorded for a request whose future was dropped before completing.
pub const CANCELLED_STATUS: u16 = 499;

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
        let wall_ns = self.started.elapsed().as_nanos() as u64;
        sampler::finish(&self.tag, &self.endpoint, &self.labels);
        self.agent.submit(Record {
            ts: unix_ns_now().saturating_sub(wall_ns as i64),
            endpoint: self.endpoint,
            status: status.or(self.status).unwrap_or(fallback),
            cpu_ns: self.cpu_ns,
            instructions: self.instructions,
            wall_ns,
            weight: self.weight,
            labels: self.labels,
        });
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

pin_project! {
    /// A future whose polls are measured; see [`crate::instrument`].
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        measure: Option<Measure>,
    }

    impl<F> PinnedDrop for Instrumented<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(measure) = this.project().measure.take() {
                measure.finish(None, CANCELLED_STATUS);
            }
        }
    }
}

impl<F> Instrumented<F> {
    pub(crate) fn new(agent: Option<&Agent>, endpoint: EndpointName, inner: F) -> Self {
        Instrumented {
            inner,
            measure: agent.and_then(|a| Measure::start(a, endpoint)),
        }
    }

    /// Whether this future is measured (sampled, with an agent installed).
    pub fn is_sampled(&self) -> bool {
        self.measure.is_some()
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(measure) = this.measure.as_mut() else {
            return this.inner.poll(cx);
        };
        let inner = this.inner;
        let out = measure.run(|| inner.poll(cx));
        if out.is_ready() {
            if let Some(measure) = this.measure.take() {
                measure.finish(None, 0);
            }
        }
        out
    }
}

impl<F> fmt::Debug for Instrumented<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("measure", &self.measure)
            .finish_non_exhaustive()
    }
}
