//! The one error type of the HTTP API. Each variant has a status; the body is
//! `{"error": "<what to fix>"}`. Internal details (paths, backend messages) are logged, never sent.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use profwatch_store::StoreError;

use crate::metrics::RejectReason;

/// An API failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// The request names a host this server is not (DNS rebinding in loopback mode).
    #[error("{0}")]
    Misdirected(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The store is behind; the client should retry later.
    #[error("{message}")]
    Overloaded {
        message: String,
        retry_after: Duration,
    },
    /// The store cannot be reached; the client should retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; the message is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Overloaded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded { what, retry_after } => ApiError::Overloaded {
                message: format!("the store is behind ({what}); nothing was stored, retry later"),
                retry_after,
            },
            StoreError::Unavailable(detail) => {
                tracing::warn!(%detail, "store unavailable");
                ApiError::Unavailable(
                    "the store is unavailable; nothing was stored, retry later".into(),
                )
            }
            StoreError::Closed => {
                ApiError::Unavailable("the server is shutting down; retry later".into())
            }
            e @ StoreError::TooLarge { .. } => {
                ApiError::PayloadTooLarge(format!("{e}; send it in smaller batches"))
            }
            StoreError::WalFailed { path, detail } => {
                tracing::error!(%path, %detail, "the WAL failed; writes are refused until restart");
                ApiError::Unavailable(
                    "the store cannot make writes durable; nothing was stored, retry later".into(),
                )
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// A failure shared by the waiters of a cached query (see `cache`): they retry later.
impl ApiError {
    /// The reason a refusal is counted under.
    pub(crate) fn reject_reason(&self) -> RejectReason {
        match self {
            ApiError::PayloadTooLarge(_) => RejectReason::BodyTooLarge,
            ApiError::RequestTimeout(_) => RejectReason::Timeout,
            ApiError::Unauthorized(_) | ApiError::Forbidden(_) => RejectReason::Auth,
            ApiError::UnsupportedMediaType(_) => RejectReason::ContentType,
            ApiError::Overloaded { .. } | ApiError::Unavailable(_) => RejectReason::Overloaded,
            ApiError::Internal(_) => RejectReason::StoreError,
            _ => RejectReason::Decode,
        }
    }
}

/// A query shared through the cache failed for the requests waiting on it: the detail is
/// logged, the clients are told to retry.
impl From<crate::cache::LeaderFailed> for ApiError {
    fn from(e: crate::cache::LeaderFailed) -> Self {
        tracing::warn!(detail = %e, "a shared query failed");
        ApiError::Unavailable("the query failed; retry later".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = match &self {
            ApiError::Overloaded { retry_after, .. } => Some(retry_after.as_secs().max(1)),
            ApiError::Unavailable(_) => Some(5),
            _ => None,
        };
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        let mut resp = (status, body).into_response();
        if let Some(secs) = retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}
