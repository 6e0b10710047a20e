//! `POST /api/v1/events`: NDJSON or protobuf, optionally gzip or zstd, validated whole before
//! anything is stored, acknowledged only once durable.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use profwatch_model::timefmt::now_ns;
use profwatch_model::{ndjson, wire, RequestEvent};
use serde::Serialize;

use super::error::ApiError;
use super::headers::{self, idempotency_key};
use super::{auth, body, budget, AppState};
use crate::metrics::RejectReason;
use profwatch_store::Written;

/// The answer to an accepted batch.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    /// Events stored.
    pub stored: usize,
    /// The batch's `Idempotency-Key` was stored before; nothing was stored now.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, Clone, Copy)]
enum Format {
    NdJson,
    Protobuf,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let ct = headers::content_type(headers);
    match ct.media_type.as_str() {
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Format::NdJson),
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        _ => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {:?} is not supported; send application/x-ndjson or application/x-protobuf",
            ct.raw
        ))),
    }
}

/// Decodes and validates a body; the first problem refuses the whole batch.
fn decode(
    state: &AppState,
    format: Format,
    bytes: &[u8],
) -> Result<Vec<RequestEvent>, (RejectReason, ApiError, usize)> {
    let max = state.cfg.max_events_per_batch;
    let too_many = |e: String| (RejectReason::BodyTooLarge, ApiError::PayloadTooLarge(e), 0);
    let bad = |e: String| (RejectReason::Decode, ApiError::BadRequest(e), 0);
    let events = match format {
        Format::NdJson => ndjson::parse_body_capped(bytes, max).map_err(|e| match e {
            ndjson::BodyError::TooManyEvents { .. } => too_many(e.to_string()),
            other => bad(other.to_string()),
        })?,
        Format::Protobuf => wire::decode_batch_capped(bytes, max).map_err(|e| match e {
            wire::DecodeBatchError::TooManyEvents { .. } => too_many(e.to_string()),
            other => bad(other.to_string()),
        })?,
    };
    let now = now_ns();
    for (i, e) in events.iter().enumerate() {
        if let Err(err) = e.validate(&state.cfg.limits, now) {
            let at = match format {
                Format::NdJson => format!("event {} (line numbers skip blank lines)", i + 1),
                Format::Protobuf => format!("event {i}"),
            };
            return Err((
                RejectReason::Invalid,
                ApiError::BadRequest(format!("{at}: {err}; nothing was stored")),
                events.len(),
            ));
        }
    }
    Ok(events)
}

pub async fn post_events(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req_body: Body,
) -> Result<Json<IngestResponse>, ApiError> {
    let received = Instant::now();
    let reject = |reason: RejectReason, err: ApiError| {
        state.metrics.rejected(reason, 0);
        err
    };
    let tenant = auth::tenant(&state.cfg, &headers).map_err(|e| reject(RejectReason::Auth, e))?;
    let key = idempotency_key(&headers).map_err(|e| reject(RejectReason::Decode, e))?;
    let format = format_of(&headers).map_err(|e| reject(RejectReason::ContentType, e))?;
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
            (reason, e, 0)
        })?;
        decode(&st, format, &bytes).map(|events| (events, res))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("decode task: {e}")))?;
    // The reservation is held until the answer: the events are in memory until stored.
    let (events, _res) = decoded.map_err(|(reason, e, n)| {
        state.metrics.rejected(reason, n);
        e
    })?;
    let n = events.len();
    let started = Instant::now();
    let written = match &key {
        Some(k) => state.store.write_once(&tenant, k, events).await,
        None => state
            .store
            .write(&tenant, events)
            .await
            .map(|()| Written::Stored),
    };
    match written {
        Ok(Written::Stored) => {
            state.metrics.accepted(
                n,
                started.elapsed().as_secs_f64(),
                received.elapsed().as_secs_f64(),
            );
            state.cache.invalidate(tenant.as_str());
            Ok(Json(IngestResponse {
                stored: n,
                duplicate: false,
            }))
        }
        Ok(Written::Duplicate) => {
            tracing::debug!(key = ?key, "duplicate batch acknowledged without storing");
            Ok(Json(IngestResponse {
                stored: 0,
                duplicate: true,
            }))
        }
        Err(e) => {
            let err = ApiError::from(e);
            let reason = match err {
                ApiError::Overloaded { .. } | ApiError::Unavailable(_) => RejectReason::Overloaded,
                _ => RejectReason::StoreError,
            };
            state.metrics.rejected(reason, n);
            Err(err)
        }
    }
}
