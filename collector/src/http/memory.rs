//! Memory samples: `POST /api/v1/memory` (the sidecar's JSON `MemoryBatch`, optionally gzip or
//! zstd, validated whole before anything is stored, acknowledged only once durable, an
//! `Idempotency-Key` honoured), and `GET /api/v1/memory` and `/api/v1/memory/timeseries`: a
//! service's memory per process by build, host or not grouped. Shapes in `docs/api.md`.
//!
//! Ingest shares the event route's auth, body limits, budget of bytes in flight, decompression
//! cap and tenant rule; a body is counted before it is parsed (its samples are bounded by
//! `max_events_per_batch`), so memory is bounded by the decompressed size.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use profwatch_model::memory::{MemoryBatch, MemoryGroupBy, MemoryQuery, MemorySample};
use profwatch_model::timefmt::now_ns;
use serde::Serialize;

use super::error::ApiError;
use super::headers::{self, idempotency_key};
use super::params::Params;
use super::query::{cached, step};
use super::{auth, body, budget, AppState};
use crate::metrics::RejectReason;
use profwatch_store::Written;

/// The answer to accepted memory samples.
#[derive(Debug, Serialize)]
pub struct MemoryIngestResponse {
    /// Samples stored.
    pub stored: usize,
    /// The batch's `Idempotency-Key` was stored before; nothing was stored now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The fewest bytes one sample takes in JSON (its field names alone): a body of `n` bytes
/// holds at most `n / MIN_SAMPLE_BYTES` samples, so a count over the cap is refused unparsed.
const MIN_SAMPLE_BYTES: usize = 150;

/// Parses and validates a body; the first problem refuses the whole batch.
fn decode(state: &AppState, bytes: &[u8]) -> Result<Vec<MemorySample>, (RejectReason, ApiError)> {
    let max = state.cfg.max_events_per_batch;
    let too_many = |n: String| {
        (
            RejectReason::BodyTooLarge,
            ApiError::PayloadTooLarge(format!(
                "{n} memory samples; the limit is {max} per request: send fewer at a time"
            )),
        )
    };
    if bytes.len() / MIN_SAMPLE_BYTES > max {
        return Err(too_many(format!(
            "a body of {} bytes can hold more than",
            bytes.len()
        )));
    }
    let batch: MemoryBatch = serde_json::from_slice(bytes).map_err(|e| {
        (
            RejectReason::Decode,
            ApiError::BadRequest(format!(
                "not a memory batch ({e}); send {{\"samples\": [{{\"ts\", \"service\", \"build\", \
                 \"dc\", \"host\", \"pid\", \"bytes\": {{\"rss\", \"pss\", \"shared_clean\", \
                 \"shared_dirty\", \"private_clean\", \"private_dirty\", \"swap\"}}}}]}}"
            )),
        )
    })?;
    if batch.samples.len() > max {
        return Err(too_many(batch.samples.len().to_string()));
    }
    let now = now_ns();
    for (i, s) in batch.samples.iter().enumerate() {
        if let Err(err) = s.validate(&state.cfg.limits, now) {
            return Err((
                RejectReason::Invalid,
                ApiError::BadRequest(format!("sample {i}: {err}; nothing was stored")),
            ));
        }
    }
    Ok(batch.samples)
}

pub async fn post_memory(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req_body: Body,
) -> Result<Json<MemoryIngestResponse>, ApiError> {
    let reject = |reason: RejectReason, err: ApiError| {
        state.metrics.rejected(reason, 0);
        err
    };
    let tenant = auth::tenant(&state.cfg, &headers).map_err(|e| reject(RejectReason::Auth, e))?;
    let key = idempotency_key(&headers).map_err(|e| reject(RejectReason::Decode, e))?;
    let ct = headers::content_type(&headers);
    if ct.media_type != "application/json" {
        return Err(reject(
            RejectReason::ContentType,
            ApiError::UnsupportedMediaType(format!(
                "Content-Type {:?} is not supported; send application/json",
                ct.raw
            )),
        ));
    }
    let mut res = state
        .budget
        .admit(budget::ADMISSION_WAIT)
        .await
        .map_err(|e| reject(RejectReason::Overloaded, e))?;
    let (max_body, timeout) = (state.cfg.max_body_bytes, state.cfg.body_timeout);
    let raw = body::read_limited(&headers, req_body, max_body, &mut res, timeout)
        .await
        .map_err(|e| reject(e.reject_reason(), e))?;
    let st = state.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let max = st.cfg.max_decompressed_bytes;
        let bytes = body::decode_content_within(&headers, raw, max, &mut res).map_err(|e| {
            let reason = match e {
                ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => {
                    RejectReason::Decompress
                }
                ref other => other.reject_reason(),
            };
            (reason, e)
        })?;
        decode(&st, &bytes).map(|samples| (samples, res))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("decode task: {e}")))?;
    // The reservation is held until the answer: the samples are in memory until stored.
    let (samples, _res) = decoded.map_err(|(reason, e)| reject(reason, e))?;
    let n = samples.len();
    match state
        .store
        .write_memory(&tenant, key.as_deref(), samples)
        .await
    {
        Ok(Written::Stored) => {
            state.cache.invalidate(tenant.as_str());
            Ok(Json(MemoryIngestResponse {
                stored: n,
                duplicate: false,
            }))
        }
        Ok(Written::Duplicate) => Ok(Json(MemoryIngestResponse {
            stored: 0,
            duplicate: true,
        })),
        Err(e) => {
            let err = ApiError::from(e);
            let reason = match err {
                ApiError::Overloaded { .. } | ApiError::Unavailable(_) => RejectReason::Overloaded,
                _ => RejectReason::StoreError,
            };
            Err(reject(reason, err))
        }
    }
}

/// The query of `GET /api/v1/memory[/timeseries]`.
fn memory_query(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
) -> Result<MemoryQuery, ApiError> {
    let tenant = auth::tenant(&state.cfg, headers)?;
    let group = params.get("group_by").map(String::as_str).unwrap_or("none");
    let group_by = MemoryGroupBy::parse(group).ok_or_else(|| {
        ApiError::BadRequest(format!("`group_by` = {group:?}; use build, host or none"))
    })?;
    Ok(MemoryQuery {
        tenant,
        service: params.required("service")?.to_owned(),
        range: state.range(params, "", None)?,
        group_by,
    })
}

/// `GET /api/v1/memory`: one row per group.
pub async fn get_memory(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["service", "from", "to", "group_by"])?;
    let q = memory_query(&state, &headers, &params)?;
    cached(
        &state,
        &q.tenant,
        "memory",
        &params,
        (Vec::len, "memory rows"),
        state.store.memory(&q),
    )
    .await
}

/// `GET /api/v1/memory/timeseries`: one row per (bucket, group).
pub async fn get_memory_timeseries(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    params.only(&["service", "from", "to", "step", "group_by"])?;
    let q = memory_query(&state, &headers, &params)?;
    let step = step(&params, q.range)?;
    cached(
        &state,
        &q.tenant,
        "memory/timeseries",
        &params,
        (Vec::len, "points (buckets × groups)"),
        state.store.memory_timeseries(&q, step),
    )
    .await
}
