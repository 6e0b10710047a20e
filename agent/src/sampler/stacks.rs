//! From sampled callchains to profiles, shared by the in-process sampler ([`super::worker`])
//! and the sampling of other processes ([`super::process`]): which address to symbolise for
//! each entry of a callchain, the root-first frame names, and one [`ProfileBatch`] per label
//! set.
//!
//! Invariants: a callchain is leaf first, as the kernel writes it; the leaf is looked up at its
//! sampled address and every caller at its return address minus one (the return address points
//! after the call, possibly into the next function or line). A callchain that ends in the
//! unwinder's truncation mark gets a `[truncated]` root frame. A shipped stack has at most
//! [`MAX_SHIPPED_FRAMES`] frames, inline frames included, keeping the leaf side; a stack cut
//! there gets a `[truncated]` root frame too.

use std::collections::BTreeMap;

use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};

use super::symbols::Symbols;
use super::unwind::TRUNCATED;

/// Deepest stack shipped, inline frames included (and the `[truncated]` frame).
pub const MAX_SHIPPED_FRAMES: usize = 1024;
/// The root frame of a stack that was not unwound to its end.
pub const TRUNCATED_FRAME: &str = "[truncated]";

/// Stacks (root-first frames → samples) per label set.
pub type Grouped = BTreeMap<SampleLabels, BTreeMap<Vec<String>, u64>>;

/// The addresses to symbolise for a leaf-first callchain.
pub(crate) fn lookup_addrs(ips: &[u64]) -> impl Iterator<Item = u64> + '_ {
    ips.iter()
        .enumerate()
        .filter(|(_, ip)| **ip != TRUNCATED)
        .map(|(i, ip)| if i == 0 { *ip } else { ip.saturating_sub(1) })
}

/// Root-first frame names of a leaf-first callchain whose addresses were resolved
/// ([`Symbols::resolve`] with [`lookup_addrs`]); an address missing from the cache is
/// `[unknown]`.
pub(crate) fn frames(ips: &[u64], symbols: &Symbols) -> Vec<String> {
    let addrs: Vec<u64> = lookup_addrs(ips).collect();
    let mut frames: Vec<String> = Vec::new();
    let mut truncated = ips.last() == Some(&TRUNCATED);
    for addr in addrs.into_iter().rev() {
        match symbols.frames(addr) {
            Some(fs) => frames.extend(fs.iter().map(|f| f.to_string())),
            None => frames.push("[unknown]".to_owned()),
        }
    }
    if frames.len() > MAX_SHIPPED_FRAMES - 1 {
        frames.drain(..frames.len() - (MAX_SHIPPED_FRAMES - 1));
        truncated = true;
    }
    if truncated {
        frames.insert(0, TRUNCATED_FRAME.to_owned());
    }
    frames
}

/// One profile per label set, starting at `ts`, with the CPU time the samples stand for at
/// `frequency_hz`.
pub fn batches(grouped: Grouped, ts: i64, frequency_hz: u32) -> Vec<ProfileBatch> {
    let ns_per_sample = 1_000_000_000 / u64::from(frequency_hz.max(1));
    grouped
        .into_iter()
        .map(|(labels, stacks)| ProfileBatch {
            ts,
            labels,
            samples: stacks
                .into_iter()
                .map(|(frames, samples)| StackSample {
                    frames,
                    samples,
                    cpu_ns: samples.saturating_mul(ns_per_sample),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callers_are_looked_up_before_their_return_address() {
        assert_eq!(
            lookup_addrs(&[0x2000, 0x3000, 0]).collect::<Vec<_>>(),
            [0x2000, 0x2fff, 0]
        );
    }

    #[test]
    fn frames_are_root_first_and_unknown_when_unresolved() {
        let symbols = Symbols::new(0);
        assert_eq!(frames(&[0x10, 0x20], &symbols), ["[unknown]", "[unknown]"]);
        let deep: Vec<u64> = (0..(MAX_SHIPPED_FRAMES as u64 + 10)).collect();
        let cut = frames(&deep, &symbols);
        assert_eq!(cut.len(), MAX_SHIPPED_FRAMES);
        assert_eq!(cut[0], TRUNCATED_FRAME, "a cut stack says so");
    }

    #[test]
    fn an_unwinding_that_stopped_early_is_a_truncated_root_frame() {
        let symbols = Symbols::new(0);
        assert_eq!(
            frames(&[0x10, 0x20, TRUNCATED], &symbols),
            [TRUNCATED_FRAME, "[unknown]", "[unknown]"]
        );
        assert_eq!(
            lookup_addrs(&[0x10, 0x20, TRUNCATED]).collect::<Vec<_>>(),
            [0x10, 0x1f]
        );
    }

    #[test]
    fn one_batch_per_label_set_with_cpu_time() {
        let mut grouped = Grouped::new();
        let labels = SampleLabels {
            service: "s".into(),
            ..SampleLabels::default()
        };
        grouped
            .entry(labels.clone())
            .or_default()
            .insert(vec!["main".into()], 3);
        let out = batches(grouped, 7, 100);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].ts, &out[0].labels), (7, &labels));
        assert_eq!(out[0].samples[0].cpu_ns, 30_000_000);
    }
}
