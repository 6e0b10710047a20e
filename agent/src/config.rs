//! The SDK's configuration: what to stamp on events, how many requests to measure, which
//! counters to use, and where events go.
//!
//! Invariants: [`Config::from_env`] reads only the documented `PROFWATCH_*` variables (and
//! the hostname); a value that cannot be parsed is an error, never silently ignored. A
//! [`crate::Agent`] checks the names against the collector's limits before starting, so a
//! misconfiguration fails at start-up rather than as refused batches.

use std::path::PathBuf;
use std::time::Duration;

use crate::counters::CounterMode;
use crate::error::AgentError;
use crate::export::WireFormat;
use crate::sampling::Sampling;

/// Where the sidecar listens by default.
pub const DEFAULT_SOCKET: &str = "/run/profwatch/agent.sock";

/// Where events go.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ExportTarget {
    /// The local sidecar (`profwatch agent`): NDJSON lines over a Unix stream socket.
    Sidecar { socket: PathBuf },
    /// Straight to the collector: `POST {url}/api/v1/events` over plain HTTP/1.1.
    Collector {
        /// `http://host:port` with an optional base path.
        url: String,
        format: WireFormat,
        /// Sent as `Authorization: Bearer <token>`.
        token: Option<String>,
    },
    /// Events are counted and thrown away (benchmarks, or measuring without shipping).
    Discard,
}

/// The SDK's settings. Fields are public; start from [`Config::new`] or [`Config::from_env`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// `PROFWATCH_SERVICE`; required.
    pub service: String,
    /// `PROFWATCH_BUILD`: the build or version being measured.
    pub build: String,
    /// `PROFWATCH_DC`: the data center.
    pub dc: String,
    /// `PROFWATCH_HOST`, else the kernel's hostname.
    pub host: String,
    /// `PROFWATCH_SAMPLING`: `all`, `1/N` or a probability like `0.05`.
    pub sampling: Sampling,
    /// `PROFWATCH_COUNTERS`: `auto`, `read` or `clock`.
    pub counters: CounterMode,
    /// `PROFWATCH_COLLECTOR_URL` (with `PROFWATCH_FORMAT`, `PROFWATCH_TOKEN`) selects
    /// [`ExportTarget::Collector`]; otherwise the sidecar at `PROFWATCH_AGENT_SOCKET`
    /// (default [`DEFAULT_SOCKET`]).
    pub export: ExportTarget,
    /// `PROFWATCH_QUEUE`: events held between the request path and the export thread; when
    /// full, new events are dropped and counted.
    pub queue_capacity: usize,
    /// Events per exported batch.
    pub max_batch: usize,
    /// Longest time an event waits in a partial batch.
    pub flush_interval: Duration,
}

impl Config {
    /// Defaults for `service`: everything measured, counters `auto`, the default sidecar
    /// socket, the hostname; nothing read from the environment.
    pub fn new(service: impl Into<String>) -> Config {
        Config {
            service: service.into(),
            build: String::new(),
            dc: String::new(),
            host: hostname(),
            sampling: Sampling::All,
            counters: CounterMode::Auto,
            export: ExportTarget::Sidecar {
                socket: PathBuf::from(DEFAULT_SOCKET),
            },
            queue_capacity: 2048,
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
        }
    }

    /// Reads the `PROFWATCH_*` environment variables (see each field).
    pub fn from_env() -> Result<Config, AgentError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Config::from_env`] over any source of variables (tests, a config file's map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Config, AgentError> {
        let service = get("PROFWATCH_SERVICE")
            .filter(|s| !s.is_empty())
            .ok_or(AgentError::MissingService)?;
        let mut config = Config::new(service);
        if let Some(build) = get("PROFWATCH_BUILD") {
            config.build = build;
        }
        if let Some(dc) = get("PROFWATCH_DC") {
            config.dc = dc;
        }
        if let Some(host) = get("PROFWATCH_HOST") {
            config.host = host;
        }
        if let Some(v) = get("PROFWATCH_SAMPLING") {
            config.sampling = Sampling::parse(&v).ok_or(AgentError::InvalidEnv {
                name: "PROFWATCH_SAMPLING",
                value: v,
                expected: "`all`, `1/N` or a probability in (0, 1]",
            })?;
        }
        if let Some(v) = get("PROFWATCH_COUNTERS") {
            config.counters = CounterMode::parse(&v).ok_or(AgentError::InvalidEnv {
                name: "PROFWATCH_COUNTERS",
                value: v,
                expected: "`auto`, `read` or `clock`",
            })?;
        }
        if let Some(v) = get("PROFWATCH_QUEUE") {
            config.queue_capacity =
                v.trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(AgentError::InvalidEnv {
                        name: "PROFWATCH_QUEUE",
                        value: v,
                        expected: "a positive number of events",
                    })?;
        }
        if let Some(url) = get("PROFWATCH_COLLECTOR_URL").filter(|u| !u.is_empty()) {
            let format = match get("PROFWATCH_FORMAT") {
                None => WireFormat::Ndjson,
                Some(v) => WireFormat::parse(&v).ok_or(AgentError::InvalidEnv {
                    name: "PROFWATCH_FORMAT",
                    value: v,
                    expected: "`ndjson` or `protobuf`",
                })?,
            };
            config.export = ExportTarget::Collector {
                url,
                format,
                token: get("PROFWATCH_TOKEN").filter(|t| !t.is_empty()),
            };
        } else if let Some(socket) = get("PROFWATCH_AGENT_SOCKET").filter(|s| !s.is_empty()) {
            config.export = ExportTarget::Sidecar {
                socket: PathBuf::from(socket),
            };
        }
        Ok(config)
    }
}

/// The kernel's hostname, or empty when it cannot be read.
fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn reads_every_variable() {
        let config = Config::from_lookup(env(&[
            ("PROFWATCH_SERVICE", "checkout"),
            ("PROFWATCH_BUILD", "812"),
            ("PROFWATCH_DC", "eu1"),
            ("PROFWATCH_HOST", "web-1"),
            ("PROFWATCH_SAMPLING", "1/10"),
            ("PROFWATCH_COUNTERS", "clock"),
            ("PROFWATCH_QUEUE", "64"),
            ("PROFWATCH_COLLECTOR_URL", "http://127.0.0.1:4040"),
            ("PROFWATCH_FORMAT", "protobuf"),
            ("PROFWATCH_TOKEN", "secret"),
        ]))
        .expect("valid");
        assert_eq!(
            (
                config.service.as_str(),
                config.build.as_str(),
                config.dc.as_str()
            ),
            ("checkout", "812", "eu1")
        );
        assert_eq!(config.host, "web-1");
        assert_eq!(config.sampling, Sampling::OneIn(10));
        assert_eq!(config.counters, CounterMode::Clock);
        assert_eq!(config.queue_capacity, 64);
        assert_eq!(
            config.export,
            ExportTarget::Collector {
                url: "http://127.0.0.1:4040".into(),
                format: WireFormat::Protobuf,
                token: Some("secret".into()),
            }
        );
    }

    #[test]
    fn defaults_and_errors() {
        let config = Config::from_lookup(env(&[("PROFWATCH_SERVICE", "s")])).expect("valid");
        assert_eq!(
            config.export,
            ExportTarget::Sidecar {
                socket: DEFAULT_SOCKET.into()
            }
        );
        assert!(matches!(
            Config::from_lookup(env(&[])),
            Err(AgentError::MissingService)
        ));
        let err = Config::from_lookup(env(&[
            ("PROFWATCH_SERVICE", "s"),
            ("PROFWATCH_COUNTERS", "fast"),
        ]))
        .expect_err("bad mode");
        assert!(err.to_string().contains("PROFWATCH_COUNTERS"), "{err}");
    }
}
