//! The server's configuration, in two stages.
//!
//! [`RawConfig`] is what a TOML file, environment variables and flags say; every field is
//! optional, unknown keys are refused, and its doc comments are the reference for the file
//! (`docs/config.md` shows an example). Later sources override earlier ones field by field
//! (file, then env, then flags). [`RawConfig::validate`] turns it into a [`Config`] whose values
//! are parsed, bounded and consistent, or says which field is wrong.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use profwatch_model::secret::Secret;
use profwatch_model::Limits;
use serde::Deserialize;

use crate::tls::TlsSettings;

/// The shortest token accepted: 16 characters of a random token are out of reach of guessing.
pub const MIN_TOKEN_LEN: usize = 16;

/// Configuration as written by the operator.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Address to serve HTTP on. Default `127.0.0.1:4040`.
    pub listen: Option<String>,
    /// Directory of the embedded store. Default `./profwatch-data`. Ignored with ClickHouse.
    pub data_dir: Option<PathBuf>,
    /// How long data is kept, e.g. `30d`, `12h`. Default `30d`.
    pub retention: Option<String>,
    /// ClickHouse connection; when `url` is set, ClickHouse is the store instead of the
    /// embedded one.
    #[serde(default)]
    pub clickhouse: RawClickHouse,
    /// Bearer tokens and the tenant each one writes and reads as: `token = "tenant"`. With no
    /// tokens, the server accepts unauthenticated requests (tenant `default`) only while it
    /// listens on a loopback address.
    #[serde(default)]
    pub tokens: Secret<BTreeMap<String, String>>,
    /// Input limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// How long graceful shutdown may take before the server exits anyway. Default `30s`.
    pub shutdown_timeout: Option<String>,
    /// Bytes the query cache may hold. Default 64 MiB; 0 turns it off.
    pub query_cache_bytes: Option<usize>,
    /// How long a cached answer is fresh, e.g. `10s` (ingest makes it stale sooner). Default `10s`.
    pub query_cache_ttl: Option<String>,
    /// Regression detection.
    #[serde(default)]
    pub analysis: RawAnalysis,
    /// Where alerts go: `[[alerts]] kind = "json" | "slack" | "alertmanager"`, `url = "..."`,
    /// and optionally `tenants = ["team-a"]` to hear only those tenants' regressions.
    #[serde(default)]
    pub alerts: Vec<profwatch_analyzer::alert::Sink>,
    /// Serve HTTPS instead of HTTP.
    #[serde(default)]
    pub tls: RawTls,
    /// Address to serve OTLP/gRPC profiles on, e.g. `0.0.0.0:4317`. Default: off. With `[tls]`
    /// it serves TLS with the same certificate.
    pub otlp_grpc: Option<String>,
}

/// `[tls]`: with `cert` and `key` the listener serves only TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain, leaf first; reloaded with the key on SIGHUP.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// PEM CA certificates: clients (sidecars) must present a certificate signed by one (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// `[analysis]`; the defaults are justified in `analyzer/README.md`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    /// How often the server analyses on its own, e.g. `5m`; `0s` turns the schedule off
    /// (`POST /api/v1/analyze` still works). Default `5m`.
    pub interval: Option<String>,
    /// How far back a pass looks for builds and requests. Default `24h`.
    pub window: Option<String>,
    /// False discovery rate across the endpoints of a pass. Default 0.005.
    pub alpha: Option<f64>,
    /// Smallest relative change reported, 0.01 = 1%. Default 0.01.
    pub min_effect: Option<f64>,
    /// Requests per build and endpoint below which there is no verdict. Default 500.
    pub min_requests: Option<usize>,
    /// The memory compare's unit: each worker process's mean private bytes over this long,
    /// e.g. `1m` (the default); at least `1s`.
    pub memory_step: Option<String>,
    /// The dashboard's URL, for links in alerts.
    pub public_url: Option<String>,
    /// PEM CA certificates trusted for `https://` alert sinks besides the public roots (an
    /// Alertmanager or webhook receiver behind a private CA).
    pub alert_ca_file: Option<PathBuf>,
}

/// `[clickhouse]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClickHouse {
    /// HTTP URL, e.g. `http://127.0.0.1:8123`.
    pub url: Option<String>,
    /// Database; created if missing. Default `profwatch`.
    pub database: Option<String>,
    pub user: Option<String>,
    pub password: Secret<Option<String>>,
    /// PEM CA certificates trusted for an `https://` URL besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// A cluster in the servers' `remote_servers`: shard the tables across it.
    pub cluster: Option<String>,
    /// With `cluster`: `Replicated*MergeTree` tables (needs Keeper and the `{shard}` and
    /// `{replica}` macros). Default false.
    pub replicated: Option<bool>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body as sent (compressed), bytes. Default 32 MiB.
    pub max_body_bytes: Option<usize>,
    /// Largest body after decompression, bytes. Default 256 MiB.
    pub max_decompressed_bytes: Option<usize>,
    /// Most events in one request. Default 200000.
    pub max_events_per_batch: Option<usize>,
    /// Bytes of request bodies (as sent and decompressed) all ingest requests together may
    /// hold; past it a request is refused with 429 and `Retry-After`. Default
    /// `max_body_bytes + max_decompressed_bytes + 16 MiB` (one largest request, or many small
    /// ones); at least `max_body_bytes + max_decompressed_bytes`.
    pub max_inflight_bytes: Option<usize>,
    /// Ingest requests served at once; more wait up to 10 s for a slot, then are refused with
    /// 429 and `Retry-After`. Default 32.
    pub max_concurrent_ingest: Option<usize>,
    /// How long a request body may take to arrive, e.g. `60s`; slower is refused with 408.
    /// Default `60s`.
    pub body_timeout: Option<String>,
    /// How long a client may take to send a request's headers, e.g. `30s`; slower connections
    /// are closed. Default `30s`.
    pub header_timeout: Option<String>,
    /// How long an answer may wait for the client to read any of it, e.g. `60s`; a client that
    /// stops reading has its connection closed. Default `60s`.
    pub write_timeout: Option<String>,
    /// How far in the future an event's `ts` may be. Default `10m`.
    pub max_future_skew: Option<String>,
    /// How old an event's `ts` may be. Default: the retention.
    pub max_event_age: Option<String>,
    /// Most rows one query answer may hold: points (buckets × series) of a time series,
    /// endpoints × groups, distinct stacks of a profile. Default 200000.
    pub max_answer_rows: Option<usize>,
    /// Largest encoded query answer (JSON, folded text, SVG), bytes. Default 64 MiB.
    pub max_answer_bytes: Option<usize>,
}

impl RawConfig {
    /// Reads a TOML file.
    pub fn from_toml(text: &str) -> Result<RawConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))
    }

    /// Fields set in `over` replace those in `self`; tokens are added.
    pub fn merge(mut self, over: RawConfig) -> RawConfig {
        fn pick<T>(a: &mut Option<T>, b: Option<T>) {
            if b.is_some() {
                *a = b;
            }
        }
        pick(&mut self.listen, over.listen);
        pick(&mut self.data_dir, over.data_dir);
        pick(&mut self.retention, over.retention);
        pick(&mut self.clickhouse.url, over.clickhouse.url);
        pick(&mut self.clickhouse.database, over.clickhouse.database);
        pick(&mut self.clickhouse.user, over.clickhouse.user);
        pick(&mut self.clickhouse.password.0, over.clickhouse.password.0);
        pick(&mut self.clickhouse.ca_file, over.clickhouse.ca_file);
        pick(&mut self.clickhouse.cluster, over.clickhouse.cluster);
        pick(&mut self.clickhouse.replicated, over.clickhouse.replicated);
        self.tokens.extend(over.tokens.0);
        pick(&mut self.limits.max_body_bytes, over.limits.max_body_bytes);
        pick(
            &mut self.limits.max_decompressed_bytes,
            over.limits.max_decompressed_bytes,
        );
        pick(
            &mut self.limits.max_events_per_batch,
            over.limits.max_events_per_batch,
        );
        pick(
            &mut self.limits.max_inflight_bytes,
            over.limits.max_inflight_bytes,
        );
        pick(
            &mut self.limits.max_concurrent_ingest,
            over.limits.max_concurrent_ingest,
        );
        pick(&mut self.limits.body_timeout, over.limits.body_timeout);
        pick(&mut self.limits.header_timeout, over.limits.header_timeout);
        pick(&mut self.limits.write_timeout, over.limits.write_timeout);
        pick(
            &mut self.limits.max_future_skew,
            over.limits.max_future_skew,
        );
        pick(&mut self.limits.max_event_age, over.limits.max_event_age);
        pick(
            &mut self.limits.max_answer_rows,
            over.limits.max_answer_rows,
        );
        pick(
            &mut self.limits.max_answer_bytes,
            over.limits.max_answer_bytes,
        );
        pick(&mut self.shutdown_timeout, over.shutdown_timeout);
        pick(&mut self.query_cache_bytes, over.query_cache_bytes);
        pick(&mut self.query_cache_ttl, over.query_cache_ttl);
        pick(&mut self.analysis.interval, over.analysis.interval);
        pick(&mut self.analysis.window, over.analysis.window);
        pick(&mut self.analysis.alpha, over.analysis.alpha);
        pick(&mut self.analysis.min_effect, over.analysis.min_effect);
        pick(&mut self.analysis.min_requests, over.analysis.min_requests);
        pick(&mut self.analysis.memory_step, over.analysis.memory_step);
        pick(&mut self.analysis.public_url, over.analysis.public_url);
        pick(
            &mut self.analysis.alert_ca_file,
            over.analysis.alert_ca_file,
        );
        self.alerts.extend(over.alerts);
        pick(&mut self.tls.cert, over.tls.cert);
        pick(&mut self.tls.key, over.tls.key);
        pick(&mut self.tls.client_ca, over.tls.client_ca);
        pick(&mut self.otlp_grpc, over.otlp_grpc);
        self
    }

    /// Parses and checks every field.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:4040".to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            ConfigError::field(
                "listen",
                &listen_text,
                "expected IP:PORT, e.g. 127.0.0.1:4040",
            )
        })?;
        let retention = duration("retention", self.retention.as_deref().unwrap_or("30d"))?;
        if retention < Duration::from_secs(3600) {
            return Err(ConfigError::field(
                "retention",
                &format!("{retention:?}"),
                "must be at least 1h",
            ));
        }
        check_tokens(&self.tokens, listen, &listen_text)?;
        let otlp_grpc = otlp_grpc_address(self.otlp_grpc.as_deref(), self.tokens.is_empty())?;
        let limits = event_limits(&self.limits, retention)?;
        let body = BodyLimits::of(&self.limits)?;
        let tls = tls_settings(self.tls)?;
        let analysis = analysis_settings(self.analysis, self.alerts)?;
        Ok(Config {
            query_cache_bytes: self.query_cache_bytes.unwrap_or(64 << 20),
            query_cache_ttl: duration(
                "query_cache_ttl",
                self.query_cache_ttl.as_deref().unwrap_or("10s"),
            )?,
            analysis,
            listen,
            tls,
            otlp_grpc,
            store: store_config(self.clickhouse, self.data_dir),
            retention,
            tokens: self.tokens,
            limits,
            max_body_bytes: body.max_body_bytes,
            max_decompressed_bytes: body.max_decompressed_bytes,
            max_events_per_batch: self.limits.max_events_per_batch.unwrap_or(200_000),
            max_answer_rows: positive(
                "limits.max_answer_rows",
                self.limits.max_answer_rows.unwrap_or(200_000),
            )?,
            max_answer_bytes: positive(
                "limits.max_answer_bytes",
                self.limits.max_answer_bytes.unwrap_or(64 << 20),
            )?,
            max_inflight_bytes: body.max_inflight_bytes,
            max_concurrent_ingest: body.max_concurrent_ingest,
            body_timeout: body.body_timeout,
            header_timeout: body.header_timeout,
            write_timeout: body.write_timeout,
            shutdown_timeout: duration(
                "shutdown_timeout",
                self.shutdown_timeout.as_deref().unwrap_or("30s"),
            )?,
            repair: false,
            rollups: true,
        })
    }
}

/// A limit that must be at least 1.
fn positive(field: &'static str, n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(ConfigError::field(field, "0", "must be at least 1"));
    }
    Ok(n)
}

/// `otlp_grpc`: off when unset or empty; like `listen`, loopback only without tokens.
fn otlp_grpc_address(
    text: Option<&str>,
    no_tokens: bool,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(text) = text.filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        ConfigError::field("otlp_grpc", text, "expected IP:PORT, e.g. 0.0.0.0:4317")
    })?;
    if no_tokens && !addr.ip().is_loopback() {
        return Err(ConfigError::field(
            "otlp_grpc",
            text,
            "without tokens the server only listens on loopback; configure [tokens] (or --token TOKEN=TENANT) to listen elsewhere",
        ));
    }
    Ok(Some(addr))
}

/// Tokens of at least [`MIN_TOKEN_LEN`] characters, tenants of 1-64 `[A-Za-z0-9_-]`, and no
/// listening beyond loopback without tokens.
fn check_tokens(
    tokens: &BTreeMap<String, String>,
    listen: SocketAddr,
    listen_text: &str,
) -> Result<(), ConfigError> {
    for (token, tenant) in tokens {
        if token.len() < MIN_TOKEN_LEN {
            return Err(ConfigError::field(
                "tokens",
                "…",
                "every token must be at least 16 characters (use a random one, e.g. `openssl rand -base64 24`)",
            ));
        }
        if tenant.is_empty()
            || tenant.len() > 64
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::field(
                "tokens",
                tenant,
                "tenants are 1-64 characters of [A-Za-z0-9_-]",
            ));
        }
    }
    if tokens.is_empty() && !listen.ip().is_loopback() {
        return Err(ConfigError::field(
            "listen",
            listen_text,
            "without tokens the server only listens on loopback; configure [tokens] (or --token TOKEN=TENANT) to listen elsewhere",
        ));
    }
    Ok(())
}

/// ClickHouse when a URL is given, else the embedded store in `data_dir`.
fn store_config(clickhouse: RawClickHouse, data_dir: Option<PathBuf>) -> StoreConfig {
    match clickhouse.url {
        Some(url) => StoreConfig::ClickHouse {
            url,
            database: clickhouse
                .database
                .unwrap_or_else(|| "profwatch".to_owned()),
            user: clickhouse.user,
            password: clickhouse.password,
            ca_file: clickhouse.ca_file,
            cluster: clickhouse.cluster.filter(|c| !c.is_empty()),
            replicated: clickhouse.replicated.unwrap_or(false),
        },
        None => StoreConfig::Embedded {
            dir: data_dir.unwrap_or_else(|| PathBuf::from("./profwatch-data")),
        },
    }
}

/// The limits on events: their age (default: the retention) and clock skew.
fn event_limits(raw: &RawLimits, retention: Duration) -> Result<Limits, ConfigError> {
    let nanos = |d: Duration| d.as_nanos().min(i64::MAX as u128) as i64;
    let max_age = match &raw.max_event_age {
        Some(s) => duration("limits.max_event_age", s)?,
        None => retention,
    };
    let skew = duration(
        "limits.max_future_skew",
        raw.max_future_skew.as_deref().unwrap_or("10m"),
    )?;
    Ok(Limits {
        max_age_ns: nanos(max_age),
        max_future_skew_ns: nanos(skew),
        ..Limits::default()
    })
}

/// The analysis pass: its schedule, the compare's statistics, alert sinks (http or https URLs)
/// and the dashboard URL alerts link to (default: this server's, as bound).
fn analysis_settings(
    raw: RawAnalysis,
    alerts: Vec<profwatch_analyzer::alert::Sink>,
) -> Result<AnalysisSettings, ConfigError> {
    let mut compare = profwatch_analyzer::CompareConfig::default();
    if let Some(a) = raw.alpha {
        compare.alpha = a;
    }
    if let Some(m) = raw.min_effect {
        compare.min_effect = m;
    }
    if let Some(n) = raw.min_requests {
        compare.min_requests = n;
    }
    compare
        .validate()
        .map_err(|e| ConfigError::field("analysis", "…", &e.to_string()))?;
    for sink in &alerts {
        if !(sink.url.starts_with("http://") || sink.url.starts_with("https://")) {
            return Err(ConfigError::field(
                "alerts.url",
                &profwatch_analyzer::alert::redacted(&sink.url),
                "must be an http:// or https:// URL",
            ));
        }
    }
    let memory_step = duration(
        "analysis.memory_step",
        raw.memory_step.as_deref().unwrap_or("1m"),
    )?;
    if memory_step < Duration::from_secs(1) {
        return Err(ConfigError::field(
            "analysis.memory_step",
            raw.memory_step.as_deref().unwrap_or(""),
            "must be at least 1s",
        ));
    }
    Ok(AnalysisSettings {
        interval: duration("analysis.interval", raw.interval.as_deref().unwrap_or("5m"))?,
        memory_step,
        window: duration("analysis.window", raw.window.as_deref().unwrap_or("24h"))?,
        compare,
        public_url: raw.public_url,
        alert_ca_file: raw.alert_ca_file,
        alerts,
    })
}

/// The validated limits on request bodies, alone and all together.
struct BodyLimits {
    max_body_bytes: usize,
    max_decompressed_bytes: usize,
    max_inflight_bytes: usize,
    max_concurrent_ingest: usize,
    body_timeout: Duration,
    header_timeout: Duration,
    write_timeout: Duration,
}

impl BodyLimits {
    fn of(raw: &RawLimits) -> Result<BodyLimits, ConfigError> {
        let max_body_bytes = raw.max_body_bytes.unwrap_or(32 << 20);
        let max_decompressed_bytes = raw.max_decompressed_bytes.unwrap_or(256 << 20);
        if max_decompressed_bytes < max_body_bytes {
            return Err(ConfigError::field(
                "limits.max_decompressed_bytes",
                &max_decompressed_bytes.to_string(),
                "must be at least limits.max_body_bytes",
            ));
        }
        let one_request = max_body_bytes.saturating_add(max_decompressed_bytes);
        let max_inflight_bytes = raw
            .max_inflight_bytes
            .unwrap_or(one_request.saturating_add(16 << 20));
        if max_inflight_bytes < one_request {
            return Err(ConfigError::field(
                "limits.max_inflight_bytes",
                &max_inflight_bytes.to_string(),
                "must be at least limits.max_body_bytes + limits.max_decompressed_bytes",
            ));
        }
        let max_concurrent_ingest = positive(
            "limits.max_concurrent_ingest",
            raw.max_concurrent_ingest.unwrap_or(32),
        )?;
        Ok(BodyLimits {
            max_body_bytes,
            max_decompressed_bytes,
            max_inflight_bytes,
            max_concurrent_ingest,
            body_timeout: duration(
                "limits.body_timeout",
                raw.body_timeout.as_deref().unwrap_or("60s"),
            )?,
            header_timeout: duration(
                "limits.header_timeout",
                raw.header_timeout.as_deref().unwrap_or("30s"),
            )?,
            write_timeout: duration(
                "limits.write_timeout",
                raw.write_timeout.as_deref().unwrap_or("60s"),
            )?,
        })
    }
}

fn duration(field: &'static str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s)
        .map_err(|e| ConfigError::field(field, s, &format!("{e}; write e.g. 30d, 12h, 90s")))
}

/// Which store to run.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    Embedded {
        dir: PathBuf,
    },
    ClickHouse {
        url: String,
        database: String,
        user: Option<String>,
        password: Secret<Option<String>>,
        ca_file: Option<PathBuf>,
        cluster: Option<String>,
        replicated: bool,
    },
}

/// Validated `[analysis]` and `[[alerts]]`.
#[derive(Debug, Clone)]
pub struct AnalysisSettings {
    /// Zero: no scheduled passes.
    pub interval: Duration,
    pub window: Duration,
    pub compare: profwatch_analyzer::CompareConfig,
    /// The memory compare's unit (see [`RawAnalysis::memory_step`]).
    pub memory_step: Duration,
    /// The dashboard's URL for links in alerts; `None`: this server's own address, as bound
    /// ([`AnalysisSettings::public_url`]).
    pub public_url: Option<String>,
    /// Trusted for https sinks besides the public roots.
    pub alert_ca_file: Option<PathBuf>,
    pub alerts: Vec<profwatch_analyzer::alert::Sink>,
}

impl AnalysisSettings {
    /// The dashboard's URL for links in alerts: the configured one, else `bound` with the
    /// server's scheme (the port it really got, also when it was asked for port 0).
    pub fn public_url(&self, tls: bool, bound: SocketAddr) -> String {
        self.public_url.clone().unwrap_or_else(|| {
            let scheme = if tls { "https" } else { "http" };
            format!("{scheme}://{bound}")
        })
    }
}

/// `[tls]` is all or nothing: a certificate needs its key, a client CA needs both.
fn tls_settings(raw: RawTls) -> Result<Option<TlsSettings>, ConfigError> {
    match (raw.cert, raw.key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings {
            cert,
            key,
            client_ca: raw.client_ca,
        })),
        (None, None) => match raw.client_ca {
            Some(ca) => Err(ConfigError::field(
                "tls.client_ca",
                &ca.display().to_string(),
                "requires tls.cert and tls.key (--tls-cert, --tls-key)",
            )),
            None => Ok(None),
        },
        (Some(cert), None) => Err(ConfigError::field(
            "tls.cert",
            &cert.display().to_string(),
            "requires tls.key (--tls-key)",
        )),
        (None, Some(key)) => Err(ConfigError::field(
            "tls.key",
            &key.display().to_string(),
            "requires tls.cert (--tls-cert)",
        )),
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub query_cache_bytes: usize,
    pub query_cache_ttl: Duration,
    pub analysis: AnalysisSettings,
    pub listen: SocketAddr,
    /// Serve HTTPS with these files (HTTP when `None`).
    pub tls: Option<TlsSettings>,
    /// Where OTLP/gRPC is served (`None`: off).
    pub otlp_grpc: Option<SocketAddr>,
    pub store: StoreConfig,
    pub retention: Duration,
    /// token → tenant.
    pub tokens: Secret<BTreeMap<String, String>>,
    pub limits: Limits,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_events_per_batch: usize,
    /// Most rows in one query answer (see `RawLimits`).
    pub max_answer_rows: usize,
    /// Largest encoded query answer, bytes.
    pub max_answer_bytes: usize,
    /// Body bytes all ingest requests together may hold (see `RawLimits`).
    pub max_inflight_bytes: usize,
    pub max_concurrent_ingest: usize,
    pub body_timeout: Duration,
    pub header_timeout: Duration,
    /// An answer that waits this long for the client to read is abandoned (connection closed).
    pub write_timeout: Duration,
    pub shutdown_timeout: Duration,
    /// Open the embedded store even if a WAL file is damaged in the middle: copy the damaged
    /// bytes aside and keep every intact record (`profwatch server --repair`; a flag only,
    /// never in the file: it is meant for one start after an operator read the error).
    pub repair: bool,
    /// Summaries read the stores' per-minute rollups (`false`: raw rows, for comparing both;
    /// `profwatch server --no-rollups`, a flag only).
    pub rollups: bool,
}

impl Config {
    /// The tenants the server serves: those of the tokens, or `default` without tokens.
    pub fn tenants(&self) -> Vec<profwatch_model::Tenant> {
        if self.tokens.is_empty() {
            return vec![profwatch_model::Tenant::default_tenant()];
        }
        let mut t: Vec<String> = self.tokens.values().cloned().collect();
        t.sort();
        t.dedup();
        t.into_iter().map(profwatch_model::Tenant).collect()
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config file: {0}")]
    Toml(String),
    #[error("`{field}` = {value:?}: {problem}")]
    Field {
        field: &'static str,
        value: String,
        problem: String,
    },
}

impl ConfigError {
    fn field(field: &'static str, value: &str, problem: &str) -> Self {
        ConfigError::Field {
            field,
            value: value.to_owned(),
            problem: problem.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_overrides() {
        let file = RawConfig::from_toml(
            "listen = \"0.0.0.0:9000\"\nretention = \"7d\"\n[tokens]\n\"secret-token-0001\" = \"team-a\"\n[clickhouse]\nurl = \"http://ch:8123\"\n",
        )
        .expect("valid toml");
        let flags = RawConfig {
            retention: Some("2d".into()),
            ..Default::default()
        };
        let cfg = file.merge(flags).validate().expect("valid");
        assert_eq!(cfg.listen.port(), 9000);
        assert_eq!(cfg.retention, Duration::from_secs(2 * 86_400));
        assert!(
            matches!(cfg.store, StoreConfig::ClickHouse { ref database, .. } if database == "profwatch")
        );
        assert_eq!(cfg.tokens["secret-token-0001"], "team-a");
    }

    /// Tokens and the ClickHouse password never show in a configuration's `Debug` output.
    #[test]
    fn debug_output_hides_tokens_and_the_clickhouse_password() {
        let raw = RawConfig::from_toml(
            "[tokens]\n\"secret-token-0001\" = \"team-a\"\n[clickhouse]\nurl = \"http://ch:8123\"\npassword = \"pa55word-xyz\"\n",
        )
        .expect("valid toml");
        let shown = format!("{raw:?} {:?}", raw.clone().validate().expect("valid"));
        assert!(!shown.contains("secret-token-0001"), "{shown}");
        assert!(!shown.contains("pa55word"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn tls_is_all_or_nothing_and_flags_override_the_file() {
        let file = RawConfig::from_toml(
            "[tls]\ncert = \"/etc/a.crt\"\nkey = \"/etc/a.key\"\nclient_ca = \"/etc/ca.crt\"\n",
        )
        .expect("valid toml");
        let flags = RawConfig {
            tls: RawTls {
                cert: Some("/run/b.crt".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let cfg = file.merge(flags).validate().expect("valid");
        let tls = cfg.tls.expect("tls");
        assert_eq!(tls.cert, PathBuf::from("/run/b.crt"));
        assert_eq!(tls.key, PathBuf::from("/etc/a.key"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("/etc/ca.crt")));
        let bound: SocketAddr = "127.0.0.1:4443".parse().expect("addr");
        assert_eq!(
            cfg.analysis.public_url(true, bound),
            "https://127.0.0.1:4443"
        );
        assert!(RawConfig::from_toml("[tls]\ncertificate = \"x\"").is_err());
        for (cert, key, ca, field) in [
            (Some("c"), None, None, "tls.cert"),
            (None, Some("k"), None, "tls.key"),
            (None, None, Some("ca"), "tls.client_ca"),
        ] {
            let raw = RawConfig {
                tls: RawTls {
                    cert: cert.map(PathBuf::from),
                    key: key.map(PathBuf::from),
                    client_ca: ca.map(PathBuf::from),
                },
                ..Default::default()
            };
            match raw.validate() {
                Err(ConfigError::Field { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected a field error, got {other:?}"),
            }
        }
    }

    #[test]
    fn refuses_unknown_keys_and_open_listening_without_tokens() {
        assert!(RawConfig::from_toml("lisen = \"x\"").is_err());
        let open = RawConfig {
            listen: Some("0.0.0.0:4040".into()),
            ..Default::default()
        };
        let err = open.validate().expect_err("must refuse");
        assert!(err.to_string().contains("loopback"), "{err}");
        let bad = RawConfig {
            retention: Some("forever".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn otlp_grpc_is_off_by_default_and_loopback_only_without_tokens() {
        assert_eq!(
            RawConfig::default().validate().expect("valid").otlp_grpc,
            None
        );
        let file = RawConfig::from_toml("otlp_grpc = \"127.0.0.1:4317\"").expect("valid toml");
        let cfg = file.validate().expect("valid");
        assert_eq!(cfg.otlp_grpc, Some("127.0.0.1:4317".parse().expect("addr")));
        let open = RawConfig {
            otlp_grpc: Some("0.0.0.0:4317".into()),
            ..Default::default()
        };
        match open.validate() {
            Err(ConfigError::Field { field, .. }) => assert_eq!(field, "otlp_grpc"),
            other => panic!("expected an otlp_grpc error, got {other:?}"),
        }
        let bad = RawConfig {
            otlp_grpc: Some("4317".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn tokens_shorter_than_16_characters_are_refused() {
        let short = RawConfig {
            tokens: Secret([("fifteen-chars-x".to_owned(), "team".to_owned())].into()),
            ..Default::default()
        };
        let err = short.validate().expect_err("too short");
        assert!(err.to_string().contains("16 characters"), "{err}");
        let long = RawConfig {
            tokens: Secret([("sixteen-chars-xx".to_owned(), "team".to_owned())].into()),
            ..Default::default()
        };
        assert!(long.validate().is_ok());
    }
}
