//! Alert delivery: one message when a regression is found and one when it resolves, to webhook
//! sinks in three formats (generic JSON, Slack incoming webhook, Alertmanager v2 API). Several
//! regressions of one incident ([`crate::incident`]) go out as one message that lists them.
//!
//! Delivery is asynchronous: [`Dispatcher::send`] queues and returns at once, so a slow or
//! failing sink never blocks analysis. Each message is retried with exponential backoff and
//! jitter on network errors, 429 and 5xx (up to `max_attempts`); any other 4xx is permanent.
//! The queue is bounded; when it is full the message is dropped and counted.
//!
//! Webhook URLs are secrets (a Slack webhook's path is its credential): logs and errors show a
//! sink as its scheme and host only. Sinks follow no redirects (a redirect could carry the
//! alert, and the tenant's data in it, anywhere) and every request has the timeout. A sink may
//! be restricted to some tenants; names in messages are escaped for the sink's markup.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use profwatch_model::regression::{RegressionKind, RegressionRecord};
use profwatch_model::timefmt::format_rfc3339;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The format a sink expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// `{"status": "firing"|"resolved", "regression": {...}}`.
    Json,
    /// A Slack incoming webhook: `{"text": "..."}`.
    Slack,
    /// Alertmanager's `POST /api/v2/alerts` (the URL is the Alertmanager base URL).
    Alertmanager,
}

/// One webhook.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sink {
    pub kind: SinkKind,
    pub url: String,
    /// The tenants whose regressions this sink hears; empty: every tenant's.
    #[serde(default)]
    pub tenants: Vec<String>,
}

impl Sink {
    /// A sink for every tenant.
    pub fn new(kind: SinkKind, url: impl Into<String>) -> Sink {
        Sink {
            kind,
            url: url.into(),
            tenants: Vec::new(),
        }
    }

    /// Whether this sink hears `tenant`'s regressions.
    pub fn hears(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }
}

/// Never prints the URL: it is a secret.
impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("kind", &self.kind)
            .field("url", &redacted(&self.url))
            .field("tenants", &self.tenants)
            .finish()
    }
}

/// A URL as logs may show it: scheme and host (and port), the rest elided.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Credentials before an `@` are secret too.
    let host = host.rsplit('@').next().unwrap_or(host);
    let elided = if rest.len() > host.len() { "/…" } else { "" };
    if scheme.is_empty() {
        format!("{host}{elided}")
    } else {
        format!("{scheme}://{host}{elided}")
    }
}

/// Slack's markup: `&`, `<` and `>` are escaped so that no name becomes a mention
/// (`<!channel>`) or a link; control characters become spaces in every format.
fn slack_escape(s: &str) -> String {
    plain(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A name with its control characters (line breaks included) turned into spaces.
fn plain(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Whether the regression starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// Delivery counters (for `/metrics`).
#[derive(Debug, Default)]
pub struct AlertStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retries: AtomicU64,
}

/// Settings of delivery.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    pub first_backoff: Duration,
    pub timeout: Duration,
    pub queue: usize,
    /// Where links in messages point (the dashboard), e.g. `http://profwatch:4040`.
    pub base_url: String,
    /// PEM certificates trusted for https sinks besides the system's roots (a private CA).
    pub extra_roots_pem: Vec<u8>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            max_attempts: 6,
            first_backoff: Duration::from_millis(500),
            timeout: Duration::from_secs(10),
            queue: 1024,
            base_url: String::new(),
            extra_roots_pem: Vec::new(),
        }
    }
}

/// The body a sink receives.
pub fn render(
    kind: SinkKind,
    status: AlertStatus,
    r: &RegressionRecord,
    base_url: &str,
) -> serde_json::Value {
    let pct = (r.effect - 1.0) * 100.0;
    let link = format!("{}/#/regressions/{}", base_url.trim_end_matches('/'), r.id);
    let escape = match kind {
        SinkKind::Slack => slack_escape,
        SinkKind::Json | SinkKind::Alertmanager => plain,
    };
    let culprit = escape(
        r.culprits
            .first()
            .map(|c| c.function.as_str())
            .unwrap_or("(no function singled out)"),
    );
    let (service, endpoint) = (escape(&r.service), escape(&subject(r)));
    let (candidate, baseline) = (escape(&r.candidate), escape(&r.baseline));
    let memory = r.kind == RegressionKind::Memory;
    let summary = match status {
        AlertStatus::Firing if memory => format!(
            "{service} {endpoint} got {pct:+.1}% heavier (private bytes per worker) in build {candidate} vs {baseline} ({})",
            match (r.effect_low, r.effect_high) {
                (Some(lo), Some(hi)) =>
                    format!("95% CI {:+.1}%..{:+.1}%", (lo - 1.0) * 100.0, (hi - 1.0) * 100.0),
                _ => "no interval".to_owned(),
            },
        ),
        AlertStatus::Firing => format!(
            "{service} {endpoint} got {pct:+.1}% more expensive ({}) in build {candidate} vs {baseline} ({}); top function: {culprit}",
            r.metric,
            match (r.effect_low, r.effect_high) {
                (Some(lo), Some(hi)) =>
                    format!("95% CI {:+.1}%..{:+.1}%", (lo - 1.0) * 100.0, (hi - 1.0) * 100.0),
                _ => "no interval".to_owned(),
            },
        ),
        AlertStatus::Resolved => format!(
            "resolved{}: {service} {endpoint} ({pct:+.1}% in build {candidate} vs {baseline})",
            resolution_text(r, escape)
        ),
    };
    match kind {
        SinkKind::Json => {
            serde_json::json!({ "status": status, "summary": summary, "link": link, "regression": r })
        }
        SinkKind::Slack => serde_json::json!({ "text": format!("{summary} <{link}|details>") }),
        SinkKind::Alertmanager => {
            let mut alert = serde_json::json!({
                "labels": {
                    "alertname": "ProfwatchRegression",
                    "tenant": r.tenant,
                    "service": r.service,
                    "kind": r.kind.as_str(),
                    "endpoint": r.endpoint,
                    "metric": r.metric,
                    "candidate": r.candidate,
                    "regression_id": r.id,
                    "severity": "warning",
                },
                "annotations": { "summary": summary, "culprit": culprit },
                "startsAt": format_rfc3339(r.first_seen),
                "generatorURL": link,
            });
            if status == AlertStatus::Resolved {
                alert["endsAt"] = serde_json::Value::String(format_rfc3339(r.updated));
            }
            serde_json::json!([alert])
        }
    }
}

/// What a record is about after its service: its endpoint, or `memory per worker`.
fn subject(r: &RegressionRecord) -> String {
    match r.kind {
        RegressionKind::Memory => "memory per worker".to_owned(),
        RegressionKind::Cpu => r.endpoint.clone(),
    }
}

/// The body a sink receives for an incident's regressions (`records`, largest first as the
/// caller orders them): one record renders as [`render`]; several as one message listing them,
/// which names the incident.
pub fn render_incident(
    kind: SinkKind,
    status: AlertStatus,
    records: &[RegressionRecord],
    base_url: &str,
) -> serde_json::Value {
    let (first, rest) = match records {
        [] => return serde_json::Value::Null,
        [one] => return render(kind, status, one, base_url),
        [first, rest @ ..] => (first, rest),
    };
    let escape = match kind {
        SinkKind::Slack => slack_escape,
        SinkKind::Json | SinkKind::Alertmanager => plain,
    };
    let incident = first.incident_id();
    let link = format!(
        "{}/#/regressions?incident={incident}",
        base_url.trim_end_matches('/')
    );
    let mut services: Vec<&str> = records.iter().map(|r| r.service.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    let cause = if first.changed_at.is_some() && first.candidate.starts_with("after ") {
        format!(
            "at {}",
            escape(first.candidate.trim_start_matches("after "))
        )
    } else {
        format!("in build {}", escape(&first.candidate))
    };
    let all_cpu = records.iter().all(|r| r.kind == RegressionKind::Cpu);
    let verb = match status {
        AlertStatus::Firing if all_cpu => "got more expensive".to_owned(),
        AlertStatus::Firing => "got worse".to_owned(),
        AlertStatus::Resolved => format!("resolved{}", resolution_text(first, escape)),
    };
    let summary = format!(
        "{} {} of {} {verb} {cause} (largest {:+.1}%: {} {})",
        1 + rest.len(),
        if all_cpu { "endpoints" } else { "regressions" },
        escape(&services.join(", ")),
        (first.effect - 1.0) * 100.0,
        escape(&first.service),
        escape(&subject(first)),
    );
    let lines: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {}: {:+.1}% ({})",
                escape(&r.service),
                escape(&subject(r)),
                (r.effect - 1.0) * 100.0,
                r.metric
            )
        })
        .collect();
    match kind {
        SinkKind::Json => serde_json::json!({
            "status": status, "summary": summary, "link": link, "incident": incident,
            "regression": first, "regressions": records,
        }),
        SinkKind::Slack => serde_json::json!({
            "text": format!("{summary} <{link}|details>\n• {}", lines.join("\n• "))
        }),
        SinkKind::Alertmanager => {
            let mut alert = serde_json::json!({
                "labels": {
                    "alertname": "ProfwatchIncident",
                    "tenant": first.tenant,
                    "candidate": first.candidate,
                    "incident_id": incident,
                    "severity": "warning",
                },
                "annotations": { "summary": summary, "regressions": lines.join("\n") },
                "startsAt": format_rfc3339(records.iter().map(|r| r.first_seen).min().unwrap_or(first.first_seen)),
                "generatorURL": link,
            });
            if status == AlertStatus::Resolved {
                let ended = records
                    .iter()
                    .map(|r| r.updated)
                    .max()
                    .unwrap_or(first.updated);
                alert["endsAt"] = serde_json::Value::String(format_rfc3339(ended));
            }
            serde_json::json!([alert])
        }
    }
}

/// ` (went away)`, ` (fixed in build 813)`...: why a resolved record was resolved, or nothing.
fn resolution_text(r: &RegressionRecord, escape: fn(&str) -> String) -> String {
    r.resolution
        .as_ref()
        .map_or_else(String::new, |x| format!(" ({})", escape(&x.describe())))
}

fn target(sink: &Sink) -> String {
    match sink.kind {
        SinkKind::Alertmanager => format!("{}/api/v2/alerts", sink.url.trim_end_matches('/')),
        _ => sink.url.clone(),
    }
}

/// Why alert delivery could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AlertError {
    /// The HTTP client (with its timeout and TLS settings) could not be built.
    #[error("building the alert HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Queues alerts and delivers them in the background.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    tx: mpsc::Sender<(AlertStatus, Vec<RegressionRecord>)>,
    pub stats: Arc<AlertStats>,
}

impl Dispatcher {
    /// Starts the delivery task on the current tokio runtime.
    pub fn start(sinks: Vec<Sink>, cfg: DeliveryConfig) -> Result<Dispatcher, AlertError> {
        let (tx, mut rx) = mpsc::channel::<(AlertStatus, Vec<RegressionRecord>)>(cfg.queue.max(1));
        let stats = Arc::new(AlertStats::default());
        let st = stats.clone();
        profwatch_model::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none());
        if !cfg.extra_roots_pem.is_empty() {
            for cert in reqwest::Certificate::from_pem_bundle(&cfg.extra_roots_pem)
                .map_err(AlertError::Client)?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(AlertError::Client)?;
        tokio::spawn(async move {
            while let Some((status, records)) = rx.recv().await {
                let Some(tenant) = records.first().map(|r| r.tenant.clone()) else {
                    continue;
                };
                // Sinks are independent: each gets its own retries, concurrently.
                let tasks: Vec<_> = sinks
                    .iter()
                    .filter(|sink| sink.hears(&tenant))
                    .map(|sink| {
                        let body = render_incident(sink.kind, status, &records, &cfg.base_url);
                        tokio::spawn(deliver(
                            client.clone(),
                            target(sink),
                            body,
                            cfg.clone(),
                            st.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let ok = t.await.unwrap_or(false);
                    let counter = if ok { &st.delivered } else { &st.failed };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(Dispatcher { tx, stats })
    }

    /// Queues one alert for every sink; never waits.
    pub fn send(&self, status: AlertStatus, record: &RegressionRecord) {
        self.send_incident(status, std::slice::from_ref(record));
    }

    /// Queues one alert listing `records`, the regressions of one incident (one tenant's), for
    /// every sink; never waits.
    pub fn send_incident(&self, status: AlertStatus, records: &[RegressionRecord]) {
        let Some(first) = records.first() else {
            return;
        };
        let id = first.incident_id();
        if self.tx.try_send((status, records.to_vec())).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(incident = %id, "alert queue full; alert dropped");
        }
    }
}

/// Posts `body` to `url` until it is accepted, a permanent error occurs, or attempts run out.
async fn deliver(
    client: reqwest::Client,
    url: String,
    body: serde_json::Value,
    cfg: DeliveryConfig,
    stats: Arc<AlertStats>,
) -> bool {
    let mut backoff = cfg.first_backoff;
    let sink = redacted(&url);
    for attempt in 1..=cfg.max_attempts.max(1) {
        let result = client.post(&url).json(&body).send().await;
        let retriable = match result {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                let s = r.status();
                // A redirect is not followed: the sink is misconfigured, and retrying cannot help.
                let retriable = s.as_u16() == 429 || s.is_server_error();
                tracing::warn!(%sink, status = %s, attempt, "alert sink refused the alert");
                retriable
            }
            Err(e) => {
                let error = e.without_url();
                tracing::warn!(%sink, %error, attempt, "alert sink unreachable");
                true
            }
        };
        if !retriable || attempt == cfg.max_attempts {
            return false;
        }
        stats.retries.fetch_add(1, Ordering::Relaxed);
        // Full jitter: sleep a random part of the backoff, so many collectors do not retry in step.
        let jitter = (crate::rng::Rng::new(u64::from(attempt) ^ url.len() as u64).uniform() * 0.5
            + 0.5)
            * backoff.as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
    false
}
