//! Folded stacks: one line per stack, frames root-first joined by `;`, a space, the count
//! (`main;run;work 42`). Also Pyroscope's `lines` form: one stack per line, one sample each.
//!
//! Invariants: parsing merges repeated stacks, refuses (never truncates) stacks deeper than
//! `max_frames`, more than `max_samples` distinct stacks, frame names longer than
//! `max_frame_len`, and distinct stacks whose frames pass `max_frame_bytes`; output is sorted
//! by frames, so it is stable. Written frames are escaped ([`escape_frame`]): a name holding `;`
//! or a line break can never split a frame or a line of the output.

use std::collections::HashMap;
use std::fmt::Write;

use profwatch_model::profile::StackSample;

use super::error::ProfileError;
use super::limits::{ProfileLimits, FRAME_OVERHEAD};

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
    let mut frame_bytes = 0usize;
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
        if !stacks.contains_key(&frames) {
            let cost: usize = frames.iter().map(|f| f.len() + FRAME_OVERHEAD).sum();
            frame_bytes = frame_bytes.saturating_add(cost);
            if frame_bytes > limits.max_frame_bytes {
                return Err(ProfileError::FrameBytes {
                    max: limits.max_frame_bytes,
                });
            }
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

/// Appends a frame name as folded output writes it: `;` and control characters (line breaks
/// among them) become `\xNN`; everything else is kept, so ordinary names are unchanged.
pub fn escape_frame(name: &str, out: &mut String) {
    if !name.contains(|c: char| c == ';' || c.is_control()) {
        out.push_str(name);
        return;
    }
    for c in name.chars() {
        if c == ';' || c.is_control() {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
}

/// Writes `(frames, count)` pairs as folded lines, in the order given, frames escaped.
pub fn write<'a>(stacks: impl IntoIterator<Item = (&'a [String], u64)>) -> String {
    let mut out = String::new();
    for (frames, count) in stacks {
        if count == 0 || frames.is_empty() {
            continue;
        }
        for (i, frame) in frames.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            escape_frame(frame, &mut out);
        }
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

    /// Regression (issue 11): a frame name holding `;` or a newline spoofed the folded output
    /// (and the SVG drawn from it) with frames and lines of its own.
    #[test]
    fn written_frames_cannot_split() {
        let frames = vec![
            "main".to_owned(),
            "evil;injected\nother;frame 99".to_owned(),
            "tab\there".to_owned(),
        ];
        let out = write([(frames.as_slice(), 3)]);
        assert_eq!(
            out,
            "main;evil\\x3binjected\\x0aother\\x3bframe 99;tab\\x09here 3\n"
        );
        let back = parse(&out, FoldedKind::Counted, 0, &ProfileLimits::default()).expect("parses");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].frames.len(), 3);
        assert_eq!(back[0].samples, 3);
    }

    #[test]
    fn frame_bytes_are_capped_per_distinct_stack() {
        let l = ProfileLimits {
            max_frame_bytes: 3 * (100 + FRAME_OVERHEAD),
            ..ProfileLimits::default()
        };
        let name = "f".repeat(100);
        let one = format!("{name};{name} 1\n");
        // The same stack twice costs once.
        assert!(parse(&one.repeat(2), FoldedKind::Counted, 0, &l).is_ok());
        let two = format!("{one}{name} 1\n{name};{name};{name} 1\n");
        assert!(matches!(
            parse(&two, FoldedKind::Counted, 0, &l),
            Err(ProfileError::FrameBytes { .. })
        ));
    }

    mod properties {
        use super::super::*;
        use profwatch_testkit::alloc::within;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Arbitrary text never panics the parser, and what it accepts respects the caps.
            #[test]
            fn arbitrary_text_is_parsed_within_the_caps(
                text in "[a-c; 0-9\n\r\t\u{0}\u{85}]{0,300}",
                lines in any::<bool>(),
            ) {
                let l = ProfileLimits {
                    max_frames: 4,
                    max_samples: 5,
                    max_frame_len: 6,
                    max_frame_bytes: 200,
                    ..ProfileLimits::default()
                };
                let kind = if lines { FoldedKind::Lines } else { FoldedKind::Counted };
                let parsed = within("a folded parse", 16 * 1024 + 16 * text.len(), || parse(&text, kind, 1, &l))
                    .map_err(TestCaseError::fail)?;
                if let Ok(stacks) = parsed {
                    prop_assert!(stacks.len() <= 5);
                    for s in &stacks {
                        prop_assert!(!s.frames.is_empty() && s.frames.len() <= 4);
                        prop_assert!(s.frames.iter().all(|f| !f.is_empty() && f.len() <= 6));
                    }
                }
            }

            /// Whatever the frame names, written output parses back to the same number of
            /// frames per stack and of stacks.
            #[test]
            fn written_output_keeps_its_shape(
                stacks in proptest::collection::vec(
                    (proptest::collection::vec("[^\u{0}]{1,12}", 1..6), 1u64..1000),
                    1..8,
                )
            ) {
                let out = write(stacks.iter().map(|(f, n)| (f.as_slice(), *n)));
                prop_assert_eq!(out.lines().count(), stacks.len());
                for (line, (frames, n)) in out.lines().zip(&stacks) {
                    let (stack, count) = line.rsplit_once(' ').expect("count");
                    prop_assert_eq!(count.parse::<u64>().ok(), Some(*n));
                    prop_assert_eq!(stack.split(';').count(), frames.len());
                }
            }
        }
    }
}
