//! The crate's errors. Every variant carries what is needed to act on it.

use std::io;

use profwatch_model::ValidationError;

/// Why an [`crate::Agent`] could not be configured or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// No service name: neither `Config::service` nor `PROFWATCH_SERVICE` is set.
    #[error("no service name: set PROFWATCH_SERVICE or Config::service")]
    MissingService,
    /// An environment variable holds a value that cannot be used.
    #[error("environment variable {name}={value:?} is invalid; expected {expected}")]
    InvalidEnv {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    /// A configured name (service, build, dc, host) breaks the collector's limits, so every
    /// event would be refused.
    #[error("invalid configuration: {0}")]
    InvalidName(#[source] ValidationError),
    /// A configuration field is out of range.
    #[error("invalid configuration: field `{field}` {problem}")]
    InvalidConfig {
        field: &'static str,
        problem: &'static str,
    },
    /// The collector URL cannot be used by the built-in HTTP exporter.
    #[error("collector URL {url:?}: {problem}")]
    InvalidUrl { url: String, problem: &'static str },
    /// The background export thread could not be started.
    #[error("could not start the profwatch export thread: {0}")]
    Spawn(#[source] io::Error),
    /// [`crate::init`] was called twice.
    #[error("a global profwatch agent is already installed")]
    AlreadyInitialized,
    /// The export thread is gone, so [`crate::Agent::flush`] cannot be answered.
    #[error("the profwatch export thread has stopped")]
    ExporterStopped,
}

/// Why one batch could not be delivered. [`ExportError::is_retriable`] classifies it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Connecting, writing or reading failed (sidecar down, collector unreachable, timeout).
    #[error("cannot deliver to {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: io::Error,
    },
    /// The collector answered with a non-2xx status.
    #[error("{target} answered {status}: {message}")]
    Status {
        target: String,
        status: u16,
        message: String,
    },
    /// The peer's answer is not an HTTP/1.x response.
    #[error("{target} sent a response that is not HTTP/1.x: {line:?}")]
    BadResponse { target: String, line: String },
}

impl ExportError {
    /// Whether sending the same batch again may succeed: I/O failures, 429 and 5xx are;
    /// other 4xx (the batch itself is wrong) are not.
    pub fn is_retriable(&self) -> bool {
        match self {
            ExportError::Io { .. } | ExportError::BadResponse { .. } => true,
            ExportError::Status { status, .. } => *status == 429 || *status >= 500,
        }
    }
}
