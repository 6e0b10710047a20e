//! `profwatch`: one binary, a subcommand per component. Logic lives in the library crates;
//! this file only parses arguments and wires them up.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use profwatch_collector::config::{RawClickHouse, RawConfig};

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
    Server(ServerArgs),
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
    /// A bearer token and its tenant, TOKEN=TENANT; repeatable. Env: comma-separated.
    #[arg(
        long = "token",
        env = "PROFWATCH_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    tokens: Vec<String>,
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
                password: self.clickhouse_password,
            },
            tokens,
            ..Default::default()
        });
        Ok(raw)
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROFWATCH_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Server(args) => {
            let cfg = args.into_raw()?.validate()?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(profwatch_collector::server::run(
                cfg,
                profwatch_collector::server::shutdown_signal(),
                |addr| eprintln!("profwatch server listening on http://{addr}"),
            ))?;
        }
    }
    Ok(())
}
