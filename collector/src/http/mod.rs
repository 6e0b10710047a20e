//! The collector's HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/events` | ingest ([`ingest`]) |
//! | `GET /api/v1/services`, `/api/v1/endpoints`, `/api/v1/timeseries` | queries ([`query`]) |
//! | `POST /api/v1/profiles`, `GET /api/v1/profile`, `/api/v1/diff`, `/api/v1/top` | profiles ([`profiles`]) |
//! | `POST /push.v1.PusherService/Push`, `POST /ingest` | Pyroscope compatibility ([`pyroscope`]) |
//! | `POST /v1development/profiles` | OTLP/HTTP profiles ([`otlp`]; OTLP/gRPC is `crate::otlp_grpc`) |
//! | `GET /api/v1/regressions[/{id}]`, `POST /api/v1/regressions/{id}/ack|resolve`, `POST /api/v1/analyze`, `GET /api/v1/compare` | regressions ([`regressions`]) |
//! | `GET /api/v1/incidents[/{id}]` | regressions grouped by their cause ([`incidents`]) |
//! | `GET /healthz`, `/readyz`, `/metrics` | operations |
//! | `GET /`, `/assets/{path}` | the dashboard ([`profwatch_ui`]) |
//!
//! Every route sits behind [`origin`] (a local `Host` in loopback mode, same-origin state
//! changes); every ingest route draws its body bytes from the shared [`budget`]; [`serve`] runs
//! the router with a deadline for headers, [`body`] one for bodies.

pub mod auth;
pub mod auth_failures;
pub mod body;
pub mod budget;
pub mod error;
pub mod functions;
mod headers;
pub mod incidents;
pub mod ingest;
pub mod memory;
pub mod origin;
pub mod otlp;
pub mod params;
pub mod profiles;
pub mod pyroscope;
pub mod query;
pub mod regressions;
pub mod serve;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::analysis::RegressionTracker;
use crate::cache::QueryCache;
use crate::config::Config;
use crate::metrics::Metrics;
use params::Params;
use profwatch_model::query::TimeRange;
use profwatch_model::timefmt::now_ns;
use profwatch_store::Store;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub analyzer: RegressionTracker,
    /// Answers of the JSON query routes, with single-flight leases.
    pub cache: Arc<QueryCache>,
    /// Body bytes in flight and ingest requests at once, across all requests.
    pub budget: Arc<budget::Budget>,
    /// Failed authentications per source address.
    pub auth_failures: auth_failures::AuthFailures,
}

impl AppState {
    /// The times the store can hold now: from the retention's start to the furthest clock skew
    /// an event may have.
    pub fn held(&self) -> TimeRange {
        let now = now_ns();
        let retention = i64::try_from(self.cfg.retention.as_nanos()).unwrap_or(i64::MAX);
        TimeRange {
            from: now.saturating_sub(retention),
            to: now.saturating_add(self.cfg.limits.max_future_skew_ns),
        }
    }

    /// A query's `{prefix}from`/`{prefix}to` ([`Params::range`]) narrowed to what the store
    /// can hold, so that `from=0` scans and buckets only the retention.
    pub fn range(
        &self,
        params: &Params,
        prefix: &str,
        fallback: Option<TimeRange>,
    ) -> Result<TimeRange, error::ApiError> {
        Ok(params.range(prefix, fallback)?.narrowed_to(self.held()))
    }
}

/// The API's routes, behind the [`origin`] checks.
pub fn router(state: Arc<AppState>) -> Router {
    let guard = axum::middleware::from_fn_with_state(state.clone(), origin::guard);
    Router::new()
        .route("/api/v1/events", post(ingest::post_events))
        .route("/api/v1/services", get(query::services))
        .route("/api/v1/endpoints", get(query::endpoints))
        .route("/api/v1/timeseries", get(query::timeseries))
        .route("/api/v1/series", get(query::series))
        .route(
            "/api/v1/memory",
            get(memory::get_memory).post(memory::post_memory),
        )
        .route(
            "/api/v1/memory/timeseries",
            get(memory::get_memory_timeseries),
        )
        .route("/api/v1/profiles", post(profiles::post_profiles))
        .route("/api/v1/profile", get(profiles::get_profile))
        .route("/api/v1/diff", get(profiles::get_diff))
        .route("/api/v1/top", get(profiles::get_top))
        .route(
            "/api/v1/function_series",
            get(functions::get_function_series),
        )
        .route("/push.v1.PusherService/Push", post(pyroscope::push))
        .route("/ingest", post(pyroscope::ingest))
        .route("/v1development/profiles", post(otlp::export))
        .route("/api/v1/regressions", get(regressions::list))
        .route("/api/v1/regressions/{id}", get(regressions::get_one))
        .route("/api/v1/regressions/{id}/ack", post(regressions::ack))
        .route(
            "/api/v1/regressions/{id}/resolve",
            post(regressions::resolve),
        )
        .route("/api/v1/incidents", get(incidents::list))
        .route("/api/v1/incidents/{id}", get(incidents::get_one))
        .route("/api/v1/analyze", post(regressions::analyze))
        .route("/api/v1/compare", get(regressions::compare))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(profwatch_ui::router())
        .fallback(|| async { error::ApiError::NotFound("no such route; see docs/api.md".into()) })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            warn_of_missing_data,
        ))
        .layer(guard)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth_failures::guard,
        ))
        .with_state(state)
}

/// Adds a `Warning: 199` header to every GET answer for each thing the store knows it cannot
/// show (a quarantined segment, say): the numbers are of the data that remains, and say so.
async fn warn_of_missing_data(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_get = req.method() == axum::http::Method::GET;
    let mut resp = next.run(req).await;
    if is_get {
        for w in state.store.warnings() {
            let text: String = w
                .chars()
                .map(|c| match c {
                    ' '..='~' if c != '"' && c != '\\' => c,
                    _ => '?',
                })
                .collect();
            if let Ok(v) = header::HeaderValue::from_str(&format!("199 profwatch \"{text}\"")) {
                resp.headers_mut().append(header::WARNING, v);
            }
        }
    }
    resp
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    match state.store.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is not ready\n".to_owned(),
            )
        }
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state
            .metrics
            .render(state.store.queue_depth(), state.store.stack_collisions()),
    )
}
