//! Inflating under a cap: gzip recognised by its magic bytes (`1f 8b`) rather than by a header,
//! and any decompressing reader read to its end by [`read_capped`].
//!
//! Invariants: the cap is checked while inflating, so a small bomb never grows in memory past
//! it; the output buffer grows by doubling up to [`STEP`] and linearly after, so its capacity is
//! never more than `STEP` past what was inflated, and every growth is first granted by an
//! [`Allowance`] (the server's budget of bytes in flight), which may refuse it.

use std::borrow::Cow;
use std::io::Read;

use super::error::ProfileError;

/// The largest single growth of an output buffer.
pub const STEP: usize = 8 << 20;

/// The first growth of an output buffer.
const FIRST: usize = 64 << 10;

/// Why an [`Allowance`] refused more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Others hold the bytes: the same input may fit later.
    Busy,
    /// This input alone would pass the whole budget of `limit` bytes: it never fits.
    TooLarge { limit: usize },
}

/// Pays for the memory of inflated bytes: asked before each growth of the output buffer.
pub trait Allowance {
    /// Grants `bytes` more, or refuses them (and the inflation stops).
    fn grant(&mut self, bytes: usize) -> Result<(), Refusal>;
}

/// Every growth granted: for tools and tests, which have no budget to keep.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unmetered;

impl Allowance for Unmetered {
    fn grant(&mut self, _bytes: usize) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Why [`read_capped`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// More than the cap came out.
    #[error("the data decompresses to more than {max} bytes")]
    TooLarge { max: usize },
    /// The allowance refused to grow the buffer.
    #[error("no allowance left for more decompressed bytes")]
    Refused(Refusal),
    /// The compressed data is corrupt.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl From<CapError> for ProfileError {
    fn from(e: CapError) -> Self {
        match e {
            CapError::TooLarge { max } => ProfileError::Decompressed { max },
            CapError::Refused(Refusal::Busy) => ProfileError::Busy,
            CapError::Refused(Refusal::TooLarge { limit }) => ProfileError::OverBudget { limit },
            CapError::Io(e) => ProfileError::Gzip(e),
        }
    }
}

/// Reads `reader` to its end: at most `max` bytes, in a buffer whose every growth `allowance`
/// grants first.
pub fn read_capped(
    mut reader: impl Read,
    max: usize,
    allowance: &mut dyn Allowance,
) -> Result<Vec<u8>, CapError> {
    // One byte past the cap tells "exactly max" from "more".
    let limit = max.saturating_add(1);
    let mut buf: Vec<u8> = Vec::new();
    let mut len = 0;
    loop {
        if len == buf.len() {
            if buf.len() >= limit {
                break;
            }
            let grow = buf.len().clamp(FIRST, STEP).min(limit - buf.len());
            allowance.grant(grow).map_err(CapError::Refused)?;
            buf.reserve_exact(grow);
            buf.resize(buf.len() + grow, 0);
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CapError::Io(e)),
        }
    }
    if len > max {
        return Err(CapError::TooLarge { max });
    }
    buf.truncate(len);
    Ok(buf)
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// `bytes` inflated when they are gzip, else as they are; at most `max` bytes out.
pub fn maybe_gunzip(bytes: &[u8], max: usize) -> Result<Cow<'_, [u8]>, ProfileError> {
    maybe_gunzip_within(bytes, max, &mut Unmetered)
}

/// As [`maybe_gunzip`], with each growth of the output granted by `allowance`.
pub fn maybe_gunzip_within<'a>(
    bytes: &'a [u8],
    max: usize,
    allowance: &mut dyn Allowance,
) -> Result<Cow<'a, [u8]>, ProfileError> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let out = read_capped(flate2::read::MultiGzDecoder::new(bytes), max, allowance)?;
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

    /// Grants up to a total, and records what it granted.
    struct Upto(usize, usize);

    impl Allowance for Upto {
        fn grant(&mut self, bytes: usize) -> Result<(), Refusal> {
            if self.1 + bytes > self.0 {
                return Err(Refusal::Busy);
            }
            self.1 += bytes;
            Ok(())
        }
    }

    #[test]
    fn growth_is_granted_first_and_stays_near_the_length() {
        let data = vec![7u8; 20 << 20];
        let z = gzip(&data);
        let mut a = Upto(usize::MAX, 0);
        let out = maybe_gunzip_within(&z, 64 << 20, &mut a).expect("fits");
        assert_eq!(out.len(), data.len());
        assert!(a.1 >= data.len() && a.1 <= data.len() + STEP, "{}", a.1);
        let mut tight = Upto(1 << 20, 0);
        assert!(matches!(
            maybe_gunzip_within(&z, 64 << 20, &mut tight),
            Err(ProfileError::Busy)
        ));
        assert!(tight.1 <= 1 << 20);
        // Exactly the cap fits; one byte more does not.
        let exact = read_capped(&data[..1000], 1000, &mut Unmetered).expect("exact");
        assert_eq!(exact.len(), 1000);
        assert!(matches!(
            read_capped(&data[..1001], 1000, &mut Unmetered),
            Err(CapError::TooLarge { max: 1000 })
        ));
    }
}
