//! The JSON query API: `/api/v1/services`, `/api/v1/endpoints`, `/api/v1/timeseries`.
//! Shapes are documented in `docs/api.md`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use profwatch_model::query::{
    EndpointSeries, EndpointsQuery, GroupBy, ServicesQuery, TimeRange, TimeseriesQuery,
};
use profwatch_model::timefmt::NANOS_PER_SEC;

use super::error::ApiError;
use super::params::Params;
use super::{auth, AppState};

/// Most buckets one timeseries answer may hold.
pub const MAX_BUCKETS: i64 = 10_000;

/// Refuses an answer of more than `limits.max_answer_rows` rows, saying how to narrow it.
pub fn check_rows(max: usize, rows: usize, what: &str) -> Result<(), ApiError> {
    if rows > max {
        return Err(ApiError::BadRequest(format!(
            "the answer would hold {rows} {what}; the limit is {max} (limits.max_answer_rows): \
             narrow the range, widen `step`, or group by less"
        )));
    }
    Ok(())
}

/// Refuses an encoded answer of more than `limits.max_answer_bytes`.
pub fn check_bytes(max: usize, bytes: usize) -> Result<(), ApiError> {
    if bytes > max {
        return Err(ApiError::BadRequest(format!(
            "the answer would be {bytes} bytes; the limit is {max} (limits.max_answer_bytes): \
             narrow the range or filter"
        )));
    }
    Ok(())
}

/// Answers a query through the cache: the key is the tenant, the route and the parameters as
/// given (so an open-ended range is cached for the cache's TTL). A stale answer carries
/// `X-Profwatch-Cache: stale`. `rows` counts an answer's rows (and names them) for
/// [`check_rows`]; its encoding is held to [`check_bytes`].
pub(super) async fn cached<T, Fut>(
    state: &AppState,
    tenant: &profwatch_model::Tenant,
    route: &str,
    params: &HashMap<String, String>,
    rows: (fn(&T) -> usize, &str),
    run: Fut,
) -> Result<Response, ApiError>
where
    T: serde::Serialize,
    Fut: std::future::Future<Output = Result<T, profwatch_store::StoreError>>,
{
    let encode = |v: T| {
        check_rows(state.cfg.max_answer_rows, rows.0(&v), rows.1)?;
        let body = serde_json::to_vec(&v)
            .map(bytes::Bytes::from)
            .map_err(|e| ApiError::Internal(format!("encoding an answer: {e}")))?;
        check_bytes(state.cfg.max_answer_bytes, body.len())?;
        Ok::<_, ApiError>(body)
    };
    let reply = |body: bytes::Bytes, stale: bool| {
        let mut r = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
        if stale {
            r.headers_mut().insert(
                "x-profwatch-cache",
                header::HeaderValue::from_static("stale"),
            );
        }
        r
    };
    if state.cfg.query_cache_bytes == 0 {
        return Ok(reply(encode(run.await?)?, false));
    }
    let mut sorted: Vec<(&String, &String)> = params.iter().collect();
    sorted.sort();
    let key = format!("{}\u{1f}{route}\u{1f}{sorted:?}", tenant.as_str());
    let c = state
        .cache
        .get_or_compute(tenant.as_str(), key, || async { encode(run.await?) })
        .await?;
    Ok(reply(c.body, c.stale))
}

fn group_by(params: &HashMap<String, String>) -> Result<GroupBy, ApiError> {
    let v = params.get("group_by").map(String::as_str).unwrap_or("");
    GroupBy::parse(v)
        .ok_or_else(|| ApiError::BadRequest(format!("`group_by` = {v:?}; use build, dc or host")))
}

/// `step` in seconds or as a duration (`5m`); default: the range split into about 60 buckets.
pub(super) fn step(params: &HashMap<String, String>, r: TimeRange) -> Result<i64, ApiError> {
    let span = r.span();
    let step = match params.get("step").filter(|v| !v.is_empty()) {
        None => {
            let raw = (span / 60).max(NANOS_PER_SEC);
            raw.checked_add(NANOS_PER_SEC - 1)
                .map(|r| r / NANOS_PER_SEC * NANOS_PER_SEC)
                .ok_or_else(|| ApiError::BadRequest("the time range is too long".into()))?
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
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["from", "to"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let q = ServicesQuery {
        tenant,
        range: state.range(&params, "", None)?,
    };
    cached(
        &state,
        &q.tenant,
        "services",
        &params,
        (Vec::len, "services"),
        state.store.services(&q),
    )
    .await
}

pub async fn endpoints(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["service", "from", "to", "group_by"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let q = EndpointsQuery {
        tenant,
        service: params.required("service")?.to_owned(),
        range: state.range(&params, "", None)?,
        group_by: group_by(&params)?,
    };
    cached(
        &state,
        &q.tenant,
        "endpoints",
        &params,
        (Vec::len, "endpoint rows"),
        state.store.endpoints(&q),
    )
    .await
}

/// `GET /api/v1/series`: every endpoint's series of a service at once (sparklines).
pub async fn series(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["service", "from", "to", "step"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let r = state.range(&params, "", None)?;
    let q = profwatch_model::query::SeriesQuery {
        tenant,
        service: params.required("service")?.to_owned(),
        range: r,
        step: step(&params, r)?,
    };
    cached(
        &state,
        &q.tenant,
        "series",
        &params,
        (
            |all: &Vec<EndpointSeries>| all.iter().map(|e| e.points.len()).sum(),
            "points (endpoints × buckets)",
        ),
        state.store.endpoint_series(&q),
    )
    .await
}

pub async fn timeseries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["service", "endpoint", "from", "to", "step", "group_by"])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let r = state.range(&params, "", None)?;
    let q = TimeseriesQuery {
        tenant,
        service: params.required("service")?.to_owned(),
        endpoint: params.required("endpoint")?.to_owned(),
        range: r,
        step: step(&params, r)?,
        group_by: group_by(&params)?,
    };
    cached(
        &state,
        &q.tenant,
        "timeseries",
        &params,
        (Vec::len, "points (buckets × series)"),
        state.store.timeseries(&q),
    )
    .await
}
