//! Regressions and compares: `GET /api/v1/regressions[?state=&service=]`,
//! `GET /api/v1/regressions/{id}`, `POST /api/v1/regressions/{id}/ack|resolve`,
//! `POST /api/v1/analyze` (a pass now, for the caller's tenant), and
//! `GET /api/v1/compare?service=&baseline=&candidate=[&endpoint=&from=&to=]` (the CI gate).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use profwatch_analyzer::{Comparison, Verdict};
use profwatch_model::query::TimeRange;
use profwatch_model::regression::{RegressionRecord, RegressionState};
use profwatch_model::timefmt::parse_query_time_ns;
use serde::Serialize;

use super::error::ApiError;
use super::{auth, AppState};
use crate::analysis::{AnalysisError, PassReport};

impl From<AnalysisError> for ApiError {
    fn from(e: AnalysisError) -> Self {
        match e {
            AnalysisError::Store(s) => ApiError::from(s),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<RegressionRecord>>, ApiError> {
    for k in params.keys() {
        if k != "state" && k != "service" {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{k}`; this endpoint takes state, service"
            )));
        }
    }
    let want_state = match params.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(RegressionState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`state` = {s:?}; use open, acknowledged or resolved"
            ))
        })?),
    };
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let mut records = state.store.regressions(&tenant).await?;
    records.retain(|r| {
        want_state.is_none_or(|s| r.state == s)
            && params
                .get("service")
                .is_none_or(|s| s.is_empty() || *s == r.service)
    });
    // Open first, then acknowledged, then resolved; newest first within each.
    records.sort_by_key(|r| match r.state {
        RegressionState::Open => 0,
        RegressionState::Acknowledged => 1,
        RegressionState::Resolved => 2,
    });
    Ok(Json(records))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegressionRecord>, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers)?;
    state
        .store
        .regressions(&tenant)
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no regression {id:?}")))
}

async fn set_state(
    state: Arc<AppState>,
    headers: HeaderMap,
    id: String,
    to: RegressionState,
) -> Result<Json<RegressionRecord>, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers)?;
    state
        .analyzer
        .set_state(&tenant, &id, to)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no regression {id:?}")))
}

pub async fn ack(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegressionRecord>, ApiError> {
    set_state(state, headers, id, RegressionState::Acknowledged).await
}

pub async fn resolve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<RegressionRecord>, ApiError> {
    set_state(state, headers, id, RegressionState::Resolved).await
}

pub async fn analyze(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<PassReport>, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers)?;
    Ok(Json(
        state
            .analyzer
            .run_pass(std::slice::from_ref(&tenant))
            .await?,
    ))
}

/// The answer of `/api/v1/compare`.
#[derive(Debug, Serialize)]
pub struct CompareAnswer {
    pub service: String,
    pub baseline: String,
    pub candidate: String,
    /// Whether any endpoint regressed (what the CI gate fails on).
    pub regressed: bool,
    pub endpoints: Vec<Comparison>,
}

pub async fn compare(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<CompareAnswer>, ApiError> {
    let allowed = ["service", "baseline", "candidate", "endpoint", "from", "to"];
    for k in params.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{k}`; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
    }
    let need = |k: &str| {
        params
            .get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{k}` is required")))
    };
    let (service, baseline, candidate) = (need("service")?, need("baseline")?, need("candidate")?);
    let time = |k: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                parse_query_time_ns(v).map_err(|e| ApiError::BadRequest(format!("`{k}`: {e}")))
            })
            .transpose()
    };
    let range = match (time("from")?, time("to")?) {
        (None, None) => None,
        (from, to) => {
            let to = to.unwrap_or_else(profwatch_model::timefmt::now_ns);
            let from = match from {
                Some(from) => from,
                None => TimeRange::before(to, 86_400 * 1_000_000_000)
                    .map_err(|e| ApiError::BadRequest(format!("`to`: {e}")))?,
            };
            Some(TimeRange::checked(from, to).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
    };
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let endpoints = state
        .analyzer
        .compare(
            &tenant,
            &service,
            &baseline,
            &candidate,
            params
                .get("endpoint")
                .map(String::as_str)
                .filter(|e| !e.is_empty()),
            range,
        )
        .await?;
    Ok(Json(CompareAnswer {
        regressed: endpoints.iter().any(|c| c.verdict == Verdict::Regression),
        service,
        baseline,
        candidate,
        endpoints,
    }))
}
