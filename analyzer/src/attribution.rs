//! Attribution: which functions explain a change in cost per request.
//!
//! Input: the stack samples of the baseline and of the candidate (summed per stack), and the
//! mean cost per request of each. A function's *self* share is the fraction of samples whose
//! leaf is that function; its *inclusive* share, the fraction of samples whose stack contains
//! it (once per stack, so recursion is not double counted). Its cost per request in a snapshot
//! is that share times the snapshot's mean cost per request. The interval of a delta treats each
//! share as a binomial proportion over that snapshot's samples (normal approximation), the two
//! snapshots as independent, and ignores the (much smaller) error of the mean cost.
//!
//! Cost-shift filter: when a function's self cost rises while its parent's inclusive cost does
//! not (the parent's interval covers no change), the cost moved between the parent's children,
//! for example by inlining or renaming, and did not grow: such functions are reported with
//! `shift: true` and are not culprits.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

/// One snapshot: stacks (root first) with sample counts, and the mean cost per request.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub stacks: Vec<(Vec<String>, u64)>,
    pub cost_per_request: f64,
}

/// A function's cost per request in both snapshots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta {
    pub function: String,
    pub self_baseline: f64,
    pub self_candidate: f64,
    pub self_delta: f64,
    /// Interval of `self_delta` at the requested confidence.
    pub self_delta_low: f64,
    pub self_delta_high: f64,
    pub inclusive_baseline: f64,
    pub inclusive_candidate: f64,
    pub inclusive_delta: f64,
    pub inclusive_delta_low: f64,
    pub inclusive_delta_high: f64,
    /// Its self cost rose, but under a parent whose inclusive cost did not: a cost shift.
    pub shift: bool,
}

#[derive(Default)]
struct Shares {
    total: f64,
    self_: HashMap<String, f64>,
    inclusive: HashMap<String, f64>,
    /// For each function, the callers seen directly above it.
    parents: HashMap<String, HashSet<String>>,
}

fn shares(s: &Snapshot) -> Shares {
    let mut out = Shares::default();
    for (frames, n) in &s.stacks {
        let n = *n as f64;
        out.total += n;
        if let Some(leaf) = frames.last() {
            *out.self_.entry(leaf.clone()).or_default() += n;
        }
        let mut seen: HashSet<&str> = HashSet::new();
        for (i, f) in frames.iter().enumerate() {
            if seen.insert(f) {
                *out.inclusive.entry(f.clone()).or_default() += n;
            }
            if i > 0 {
                out.parents
                    .entry(f.clone())
                    .or_default()
                    .insert(frames[i - 1].clone());
            }
        }
    }
    out
}

/// Cost per request and its standard error for a share `count / total` at `cost`.
fn cost(count: f64, total: f64, per_request: f64) -> (f64, f64) {
    if total <= 0.0 {
        return (0.0, 0.0);
    }
    let p = count / total;
    (
        p * per_request,
        (p * (1.0 - p) / total).sqrt() * per_request,
    )
}

/// Per-function deltas, largest self-cost increase first. `z` is the normal quantile of the
/// interval (1.96 for 95%).
pub fn attribute(baseline: &Snapshot, candidate: &Snapshot, z: f64) -> Vec<FunctionDelta> {
    let b = shares(baseline);
    let c = shares(candidate);
    let names: HashSet<&String> = b.inclusive.keys().chain(c.inclusive.keys()).collect();
    let inclusive = |name: &str| {
        let (cb, sb) = cost(
            b.inclusive.get(name).copied().unwrap_or(0.0),
            b.total,
            baseline.cost_per_request,
        );
        let (cc, sc) = cost(
            c.inclusive.get(name).copied().unwrap_or(0.0),
            c.total,
            candidate.cost_per_request,
        );
        (cb, cc, (sb * sb + sc * sc).sqrt())
    };
    let mut out: Vec<FunctionDelta> = names
        .into_iter()
        .map(|name| {
            let (sb_cost, sb_se) = cost(
                b.self_.get(name).copied().unwrap_or(0.0),
                b.total,
                baseline.cost_per_request,
            );
            let (sc_cost, sc_se) = cost(
                c.self_.get(name).copied().unwrap_or(0.0),
                c.total,
                candidate.cost_per_request,
            );
            let self_delta = sc_cost - sb_cost;
            let self_se = (sb_se * sb_se + sc_se * sc_se).sqrt();
            let (ib, ic, i_se) = inclusive(name);
            let parents: Vec<&String> = b
                .parents
                .get(name.as_str())
                .into_iter()
                .chain(c.parents.get(name.as_str()))
                .flatten()
                .collect();
            // A shift: the function grew, yet every parent's inclusive cost is unchanged.
            let shift = self_delta - z * self_se > 0.0
                && !parents.is_empty()
                && parents.iter().all(|p| {
                    let (pb, pc, pse) = inclusive(p);
                    (pc - pb).abs() <= z * pse
                });
            FunctionDelta {
                function: name.clone(),
                self_baseline: sb_cost,
                self_candidate: sc_cost,
                self_delta,
                self_delta_low: self_delta - z * self_se,
                self_delta_high: self_delta + z * self_se,
                inclusive_baseline: ib,
                inclusive_candidate: ic,
                inclusive_delta: ic - ib,
                inclusive_delta_low: ic - ib - z * i_se,
                inclusive_delta_high: ic - ib + z * i_se,
                shift,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.self_delta
            .total_cmp(&a.self_delta)
            .then_with(|| a.function.cmp(&b.function))
    });
    out
}

/// The functions that explain a regression: a self-cost increase whose interval excludes zero,
/// and not a cost shift; largest first.
pub fn culprits(deltas: &[FunctionDelta], limit: usize) -> Vec<&FunctionDelta> {
    deltas
        .iter()
        .filter(|d| d.self_delta_low > 0.0 && !d.shift)
        .take(limit)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stacks(spec: &[(&str, u64)]) -> Vec<(Vec<String>, u64)> {
        spec.iter()
            .map(|(s, n)| (s.split(';').map(str::to_owned).collect(), *n))
            .collect()
    }

    #[test]
    fn the_function_that_grew_is_named_first() {
        let base = Snapshot {
            stacks: stacks(&[("main;a;hot", 5000), ("main;b", 5000)]),
            cost_per_request: 1000.0,
        };
        // `hot` costs 20% more: 600 instead of 500 per request; total 1100.
        let cand = Snapshot {
            stacks: stacks(&[("main;a;hot", 6000), ("main;b", 5000)]),
            cost_per_request: 1100.0,
        };
        let d = attribute(&base, &cand, 1.96);
        assert_eq!(d[0].function, "hot");
        assert!((d[0].self_delta - 100.0).abs() < 1.0, "{:?}", d[0]);
        assert!(d[0].self_delta_low > 0.0);
        let c = culprits(&d, 3);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].function, "hot");
        let b = d.iter().find(|x| x.function == "b").expect("b");
        assert!(b.self_delta.abs() < 1.0);
    }

    #[test]
    fn cost_moved_between_children_is_a_shift() {
        let base = Snapshot {
            stacks: stacks(&[
                ("main;parent;x", 4000),
                ("main;parent;y", 4000),
                ("main;other", 2000),
            ]),
            cost_per_request: 1000.0,
        };
        // x's work moved into y; parent's inclusive cost and the total are unchanged.
        let cand = Snapshot {
            stacks: stacks(&[
                ("main;parent;x", 1000),
                ("main;parent;y", 7000),
                ("main;other", 2000),
            ]),
            cost_per_request: 1000.0,
        };
        let d = attribute(&base, &cand, 1.96);
        let y = d.iter().find(|x| x.function == "y").expect("y");
        assert!(y.self_delta > 250.0);
        assert!(y.shift, "{y:?}");
        assert!(culprits(&d, 5).is_empty());
    }

    #[test]
    fn empty_profiles_do_not_panic() {
        assert!(attribute(&Snapshot::default(), &Snapshot::default(), 1.96).is_empty());
    }
}
