//! A tower [`Layer`] for axum and hyper services: one event per sampled request, named by
//! method and route template, with the response's status and the request's wall time.
//!
//! Invariants: the endpoint is the route template axum matched (`MatchedPath`, with the `axum`
//! feature), never the
//! raw path; without one (plain hyper, or axum's fallback) it is the path's first segment if
//! that looks like a word, else `unmatched` (see [`crate::endpoint`]). CPU is what polling
//! the service's response future costs (plus the `call` that creates it), measured as in
//! [`crate::instrument`]; streaming the response body afterwards is not counted. Unsampled
//! requests pass straight through.
//!
//! With axum, add the layer with `Router::layer` (not around the finished router), so that
//! routing has already inserted `MatchedPath`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::agent::Agent;
use crate::instrument::CANCELLED_STATUS;
use crate::measure::Measure;

/// Status recorded when the service fails instead of answering.
pub const ERROR_STATUS: u16 = 500;

/// Measures every (sampled) request of the wrapped service.
#[derive(Debug, Clone)]
pub struct ProfwatchLayer {
    agent: Agent,
}

impl ProfwatchLayer {
    pub fn new(agent: Agent) -> ProfwatchLayer {
        ProfwatchLayer { agent }
    }
}

impl Agent {
    /// A tower layer measuring every request of the service it wraps.
    pub fn layer(&self) -> ProfwatchLayer {
        ProfwatchLayer::new(self.clone())
    }
}

impl<S> Layer<S> for ProfwatchLayer {
    type Service = ProfwatchService<S>;

    fn layer(&self, inner: S) -> ProfwatchService<S> {
        ProfwatchService {
            inner,
            agent: self.agent.clone(),
        }
    }
}

/// The service [`ProfwatchLayer`] produces.
#[derive(Debug, Clone)]
pub struct ProfwatchService<S> {
    inner: S,
    agent: Agent,
}

impl<S, B, R> Service<Request<B>> for ProfwatchService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> ResponseFuture<S::Future> {
        let matched = matched_route(&req);
        let endpoint = self.agent.endpoint(req.method(), matched, req.uri().path());
        match Measure::start(&self.agent, endpoint) {
            None => ResponseFuture {
                inner: self.inner.call(req),
                measure: None,
            },
            Some(mut measure) => {
                let inner = &mut self.inner;
                let future = measure.run(|| inner.call(req));
                ResponseFuture {
                    inner: future,
                    measure: Some(measure),
                }
            }
        }
    }
}

/// The route template axum matched, when the `axum` feature is on and axum routed the request.
#[cfg(feature = "axum")]
fn matched_route<B>(req: &Request<B>) -> Option<&str> {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map(axum::extract::MatchedPath::as_str)
}

/// Without the `axum` feature there is no route template to read.
#[cfg(not(feature = "axum"))]
fn matched_route<B>(_req: &Request<B>) -> Option<&str> {
    None
}

pin_project! {
    /// The response future of [`ProfwatchService`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        measure: Option<Measure>,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(measure) = this.project().measure.take() {
                measure.finish(Some(CANCELLED_STATUS), CANCELLED_STATUS);
            }
        }
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(measure) = this.measure.as_mut() else {
            return this.inner.poll(cx);
        };
        let inner = this.inner;
        let out = measure.run(|| inner.poll(cx));
        if let Poll::Ready(result) = &out {
            let status = match result {
                Ok(response) => response.status().as_u16(),
                Err(_) => ERROR_STATUS,
            };
            if let Some(measure) = this.measure.take() {
                measure.finish(Some(status), status);
            }
        }
        out
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("measure", &self.measure)
            .finish_non_exhaustive()
    }
}
