//! OTLP/HTTP profiles: `POST /v1development/profiles`, an `ExportProfilesServiceRequest` of
//! opentelemetry-proto v1.10.0 (`profwatch_profile::otlp`) as `application/x-protobuf` or
//! `application/json`, optionally with `Content-Encoding: gzip` (or zstd).
//!
//! As every ingest route: the bearer token decides the tenant, the body is read within the
//! body limits and the shared budget (its inflation and the JSON's transcoding are paid from
//! the same reservation), the request is converted whole before anything is stored, and it is
//! answered 200 only once the store made its batches durable; an `Idempotency-Key` header is
//! honoured as on `/api/v1/profiles`.
//!
//! Answers follow the OTLP/HTTP spec, in the request's encoding: 200 with an
//! `ExportProfilesServiceResponse` whose `partial_success` counts the profiles left out (not
//! CPU) and names attributes not kept as labels; 4xx/5xx with a `google.rpc.Status` (code and
//! message), the HTTP status and `Retry-After` as for any other ingest (400 malformed, 413 too
//! large, 429/503 retry later). OTLP/gRPC (`crate::otlp_grpc`) shares [`convert`] and the
//! error mapping ([`grpc_code`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use profwatch_model::timefmt::now_ns;
use profwatch_profile::compress::{Allowance, Refusal};
use profwatch_profile::otlp::proto::{
    ExportProfilesPartialSuccess, ExportProfilesServiceResponse, Status,
};
use profwatch_profile::otlp::{self, Converted, OtlpError, OtlpLimits, OtlpOptions};
use profwatch_profile::ProfileError;
use prost::Message;

use super::budget::refused;
use super::error::ApiError;
use super::profiles::{blocking, counted, limits, read_body, store_batches_once};
use super::{auth, body, headers, AppState};

/// How a request (and so its answer) is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
        let ct = headers::content_type(headers);
        match ct.media_type.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Encoding::Protobuf),
            "application/json" => Ok(Encoding::Json),
            _ => Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type {:?} is not supported; send application/x-protobuf or \
                 application/json",
                ct.raw
            ))),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// An OTLP refusal as [`ApiError`]: 413 for size, 429 when the budget is busy, else 400.
pub(crate) fn otlp_error(e: OtlpError) -> ApiError {
    match e {
        OtlpError::Profile(ProfileError::Busy) => refused(Refusal::Busy),
        e if e.is_too_large() => ApiError::PayloadTooLarge(format!("{e}; nothing was stored")),
        e => ApiError::BadRequest(format!("{e}; nothing was stored")),
    }
}

/// The gRPC status code of an API error, for OTLP/gRPC and the `code` of OTLP/HTTP's
/// `google.rpc.Status`. Retriable refusals are `UNAVAILABLE`, which every OTLP exporter
/// retries; a request too large is `RESOURCE_EXHAUSTED`, which they do not.
pub(crate) fn grpc_code(e: &ApiError) -> tonic::Code {
    use tonic::Code;
    match e {
        ApiError::BadRequest(_) | ApiError::UnsupportedMediaType(_) => Code::InvalidArgument,
        ApiError::Unauthorized(_) => Code::Unauthenticated,
        ApiError::Forbidden(_) | ApiError::Misdirected(_) => Code::PermissionDenied,
        ApiError::NotFound(_) => Code::NotFound,
        ApiError::RequestTimeout(_) => Code::DeadlineExceeded,
        ApiError::PayloadTooLarge(_) => Code::ResourceExhausted,
        ApiError::Overloaded { .. } | ApiError::Unavailable(_) => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// Converts an inflated request body (protobuf, or JSON transcoded first) within the
/// server's caps, its transcoding paid by `allowance`.
pub(crate) fn convert(
    state: &AppState,
    bytes: &[u8],
    encoding: Encoding,
    allowance: &mut dyn Allowance,
) -> Result<Converted, ApiError> {
    let limits = limits(state);
    let transcoded;
    let proto = match encoding {
        Encoding::Protobuf => bytes,
        Encoding::Json => {
            transcoded = otlp::json::to_protobuf(bytes, limits.max_decompressed, allowance)
                .map_err(otlp_error)?;
            &transcoded[..]
        }
    };
    let opt = OtlpOptions {
        limits: &limits,
        otlp: &OtlpLimits::default(),
        label_limits: &state.cfg.limits,
        now: now_ns(),
    };
    otlp::convert(proto, &opt).map_err(otlp_error)
}

/// The answer to an accepted request: `partial_success` when something was left out.
pub(crate) fn response(c: &Converted) -> ExportProfilesServiceResponse {
    ExportProfilesServiceResponse {
        partial_success: c
            .partial_success()
            .map(
                |(rejected_profiles, error_message)| ExportProfilesPartialSuccess {
                    rejected_profiles,
                    error_message,
                },
            ),
    }
}

/// An [`ApiError`] answered the OTLP/HTTP way: a `google.rpc.Status` in the request's encoding.
#[derive(Debug)]
pub struct OtlpHttpError(ApiError, Encoding);

impl IntoResponse for OtlpHttpError {
    fn into_response(self) -> Response {
        let OtlpHttpError(e, encoding) = self;
        let status = Status {
            code: grpc_code(&e) as i32,
            message: e.to_string(),
        };
        let mut resp = e.into_response();
        let body = match encoding {
            Encoding::Protobuf => status.encode_to_vec(),
            Encoding::Json => serde_json::json!({ "code": status.code, "message": status.message })
                .to_string()
                .into_bytes(),
        };
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(encoding.content_type()),
        );
        resp.headers_mut().remove(header::CONTENT_LENGTH);
        *resp.body_mut() = Body::from(body);
        resp
    }
}

pub async fn export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req_body: Body,
) -> Result<Response, OtlpHttpError> {
    let encoding = Encoding::of(&headers);
    let answer_in = *encoding.as_ref().unwrap_or(&Encoding::Protobuf);
    export_in(state, headers, req_body, encoding)
        .await
        .map_err(|e| OtlpHttpError(e, answer_in))
}

async fn export_in(
    state: Arc<AppState>,
    headers: HeaderMap,
    req_body: Body,
    encoding: Result<Encoding, ApiError>,
) -> Result<Response, ApiError> {
    let tenant = auth::tenant(&state.cfg, &headers).map_err(|e| counted(&state, e))?;
    let encoding = encoding.map_err(|e| counted(&state, e))?;
    let key = headers::idempotency_key(&headers).map_err(|e| counted(&state, e))?;
    let (raw, mut res) = read_body(&state, &headers, req_body).await?;
    let st = state.clone();
    let (converted, _res) = blocking(move || {
        let max = st.cfg.max_decompressed_bytes;
        let bytes = body::decode_content_within(&headers, raw, max, &mut res)?;
        let converted = convert(&st, &bytes, encoding, &mut res)?;
        Ok((converted, res))
    })
    .await
    .map_err(|e| counted(&state, e))?;
    let answer = response(&converted);
    store_batches_once(&state, &tenant, key.as_deref(), converted.batches).await?;
    let body = match encoding {
        Encoding::Protobuf => answer.encode_to_vec(),
        Encoding::Json => json_response(&answer).into_bytes(),
    };
    Ok(([(header::CONTENT_TYPE, encoding.content_type())], body).into_response())
}

/// `ExportProfilesServiceResponse` in OTLP/JSON (64-bit integers as strings).
fn json_response(r: &ExportProfilesServiceResponse) -> String {
    match &r.partial_success {
        None => "{}".to_owned(),
        Some(p) => serde_json::json!({
            "partialSuccess": {
                "rejectedProfiles": p.rejected_profiles.to_string(),
                "errorMessage": p.error_message,
            }
        })
        .to_string(),
    }
}
