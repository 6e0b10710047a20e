//! The JSON query API: `/api/v1/services`, `/api/v1/endpoints`, `/api/v1/timeseries`.
//! Shapes are documented in `docs/api.md`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use profwatch_model::query::{
    EndpointStats, EndpointsQuery, GroupBy, ServiceSummary, ServicesQuery, TimeRange,
    TimeseriesPoint, TimeseriesQuery,
};
use profwatch_model::timefmt::{now_ns, parse_query_time_ns, NANOS_PER_SEC};

use super::error::ApiError;
use super::{auth, AppState};

/// Most buckets one timeseries answer may hold.
pub const MAX_BUCKETS: i64 = 10_000;

type Params = Query<HashMap<String, String>>;

fn only(params: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    for k in params.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter `{k}`; this endpoint takes {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, ApiError> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::BadRequest(format!("query parameter `{name}` is required")))
}

/// `from`/`to` in unix seconds or RFC 3339; default the last hour.
fn range(params: &HashMap<String, String>) -> Result<TimeRange, ApiError> {
    let parse = |name: &str| -> Result<Option<i64>, ApiError> {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                parse_query_time_ns(v).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}")))
            })
            .transpose()
    };
    let to = parse("to")?.unwrap_or_else(now_ns);
    let from = parse("from")?.unwrap_or(to - 3600 * NANOS_PER_SEC);
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    Ok(TimeRange { from, to })
}

fn group_by(params: &HashMap<String, String>) -> Result<GroupBy, ApiError> {
    let v = params.get("group_by").map(String::as_str).unwrap_or("");
    GroupBy::parse(v)
        .ok_or_else(|| ApiError::BadRequest(format!("`group_by` = {v:?}; use build, dc or host")))
}

/// `step` in seconds or as a duration (`5m`); default: the range split into about 60 buckets.
fn step(params: &HashMap<String, String>, r: TimeRange) -> Result<i64, ApiError> {
    let span = r.to - r.from;
    let step = match params.get("step").filter(|v| !v.is_empty()) {
        None => {
            let raw = (span / 60).max(NANOS_PER_SEC);
            (raw + NANOS_PER_SEC - 1) / NANOS_PER_SEC * NANOS_PER_SEC
        }
        Some(v) => {
            let secs = match v.parse::<u64>() {
                Ok(s) => s,
                Err(_) => humantime::parse_duration(v)
                    .map_err(|_| {
                        ApiError::BadRequest(format!(
                            "`step` = {v:?}; give seconds or a duration like 5m"
                        ))
                    })?
                    .as_secs(),
            };
            if secs == 0 {
                return Err(ApiError::BadRequest("`step` must be at least 1s".into()));
            }
            i64::try_from(secs)
                .ok()
                .and_then(|s| s.checked_mul(NANOS_PER_SEC))
                .ok_or_else(|| ApiError::BadRequest("`step` is too large".into()))?
        }
    };
    if span / step > MAX_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "{} buckets requested; the limit is {MAX_BUCKETS}: widen `step` or narrow the range",
            span / step
        )));
    }
    Ok(step)
}

pub async fn services(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Vec<ServiceSummary>>, ApiError> {
    only(&params, &["from", "to"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let q = ServicesQuery {
        tenant,
        range: range(&params)?,
    };
    Ok(Json(state.store.services(&q).await?))
}

pub async fn endpoints(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Vec<EndpointStats>>, ApiError> {
    only(&params, &["service", "from", "to", "group_by"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let q = EndpointsQuery {
        tenant,
        service: required(&params, "service")?.to_owned(),
        range: range(&params)?,
        group_by: group_by(&params)?,
    };
    Ok(Json(state.store.endpoints(&q).await?))
}

/// `GET /api/v1/series`: every endpoint's series of a service at once (sparklines).
pub async fn series(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Vec<profwatch_model::query::EndpointSeries>>, ApiError> {
    only(&params, &["service", "from", "to", "step"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let r = range(&params)?;
    let q = profwatch_model::query::SeriesQuery {
        tenant,
        service: required(&params, "service")?.to_owned(),
        range: r,
        step: step(&params, r)?,
    };
    Ok(Json(state.store.endpoint_series(&q).await?))
}

pub async fn timeseries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Json<Vec<TimeseriesPoint>>, ApiError> {
    only(
        &params,
        &["service", "endpoint", "from", "to", "step", "group_by"],
    )?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let r = range(&params)?;
    let q = TimeseriesQuery {
        tenant,
        service: required(&params, "service")?.to_owned(),
        endpoint: required(&params, "endpoint")?.to_owned(),
        range: r,
        step: step(&params, r)?,
        group_by: group_by(&params)?,
    };
    Ok(Json(state.store.timeseries(&q).await?))
}
