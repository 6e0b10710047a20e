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

use pin_project_lite::pin_project;

use crate::agent::Agent;
use crate::endpoint::EndpointName;
use crate::measure::Measure;

/// Status recorded for a request whose future was dropped before completing.
pub const CANCELLED_STATUS: u16 = 499;

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

impl Agent {
    /// Wraps `future` so that the CPU spent polling it, on whichever thread, becomes one
    /// event for `endpoint` when it completes (or is dropped).
    pub fn instrument<F: Future>(
        &self,
        endpoint: impl Into<EndpointName>,
        future: F,
    ) -> Instrumented<F> {
        Instrumented::new(Some(self), endpoint.into(), future)
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
