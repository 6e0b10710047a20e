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

/// Collapses `perf script` text. Input that does not start like it (the first line that is
/// not a comment must be an event line) is an error: inferno's collapser asserts on it.
pub fn perf_to_folded(input: &[u8], opt: PerfOptions) -> Result<String, ProfileError> {
    let not_perf = || {
        ProfileError::Collapse(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not `perf script` output: its first line is not an event line",
        ))
    };
    // inferno's own check reads up to the first stack line: a prefix is enough. `None`: no
    // stack line in it (only comments, or an event line alone), which collapses fine.
    let head = String::from_utf8_lossy(&input[..input.len().min(64 << 10)]);
    let mut o = Options::default();
    o.nthreads = 1;
    if Folder::from(o).is_applicable(&head) == Some(false) {
        return Err(not_perf());
    }
    let mut o = Options::default();
    o.nthreads = 1;
    o.annotate_jit = opt.all;
    o.annotate_kernel = opt.all;
    let mut out = Vec::with_capacity(input.len() / 4);
    // Should inferno still assert on some input, that is this input's error, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Folder::from(o).collapse(input, &mut out)
    }))
    .map_err(|_| not_perf())?
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

#[cfg(test)]
mod tests {
    use super::*;
    use profwatch_testkit::alloc::within;
    use proptest::prelude::*;

    /// `perf script` output: events with any command, pid and cpu, frames with any address,
    /// symbol and object names.
    fn perf_like() -> impl Strategy<Value = String> {
        let frame = (
            "[0-9a-f]{1,16}",
            "[A-Za-z_][A-Za-z0-9_:<>]{0,30}",
            "[a-z/._]{1,20}",
        )
            .prop_map(|(addr, sym, dso)| format!("\t{addr} {sym} ({dso})\n"));
        let event = (
            "[a-z]{1,8}",
            0u32..100_000,
            0u32..1000,
            proptest::collection::vec(frame, 0..8),
        )
            .prop_map(|(comm, pid, cpu, frames)| {
                format!(
                    "{comm} {pid} [{cpu:03}] 1.000: 1 cycles:\n{}\n",
                    frames.concat()
                )
            });
        proptest::collection::vec(event, 0..20).prop_map(|e| e.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any bytes: no panic, and the folded output is no larger than a small multiple of the
        /// input (each sample line becomes at most one folded line).
        #[test]
        fn any_input_collapses_without_panic(input in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let collapsed = within("a perf script collapse", 64 * 1024 + 16 * input.len(), || {
                perf_to_folded(&input, PerfOptions::default())
            })
            .map_err(TestCaseError::fail)?;
            if let Ok(out) = collapsed {
                prop_assert!(out.len() <= 2 * input.len() + 64, "{} from {}", out.len(), input.len());
            }
        }

        /// perf-like text: every output line is `frames count`, and the output stays bounded.
        #[test]
        fn perf_like_text_gives_folded_lines(text in perf_like(), all in any::<bool>()) {
            let out = perf_to_folded(text.as_bytes(), PerfOptions { all })
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(out.len() <= 2 * text.len() + 64);
            for line in out.lines() {
                let (_, n) = line.rsplit_once(' ').ok_or_else(|| TestCaseError::fail(line.to_owned()))?;
                prop_assert!(n.parse::<u64>().is_ok(), "{line}");
            }
        }
    }
}
