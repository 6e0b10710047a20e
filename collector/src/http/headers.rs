//! Request headers every ingest route reads the same way: the media type of `Content-Type` and
//! the `Idempotency-Key`.

use axum::http::{header, HeaderMap};

use super::error::ApiError;

/// The `Content-Type` header as sent (for messages) and its media type, lowercased, without
/// parameters (`application/x-ndjson; charset=utf-8` → `application/x-ndjson`).
#[derive(Debug)]
pub(crate) struct ContentType<'h> {
    pub(crate) raw: &'h str,
    pub(crate) media_type: String,
}

pub(crate) fn content_type(headers: &HeaderMap) -> ContentType<'_> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    ContentType { raw, media_type }
}

/// The `Idempotency-Key` header, when sent: 1 to 128 visible ASCII characters.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(s.to_owned()))
        }
        _ => Err(ApiError::BadRequest(
            "the Idempotency-Key header must be 1 to 128 visible ASCII characters".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn media_type_drops_parameters_and_case() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-NDJSON ; charset=utf-8"),
        );
        let ct = content_type(&h);
        assert_eq!(ct.media_type, "application/x-ndjson");
        assert_eq!(ct.raw, "Application/X-NDJSON ; charset=utf-8");
        assert_eq!(content_type(&HeaderMap::new()).media_type, "");
    }
}
