//! `perf script` output → folded stacks, by inferno's `collapse-perf` (the same collapser the
//! golden tests pin against FlameGraph's and inferno's expected output).
//!
//! Invariant: the collapser runs single-threaded over an in-memory buffer; its output is
//! inferno's, byte for byte (stacks sorted, `frame;frame count` lines).

use inferno::collapse::perf::{Folder, Options};
use inferno::collapse::Collapse;

use super::error::ProfileError;

/// Which annotations the collapser adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerfOptions {
    /// `--all`: suffix kernel frames with `_[k]` and JIT frames with `_[j]`.
    pub all: bool,
}

/// Collapses `perf script` text.
pub fn perf_to_folded(input: &[u8], opt: PerfOptions) -> Result<String, ProfileError> {
    let mut o = Options::default();
    o.nthreads = 1;
    o.annotate_jit = opt.all;
    o.annotate_kernel = opt.all;
    let mut out = Vec::with_capacity(input.len() / 4);
    Folder::from(o)
        .collapse(input, &mut out)
        .map_err(ProfileError::Collapse)?;
    String::from_utf8(out).map_err(|_| ProfileError::Utf8 {
        what: "the collapsed perf output",
    })
}

/// Whether the text looks like `perf script` output (inferno's own test, on a prefix).
pub fn looks_like_perf(text: &str) -> bool {
    let mut o = Options::default();
    o.nthreads = 1;
    Folder::from(o).is_applicable(text) == Some(true)
}
