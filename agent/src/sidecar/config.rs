//! `profwatch agent` flags (raw, as clap parses them) and the validated [`SidecarConfig`].
//!
//! Every flag has an environment variable; a value that cannot be used is an error at start,
//! never a silent default. The defaults depend on who runs the sidecar: as root, the socket is
//! `/run/profwatch/agent.sock` and the data dir `/var/lib/profwatch`; otherwise both live under
//! `$XDG_DATA_HOME/profwatch` (or `~/.local/share/profwatch`).

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use super::error::SidecarError;

/// `profwatch agent [status]`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `profwatch agent`.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print a summary of a running sidecar's counters (from its metrics port).
    Status(StatusArgs),
}

/// `profwatch agent status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The sidecar's metrics address.
    #[arg(long, env = "PROFWATCH_AGENT_METRICS", default_value = DEFAULT_METRICS)]
    pub metrics: String,
    /// Print the raw status JSON instead of a summary.
    #[arg(long)]
    pub json: bool,
}

/// The flags of the running sidecar.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// The collector, `http://host:port[/base]`; events go to `{base}/api/v1/events`,
    /// profiles to `{base}/api/v1/profiles`.
    #[arg(long, env = "PROFWATCH_COLLECTOR_URL")]
    pub collector: Option<String>,
    /// Bearer token sent to the collector.
    #[arg(long, env = "PROFWATCH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Unix stream socket apps write to [default: /run/profwatch/agent.sock as root, else
    /// <data dir>/agent.sock].
    #[arg(long, env = "PROFWATCH_AGENT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Also listen for datagrams on this loopback address, e.g. 127.0.0.1:4042.
    #[arg(long, env = "PROFWATCH_AGENT_UDP")]
    pub udp: Option<String>,
    /// The disk spool [default: <data dir>/spool].
    #[arg(long, env = "PROFWATCH_AGENT_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Largest spool size, e.g. 512M, 2G; the oldest batches go first when full [default: 1G].
    #[arg(long, env = "PROFWATCH_AGENT_SPOOL_MAX")]
    pub spool_max: Option<String>,
    /// Data center added to events that have none.
    #[arg(long, env = "PROFWATCH_DC")]
    pub dc: Option<String>,
    /// Host name added to events that have none [default: the kernel's hostname].
    #[arg(long, env = "PROFWATCH_HOST")]
    pub host: Option<String>,
    /// Address of the local metrics and status port.
    #[arg(long, env = "PROFWATCH_AGENT_METRICS", default_value = DEFAULT_METRICS)]
    pub metrics: String,
    /// Events per batch sent to the collector.
    #[arg(long, env = "PROFWATCH_AGENT_BATCH_EVENTS", default_value_t = 5000)]
    pub batch_events: usize,
    /// Longest time an event waits for its batch, in milliseconds.
    #[arg(long, env = "PROFWATCH_AGENT_BATCH_WAIT_MS", default_value_t = 1000)]
    pub batch_wait_ms: u64,
}

/// The default metrics address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:4041";
/// The socket path used when the sidecar runs as root.
pub const ROOT_SOCKET: &str = "/run/profwatch/agent.sock";
/// Longest JSON line (or datagram) accepted from an app.
pub const DEFAULT_MAX_LINE: usize = 64 << 10;
/// Largest protobuf frame accepted from an app.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;

/// How retriable delivery failures are retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubles on each further one.
    pub initial: Duration,
    /// Longest delay between attempts (a `Retry-After` may ask for more, up to `max_retry_after`).
    pub max: Duration,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
    /// Timeout of one request to the collector.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// A validated sidecar configuration.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `{base}/api/v1/events` of the collector.
    pub events_url: String,
    /// `{base}/api/v1/profiles` of the collector.
    pub profiles_url: String,
    pub token: Option<String>,
    pub socket: PathBuf,
    /// `None`: no UDP listener. Port 0 picks one (see [`super::Sidecar::udp_addr`]).
    pub udp: Option<SocketAddr>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Filled into events without a `dc`.
    pub dc: Option<String>,
    /// Filled into events without a `host`.
    pub host: String,
    /// `None`: no metrics port.
    pub metrics: Option<SocketAddr>,
    pub batch_max_events: usize,
    pub batch_max_wait: Duration,
    pub max_line_bytes: usize,
    pub max_frame_bytes: usize,
    /// Add the `kernel` and `cpu_model` labels.
    pub system_labels: bool,
    pub retry: RetryPolicy,
}

impl SidecarConfig {
    /// A configuration with the defaults, for embedding and tests.
    pub fn new(collector: &str, socket: PathBuf, spool_dir: PathBuf) -> Result<Self, SidecarError> {
        let base = collector_base(collector)?;
        Ok(SidecarConfig {
            events_url: format!("{base}/api/v1/events"),
            profiles_url: format!("{base}/api/v1/profiles"),
            token: None,
            socket,
            udp: None,
            spool_dir,
            spool_max_bytes: 1 << 30,
            dc: None,
            host: system_hostname().unwrap_or_else(|| "unknown".to_owned()),
            metrics: None,
            batch_max_events: 5000,
            batch_max_wait: Duration::from_secs(1),
            max_line_bytes: DEFAULT_MAX_LINE,
            max_frame_bytes: DEFAULT_MAX_FRAME,
            system_labels: true,
            retry: RetryPolicy::default(),
        })
    }
}

impl RunArgs {
    /// Checks every flag and fills the defaults.
    pub fn validate(self) -> Result<SidecarConfig, SidecarError> {
        let collector = self.collector.ok_or_else(|| {
            SidecarError::config("collector", "", "is required (or PROFWATCH_COLLECTOR_URL)")
        })?;
        let data_dir = default_data_dir();
        let socket = self.socket.unwrap_or_else(|| {
            if running_as_root() {
                PathBuf::from(ROOT_SOCKET)
            } else {
                data_dir.join("agent.sock")
            }
        });
        let spool_dir = self.spool_dir.unwrap_or_else(|| data_dir.join("spool"));
        let mut cfg = SidecarConfig::new(&collector, socket, spool_dir)?;
        if let Some(token) = self.token.filter(|t| !t.is_empty()) {
            if token.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
                return Err(SidecarError::config(
                    "token",
                    "(hidden)",
                    "must be printable ASCII without spaces",
                ));
            }
            cfg.token = Some(token);
        }
        if let Some(udp) = self.udp {
            let addr: SocketAddr = udp
                .parse()
                .map_err(|e| SidecarError::config("udp", &udp, format!("not an address: {e}")))?;
            if !addr.ip().is_loopback() {
                return Err(SidecarError::config(
                    "udp",
                    &udp,
                    "must be a loopback address: local input is not authenticated",
                ));
            }
            cfg.udp = Some(addr);
        }
        if let Some(max) = self.spool_max {
            cfg.spool_max_bytes = parse_size(&max).filter(|n| *n >= 1 << 20).ok_or_else(|| {
                SidecarError::config(
                    "spool-max",
                    &max,
                    "expected a size of at least 1M, e.g. 512M or 2G",
                )
            })?;
        }
        let limits = profwatch_model::Limits::default();
        for (flag, value) in [("dc", &self.dc), ("host", &self.host)] {
            if let Some(v) = value {
                if v.len() > limits.max_name_len || v.contains(char::is_control) {
                    return Err(SidecarError::config(
                        flag,
                        v.as_str(),
                        format!("must be at most {} printable bytes", limits.max_name_len),
                    ));
                }
            }
        }
        cfg.dc = self.dc.filter(|d| !d.is_empty());
        if let Some(host) = self.host.filter(|h| !h.is_empty()) {
            cfg.host = host;
        }
        let metrics = self.metrics.trim();
        cfg.metrics = if metrics.is_empty() || metrics == "off" {
            None
        } else {
            Some(metrics.parse().map_err(|e| {
                SidecarError::config("metrics", metrics, format!("not an address: {e}"))
            })?)
        };
        if self.batch_events == 0 || self.batch_events > 100_000 {
            return Err(SidecarError::config(
                "batch-events",
                self.batch_events.to_string(),
                "must be 1..=100000",
            ));
        }
        cfg.batch_max_events = self.batch_events;
        if self.batch_wait_ms == 0 || self.batch_wait_ms > 60_000 {
            return Err(SidecarError::config(
                "batch-wait-ms",
                self.batch_wait_ms.to_string(),
                "must be 1..=60000",
            ));
        }
        cfg.batch_max_wait = Duration::from_millis(self.batch_wait_ms);
        Ok(cfg)
    }
}

/// `http://host[:port][/base]` → `http://host[:port][/base]` without a trailing `/`.
fn collector_base(collector: &str) -> Result<String, SidecarError> {
    let url = collector.trim();
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        SidecarError::config(
            "collector",
            url,
            "expected http://host:port (TLS is not built in; use a local TLS proxy)",
        )
    })?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(SidecarError::config(
            "collector",
            url,
            "the host is missing or malformed",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// `1048576`, `512K`, `64M`, `2G` (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, shift) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 10),
        (i, 'm' | 'M') => (&s[..i], 20),
        (i, 'g' | 'G') => (&s[..i], 30),
        _ => (s, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// Whether the process runs as root (`/proc/self` belongs to the effective user).
pub fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `/var/lib/profwatch` as root, else `$XDG_DATA_HOME/profwatch` or `~/.local/share/profwatch`.
pub fn default_data_dir() -> PathBuf {
    if running_as_root() {
        return PathBuf::from("/var/lib/profwatch");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("profwatch");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/profwatch"),
        None => PathBuf::from("profwatch-agent-data"),
    }
}

/// The kernel's hostname.
pub fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            collector: Some("http://127.0.0.1:4040/".into()),
            metrics: DEFAULT_METRICS.into(),
            batch_events: 5000,
            batch_wait_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn defaults_and_urls() {
        let cfg = args().validate().expect("valid");
        assert_eq!(cfg.events_url, "http://127.0.0.1:4040/api/v1/events");
        assert_eq!(cfg.profiles_url, "http://127.0.0.1:4040/api/v1/profiles");
        assert_eq!(cfg.metrics, Some("127.0.0.1:4041".parse().expect("addr")));
        assert!(cfg.socket.ends_with("agent.sock"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        let mut a = args();
        a.udp = Some("0.0.0.0:9000".into());
        assert!(a.validate().is_err());
        let mut a = args();
        a.collector = Some("ftp://x".into());
        assert!(a.validate().is_err());
        let mut a = args();
        a.collector = None;
        assert!(a.validate().is_err());
        let mut a = args();
        a.batch_events = 0;
        assert!(a.validate().is_err());
        let mut a = args();
        a.dc = Some("a\nb".into());
        assert!(a.validate().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size(""), None);
    }
}
