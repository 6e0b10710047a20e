//! gzip, recognised by its magic bytes (`1f 8b`) rather than by a header, and inflated under a
//! cap that is checked while inflating, so a small bomb never grows in memory past it.

use std::borrow::Cow;
use std::io::Read;

use super::error::ProfileError;

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// `bytes` inflated when they are gzip, else as they are; at most `max` bytes out.
pub fn maybe_gunzip(bytes: &[u8], max: usize) -> Result<Cow<'_, [u8]>, ProfileError> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_mul(4).min(max));
    flate2::read::MultiGzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(ProfileError::Gzip)?;
    if out.len() > max {
        return Err(ProfileError::Decompressed { max });
    }
    Ok(Cow::Owned(out))
}

/// gzip at the default level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_passes_gzip_inflates_bombs_stop() {
        assert_eq!(maybe_gunzip(b"abc", 10).expect("plain").as_ref(), b"abc");
        let z = gzip(b"hello");
        assert_eq!(maybe_gunzip(&z, 10).expect("gz").as_ref(), b"hello");
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(matches!(
            maybe_gunzip(&bomb, 1000),
            Err(ProfileError::Decompressed { max: 1000 })
        ));
        assert!(matches!(
            maybe_gunzip(&[0x1f, 0x8b, 1, 2, 3], 1000),
            Err(ProfileError::Gzip(_))
        ));
    }
}
