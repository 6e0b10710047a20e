//! Folded stacks: one line per stack, frames root-first joined by `;`, a space, the count
//! (`main;run;work 42`). Also Pyroscope's `lines` form: one stack per line, one sample each.
//!
//! Invariants: parsing merges repeated stacks, refuses (never truncates) stacks deeper than
//! `max_frames`, more than `max_samples` distinct stacks, and frame names longer than
//! `max_frame_len`; output is sorted by frames, so it is stable.

use std::collections::HashMap;

use profwatch_model::profile::StackSample;

use super::error::ProfileError;
use super::limits::ProfileLimits;

/// How each line carries its weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoldedKind {
    /// `frames count`.
    Counted,
    /// `frames` only: one sample per line.
    Lines,
}

/// Parses folded text into stacks; `cpu_ns_per_sample` (from a sample rate) sets `cpu_ns`.
pub fn parse(
    text: &str,
    kind: FoldedKind,
    cpu_ns_per_sample: u64,
    limits: &ProfileLimits,
) -> Result<Vec<StackSample>, ProfileError> {
    let mut stacks: HashMap<Vec<String>, u64> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let (stack, count) = match kind {
            FoldedKind::Lines => (line, 1),
            FoldedKind::Counted => {
                let (stack, count) = line.rsplit_once(' ').ok_or(ProfileError::Folded {
                    line: i + 1,
                    detail: "expected `frame;frame;... count`".into(),
                })?;
                let count = count
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| ProfileError::Folded {
                        line: i + 1,
                        detail: format!("the count {count:?} is not a non-negative integer"),
                    })?;
                (stack, count)
            }
        };
        let frames: Vec<String> = stack
            .split(';')
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
            .collect();
        if frames.is_empty() {
            return Err(ProfileError::Folded {
                line: i + 1,
                detail: "the stack has no frames".into(),
            });
        }
        if frames.len() > limits.max_frames {
            return Err(ProfileError::TooManyFrames {
                frames: frames.len(),
                max: limits.max_frames,
            });
        }
        if let Some(f) = frames.iter().find(|f| f.len() > limits.max_frame_len) {
            return Err(ProfileError::FrameTooLong {
                len: f.len(),
                max: limits.max_frame_len,
            });
        }
        if count == 0 {
            continue;
        }
        let e = stacks.entry(frames).or_default();
        *e = e.saturating_add(count);
        if stacks.len() > limits.max_samples {
            return Err(ProfileError::TooManySamples {
                samples: stacks.len(),
                max: limits.max_samples,
            });
        }
    }
    let mut out: Vec<StackSample> = stacks
        .into_iter()
        .map(|(frames, samples)| StackSample {
            frames,
            samples,
            cpu_ns: samples.saturating_mul(cpu_ns_per_sample),
        })
        .collect();
    out.sort_by(|a, b| a.frames.cmp(&b.frames));
    Ok(out)
}

/// Writes `(frames, count)` pairs as folded lines, in the order given.
pub fn write<'a>(stacks: impl IntoIterator<Item = (&'a [String], u64)>) -> String {
    let mut out = String::new();
    for (frames, count) in stacks {
        if count == 0 || frames.is_empty() {
            continue;
        }
        out.push_str(&frames.join(";"));
        out.push(' ');
        out.push_str(&count.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_merges_and_refuses() {
        let l = ProfileLimits::default();
        let s = parse("a;b 2\na;b 3\n\na 1\n", FoldedKind::Counted, 10, &l).expect("ok");
        assert_eq!(s.len(), 2);
        assert_eq!((s[1].samples, s[1].cpu_ns), (5, 50));
        let s = parse("a;b\na;b\n", FoldedKind::Lines, 0, &l).expect("ok");
        assert_eq!(s[0].samples, 2);
        assert!(matches!(
            parse("a;b x\n", FoldedKind::Counted, 0, &l),
            Err(ProfileError::Folded { line: 1, .. })
        ));
        let deep = format!("{} 1\n", vec!["f"; 3000].join(";"));
        assert!(matches!(
            parse(&deep, FoldedKind::Counted, 0, &l),
            Err(ProfileError::TooManyFrames { frames: 3000, .. })
        ));
        let frames = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(write([(frames.as_slice(), 3)]), "a;b 3\n");
    }
}
