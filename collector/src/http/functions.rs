//! `GET /api/v1/function_series?service=&function=[&endpoint=][&build=]&from=&to=&step=`: one
//! function's CPU per bucket (self and total, from the stored stack samples) and, where the
//! request events can say, per request. "Did `price` get dearer over the last month?" in one
//! answer. Shape in `docs/api.md`.
//!
//! One [`Store::function_costs`] query and one query of request counts. With a step of whole
//! hours the stores answer from their hourly per-function rollups (samples only for the
//! partial hours at the ends, or the embedded segments partly inside the range); a finer step
//! reads the samples. The buckets are bounded by [`MAX_FUNCTION_BUCKETS`], and the answer goes
//! through the query cache like the others.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use profwatch_model::functions::{FunctionQuery, FunctionTotals};
use profwatch_model::query::{GroupBy, SeriesQuery, TimeRange, TimeseriesQuery};
use profwatch_model::timefmt::NANOS_PER_SEC;
use profwatch_model::Tenant;
use profwatch_store::{Store, StoreError};
use serde::Serialize;

use super::error::ApiError;
use super::params::Params;
use super::query::{cached, step};
use super::{auth, AppState};

/// Most buckets one answer may hold: 30 days in hours, or 2 days in minutes.
pub const MAX_FUNCTION_BUCKETS: i64 = 2880;

/// One bucket of a function's series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FunctionPoint {
    /// Bucket start, unix seconds.
    pub time: i64,
    /// Samples whose leaf is the function, and their CPU nanoseconds.
    pub self_samples: u64,
    pub self_cpu_ns: u64,
    /// Samples with the function anywhere on the stack (counted once per sample), and theirs.
    pub total_samples: u64,
    pub total_cpu_ns: u64,
    /// Weighted requests of the selection in the bucket; `null` when the request events cannot
    /// answer for the selection (a build without an endpoint).
    pub requests: Option<f64>,
    /// `self_cpu_ns / requests` and `total_cpu_ns / requests`; `null` without requests.
    pub self_cpu_ns_per_request: Option<f64>,
    pub total_cpu_ns_per_request: Option<f64>,
}

/// The answer.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionSeries {
    pub service: String,
    pub function: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    /// Bucket width, seconds.
    pub step: i64,
    /// Buckets with samples or requests, in time order.
    pub points: Vec<FunctionPoint>,
}

/// What one answer is about.
struct Selection {
    tenant: Tenant,
    service: String,
    function: String,
    endpoint: Option<String>,
    build: Option<String>,
    range: TimeRange,
    step: i64,
}

/// Weighted requests per bucket start (ns) of the selection, or `None` when the events cannot
/// answer for it.
async fn requests(
    store: &dyn Store,
    s: &Selection,
) -> Result<Option<HashMap<i64, f64>>, StoreError> {
    let mut out: HashMap<i64, f64> = HashMap::new();
    match (&s.endpoint, &s.build) {
        (Some(endpoint), build) => {
            let points = store
                .timeseries(&TimeseriesQuery {
                    tenant: s.tenant.clone(),
                    service: s.service.clone(),
                    endpoint: endpoint.clone(),
                    range: s.range,
                    step: s.step,
                    group_by: if build.is_some() {
                        GroupBy::Build
                    } else {
                        GroupBy::None
                    },
                })
                .await?;
            for p in points {
                if build.is_none() || p.group.as_deref() == build.as_deref() {
                    *out.entry(p.time * NANOS_PER_SEC).or_default() += p.stats.requests;
                }
            }
        }
        (None, None) => {
            let series = store
                .endpoint_series(&SeriesQuery {
                    tenant: s.tenant.clone(),
                    service: s.service.clone(),
                    range: s.range,
                    step: s.step,
                })
                .await?;
            for p in series.iter().flat_map(|e| &e.points) {
                *out.entry(p.time * NANOS_PER_SEC).or_default() += p.stats.requests;
            }
        }
        (None, Some(_)) => return Ok(None),
    }
    Ok(Some(out))
}

async fn function_series(
    store: Arc<dyn Store>,
    s: Selection,
) -> Result<FunctionSeries, StoreError> {
    let requests = requests(store.as_ref(), &s).await?;
    let costs = store
        .function_costs(&FunctionQuery {
            tenant: s.tenant.clone(),
            service: s.service.clone(),
            range: s.range,
            endpoint: s.endpoint.clone(),
            build: s.build.clone(),
            function: Some(s.function.clone()),
            step: Some(s.step),
        })
        .await?;
    let by_bucket: HashMap<i64, &FunctionTotals> =
        costs.iter().filter_map(|c| Some((c.time?, c))).collect();
    let mut points = Vec::new();
    let mut from = s.range.from - s.range.from.rem_euclid(s.step);
    while from < s.range.to {
        let c = by_bucket.get(&from).copied().cloned().unwrap_or_default();
        let n = requests
            .as_ref()
            .map(|r| r.get(&from).copied().unwrap_or(0.0));
        if c.total_samples > 0 || n.is_some_and(|n| n > 0.0) {
            let per = |ns: u64| n.filter(|n| *n > 0.0).map(|n| ns as f64 / n);
            points.push(FunctionPoint {
                time: from.div_euclid(NANOS_PER_SEC),
                self_samples: c.self_samples,
                self_cpu_ns: c.self_cpu_ns,
                total_samples: c.total_samples,
                total_cpu_ns: c.total_cpu_ns,
                requests: n,
                self_cpu_ns_per_request: per(c.self_cpu_ns),
                total_cpu_ns_per_request: per(c.total_cpu_ns),
            });
        }
        from += s.step;
    }
    Ok(FunctionSeries {
        service: s.service,
        function: s.function,
        endpoint: s.endpoint,
        build: s.build,
        step: s.step / NANOS_PER_SEC,
        points,
    })
}

pub async fn get_function_series(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&[
        "service", "function", "endpoint", "build", "from", "to", "step",
    ])?;
    let tenant = auth::tenant(&state.cfg, &headers)?;
    let range = state.range(&params, "", None)?;
    let step = step(&params, range)?;
    let buckets = range.span() / step + 1;
    if buckets > MAX_FUNCTION_BUCKETS {
        return Err(ApiError::BadRequest(format!(
            "{buckets} buckets requested; the limit is {MAX_FUNCTION_BUCKETS} for a function's \
             series: widen `step` or narrow the range"
        )));
    }
    let optional = |name: &str| params.get(name).filter(|v| !v.is_empty()).cloned();
    let selection = Selection {
        tenant,
        service: params.required("service")?.to_owned(),
        function: params.required("function")?.to_owned(),
        endpoint: optional("endpoint"),
        build: optional("build"),
        range,
        step,
    };
    let key_tenant = selection.tenant.clone();
    cached(
        &state,
        &key_tenant,
        "function_series",
        &params,
        (|a: &FunctionSeries| a.points.len(), "points (buckets)"),
        function_series(state.store.clone(), selection),
    )
    .await
}
