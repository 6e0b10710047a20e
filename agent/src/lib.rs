//! profwatch's in-process SDK: how many CPU instructions and how much CPU time each request
//! of a service costs, labelled with endpoint, build, data center and host, shipped to the
//! local sidecar or straight to the collector.
//!
//! - [`counters`]: per-thread `perf_event_open` counters (rdpmc, `read()`) with the
//!   `CLOCK_THREAD_CPUTIME_ID` fallback.
//! - [`scope`] / [`ScopeGuard`]: synchronous request scopes.
//! - [`instrument`] / [`Instrumented`]: async requests, counted per poll.
//! - [`ProfwatchLayer`]: the tower layer for axum and hyper.
//! - [`set_label`] / [`set_status`]: label the request the thread is running.
//! - [`Config`], [`Agent`], [`Stats`]: configuration, the running instance, drop counters.
//! - [`sampler`] / [`Sampler`]: the stack sampler (perf cpu-clock, per-request attribution).
//! - [`export`]: the exporters and the wire encoding shared with the sidecar.
//!
//! Features, all off by default so that an instrumented service pays only for the SDK:
//! - `axum`: [`ProfwatchLayer`] names requests by the route template axum matched. Without it
//!   the layer (for plain hyper or any tower service) uses the path's first segment.
//! - `process`: the sampling of other processes (`sampler::process`, `sampler::procfs`), used by
//!   the sidecar (`profwatch-sidecar`), never by an instrumented service.
//!
//! Invariants the whole crate keeps: the request path never blocks and never allocates per
//! event (a bounded queue, dropped-and-counted when full); only CPU spent on a request's own
//! thread stretches (scope) or polls (future) is attributed to it; every bound the collector
//! enforces (labels, names) is enforced here first, so batches are not refused.

mod agent;
mod config;
mod context;
pub mod counters;
mod endpoint;
mod error;
pub mod export;
mod instrument;
mod labels;
mod layer;
mod measure;
mod perf_sys;
pub mod sampler;
mod sampling;
mod scope;
mod stats;

use std::future::Future;
use std::sync::OnceLock;

pub use agent::Agent;
pub use config::{Config, ExportTarget, DEFAULT_SOCKET};
pub use context::{set_label, set_status};
pub use counters::{CounterMode, CounterPath};
pub use endpoint::{EndpointName, MAX_TEMPLATES};
pub use error::{AgentError, ExportError};
pub use instrument::{Instrumented, CANCELLED_STATUS};
pub use labels::{LabelSet, LabelText, MAX_LABELS};
pub use layer::{ProfwatchLayer, ProfwatchService, ResponseFuture, ERROR_STATUS};
pub use sampler::{Sampler, SamplerConfig, SamplerError, SamplerStats};
pub use sampling::Sampling;
pub use scope::ScopeGuard;
pub use stats::Stats;

static GLOBAL: OnceLock<Agent> = OnceLock::new();

/// Starts an agent from `config` and installs it as the process's agent, used by [`scope`]
/// and [`instrument`]. Fails if one is installed already.
pub fn init(config: Config) -> Result<&'static Agent, AgentError> {
    install(Agent::new(config)?)
}

/// Installs an agent built by hand (e.g. with a custom exporter) as the process's agent.
pub fn install(agent: Agent) -> Result<&'static Agent, AgentError> {
    let mut fresh = false;
    let installed = GLOBAL.get_or_init(|| {
        fresh = true;
        agent
    });
    if fresh {
        Ok(installed)
    } else {
        Err(AgentError::AlreadyInitialized)
    }
}

/// The process's agent, if [`init`] ran.
pub fn global() -> Option<&'static Agent> {
    GLOBAL.get()
}

/// Measures the calling thread until the guard is dropped, with the process's agent (a no-op
/// guard when there is none).
///
/// ```
/// let _guard = profwatch_agent::scope("GET /cart/{id}");
/// profwatch_agent::set_label("new_checkout", "on");
/// ```
pub fn scope(endpoint: impl Into<EndpointName>) -> ScopeGuard<'static> {
    ScopeGuard::start(global(), endpoint.into())
}

/// Measures the CPU spent polling `future`, with the process's agent (unmeasured when there
/// is none).
pub fn instrument<F: Future>(endpoint: impl Into<EndpointName>, future: F) -> Instrumented<F> {
    Instrumented::new(global(), endpoint.into(), future)
}

/// The counter path the process's agent (or [`CounterMode::Auto`] without one) uses on the
/// calling thread.
pub fn counter_path() -> CounterPath {
    match global() {
        Some(agent) => agent.counter_path(),
        None => counters::active_path(CounterMode::Auto),
    }
}
