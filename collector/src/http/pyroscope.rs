//! Grafana Pyroscope compatibility, so Pyroscope SDKs, Alloy and older agents can send here.
//!
//! - `POST /push.v1.PusherService/Push`: Connect unary over HTTP/1.1. The body is a
//!   `push.v1.PushRequest` (`Content-Type: application/proto`, optionally `Content-Encoding:
//!   gzip`); each series' labels apply to its raw pprof profiles (each gzipped or not). Success
//!   is 200 with an empty `PushResponse`; failures are Connect errors, `{"code", "message"}` as
//!   JSON with the HTTP status of the code. Size limits answer `invalid_argument` (400), as
//!   Pyroscope does, rather than `resource_exhausted`, whose 429 would have agents retry a body
//!   that can never fit. Series whose `__name__` is not a CPU profile (memory, mutex, ...) are
//!   skipped: this server stores CPU samples only.
//! - `POST /ingest?name=app.cpu{k=v,...}&from=&until=&sampleRate=&format=folded|lines|pprof`:
//!   the legacy API. `folded` (default) and `lines` bodies are text; `pprof` is the raw profile
//!   or a `multipart/form-data` body whose `profile` part holds it. CPU time per sample is
//!   `1e9 / sampleRate` ns (default 100 Hz); `ts` is `from` (default now). Non-CPU app names
//!   (`app.alloc_space`) are accepted and skipped.
//!
//! Label mapping (both routes) is [`profwatch_profile::labels`]: `service_name` or the app name →
//! service, `version` → build, `region` → dc; `__*` labels are dropped.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use profwatch_model::profile::{ProfileBatch, SampleLabels};
use profwatch_model::timefmt::{now_ns, parse_query_time_ns};
use prost::Message;

use super::budget::Reservation;
use super::error::ApiError;
use super::profiles::{
    blocking, counted, folded_batch, limits, ns_per_sample, profile_error, read_body,
    store_batches, FoldedInput, ProfileIngestResponse,
};
use super::{auth, body, headers, AppState};
use profwatch_profile::appname;
use profwatch_profile::compress::Allowance;
use profwatch_profile::decode::{pprof_to_batches_within, DecodeOptions};
use profwatch_profile::folded::FoldedKind;
use profwatch_profile::limits::FRAME_OVERHEAD;
use profwatch_profile::multipart;
use profwatch_profile::push::{decode_push, PushRequest, PushResponse};
use profwatch_profile::ProfileError;

/// Pyroscope `__name__` values that are CPU profiles.
const CPU_NAMES: &[&str] = &["process_cpu", "cpu", "itimer"];

/// An [`ApiError`] answered the Connect way.
#[derive(Debug)]
pub struct ConnectError(pub ApiError);

impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        let (code, status) = match &self.0 {
            ApiError::BadRequest(_) | ApiError::PayloadTooLarge(_) => {
                ("invalid_argument", StatusCode::BAD_REQUEST)
            }
            ApiError::Unauthorized(_) => ("unauthenticated", StatusCode::UNAUTHORIZED),
            ApiError::Forbidden(_) => ("permission_denied", StatusCode::FORBIDDEN),
            ApiError::NotFound(_) => ("not_found", StatusCode::NOT_FOUND),
            ApiError::RequestTimeout(_) => ("deadline_exceeded", StatusCode::REQUEST_TIMEOUT),
            ApiError::Misdirected(_) => ("permission_denied", StatusCode::MISDIRECTED_REQUEST),
            // Connect answers an unsupported content type with a bare 415.
            ApiError::UnsupportedMediaType(_) => return self.0.into_response(),
            ApiError::Overloaded { .. } => ("resource_exhausted", StatusCode::TOO_MANY_REQUESTS),
            ApiError::Unavailable(_) => ("unavailable", StatusCode::SERVICE_UNAVAILABLE),
            _ => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
        };
        let retry_after = match &self.0 {
            ApiError::Overloaded { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ApiError::Unavailable(_) => Some(5),
            _ => None,
        };
        if let ApiError::Internal(detail) = &self.0 {
            tracing::error!(%detail, "internal error");
        }
        let body = Json(serde_json::json!({ "code": code, "message": self.0.to_string() }));
        let mut resp = (status, body).into_response();
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<ApiError> for ConnectError {
    fn from(e: ApiError) -> Self {
        ConnectError(e)
    }
}

/// Converts every CPU series of a push request, gzipped profiles inflated within
/// `allowance`; the profiles of one request share one `max_frame_bytes`.
fn push_batches(
    req: PushRequest,
    state: &AppState,
    allowance: &mut dyn Allowance,
) -> Result<Vec<ProfileBatch>, ProfileError> {
    let mut limits = limits(state);
    let now = now_ns();
    let mut out = Vec::new();
    for series in req.series {
        let name = series
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .map(|l| l.value.as_str());
        if name.is_some_and(|n| !CPU_NAMES.contains(&n)) {
            tracing::debug!(name = ?name, "skipping a non-CPU Pyroscope series");
            continue;
        }
        let mut base = SampleLabels::default();
        for l in &series.labels {
            base.apply(&l.name, &l.value);
        }
        for sample in &series.samples {
            let opt = DecodeOptions {
                base: &base,
                limits: &limits,
                label_limits: &state.cfg.limits,
                now,
            };
            let batches = pprof_to_batches_within(&sample.raw_profile, &opt, allowance)?;
            let spent: usize = batches
                .iter()
                .flat_map(|b| &b.samples)
                .flat_map(|s| &s.frames)
                .map(|f| f.len() + FRAME_OVERHEAD)
                .sum();
            limits.max_frame_bytes = limits.max_frame_bytes.saturating_sub(spent);
            out.extend(batches);
        }
    }
    Ok(out)
}

pub async fn push(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req_body: Body,
) -> Result<Response, ConnectError> {
    let tenant = auth::tenant(&state.cfg, &headers).map_err(|e| counted(&state, e))?;
    let ct = headers::content_type(&headers);
    if !matches!(
        ct.media_type.as_str(),
        "application/proto" | "application/protobuf" | "application/x-protobuf"
    ) {
        return Err(counted(
            &state,
            ApiError::UnsupportedMediaType(format!(
                "Content-Type {:?} is not supported; send application/proto",
                ct.raw
            )),
        )
        .into());
    }
    let (raw, mut res) = read_body(&state, &headers, req_body).await?;
    let st = state.clone();
    let (batches, _res) = blocking(move || {
        let max = st.cfg.max_decompressed_bytes;
        let bytes = body::decode_content_within(&headers, raw, max, &mut res)?;
        let req = decode_push(bytes.as_ref()).map_err(profile_error)?;
        drop(bytes);
        let batches = push_batches(req, &st, &mut res).map_err(profile_error)?;
        Ok((batches, res))
    })
    .await
    .map_err(|e| counted(&state, e))?;
    store_batches(&state, &tenant, batches).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/proto")],
        PushResponse {}.encode_to_vec(),
    )
        .into_response())
}

pub async fn ingest(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    req_body: Body,
) -> Result<Json<ProfileIngestResponse>, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers).map_err(|e| counted(&state, e))?;
    let name = params
        .get("name")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            counted(
                &state,
                ApiError::BadRequest("query parameter `name` is required".into()),
            )
        })?;
    let app = appname::parse(name).map_err(|e| counted(&state, profile_error(e)))?;
    let format = params.get("format").map(String::as_str).unwrap_or("folded");
    let kind = match format {
        "" | "folded" => Some(FoldedKind::Counted),
        "lines" => Some(FoldedKind::Lines),
        "pprof" => None,
        other => {
            return Err(counted(
                &state,
                ApiError::UnsupportedMediaType(format!(
                    "`format` = {other:?} is not supported; use folded, lines or pprof"
                )),
            ))
        }
    };
    let rate = params
        .get("sampleRate")
        .cloned()
        .unwrap_or_else(|| "100".into());
    let per_sample = ns_per_sample(Some(&rate), "sampleRate").map_err(|e| counted(&state, e))?;
    let ts = params
        .get("from")
        .filter(|v| !v.is_empty())
        .map(|v| parse_query_time_ns(v).map_err(|e| ApiError::BadRequest(format!("`from`: {e}"))))
        .transpose()
        .map_err(|e| counted(&state, e))?
        .unwrap_or_else(now_ns);
    let (raw, mut res) = read_body(&state, &headers, req_body).await?;
    let ct = headers::content_type(&headers).raw;
    let boundary = match kind {
        Some(_) => None,
        None => multipart::form_boundary(ct)
            .map_err(|e| counted(&state, profile_error(e)))?
            .map(str::to_owned),
    };
    if !app.is_cpu() {
        tracing::debug!(name = %name, "skipping a non-CPU legacy profile");
        return Ok(Json(store_batches(&state, &tenant, Vec::new()).await?));
    }
    let mut base = SampleLabels::default();
    base.apply("service", &app.app);
    for (k, v) in &app.labels {
        base.apply(k, v);
    }
    let st = state.clone();
    let input = Legacy {
        kind,
        boundary,
        base,
        ts,
        per_sample,
    };
    let (batches, _res) = blocking(move || {
        let batches = legacy_batches(&st, &headers, raw, input, &mut res)?;
        Ok((batches, res))
    })
    .await
    .map_err(|e| counted(&state, e))?;
    Ok(Json(store_batches(&state, &tenant, batches).await?))
}

/// What a legacy `/ingest` body means besides its bytes.
#[derive(Debug)]
struct Legacy {
    /// Folded text, or pprof (`None`).
    kind: Option<FoldedKind>,
    /// The multipart boundary of a pprof form.
    boundary: Option<String>,
    base: SampleLabels,
    ts: i64,
    per_sample: u64,
}

/// Converts a legacy `/ingest` body, everything it inflates granted by `res`.
fn legacy_batches(
    st: &AppState,
    headers: &HeaderMap,
    raw: axum::body::Bytes,
    input: Legacy,
    res: &mut Reservation,
) -> Result<Vec<ProfileBatch>, ApiError> {
    let max = st.cfg.max_decompressed_bytes;
    let bytes = body::decode_content_within(headers, raw, max, res)?;
    let limits = limits(st);
    if let Some(kind) = input.kind {
        let folded = FoldedInput {
            kind,
            ns_per_sample: input.per_sample,
            labels: input.base,
            ts: input.ts,
        };
        let both = (&st.cfg.limits, &limits);
        return Ok(vec![
            folded_batch(&bytes, folded, both, res).map_err(profile_error)?
        ]);
    }
    let profile = match &input.boundary {
        Some(b) => multipart::part(&bytes, b, "profile").ok_or_else(|| {
            ApiError::BadRequest(
                "the multipart body has no `profile` part; nothing was stored".into(),
            )
        })?,
        None => bytes.as_ref(),
    };
    let opt = DecodeOptions {
        base: &input.base,
        limits: &limits,
        label_limits: &st.cfg.limits,
        now: input.ts,
    };
    pprof_to_batches_within(profile, &opt, res).map_err(profile_error)
}
