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

use profwatch_model::secret::Secret;

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
    /// PEM CA certificate(s) to trust for an https collector, besides the system's roots.
    #[arg(long, value_name = "FILE", env = "PROFWATCH_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate presented to an https collector that requires one (mTLS).
    #[arg(
        long,
        value_name = "FILE",
        env = "PROFWATCH_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROFWATCH_CLIENT_KEY",
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
    /// Unix stream socket apps write to [default: /run/profwatch/agent.sock as root, else
    /// <data dir>/agent.sock].
    #[arg(long, env = "PROFWATCH_AGENT_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Permissions of the socket, in octal: who may write events to this sidecar.
    #[arg(
        long,
        value_name = "MODE",
        env = "PROFWATCH_AGENT_SOCKET_MODE",
        default_value = "660"
    )]
    pub socket_mode: String,
    /// Group of the socket (a name from /etc/group, or a number): the apps' group, with
    /// --socket-mode 660 [default: the sidecar's group].
    #[arg(long, value_name = "GROUP", env = "PROFWATCH_AGENT_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Also listen for datagrams on this loopback address, e.g. 127.0.0.1:4042.
    #[arg(long, env = "PROFWATCH_AGENT_UDP")]
    pub udp: Option<String>,
    /// The disk spool [default: <data dir>/spool].
    #[arg(long, env = "PROFWATCH_AGENT_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Largest spool size, e.g. 512M, 2G; the oldest batches go first when full [default: 1G].
    #[arg(long, env = "PROFWATCH_AGENT_SPOOL_MAX")]
    pub spool_max: Option<String>,
    /// Attempts after which a batch that keeps failing retriably (5xx, 401, timeouts, ...) is
    /// set aside: moved behind the other batches, so they ship, and retried once per turn
    /// after that. It is never deleted for failing [default: 10].
    #[arg(long, value_name = "N", env = "PROFWATCH_AGENT_SET_ASIDE_AFTER")]
    pub set_aside_after: Option<u32>,
    /// Largest size of `<spool dir>/dead-letter/`, where batches the collector refused for
    /// good (400, 413, 422) are kept; the oldest go first when full [default: 64M].
    #[arg(long, env = "PROFWATCH_AGENT_DEAD_LETTER_MAX")]
    pub dead_letter_max: Option<String>,
    /// Most batches kept in `<spool dir>/dead-letter/` [default: 1000].
    #[arg(long, value_name = "N", env = "PROFWATCH_AGENT_DEAD_LETTER_MAX_FILES")]
    pub dead_letter_max_files: Option<usize>,
    /// Data center added to events that have none.
    #[arg(long, env = "PROFWATCH_DC")]
    pub dc: Option<String>,
    /// Host name added to events that have none [default: the kernel's hostname].
    #[arg(long, env = "PROFWATCH_HOST")]
    pub host: Option<String>,
    /// Address of the local metrics and status port ("off": none). A non-loopback address
    /// also needs --metrics-allow-remote.
    #[arg(long, env = "PROFWATCH_AGENT_METRICS", default_value = DEFAULT_METRICS)]
    pub metrics: String,
    /// Allow --metrics on an address other hosts can reach (the status page names the
    /// collector, the host and the last errors).
    #[arg(long, env = "PROFWATCH_AGENT_METRICS_ALLOW_REMOTE")]
    pub metrics_allow_remote: bool,
    /// Events per batch sent to the collector.
    #[arg(long, env = "PROFWATCH_AGENT_BATCH_EVENTS", default_value_t = 5000)]
    pub batch_events: usize,
    /// Longest time an event waits for its batch, in milliseconds.
    #[arg(long, env = "PROFWATCH_AGENT_BATCH_WAIT_MS", default_value_t = 1000)]
    pub batch_wait_ms: u64,
    /// Sample the CPU stacks of this local process, all its threads (repeatable; a
    /// comma-separated list in the env var). Its profiles ship with the events; when it exits
    /// it is dropped. The sidecar refuses to start only if no target at all can be sampled.
    #[arg(
        long = "profile-pid",
        value_name = "PID",
        env = "PROFWATCH_AGENT_PROFILE_PIDS",
        value_delimiter = ','
    )]
    pub profile_pid: Vec<u32>,
    /// Sample every process whose name (/proc/PID/comm, or its executable's file name) is NAME
    /// (repeatable); /proc is searched again every 10 s, so processes started later or
    /// restarted are picked up.
    #[arg(
        long = "profile-name",
        value_name = "NAME",
        env = "PROFWATCH_AGENT_PROFILE_NAMES",
        value_delimiter = ','
    )]
    pub profile_name: Vec<String>,
    /// With --profile-name: only processes of this user id (repeatable). Required with
    /// --profile-name, so a name alone never picks up another user's process.
    #[arg(
        long = "profile-uid",
        value_name = "UID",
        env = "PROFWATCH_AGENT_PROFILE_UIDS",
        value_delimiter = ','
    )]
    pub profile_uid: Vec<u32>,
    /// The `service` label of sampled processes' profiles [default: each process's executable
    /// file name, else its comm].
    #[arg(long, value_name = "SERVICE", env = "PROFWATCH_AGENT_PROFILE_SERVICE")]
    pub profile_service: Option<String>,
    /// Stack samples per second of each sampled thread's CPU time [default: 99].
    #[arg(long, value_name = "HZ", env = "PROFWATCH_AGENT_PROFILE_FREQUENCY")]
    pub profile_frequency: Option<u32>,
    /// Seconds of samples aggregated into each shipped profile [default: 10].
    #[arg(
        long,
        value_name = "SECS",
        env = "PROFWATCH_AGENT_PROFILE_INTERVAL_SECS"
    )]
    pub profile_interval_secs: Option<u64>,
    /// Bytes of each sampled thread's user stack copied with every sample and unwound with
    /// the binaries' unwind tables (0 to 57344, a multiple of 8; 0: the kernel's frame-pointer
    /// callchain only). A deeper stack gets a `[truncated]` root frame [default: 32768].
    #[arg(
        long,
        value_name = "BYTES",
        env = "PROFWATCH_AGENT_PROFILE_STACK_BYTES"
    )]
    pub profile_stack_bytes: Option<u32>,
    /// Read the memory (smaps_rollup, else smaps) of this local process every
    /// --memory-interval-secs (repeatable; a comma-separated list in the env var). A process
    /// that exits is dropped from the watch.
    #[arg(
        long = "memory-pid",
        value_name = "PID",
        env = "PROFWATCH_AGENT_MEMORY_PIDS",
        value_delimiter = ','
    )]
    pub memory_pid: Vec<u32>,
    /// Read the memory of every process whose name (/proc/PID/comm, or its executable's file
    /// name) is NAME (repeatable); /proc is searched again every interval.
    #[arg(
        long = "memory-name",
        value_name = "NAME",
        env = "PROFWATCH_AGENT_MEMORY_NAMES",
        value_delimiter = ','
    )]
    pub memory_name: Vec<String>,
    /// With --memory-name: only processes of this user id (repeatable). Required with
    /// --memory-name, so a name alone never picks up another user's process.
    #[arg(
        long = "memory-uid",
        value_name = "UID",
        env = "PROFWATCH_AGENT_MEMORY_UIDS",
        value_delimiter = ','
    )]
    pub memory_uid: Vec<u32>,
    /// Seconds between two readings of each watched process's memory [default: 10].
    #[arg(
        long,
        value_name = "SECS",
        env = "PROFWATCH_AGENT_MEMORY_INTERVAL_SECS"
    )]
    pub memory_interval_secs: Option<u64>,
    /// The `service` label of memory samples of processes whose environment has no
    /// PROFWATCH_SERVICE [default: the executable file name, else the comm].
    #[arg(long, value_name = "SERVICE", env = "PROFWATCH_AGENT_MEMORY_SERVICE")]
    pub memory_service: Option<String>,
    /// The `build` label of memory samples of processes whose environment has no
    /// PROFWATCH_BUILD [default: empty].
    #[arg(long, value_name = "BUILD", env = "PROFWATCH_AGENT_MEMORY_BUILD")]
    pub memory_build: Option<String>,
}

/// The default metrics address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:4041";
/// The socket path used when the sidecar runs as root.
pub const ROOT_SOCKET: &str = "/run/profwatch/agent.sock";
/// Longest JSON line (or datagram) accepted from an app.
pub const DEFAULT_MAX_LINE: usize = 64 << 10;
/// Largest protobuf frame accepted from an app.
pub const DEFAULT_MAX_FRAME: usize = 4 << 20;
/// Failed attempts in a row before a batch is set aside.
pub const DEFAULT_SET_ASIDE_AFTER: u32 = 10;
/// Largest size of the dead-letter folder.
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;
/// Most batches in the dead-letter folder.
pub const DEFAULT_DEAD_LETTER_MAX_FILES: usize = 1000;

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
    /// Failed attempts in a row after which a batch is set aside (moved behind the others);
    /// a batch set aside before gets one attempt per turn. At least 1.
    pub set_aside_after: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            set_aside_after: DEFAULT_SET_ASIDE_AFTER,
        }
    }
}

/// What the sidecar samples itself (`--profile-pid`, `--profile-name`); nothing when both
/// lists are empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    pub pids: Vec<u32>,
    /// Matched against `/proc/<pid>/comm` and the executable's file name.
    pub names: Vec<String>,
    /// A process matched by name must belong to one of these users (the owner of
    /// `/proc/<pid>`); never empty when `names` is not.
    pub uids: Vec<u32>,
    /// The `service` label; `None`: each process's executable file name (else its comm).
    pub service: Option<String>,
    pub frequency_hz: u32,
    /// How often profiles are shipped.
    pub export_interval: Duration,
    /// How often the sample rings are read.
    pub read_interval: Duration,
    /// How often each process's threads are listed (new threads get an event, exits are
    /// noticed).
    pub thread_rescan: Duration,
    /// How often `/proc` is searched for `names`.
    pub name_rescan: Duration,
    /// Threads sampled at most, across processes (each holds a ring of `ring_pages` pages).
    pub max_threads: usize,
    /// Data pages of each thread's ring (each sample takes about `stack_bytes` of it until
    /// it is read).
    pub ring_pages: usize,
    /// Bytes of user stack copied with each sample for unwinding; 0: frame pointers only.
    pub stack_bytes: u32,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            pids: Vec::new(),
            names: Vec::new(),
            uids: Vec::new(),
            service: None,
            frequency_hz: profwatch_agent::sampler::DEFAULT_FREQUENCY_HZ,
            export_interval: Duration::from_secs(10),
            read_interval: Duration::from_millis(100),
            thread_rescan: Duration::from_secs(1),
            name_rescan: Duration::from_secs(10),
            max_threads: 1024,
            ring_pages: 128,
            stack_bytes: profwatch_agent::sampler::DEFAULT_STACK_BYTES,
        }
    }
}

impl ProfileConfig {
    /// Whether there is anything to sample.
    pub fn is_enabled(&self) -> bool {
        !self.pids.is_empty() || !self.names.is_empty()
    }
}

/// Whose memory the sidecar reads (`--memory-pid`, `--memory-name`); nothing when both lists
/// are empty.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryConfig {
    pub pids: Vec<u32>,
    /// Matched as [`ProfileConfig::names`] are.
    pub names: Vec<String>,
    /// As [`ProfileConfig::uids`]: never empty when `names` is not.
    pub uids: Vec<u32>,
    /// The `service` label where the process's environment sets none; `None`: its executable
    /// file name (else its comm).
    pub service: Option<String>,
    /// The `build` label where the process's environment sets none.
    pub build: String,
    /// Time between two readings (and two searches of `/proc` for `names`).
    pub interval: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            pids: Vec::new(),
            names: Vec::new(),
            uids: Vec::new(),
            service: None,
            build: String::new(),
            interval: Duration::from_secs(10),
        }
    }
}

impl MemoryConfig {
    /// Whether there is anything to read.
    pub fn is_enabled(&self) -> bool {
        !self.pids.is_empty() || !self.names.is_empty()
    }
}

/// How the sidecar talks TLS to an https collector (`--ca-file`, `--client-cert`,
/// `--client-key`), parsed at start so a bad file is a start-up error naming it.
#[derive(Debug, Clone, Default)]
pub struct CollectorTls {
    /// Trusted besides the system's roots.
    pub extra_roots: Vec<reqwest::Certificate>,
    /// Certificate and key presented to the collector.
    pub identity: Option<reqwest::Identity>,
}

impl CollectorTls {
    /// Whether any TLS setting was given.
    pub fn is_set(&self) -> bool {
        !self.extra_roots.is_empty() || self.identity.is_some()
    }
}

/// A validated sidecar configuration.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// `{base}/api/v1/events` of the collector.
    pub events_url: String,
    /// `{base}/api/v1/profiles` of the collector.
    pub profiles_url: String,
    /// `{base}/api/v1/memory` of the collector.
    pub memory_url: String,
    pub token: Secret<Option<String>>,
    /// TLS to the collector.
    pub tls: CollectorTls,
    pub socket: PathBuf,
    /// Permissions of the socket file.
    pub socket_mode: u32,
    /// Group of the socket file; `None`: the sidecar's.
    pub socket_group: Option<u32>,
    /// `None`: no UDP listener. Port 0 picks one (see [`super::Sidecar::udp_addr`]).
    pub udp: Option<SocketAddr>,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    /// Bounds of `<spool_dir>/dead-letter/`.
    pub dead_letter_max_bytes: u64,
    pub dead_letter_max_files: usize,
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
    /// Processes the sidecar samples.
    pub profile: ProfileConfig,
    /// Processes whose memory the sidecar reads.
    pub memory: MemoryConfig,
}

impl SidecarConfig {
    /// A configuration with the defaults, for embedding and tests.
    pub fn new(collector: &str, socket: PathBuf, spool_dir: PathBuf) -> Result<Self, SidecarError> {
        let base = collector_base(collector)?;
        Ok(SidecarConfig {
            events_url: format!("{base}/api/v1/events"),
            profiles_url: format!("{base}/api/v1/profiles"),
            memory_url: format!("{base}/api/v1/memory"),
            token: Secret(None),
            tls: CollectorTls::default(),
            socket,
            socket_mode: 0o660,
            socket_group: None,
            udp: None,
            spool_dir,
            spool_max_bytes: 1 << 30,
            dead_letter_max_bytes: DEFAULT_DEAD_LETTER_MAX_BYTES,
            dead_letter_max_files: DEFAULT_DEAD_LETTER_MAX_FILES,
            dc: None,
            host: system_hostname().unwrap_or_else(|| "unknown".to_owned()),
            metrics: None,
            batch_max_events: 5000,
            batch_max_wait: Duration::from_secs(1),
            max_line_bytes: DEFAULT_MAX_LINE,
            max_frame_bytes: DEFAULT_MAX_FRAME,
            system_labels: true,
            retry: RetryPolicy::default(),
            profile: ProfileConfig::default(),
            memory: MemoryConfig::default(),
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
            cfg.token = Secret(Some(token));
        }
        cfg.tls = collector_tls(self.ca_file, self.client_cert, self.client_key)?;
        if cfg.tls.is_set() && !collector.trim().starts_with("https://") {
            return Err(SidecarError::config(
                "collector",
                collector.trim(),
                "--ca-file and --client-cert need an https:// collector",
            ));
        }
        cfg.udp = self.udp.map(|u| loopback_udp(&u)).transpose()?;
        if let Some(max) = self.spool_max {
            cfg.spool_max_bytes = parse_size(&max).filter(|n| *n >= 1 << 20).ok_or_else(|| {
                SidecarError::config(
                    "spool-max",
                    &max,
                    "expected a size of at least 1M, e.g. 512M or 2G",
                )
            })?;
        }
        delivery_config(
            &mut cfg,
            self.set_aside_after,
            self.dead_letter_max,
            self.dead_letter_max_files,
        )?;
        check_names(&self.dc, &self.host)?;
        cfg.dc = self.dc.filter(|d| !d.is_empty());
        if let Some(host) = self.host.filter(|h| !h.is_empty()) {
            cfg.host = host;
        }
        let metrics = self.metrics.trim();
        cfg.metrics = if metrics.is_empty() || metrics == "off" {
            None
        } else {
            let addr: SocketAddr = metrics.parse().map_err(|e| {
                SidecarError::config("metrics", metrics, format!("not an address: {e}"))
            })?;
            if !addr.ip().is_loopback() && !self.metrics_allow_remote {
                return Err(SidecarError::config(
                    "metrics",
                    metrics,
                    "is reachable from other hosts; add --metrics-allow-remote if that is meant",
                ));
            }
            Some(addr)
        };
        cfg.socket_mode = socket_mode(&self.socket_mode)?;
        cfg.socket_group = self.socket_group.as_deref().map(group_id).transpose()?;
        cfg.batch_max_events = within("batch-events", self.batch_events, 100_000)?;
        cfg.batch_max_wait =
            Duration::from_millis(within("batch-wait-ms", self.batch_wait_ms, 60_000)?);
        cfg.profile = profile_config(
            self.profile_pid,
            self.profile_name,
            self.profile_uid,
            self.profile_service,
            self.profile_frequency,
            self.profile_interval_secs,
            self.profile_stack_bytes,
        )?;
        cfg.memory = memory_config(
            self.memory_pid,
            self.memory_name,
            self.memory_uid,
            self.memory_interval_secs,
            self.memory_service,
            self.memory_build,
        )?;
        Ok(cfg)
    }
}

/// `--socket-mode`: octal permission bits, at most 0o777.
fn socket_mode(text: &str) -> Result<u32, SidecarError> {
    u32::from_str_radix(text.trim().trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            SidecarError::config(
                "socket-mode",
                text,
                "must be octal permission bits, e.g. 660",
            )
        })
}

/// `--socket-group`: a number, or a name looked up in `/etc/group` (groups from other name
/// services need their number).
fn group_id(text: &str) -> Result<u32, SidecarError> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    std::fs::read_to_string("/etc/group")
        .ok()
        .and_then(|groups| {
            groups.lines().find_map(|line| {
                let mut fields = line.split(':');
                (fields.next() == Some(text))
                    .then(|| fields.nth(1)?.parse().ok())
                    .flatten()
            })
        })
        .ok_or_else(|| {
            SidecarError::config(
                "socket-group",
                text,
                "is not a group in /etc/group (give its number instead)",
            )
        })
}

/// `--udp`: a loopback address (local input is not authenticated).
fn loopback_udp(udp: &str) -> Result<SocketAddr, SidecarError> {
    let addr: SocketAddr = udp
        .parse()
        .map_err(|e| SidecarError::config("udp", udp, format!("not an address: {e}")))?;
    if !addr.ip().is_loopback() {
        return Err(SidecarError::config(
            "udp",
            udp,
            "must be a loopback address: local input is not authenticated",
        ));
    }
    Ok(addr)
}

/// `--dc` and `--host`: names the collector accepts.
fn check_names(dc: &Option<String>, host: &Option<String>) -> Result<(), SidecarError> {
    let max = profwatch_model::Limits::default().max_name_len;
    for (flag, value) in [("dc", dc), ("host", host)] {
        if let Some(v) = value {
            if v.len() > max || v.contains(char::is_control) {
                return Err(SidecarError::config(
                    flag,
                    v.as_str(),
                    format!("must be at most {max} printable bytes"),
                ));
            }
        }
    }
    Ok(())
}

/// A count flag from 1 to `max`.
fn within<T: Copy + PartialOrd + From<u8> + std::fmt::Display>(
    flag: &'static str,
    value: T,
    max: T,
) -> Result<T, SidecarError> {
    if value < T::from(1) || value > max {
        return Err(SidecarError::config(
            flag,
            value.to_string(),
            format!("must be 1..={max}"),
        ));
    }
    Ok(value)
}

/// `--ca-file`, `--client-cert`, `--client-key`: read and parsed now.
fn collector_tls(
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
) -> Result<CollectorTls, SidecarError> {
    fn read(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, SidecarError> {
        std::fs::read(path).map_err(|e| {
            SidecarError::config(
                flag,
                path.display().to_string(),
                format!("cannot read: {e}"),
            )
        })
    }
    let mut tls = CollectorTls::default();
    if let Some(path) = ca_file {
        let pem = read("ca-file", &path)?;
        tls.extra_roots = reqwest::Certificate::from_pem_bundle(&pem)
            .ok()
            .filter(|certs| !certs.is_empty())
            .ok_or_else(|| {
                SidecarError::config(
                    "ca-file",
                    path.display().to_string(),
                    "expected PEM CERTIFICATE blocks",
                )
            })?;
    }
    match (client_cert, client_key) {
        (Some(cert), Some(key)) => {
            let mut pem = read("client-cert", &cert)?;
            pem.push(b'\n');
            pem.extend(read("client-key", &key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                SidecarError::config(
                    "client-cert",
                    cert.display().to_string(),
                    format!("with --client-key {}: {e}", key.display()),
                )
            })?;
            tls.identity = Some(identity);
        }
        (None, None) => {}
        (Some(cert), None) => {
            return Err(SidecarError::config(
                "client-cert",
                cert.display().to_string(),
                "needs --client-key",
            ))
        }
        (None, Some(key)) => {
            return Err(SidecarError::config(
                "client-key",
                key.display().to_string(),
                "needs --client-cert",
            ))
        }
    }
    Ok(tls)
}

/// `--set-aside-after`, `--dead-letter-max`, `--dead-letter-max-files`.
fn delivery_config(
    cfg: &mut SidecarConfig,
    set_aside_after: Option<u32>,
    dead_letter_max: Option<String>,
    dead_letter_max_files: Option<usize>,
) -> Result<(), SidecarError> {
    if let Some(n) = set_aside_after {
        if !(1..=1000).contains(&n) {
            return Err(SidecarError::config(
                "set-aside-after",
                n.to_string(),
                "must be 1..=1000 attempts",
            ));
        }
        cfg.retry.set_aside_after = n;
    }
    if let Some(max) = dead_letter_max {
        cfg.dead_letter_max_bytes =
            parse_size(&max).filter(|n| *n >= 1 << 20).ok_or_else(|| {
                SidecarError::config(
                    "dead-letter-max",
                    &max,
                    "expected a size of at least 1M, e.g. 64M or 1G",
                )
            })?;
    }
    if let Some(n) = dead_letter_max_files {
        if !(1..=1_000_000).contains(&n) {
            return Err(SidecarError::config(
                "dead-letter-max-files",
                n.to_string(),
                "must be 1..=1000000",
            ));
        }
        cfg.dead_letter_max_files = n;
    }
    Ok(())
}

fn profile_config(
    pids: Vec<u32>,
    names: Vec<String>,
    uids: Vec<u32>,
    service: Option<String>,
    frequency: Option<u32>,
    interval_secs: Option<u64>,
    stack_bytes: Option<u32>,
) -> Result<ProfileConfig, SidecarError> {
    let mut profile = ProfileConfig::default();
    (profile.pids, profile.names, profile.uids) = targets("profile", pids, names, uids)?;
    profile.service = label_flag("profile-service", service)?;
    if let Some(hz) = frequency {
        if !(1..=10_000).contains(&hz) {
            return Err(SidecarError::config(
                "profile-frequency",
                hz.to_string(),
                "must be 1..=10000 Hz",
            ));
        }
        profile.frequency_hz = hz;
    }
    if let Some(secs) = interval_secs {
        if !(1..=3600).contains(&secs) {
            return Err(SidecarError::config(
                "profile-interval-secs",
                secs.to_string(),
                "must be 1..=3600",
            ));
        }
        profile.export_interval = Duration::from_secs(secs);
    }
    if let Some(bytes) = stack_bytes {
        if bytes > profwatch_agent::sampler::MAX_STACK_BYTES || bytes % 8 != 0 {
            return Err(SidecarError::config(
                "profile-stack-bytes",
                bytes.to_string(),
                "must be a multiple of 8 from 0 to 57344",
            ));
        }
        profile.stack_bytes = bytes;
    }
    Ok(profile)
}

/// Pids, process names and the uids a name needs.
type Targets = (Vec<u32>, Vec<String>, Vec<u32>);

/// `--{what}-pid`, `--{what}-name` and `--{what}-uid` (`what`: `profile` or `memory`):
/// pids without 0 or repeats, process names, and the uids a name needs.
fn targets(
    what: &'static str,
    pids: Vec<u32>,
    names: Vec<String>,
    uids: Vec<u32>,
) -> Result<Targets, SidecarError> {
    let (pid_flag, name_flag) = match what {
        "memory" => ("memory-pid", "memory-name"),
        _ => ("profile-pid", "profile-name"),
    };
    if pids.contains(&0) {
        return Err(SidecarError::config(pid_flag, "0", "is not a process id"));
    }
    let mut seen = std::collections::HashSet::new();
    let pids = pids.into_iter().filter(|p| seen.insert(*p)).collect();
    for name in &names {
        if name.is_empty()
            || name.len() > 255
            || name.contains('/')
            || name.contains(char::is_control)
        {
            return Err(SidecarError::config(
                name_flag,
                name.as_str(),
                "must be a process name (1 to 255 bytes, no `/`)",
            ));
        }
    }
    if !names.is_empty() && uids.is_empty() {
        return Err(SidecarError::config(
            name_flag,
            names.join(","),
            format!(
                "needs --{what}-uid: a name alone would pick up any user's process of that name"
            ),
        ));
    }
    Ok((pids, names, uids))
}

/// A label flag: `None` when empty, an error when the collector would refuse it.
fn label_flag(flag: &'static str, value: Option<String>) -> Result<Option<String>, SidecarError> {
    let max = profwatch_model::Limits::default().max_name_len;
    match value.filter(|s| !s.is_empty()) {
        Some(s) if s.len() > max || s.contains(char::is_control) => Err(SidecarError::config(
            flag,
            s,
            format!("must be at most {max} printable bytes"),
        )),
        s => Ok(s),
    }
}

fn memory_config(
    pids: Vec<u32>,
    names: Vec<String>,
    uids: Vec<u32>,
    interval_secs: Option<u64>,
    service: Option<String>,
    build: Option<String>,
) -> Result<MemoryConfig, SidecarError> {
    let mut memory = MemoryConfig::default();
    (memory.pids, memory.names, memory.uids) = targets("memory", pids, names, uids)?;
    if let Some(secs) = interval_secs {
        if !(1..=3600).contains(&secs) {
            return Err(SidecarError::config(
                "memory-interval-secs",
                secs.to_string(),
                "must be 1..=3600",
            ));
        }
        memory.interval = Duration::from_secs(secs);
    }
    memory.service = label_flag("memory-service", service)?;
    memory.build = label_flag("memory-build", build)?.unwrap_or_default();
    Ok(memory)
}

/// `http://host[:port][/base]` → `http://host[:port][/base]` without a trailing `/`.
fn collector_base(collector: &str) -> Result<String, SidecarError> {
    let url = collector.trim();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            SidecarError::config(
                "collector",
                url,
                "expected http://host:port or https://host:port",
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
            socket_mode: "660".into(),
            batch_events: 5000,
            batch_wait_ms: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn https_collectors_and_tls_files() {
        let mut a = args();
        a.collector = Some("https://collector:4040".into());
        let cfg = a.validate().expect("https is accepted");
        assert_eq!(cfg.events_url, "https://collector:4040/api/v1/events");
        assert!(!cfg.tls.is_set());

        let dir = tempfile::tempdir().expect("tempdir");
        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "not a certificate").expect("write");
        let mut a = args();
        a.collector = Some("https://collector:4040".into());
        a.ca_file = Some(garbage);
        assert!(matches!(
            a.validate(),
            Err(SidecarError::Config {
                flag: "ca-file",
                ..
            })
        ));

        let mut a = args();
        a.ca_file = Some(dir.path().join("missing.pem"));
        assert!(matches!(
            a.validate(),
            Err(SidecarError::Config {
                flag: "ca-file",
                ..
            })
        ));

        let mut a = args();
        a.client_cert = Some(dir.path().join("c.pem"));
        assert!(matches!(
            a.validate(),
            Err(SidecarError::Config {
                flag: "client-cert",
                ..
            })
        ));
    }

    #[test]
    fn defaults_and_urls() {
        let cfg = args().validate().expect("valid");
        assert_eq!(cfg.events_url, "http://127.0.0.1:4040/api/v1/events");
        assert_eq!(cfg.profiles_url, "http://127.0.0.1:4040/api/v1/profiles");
        assert!(!cfg.profile.is_enabled());
        assert_eq!(cfg.profile.frequency_hz, 99);
        assert_eq!(cfg.profile.export_interval, Duration::from_secs(10));
        assert_eq!(cfg.metrics, Some("127.0.0.1:4041".parse().expect("addr")));
        assert!(cfg.socket.ends_with("agent.sock"));
        assert_eq!(cfg.retry.set_aside_after, 10);
        assert_eq!(
            (cfg.dead_letter_max_bytes, cfg.dead_letter_max_files),
            (64 << 20, 1000)
        );
    }

    #[test]
    fn delivery_flags() {
        let mut a = args();
        a.set_aside_after = Some(3);
        a.dead_letter_max = Some("2M".into());
        a.dead_letter_max_files = Some(7);
        let cfg = a.validate().expect("valid");
        assert_eq!(cfg.retry.set_aside_after, 3);
        assert_eq!(
            (cfg.dead_letter_max_bytes, cfg.dead_letter_max_files),
            (2 << 20, 7)
        );
        for bad in [
            RunArgs {
                set_aside_after: Some(0),
                ..args()
            },
            RunArgs {
                dead_letter_max: Some("10K".into()),
                ..args()
            },
            RunArgs {
                dead_letter_max_files: Some(0),
                ..args()
            },
        ] {
            assert!(bad.validate().is_err());
        }
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
        let mut a = args();
        a.profile_pid = vec![0];
        assert!(a.validate().is_err());
        let mut a = args();
        a.profile_name = vec!["a/b".into()];
        a.profile_uid = vec![0];
        assert!(a.validate().is_err());
        let mut a = args();
        a.profile_name = vec!["postgres".into()];
        let e = a.validate().expect_err("a name alone").to_string();
        assert!(e.contains("--profile-uid"), "{e}");
        let mut a = args();
        a.profile_frequency = Some(0);
        assert!(a.validate().is_err());
        let mut a = args();
        a.profile_interval_secs = Some(0);
        assert!(a.validate().is_err());
        let mut a = args();
        a.profile_service = Some("x".repeat(200));
        assert!(a.validate().is_err());
        for bytes in [12, 57352] {
            let mut a = args();
            a.profile_stack_bytes = Some(bytes);
            assert!(a.validate().is_err(), "{bytes}");
        }
    }

    #[test]
    fn socket_permissions_and_a_metrics_port_that_stays_local_unless_told() {
        let cfg = args().validate().expect("defaults");
        assert_eq!((cfg.socket_mode, cfg.socket_group), (0o660, None));
        let mut a = args();
        a.socket_mode = "0o600".into();
        a.socket_group = Some("root".into());
        let cfg = a.validate().expect("valid");
        assert_eq!((cfg.socket_mode, cfg.socket_group), (0o600, Some(0)));
        a = args();
        a.socket_group = Some("4242".into());
        assert_eq!(a.validate().expect("a number").socket_group, Some(4242));
        for bad in ["999", "rw", "1777"] {
            let mut a = args();
            a.socket_mode = bad.into();
            assert!(a.validate().is_err(), "{bad}");
        }
        let mut a = args();
        a.socket_group = Some("no-such-group-profwatch".into());
        assert!(a.validate().is_err());

        let mut a = args();
        a.metrics = "0.0.0.0:4041".into();
        let e = a.validate().expect_err("remote metrics").to_string();
        assert!(e.contains("--metrics-allow-remote"), "{e}");
        let mut a = args();
        a.metrics = "0.0.0.0:4041".into();
        a.metrics_allow_remote = true;
        assert!(a.validate().is_ok());
        let mut a = args();
        a.metrics = "[::1]:4041".into();
        assert!(a.validate().is_ok(), "IPv6 loopback is local");
    }

    #[test]
    fn profile_flags() {
        let mut a = args();
        a.profile_pid = vec![42, 7, 42];
        a.profile_name = vec!["postgres".into()];
        a.profile_uid = vec![105, 0];
        a.profile_service = Some("db".into());
        a.profile_frequency = Some(49);
        a.profile_interval_secs = Some(60);
        a.profile_stack_bytes = Some(32768);
        let p = a.validate().expect("valid").profile;
        assert_eq!(p.stack_bytes, 32768);
        assert!(p.is_enabled());
        assert_eq!(p.pids, [42, 7]);
        assert_eq!(p.names, ["postgres"]);
        assert_eq!(p.uids, [105, 0]);
        assert_eq!(p.service.as_deref(), Some("db"));
        assert_eq!(
            (p.frequency_hz, p.export_interval),
            (49, Duration::from_secs(60))
        );
    }

    #[test]
    fn the_flags_parse_as_documented() {
        use clap::{Args, FromArgMatches};
        let cmd = AgentArgs::augment_args(clap::Command::new("agent"));
        cmd.clone().debug_assert();
        let matches = cmd
            .try_get_matches_from([
                "agent",
                "--collector",
                "http://127.0.0.1:4040",
                "--memory-pid",
                "42",
                "--memory-pid",
                "7",
                "--memory-name",
                "gunicorn",
                "--memory-uid",
                "1000",
                "--memory-interval-secs",
                "30",
            ])
            .expect("the memory flags parse");
        let args = AgentArgs::from_arg_matches(&matches).expect("args");
        let m = args.run.validate().expect("valid").memory;
        assert_eq!(
            (m.pids, m.names, m.uids, m.interval),
            (
                vec![42, 7],
                vec!["gunicorn".to_owned()],
                vec![1000],
                Duration::from_secs(30)
            )
        );
    }

    #[test]
    fn memory_flags() {
        let cfg = args().validate().expect("defaults");
        assert!(!cfg.memory.is_enabled());
        assert_eq!(cfg.memory.interval, Duration::from_secs(10));
        assert_eq!(cfg.memory_url, "http://127.0.0.1:4040/api/v1/memory");
        let mut a = args();
        a.memory_pid = vec![42, 7, 42];
        a.memory_name = vec!["gunicorn".into()];
        a.memory_uid = vec![1000];
        a.memory_interval_secs = Some(5);
        a.memory_service = Some("shop".into());
        a.memory_build = Some("812".into());
        let m = a.validate().expect("valid").memory;
        assert!(m.is_enabled());
        assert_eq!(
            (m.pids, m.names, m.uids, m.interval),
            (
                vec![42, 7],
                vec!["gunicorn".to_owned()],
                vec![1000],
                Duration::from_secs(5)
            )
        );
        assert_eq!(
            (m.service.as_deref(), m.build.as_str()),
            (Some("shop"), "812")
        );

        let mut a = args();
        a.memory_name = vec!["gunicorn".into()];
        let e = a.validate().expect_err("a name alone").to_string();
        assert!(e.contains("--memory-uid"), "{e}");
        let mut a = args();
        a.memory_pid = vec![0];
        let e = a.validate().expect_err("pid 0").to_string();
        assert!(e.contains("--memory-pid"), "{e}");
        let mut a = args();
        a.memory_name = vec!["a/b".into()];
        a.memory_uid = vec![0];
        assert!(a.validate().is_err());
        for secs in [0, 3601] {
            let mut a = args();
            a.memory_interval_secs = Some(secs);
            assert!(a.validate().is_err(), "{secs}");
        }
        let mut a = args();
        a.memory_build = Some("b\n".into());
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
