//! The sidecar's errors. Every variant names what failed and where.

use std::io;
use std::path::PathBuf;

/// Why the sidecar could not start, keep running, or answer `status`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// A flag or environment variable holds a value that cannot be used.
    #[error("invalid configuration: --{flag} {value:?}: {problem}")]
    Config {
        flag: &'static str,
        value: String,
        problem: String,
    },
    /// A local listener (Unix socket, UDP, metrics port) could not be opened.
    #[error("cannot listen on {what} {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: String,
        #[source]
        source: io::Error,
    },
    /// A spool file or directory could not be read, written, synced or removed.
    #[error("spool {}: cannot {action}: {source}", path.display())]
    Spool {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The async runtime could not be built.
    #[error("cannot start the sidecar's runtime: {0}")]
    Runtime(#[source] io::Error),
    /// A background task panicked or was cancelled.
    #[error("sidecar task `{task}` stopped unexpectedly: {message}")]
    Task { task: &'static str, message: String },
    /// `--profile-pid` named processes, none of them can be sampled, and no `--profile-name`
    /// may find one later.
    #[error("no process to profile: {failures}")]
    Profile { failures: String },
    /// `--memory-pid` named processes, none of them can be read, and no `--memory-name` may
    /// find one later.
    #[error("no process whose memory can be read: {failures}")]
    Memory { failures: String },
    /// `profwatch agent status` could not read a running sidecar.
    #[error("cannot read the sidecar's status at {url}: {message}")]
    Status { url: String, message: String },
}

impl SidecarError {
    pub(crate) fn config(
        flag: &'static str,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        SidecarError::Config {
            flag,
            value: value.into(),
            problem: problem.into(),
        }
    }

    pub(crate) fn spool(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        SidecarError::Spool {
            path: path.into(),
            action,
            source,
        }
    }
}
