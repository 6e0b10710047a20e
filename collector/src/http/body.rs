//! Reading request bodies within limits: the body as sent is capped by `max_body_bytes`, and
//! after `Content-Encoding` (gzip, zstd) by `max_decompressed_bytes`, checked while
//! decompressing so a small bomb never expands in memory past the cap.

use std::io::Read;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};

use super::error::ApiError;

/// Reads the raw body, refusing it (413) once it passes `max` bytes.
pub async fn read_limited(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the request body is larger than {max} bytes; send smaller batches"
        ))
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(too_large());
        }
    }
    axum::body::to_bytes(body, max).await.map_err(|e| {
        let text = e.to_string();
        if text.contains("length limit") {
            too_large()
        } else {
            ApiError::BadRequest(format!("could not read the request body: {text}"))
        }
    })
}

/// Undoes `Content-Encoding` (none, identity, gzip, zstd) up to `max` decompressed bytes.
pub fn decode_content(headers: &HeaderMap, raw: Bytes, max: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let reader: Box<dyn Read + '_> = match encoding.as_str() {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(raw.as_ref())),
        "zstd" => Box::new(
            zstd::stream::read::Decoder::new(raw.as_ref())
                .map_err(|e| ApiError::BadRequest(format!("zstd body: {e}")))?,
        ),
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported; use gzip, zstd or none"
            )))
        }
    };
    let mut out = Vec::with_capacity((raw.len() * 4).min(max));
    reader
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadRequest(format!("the {encoding} body is corrupt: {e}")))?;
    if out.len() > max {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body decompresses to more than {max} bytes; send smaller batches"
        )));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_gzip_bomb_stops_at_the_cap() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).expect("compress");
        }
        let bomb = enc.finish().expect("finish");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().expect("header"));
        let err =
            decode_content(&headers, Bytes::from(bomb.clone()), 1 << 20).expect_err("too big");
        assert!(matches!(err, ApiError::PayloadTooLarge(_)));
        assert_eq!(
            decode_content(&headers, Bytes::from(bomb), 64 << 20)
                .expect("fits")
                .len(),
            64 << 20
        );
    }

    #[test]
    fn zstd_and_unknown_encodings() {
        let data = zstd::encode_all(&b"hello"[..], 1).expect("compress");
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "zstd".parse().expect("header"));
        assert_eq!(
            decode_content(&headers, Bytes::from(data), 100)
                .expect("ok")
                .as_ref(),
            b"hello"
        );
        headers.insert(header::CONTENT_ENCODING, "br".parse().expect("header"));
        assert!(matches!(
            decode_content(&headers, Bytes::from_static(b"x"), 100),
            Err(ApiError::UnsupportedMediaType(_))
        ));
    }
}
