//! Flame graphs as SVG and the differential folded form, both by inferno.
//!
//! Invariants: the SVG is deterministic for the same input (`deterministic` colouring); an
//! empty profile still yields a valid SVG (inferno's "no valid input" picture), never an error.

use inferno::differential;
use inferno::flamegraph::{self, Options};

use super::error::ProfileError;

/// Draws folded lines (`frames count`, or `frames before after` for a differential graph).
pub fn svg(folded: &str, title: &str, count_name: &str) -> Result<Vec<u8>, ProfileError> {
    let mut opt = Options::default();
    title.clone_into(&mut opt.title);
    count_name.clone_into(&mut opt.count_name);
    opt.deterministic = true;
    let mut out = Vec::new();
    match flamegraph::from_lines(&mut opt, folded.lines(), &mut out) {
        Ok(()) => Ok(out),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData && !out.is_empty() => Ok(out),
        Err(e) => Err(ProfileError::Render(e)),
    }
}

/// inferno's `diff-folded` with default options: `stack before after` lines, sorted (inferno
/// writes them in hash-map order).
pub fn diff_folded(before: &str, after: &str) -> Result<String, ProfileError> {
    let mut out = Vec::new();
    differential::from_readers(
        differential::Options::default(),
        before.as_bytes(),
        after.as_bytes(),
        &mut out,
    )
    .map_err(ProfileError::Render)?;
    let text = String::from_utf8(out).map_err(|_| ProfileError::Utf8 {
        what: "the differential output",
    })?;
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut sorted = lines.join("\n");
    if !sorted.is_empty() {
        sorted.push('\n');
    }
    Ok(sorted)
}
