//! Flame graphs as SVG and the differential folded form, both by inferno.
//!
//! Invariants: the SVG is deterministic for the same input (`deterministic` colouring); an
//! empty profile still yields a valid SVG (inferno's "no valid input" picture), never an error;
//! text is XML-escaped by inferno (quick-xml), and the input is folded text whose frames
//! [`super::folded::write`] escaped, so no name can split a frame, add a line, or carry a
//! control character that XML forbids (the title is stripped of them here).

use inferno::differential;
use inferno::flamegraph::{self, Options};

use super::error::ProfileError;

/// Draws folded lines (`frames count`, or `frames before after` for a differential graph).
pub fn svg(folded: &str, title: &str, count_name: &str) -> Result<Vec<u8>, ProfileError> {
    let mut opt = Options::default();
    opt.title = title.chars().filter(|c| !c.is_control()).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folded;

    #[test]
    fn names_are_xml_escaped_and_cannot_add_frames() {
        let frames = vec![
            "main".to_owned(),
            "<script>alert(1)</script>;x\ny".to_owned(),
        ];
        let text = folded::write([(frames.as_slice(), 5)]);
        let svg =
            String::from_utf8(svg(&text, "t\u{1}<b>", "samples").expect("svg")).expect("utf-8");
        assert!(!svg.contains("<script>alert"), "unescaped name in the SVG");
        assert!(svg.contains("&lt;script&gt;alert(1)&lt;/script&gt;\\x3bx\\x0ay"));
        assert!(svg.contains("t&lt;b&gt;") && !svg.contains('\u{1}'));
        // Two frames and the root: the name added no frame of its own.
        assert!(!svg.contains(">x\\x0ay<") && !svg.contains(">y ("));
    }
}
