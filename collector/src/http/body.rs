//! Reading request bodies within limits: the body as sent is capped by `max_body_bytes` and
//! must arrive within `body_timeout`; after `Content-Encoding` (gzip, zstd) it is capped by
//! `max_decompressed_bytes`, checked while decompressing so a small bomb never expands in memory
//! past the cap. Every buffer growth, as sent and decompressed, is first granted by the
//! request's [`Reservation`](super::budget::Reservation) (or another
//! [`Allowance`]), so all requests together stay within the server's budget.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{header, HeaderMap};

use super::budget::{refused, Reservation};
use super::error::ApiError;
use profwatch_profile::compress::{read_capped, Allowance, CapError, Unmetered};

fn too_large(max: usize) -> ApiError {
    ApiError::PayloadTooLarge(format!(
        "the request body is larger than {max} bytes; send smaller batches"
    ))
}

/// Reads the raw body, refusing it (413) once it passes `max` bytes, (408) when it has not
/// all arrived within `timeout`, and (429) when the budget cannot hold it now.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    res: &mut Reservation,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > max as u64) {
        return Err(too_large(max));
    }
    let first = announced.map_or(0, |len| len as usize);
    tokio::time::timeout(timeout, collect(body, max, first, res))
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "the request body did not arrive within {}s (limits.body_timeout)",
                timeout.as_secs()
            ))
        })?
}

/// Collects the frames of `body` into one buffer whose every growth `res` grants first.
async fn collect(
    mut body: Body,
    max: usize,
    announced: usize,
    res: &mut Reservation,
) -> Result<Bytes, ApiError> {
    let mut buf: Vec<u8> = Vec::new();
    if announced > 0 {
        res.grant(announced).map_err(refused)?;
        buf.reserve_exact(announced);
    }
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame
            .map_err(|e| ApiError::BadRequest(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let needed = buf.len() + data.len();
        if needed > max {
            return Err(too_large(max));
        }
        if needed > buf.capacity() {
            let cap = needed.max(buf.capacity().saturating_mul(2)).min(max);
            res.grant(cap - buf.capacity()).map_err(refused)?;
            buf.reserve_exact(cap - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Undoes `Content-Encoding` (none, identity, gzip, zstd) up to `max` decompressed bytes.
pub fn decode_content(headers: &HeaderMap, raw: Bytes, max: usize) -> Result<Bytes, ApiError> {
    decode_content_within(headers, raw, max, &mut Unmetered)
}

/// As [`decode_content`], with each growth of the decompressed buffer granted by `allowance`.
pub fn decode_content_within(
    headers: &HeaderMap,
    raw: Bytes,
    max: usize,
    allowance: &mut dyn Allowance,
) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let out = match encoding.as_str() {
        "" | "identity" => return Ok(raw),
        "gzip" | "x-gzip" => read_capped(
            flate2::read::MultiGzDecoder::new(raw.as_ref()),
            max,
            allowance,
        ),
        "zstd" => read_capped(
            zstd::stream::read::Decoder::new(raw.as_ref())
                .map_err(|e| ApiError::BadRequest(format!("zstd body: {e}")))?,
            max,
            allowance,
        ),
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not supported; use gzip, zstd or none"
            )))
        }
    };
    match out {
        Ok(out) => Ok(Bytes::from(out)),
        Err(CapError::TooLarge { .. }) => Err(ApiError::PayloadTooLarge(format!(
            "the body decompresses to more than {max} bytes; send smaller batches"
        ))),
        Err(CapError::Refused(why)) => Err(refused(why)),
        Err(CapError::Io(e)) => Err(ApiError::BadRequest(format!(
            "the {encoding} body is corrupt: {e}"
        ))),
    }
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
