//! Incidents: `GET /api/v1/incidents[?state=&service=]` and `GET /api/v1/incidents/{id}`: the
//! tenant's regression records grouped by the cause they share (a build, or a moment of change).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use profwatch_model::regression::{Incident, RegressionState};

use super::error::ApiError;
use super::{auth, AppState};

/// Incidents, open first then acknowledged then resolved, newest first within each; `state`
/// keeps those in that state, `service` those touching that service.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Vec<Incident>>, ApiError> {
    if let Some(k) = params.keys().find(|k| *k != "state" && *k != "service") {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter `{k}`; this endpoint takes state, service"
        )));
    }
    let want_state = match params.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s) => Some(RegressionState::parse(s).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "`state` = {s:?}; use open, acknowledged or resolved"
            ))
        })?),
    };
    let service = params.get("service").filter(|s| !s.is_empty());
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let mut incidents = Incident::group(state.store.regressions(&tenant).await?);
    incidents.retain(|i| {
        want_state.is_none_or(|s| i.state == s) && service.is_none_or(|s| i.services.contains(s))
    });
    Ok(Json(incidents))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Incident>, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers)?;
    Incident::group(state.store.regressions(&tenant).await?)
        .into_iter()
        .find(|i| i.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no incident {id:?}")))
}
