//! `profwatch`: one binary, a subcommand per component. Logic lives in the library crates;
//! this file only parses arguments and wires them up.

mod compare;
mod import;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use profwatch_analyzer::alert::{Sink, SinkKind};
use profwatch_collector::config::{RawClickHouse, RawConfig};
use profwatch_model::secret::Secret;

#[derive(Debug, Parser)]
#[command(
    name = "profwatch",
    version,
    about = "Continuous CPU profiling and performance-regression detection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector: ingest and query API on the embedded store or ClickHouse.
    Server(Box<ServerArgs>),
    /// Compare two builds of a service per endpoint; exit 1 when any endpoint regressed.
    Compare(compare::CompareArgs),
    /// Find change points in a series from a CSV file (e.g. a CI benchmark history).
    Changepoints(ChangepointsArgs),
    /// Upload profiles (pprof, folded, perf script; gzipped or not) to a server.
    Import(ImportCmd),
    /// Watch profwatch catch a regression: a server, an instrumented service rolled from build 1
    /// to build 2, load, and the analysis (needs nothing but this binary).
    Demo(DemoCmd),
    /// The demo's example service (started by `profwatch demo`).
    #[command(hide = true)]
    DemoService(DemoServiceCmd),
    /// Run the per-host sidecar: events and SDK profiles in over a local socket/UDP, stack
    /// sampling of local processes (--profile-pid, --profile-name), disk spool, batches to the
    /// collector.
    Agent(Box<profwatch_sidecar::AgentArgs>),
}

#[derive(Debug, clap::Args)]
struct DemoCmd {
    /// Where the server and dashboard listen.
    #[arg(long, default_value = "127.0.0.1:4040")]
    listen: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    duration: Option<u64>,
    /// Seconds build 1 runs alone before build 2 rolls out.
    #[arg(long, default_value_t = 45)]
    baseline_secs: u64,
    /// Hosts per build (two dcs; at least 8 per build gives the clustered test the resolution
    /// to pass Benjamini-Hochberg across the shop's three endpoints).
    #[arg(long, default_value_t = 8)]
    hosts: usize,
}

#[derive(Debug, clap::Args)]
struct DemoServiceCmd {
    #[arg(long)]
    collector: String,
    #[arg(long)]
    build: String,
    #[arg(long)]
    host: String,
    #[arg(long)]
    dc: String,
    #[arg(long)]
    rounds_per_us: Option<u64>,
}

#[derive(Debug, clap::Args)]
struct ImportCmd {
    /// The profwatch server, e.g. http://127.0.0.1:4040.
    #[arg(long, env = "PROFWATCH_SERVER")]
    server: String,
    #[arg(long, env = "PROFWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The service the profiles belong to (unless the files name it).
    #[arg(long)]
    service: Option<String>,
    /// A label for every sample, k=v; repeatable (endpoint, build, dc, host or any key).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Sampling frequency of folded or perf files in Hz, to derive CPU time.
    #[arg(long)]
    sample_rate: Option<u64>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
    /// When the profiles happened: original (the file's own time), now, or a time (unix
    /// seconds or RFC 3339). Old files need a recent time: the server refuses data older than
    /// its retention.
    #[arg(long, default_value = "original")]
    time: import::Retime,
    #[arg(required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct ChangepointsArgs {
    /// The CSV file (a header row, then one row per point).
    #[arg(long)]
    csv: PathBuf,
    /// The numeric column to examine.
    #[arg(long)]
    column: String,
    /// A column copied to the output as each change's time.
    #[arg(long)]
    time_column: Option<String>,
    /// A column naming the build of each row: consecutive rows of one build are one snapshot.
    #[arg(long)]
    build_column: Option<String>,
    /// `json` or `table`.
    #[arg(long, default_value = "json")]
    format: String,
    /// Smallest change reported, as a fraction (0.02 = 2%).
    #[arg(long)]
    min_change: Option<f64>,
    /// A seasonal cycle of this many rows to take out (12 for monthly data); without it, a
    /// time column of unix or RFC 3339 times spanning 3 days or more gets its daily cycle
    /// taken out.
    #[arg(long)]
    period: Option<usize>,
}

/// Flags and environment variables override the config file field by field.
#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// TOML config file (see docs/config.md).
    #[arg(long, env = "PROFWATCH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:4040].
    #[arg(long, env = "PROFWATCH_LISTEN")]
    listen: Option<String>,
    /// Directory of the embedded store [default: ./profwatch-data].
    #[arg(long, env = "PROFWATCH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// How long data is kept, e.g. 30d [default: 30d].
    #[arg(long, env = "PROFWATCH_RETENTION")]
    retention: Option<String>,
    /// ClickHouse HTTP URL; when set, ClickHouse is the store.
    #[arg(long, env = "PROFWATCH_CLICKHOUSE_URL")]
    clickhouse_url: Option<String>,
    /// ClickHouse database [default: profwatch].
    #[arg(long, env = "PROFWATCH_CLICKHOUSE_DATABASE")]
    clickhouse_database: Option<String>,
    #[arg(long, env = "PROFWATCH_CLICKHOUSE_USER")]
    clickhouse_user: Option<String>,
    #[arg(long, env = "PROFWATCH_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    clickhouse_password: Option<String>,
    /// PEM CA certificates trusted for an https:// ClickHouse URL, besides the public roots.
    #[arg(long, value_name = "FILE", env = "PROFWATCH_CLICKHOUSE_CA_FILE")]
    clickhouse_ca_file: Option<std::path::PathBuf>,
    /// A cluster defined in the ClickHouse servers' remote_servers: every table is sharded
    /// across it through Distributed tables (docs/clickhouse-cluster.md).
    #[arg(long, env = "PROFWATCH_CLICKHOUSE_CLUSTER")]
    clickhouse_cluster: Option<String>,
    /// With --clickhouse-cluster: ReplicatedMergeTree tables (needs ClickHouse Keeper or
    /// ZooKeeper and the {shard} and {replica} macros on every node).
    #[arg(long, env = "PROFWATCH_CLICKHOUSE_REPLICATED")]
    clickhouse_replicated: bool,
    /// A bearer token and its tenant, TOKEN=TENANT; repeatable. Env: comma-separated.
    #[arg(
        long = "token",
        env = "PROFWATCH_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
    /// Bytes the query cache may hold; 0 turns it off [default: 64 MiB].
    #[arg(long, env = "PROFWATCH_QUERY_CACHE_BYTES")]
    query_cache_bytes: Option<usize>,
    /// How often to analyse, e.g. 5m; 0s turns scheduled analysis off [default: 5m].
    #[arg(long, env = "PROFWATCH_ANALYSIS_INTERVAL")]
    analysis_interval: Option<String>,
    /// An alert webhook, KIND=URL with KIND json, slack or alertmanager; repeatable.
    #[arg(long = "alert", env = "PROFWATCH_ALERTS", value_delimiter = ',')]
    alerts: Vec<String>,
    /// PEM CA certificate(s) trusted for https alert sinks besides the public roots.
    #[arg(long, value_name = "FILE", env = "PROFWATCH_ALERT_CA_FILE")]
    alert_ca_file: Option<std::path::PathBuf>,
    /// Start even though a WAL file of the embedded store is damaged in the middle: the damaged
    /// bytes are copied to wal/damaged/ and every intact record is kept.
    #[arg(long)]
    repair: bool,
    /// Summaries (endpoints, time series, services, builds) read raw rows instead of the
    /// per-minute rollups: for comparing both (`profwatch-bench query --rollups off`).
    #[arg(long)]
    no_rollups: bool,
    /// Serve HTTPS with this PEM certificate chain (reloaded with the key on SIGHUP).
    #[arg(long, env = "PROFWATCH_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "PROFWATCH_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mTLS).
    #[arg(long, env = "PROFWATCH_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Serve OTLP/gRPC profiles on this address, e.g. 0.0.0.0:4317 [default: off].
    #[arg(long, env = "PROFWATCH_OTLP_GRPC")]
    otlp_grpc: Option<String>,
}

impl ServerArgs {
    fn into_raw(self) -> anyhow::Result<RawConfig> {
        let mut raw = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                RawConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
            }
            None => RawConfig::default(),
        };
        let mut tokens = std::collections::BTreeMap::new();
        for t in &self.tokens {
            let (token, tenant) = t
                .split_once('=')
                .with_context(|| "--token takes TOKEN=TENANT".to_owned())?;
            tokens.insert(token.to_owned(), tenant.to_owned());
        }
        raw = raw.merge(RawConfig {
            listen: self.listen,
            data_dir: self.data_dir,
            retention: self.retention,
            clickhouse: RawClickHouse {
                url: self.clickhouse_url,
                database: self.clickhouse_database,
                user: self.clickhouse_user,
                password: Secret(self.clickhouse_password),
                ca_file: self.clickhouse_ca_file,
                cluster: self.clickhouse_cluster,
                replicated: self.clickhouse_replicated.then_some(true),
            },
            tokens: Secret(tokens),
            query_cache_bytes: self.query_cache_bytes,
            analysis: profwatch_collector::config::RawAnalysis {
                interval: self.analysis_interval,
                alert_ca_file: self.alert_ca_file,
                ..Default::default()
            },
            alerts: self
                .alerts
                .iter()
                .map(|a| {
                    let (kind, url) = a
                        .split_once('=')
                        .with_context(|| format!("--alert takes KIND=URL, got {a:?}"))?;
                    let kind = match kind {
                        "json" => SinkKind::Json,
                        "slack" => SinkKind::Slack,
                        "alertmanager" => SinkKind::Alertmanager,
                        other => {
                            anyhow::bail!("--alert kind {other:?}: use json, slack or alertmanager")
                        }
                    };
                    Ok(Sink::new(kind, url))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
            tls: profwatch_collector::config::RawTls {
                cert: self.tls_cert,
                key: self.tls_key,
                client_ca: self.tls_client_ca,
            },
            otlp_grpc: self.otlp_grpc,
            ..Default::default()
        });
        Ok(raw)
    }
}

/// Logs to stderr at `PROFWATCH_LOG` (or `RUST_LOG`), else at `default`.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROFWATCH_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Exit codes: 0 success, 1 `compare` found a regression, 2 any error (the message says what).
fn main() {
    // Before any HTTP client or TLS listener is built (see model::tls).
    profwatch_model::tls::install_crypto_provider();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo narrates on stdout; its server's and its services' logs would only interleave
    // with that.
    init_logging(
        if matches!(cli.command, Command::Demo(_) | Command::DemoService(_)) {
            "error"
        } else {
            "info"
        },
    );
    match cli.command {
        Command::Compare(args) => {
            if compare::run(args)? {
                std::process::exit(1);
            }
        }
        Command::Demo(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(profwatch_demo::run(profwatch_demo::DemoArgs {
                listen: args.listen,
                duration: args.duration.map(std::time::Duration::from_secs),
                baseline_phase: std::time::Duration::from_secs(args.baseline_secs),
                hosts: args.hosts,
                exe: std::env::current_exe().context("locating the profwatch binary")?,
            }))?;
        }
        Command::DemoService(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(profwatch_demo::service::run(
                profwatch_demo::service::ServiceArgs {
                    collector: args.collector,
                    build: args.build,
                    host: args.host,
                    dc: args.dc,
                    rounds_per_us: args.rounds_per_us,
                },
            ))?;
        }
        Command::Import(args) => {
            let mut labels = Vec::new();
            for l in &args.labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("--label takes k=v, got {l:?}"))?;
                labels.push((k.to_owned(), v.to_owned()));
            }
            let report = import::run(import::ImportArgs {
                server: args.server,
                token: args.token,
                service: args.service,
                labels,
                sample_rate: args.sample_rate,
                files: args.files,
                progress: !args.no_progress,
                time: args.time,
            })?;
            for f in &report.files {
                eprintln!(
                    "{}: {:?}, {} bytes uploaded: {}",
                    f.path.display(),
                    f.format,
                    f.bytes,
                    f.response
                );
            }
        }
        Command::Changepoints(args) => {
            let mut config = profwatch_analyzer::ChangepointConfig::default();
            if let Some(m) = args.min_change {
                config.min_change = m;
            }
            config.period = args.period;
            let out =
                profwatch_analyzer::run_changepoints(&profwatch_analyzer::ChangepointsArgs {
                    csv: args.csv,
                    column: args.column,
                    time_column: args.time_column,
                    build_column: args.build_column,
                    format: args.format.parse()?,
                    config,
                })?;
            print!("{out}");
        }
        Command::Agent(args) => profwatch_sidecar::main(*args)?,
        Command::Server(args) => {
            let (repair, rollups) = (args.repair, !args.no_rollups);
            let mut cfg = args.into_raw()?.validate()?;
            cfg.repair = repair;
            cfg.rollups = rollups;
            let scheme = if cfg.tls.is_some() { "https" } else { "http" };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(profwatch_collector::server::run(
                cfg,
                profwatch_collector::server::shutdown_signal(),
                |addr| eprintln!("profwatch server listening on {scheme}://{addr}"),
            ))?;
        }
    }
    Ok(())
}
