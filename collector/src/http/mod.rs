//! The collector's HTTP API.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/events` | ingest ([`ingest`]) |
//! | `GET /api/v1/services`, `/api/v1/endpoints`, `/api/v1/timeseries` | queries ([`query`]) |
//! | `GET /healthz`, `/readyz`, `/metrics` | operations |

pub mod auth;
pub mod body;
pub mod error;
pub mod ingest;
pub mod query;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    pub cfg: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/api/v1/events", post(ingest::post_events))
        .route("/api/v1/services", get(query::services))
        .route("/api/v1/endpoints", get(query::endpoints))
        .route("/api/v1/timeseries", get(query::timeseries))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { error::ApiError::NotFound("no such route; see docs/api.md".into()) })
        .with_state(state)
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
        state.metrics.render(state.store.queue_depth()),
    )
}
