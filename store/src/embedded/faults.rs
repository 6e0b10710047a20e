//! Injected I/O failures for tests: every write and sync of the WAL and the segment writer
//! passes through a named point ([`check`]), armed by tests through
//! [`profwatch_model::faults`]. In builds without `cfg(test)` every check is a no-op the
//! compiler removes.

/// Fails with the injected error when a test armed `point` for a directory holding `path`.
#[cfg(not(test))]
#[inline(always)]
pub fn check(_point: &'static str, _path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
pub use profwatch_model::faults::{arm, check};
