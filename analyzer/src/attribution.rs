//! Attribution: which functions explain a change in cost per request.
//!
//! Input: the stack samples of the baseline and of the candidate (summed per stack), and the
//! mean cost per request of each. A function's *self* share is the fraction of samples whose
//! leaf is that function; its *inclusive* share, the fraction of samples whose stack contains
//! it (once per stack, so recursion is not double counted). Its cost per request in a snapshot
//! is that share times the snapshot's mean cost per request. The interval of a delta treats each
//! share as a binomial proportion over that snapshot's samples (normal approximation), the two
//! snapshots as independent, and ignores the error of the mean cost.
//!
//! A *culprit* is a function whose self cost rose, and
//! - whose rise is significant: with 100 self samples or more and the compare's interval of
//!   the cost ratio (candidate over baseline), a one-sided test of `r·q − p` (the function's
//!   cost change in baseline units: `p`, `q` its self shares, `r` the ratio) over a standard
//!   error that counts both shares' binomial error and the ratio's error (normal
//!   approximation); otherwise an exact one-sided test of its share (its self count in the
//!   candidate given its samples in both is binomial under no change of share, sample counts
//!   being Poisson). Then weighted Benjamini-Hochberg at [`CULPRIT_FDR`] across the functions
//!   whose counts can reach that level at all, each weighted by its share of their pooled self
//!   samples (the exact test conditions on those counts; the cost test's statistic hardly
//!   depends on them, so its FDR holds nearly). Counting the ratio's error keeps noise in the mean costs (which moves every
//!   function's cost together) from making culprits, while the ratio itself shows the growth of
//!   a function that holds most of the samples (its share barely moves); the correction keeps
//!   the hundreds of functions of a profile from yielding noise culprits; the weights spend the
//!   level where the time is, where a rise of a given cost per request is hardest to see (a
//!   small function that makes a visible regression grows many times over, which its own test
//!   sees plainly). A uniform slowdown of every function is, by this definition, a rise of each,
//!   and names the largest ones once the samples resolve it;
//! - whose rise is not a *cost shift* (inlining, renaming, self cost moved between the children
//!   of one caller): the cost did not come from its neighbours, the functions it calls, its
//!   callers and their other callees. Each neighbour big enough to have given a quarter of the
//!   rise has its self share of the samples outside the function tested for a fall (one-sided,
//!   Bonferroni at [`CULPRIT_FDR`] over those neighbours); when the significant falls of their
//!   self cost add up to at least half the rise, the function is a shift (`shift: true`).
//!   Growth of the function alone leaves those shares unchanged. Each neighbour's own self
//!   cost, not a caller's inclusive cost, is tested: a large caller's inclusive cost is too
//!   noisy to show either a growth or a shift, and a call that merely moved to another caller
//!   moves inclusive cost but no self cost.
//!
//! Limit: cost moved between places with no caller in common (work moved from a parser to a
//! serializer) looks like an improvement of one and a regression of the other; only the
//! endpoint's compare (its cost per request is unchanged) tells the two apart.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::stats::{benjamini_hochberg, normal_quantile, normal_sf, share_rise_p};

/// False discovery rate of the culprit test across a profile's functions, and the level of a
/// neighbour's fall in the cost-shift test.
pub const CULPRIT_FDR: f64 = 0.01;

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
    /// One-sided p-value of a rise of its self share of the samples.
    pub p_value: f64,
    /// Benjamini-Hochberg q-value of `p_value` across the profile's functions (1 for functions
    /// with too few samples to ever reach [`CULPRIT_FDR`]).
    pub q_value: f64,
    /// Its self cost rose significantly, but the cost came from its neighbours: a cost shift.
    pub shift: bool,
}

/// Function names of both snapshots, numbered.
#[derive(Default)]
struct Names<'a> {
    ids: HashMap<&'a str, u32>,
    names: Vec<&'a str>,
}

impl<'a> Names<'a> {
    fn id(&mut self, name: &'a str) -> u32 {
        let next = self.names.len() as u32;
        *self.ids.entry(name).or_insert_with(|| {
            self.names.push(name);
            next
        })
    }
}

/// Sample counts of one snapshot, by function id.
#[derive(Default)]
struct Counts {
    total: u64,
    self_: Vec<u64>,
    inclusive: Vec<u64>,
    /// `(caller, callee)` pairs seen directly above each other.
    calls: HashSet<(u32, u32)>,
}

fn counts<'a>(s: &'a Snapshot, names: &mut Names<'a>) -> Counts {
    let mut out = Counts::default();
    let mut ids: Vec<u32> = Vec::new();
    let mut seen: Vec<u32> = Vec::new();
    for (frames, n) in &s.stacks {
        let n = *n;
        if n == 0 || frames.is_empty() {
            continue;
        }
        ids.clear();
        ids.extend(frames.iter().map(|f| names.id(f)));
        let size = names.names.len();
        out.self_.resize(size, 0);
        out.inclusive.resize(size, 0);
        out.total = out.total.saturating_add(n);
        if let Some(&leaf) = ids.last() {
            out.self_[leaf as usize] = out.self_[leaf as usize].saturating_add(n);
        }
        seen.clear();
        seen.extend_from_slice(&ids);
        seen.sort_unstable();
        seen.dedup();
        for &f in &seen {
            out.inclusive[f as usize] = out.inclusive[f as usize].saturating_add(n);
        }
        out.calls.extend(ids.windows(2).map(|w| (w[0], w[1])));
    }
    out
}

impl Counts {
    fn self_of(&self, f: u32) -> u64 {
        self.self_.get(f as usize).copied().unwrap_or(0)
    }

    fn inclusive_of(&self, f: u32) -> u64 {
        self.inclusive.get(f as usize).copied().unwrap_or(0)
    }
}

/// Cost per request and its standard error for a share `count / total` at `cost`.
fn cost(count: u64, total: u64, per_request: f64) -> (f64, f64) {
    if total == 0 {
        return (0.0, 0.0);
    }
    let p = count as f64 / total as f64;
    (
        p * per_request,
        (p * (1.0 - p) / total as f64).sqrt() * per_request,
    )
}

/// Callers and callees of each function, in either snapshot.
struct Graph {
    callers: Vec<Vec<u32>>,
    callees: Vec<Vec<u32>>,
}

impl Graph {
    fn new(functions: usize, b: &Counts, c: &Counts) -> Graph {
        let mut g = Graph {
            callers: vec![Vec::new(); functions],
            callees: vec![Vec::new(); functions],
        };
        for &(caller, callee) in b.calls.iter().chain(&c.calls) {
            g.callers[callee as usize].push(caller);
            g.callees[caller as usize].push(callee);
        }
        for v in g.callers.iter_mut().chain(g.callees.iter_mut()) {
            v.sort_unstable();
            v.dedup();
        }
        g
    }

    /// The functions a shift into `f` can come from: its callees, its callers and its callers'
    /// other callees.
    fn neighbours(&self, f: u32) -> Vec<u32> {
        let mut out: Vec<u32> = self.callees[f as usize].clone();
        for &p in &self.callers[f as usize] {
            out.push(p);
            out.extend_from_slice(&self.callees[p as usize]);
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|&y| y != f);
        out
    }
}

/// Whether the significant rise of `f`'s self cost (`rise`, in cost per request) came from its
/// neighbours: the significant falls of their self cost, as shares of the samples outside `f`,
/// add up to at least half of it. Self costs, not inclusive ones: a call that merely moved to
/// another caller keeps the self cost of everything under it, and gives nothing to `f`.
fn is_shift(
    f: u32,
    rise: f64,
    graph: &Graph,
    (b, cost_b): (&Counts, f64),
    (c, cost_c): (&Counts, f64),
) -> bool {
    if !(rise > 0.0 && rise.is_finite()) {
        return false;
    }
    // Only a neighbour whose cost (pooled over both snapshots, which the conditional test holds
    // fixed) reaches a quarter of the rise can give a good part of it; testing only those keeps
    // the level of each test high.
    let pooled = |y: u32| {
        b.self_of(y).saturating_add(c.self_of(y)) as f64
            / b.total.saturating_add(c.total).max(1) as f64
            * 0.5
            * (cost_b + cost_c)
    };
    let neighbours: Vec<u32> = graph
        .neighbours(f)
        .into_iter()
        .filter(|&y| pooled(y) >= 0.25 * rise)
        .collect();
    if neighbours.is_empty() {
        return false;
    }
    let outside_b = b.total - b.self_of(f).min(b.total);
    let outside_c = c.total - c.self_of(f).min(c.total);
    let level = CULPRIT_FDR / neighbours.len() as f64;
    let offset: f64 = neighbours
        .into_iter()
        .filter_map(|y| {
            let (nb, nc) = (b.self_of(y), c.self_of(y));
            let fall = cost(nb, b.total, cost_b).0 - cost(nc, c.total, cost_c).0;
            // A fall from baseline to candidate is a rise from candidate to baseline.
            (fall > 0.0 && share_rise_p(nc, outside_c, nb, outside_b) <= level).then_some(fall)
        })
        .sum();
    offset >= 0.5 * rise
}

/// The compare's interval of the candidate's cost per request over the baseline's (its ratio of
/// means), at `confidence`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostRatio {
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
}

impl CostRatio {
    /// The standard error of the log ratio the interval implies (normal on the log scale), or
    /// `None` for an interval that says nothing.
    fn log_se(&self) -> Option<f64> {
        let ok = self.low > 0.0
            && self.high >= self.low
            && self.high.is_finite()
            && self.confidence > 0.0
            && self.confidence < 1.0;
        let z = normal_quantile(0.5 + self.confidence / 2.0);
        ok.then(|| (self.high / self.low).ln() / (2.0 * z))
    }
}

/// From this many self samples (both snapshots together) on, a function's rise is tested on
/// its cost with the error of the cost ratio (normal approximation); below, on its share alone
/// (exact, and such a function must grow many times over to explain a regression).
const COST_TEST_COUNTS: u64 = 100;

/// One-sided p-value of a rise of the self cost of a function with `sb` of `nb` and `sc` of
/// `nc` samples. With the cost ratio `r` (candidate over baseline) and its standard error `se`,
/// the statistic is `r·q − p` over its standard error, which counts the binomial error of both
/// shares and the error of `r`; so a dominant function's growth is seen through the endpoint's
/// cost, and noise in the mean costs makes no culprit.
fn rise_p(sb: u64, nb: u64, sc: u64, nc: u64, ratio: Option<(f64, f64)>) -> f64 {
    match ratio {
        Some((r, se)) if sb.saturating_add(sc) >= COST_TEST_COUNTS && nb > 0 && nc > 0 => {
            let (p, q) = (sb as f64 / nb as f64, sc as f64 / nc as f64);
            let var =
                r * r * q * (1.0 - q) / nc as f64 + p * (1.0 - p) / nb as f64 + q * q * se * se;
            if var > 0.0 && var.is_finite() {
                normal_sf((r * q - p) / var.sqrt())
            } else {
                1.0
            }
        }
        _ => share_rise_p(sb, nb, sc, nc),
    }
}

/// Per-function deltas, largest self-cost increase first. `ratio` is the compare's interval of
/// the cost ratio (without it, rises are tested on shares alone); `z` is the normal quantile
/// of the intervals (1.96 for 95%).
pub fn attribute(
    baseline: &Snapshot,
    candidate: &Snapshot,
    ratio: Option<CostRatio>,
    z: f64,
) -> Vec<FunctionDelta> {
    let mut names = Names::default();
    let b = counts(baseline, &mut names);
    let c = counts(candidate, &mut names);
    let functions = names.names.len();
    let graph = Graph::new(functions, &b, &c);
    let (cost_b, cost_c) = (baseline.cost_per_request, candidate.cost_per_request);
    let r = cost_c / cost_b;
    let ratio = ratio
        .and_then(|i| i.log_se())
        .filter(|_| r > 0.0 && r.is_finite())
        .map(|se| (r, r * se));
    let p_values: Vec<f64> = (0..functions as u32)
        .map(|f| rise_p(b.self_of(f), b.total, c.self_of(f), c.total, ratio))
        .collect();
    // Functions whose every sample being in the candidate would still miss the level cannot be
    // culprits; leaving them out of the correction spends it only on testable ones.
    let testable: Vec<usize> = (0..functions)
        .filter(|&f| {
            let m = b.self_of(f as u32).saturating_add(c.self_of(f as u32));
            m > 0 && (m >= COST_TEST_COUNTS || share_rise_p(0, b.total, m, c.total) <= CULPRIT_FDR)
        })
        .collect();
    // Weighted BH (weights: shares of the pooled self samples, mean 1; see the module docs).
    let pooled = |f: usize| b.self_of(f as u32).saturating_add(c.self_of(f as u32)) as f64;
    let pooled_total: f64 = testable.iter().map(|&f| pooled(f)).sum();
    let mut q_values = vec![1.0; functions];
    let tested: Vec<f64> = testable
        .iter()
        .map(|&f| p_values[f] * pooled_total / (testable.len() as f64 * pooled(f)))
        .collect();
    for (&f, q) in testable.iter().zip(benjamini_hochberg(&tested)) {
        q_values[f] = q;
    }
    let mut out: Vec<FunctionDelta> = (0..functions as u32)
        .map(|f| {
            let i = f as usize;
            let (sb_cost, sb_se) = cost(b.self_of(f), b.total, cost_b);
            let (sc_cost, sc_se) = cost(c.self_of(f), c.total, cost_c);
            let self_delta = sc_cost - sb_cost;
            let self_se = (sb_se * sb_se + sc_se * sc_se).sqrt();
            let (ib, ib_se) = cost(b.inclusive_of(f), b.total, cost_b);
            let (ic, ic_se) = cost(c.inclusive_of(f), c.total, cost_c);
            let i_se = (ib_se * ib_se + ic_se * ic_se).sqrt();
            let shift = q_values[i] <= CULPRIT_FDR
                && is_shift(f, self_delta, &graph, (&b, cost_b), (&c, cost_c));
            FunctionDelta {
                function: names.names[i].to_owned(),
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
                p_value: p_values[i],
                q_value: q_values[i],
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

/// The functions that explain a regression: a significant rise of the self share (q-value at
/// most [`CULPRIT_FDR`]) with a self-cost interval above zero, and not a cost shift; largest
/// self-cost increase first.
pub fn culprits(deltas: &[FunctionDelta], limit: usize) -> Vec<&FunctionDelta> {
    deltas
        .iter()
        .filter(|d| d.q_value <= CULPRIT_FDR && d.self_delta_low > 0.0 && !d.shift)
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
        let d = attribute(&base, &cand, None, 1.96);
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
        let d = attribute(&base, &cand, None, 1.96);
        let y = d.iter().find(|x| x.function == "y").expect("y");
        assert!(y.self_delta > 250.0);
        assert!(y.shift, "{y:?}");
        assert!(culprits(&d, 5).is_empty());
    }

    fn snapshot(spec: &[(&str, u64)], cost_per_request: f64) -> Snapshot {
        Snapshot {
            stacks: stacks(spec),
            cost_per_request,
        }
    }

    fn names<'a>(d: &[&'a FunctionDelta]) -> Vec<&'a str> {
        d.iter().map(|x| x.function.as_str()).collect()
    }

    /// Regression: the old filter called a rise a shift whenever the caller's inclusive cost
    /// showed no significant change, which under a large caller (half the profile here) it
    /// cannot; the eval named the injected function first in only 71% of detected +2%
    /// regressions at ~2000 samples per arm.
    #[test]
    fn growth_under_a_large_caller_is_not_taken_for_a_shift() {
        let base = snapshot(
            &[
                ("main;big;x", 100),
                ("main;big;y", 4000),
                ("main;other", 4000),
            ],
            1000.0,
        );
        let cand = snapshot(
            &[
                ("main;big;x", 200),
                ("main;big;y", 4000),
                ("main;other", 4000),
            ],
            1000.0 * 8200.0 / 8100.0,
        );
        let d = attribute(&base, &cand, None, 1.96);
        let big = d.iter().find(|x| x.function == "big").expect("big");
        assert!(
            big.inclusive_delta_low < 0.0,
            "the caller alone shows nothing: {big:?}"
        );
        assert_eq!(names(&culprits(&d, 5)), ["x"]);
    }

    /// Regression: every function was tested on its own at z = 1.96, so a profile of hundreds
    /// of functions named noise culprits (here, each leaf's caller grows with it, so no shift
    /// filter hides them); the eval found one in 83-100% of pure cost shifts.
    #[test]
    fn noise_across_many_functions_names_no_culprit() {
        let mut rng = crate::rng::Rng::new(11);
        let draw = |rng: &mut crate::rng::Rng| -> Vec<(Vec<String>, u64)> {
            (0..600)
                .map(|i| {
                    let frames = vec!["main".to_owned(), format!("caller{i}"), format!("leaf{i}")];
                    (
                        frames,
                        crate::stats::poisson(rng, 30.0 + (i % 7) as f64 * 20.0),
                    )
                })
                .collect()
        };
        for _ in 0..5 {
            let base = Snapshot {
                stacks: draw(&mut rng),
                cost_per_request: 1000.0,
            };
            let cand = Snapshot {
                stacks: draw(&mut rng),
                cost_per_request: 1000.0,
            };
            let d = attribute(&base, &cand, None, 1.96);
            assert!(d.iter().filter(|x| x.self_delta_low > 0.0).count() > 3);
            assert!(culprits(&d, 5).is_empty(), "{:?}", culprits(&d, 5));
        }
    }

    /// Regression: deltas scale with the mean cost per request, whose error the intervals
    /// ignore, so with many samples every large function of an endpoint whose mean cost moved
    /// was a culprit. Without the interval of the cost ratio, shares alone decide.
    #[test]
    fn a_uniform_slowdown_names_no_culprit() {
        let spec = [
            ("main;a;x", 100_000),
            ("main;a;y", 50_000),
            ("main;b", 50_000),
        ];
        let d = attribute(
            &snapshot(&spec, 1000.0),
            &snapshot(&spec, 1030.0),
            None,
            1.96,
        );
        let x = d.iter().find(|x| x.function == "x").expect("x");
        assert!(x.self_delta_low > 0.0, "{x:?}");
        assert!(culprits(&d, 5).is_empty());
    }

    /// A function holding most of the samples changes the shares little when it grows (the
    /// rest, the share test's reference, is small and noisy); the endpoint's cost ratio shows it.
    #[test]
    fn a_dominant_function_that_grew_is_named_through_the_cost_ratio() {
        let base = snapshot(&[("main;h;dom", 1400), ("main;h;rest", 600)], 1000.0);
        // `dom` costs 11% more: 777 instead of 700 per request; total 1077.
        let cand = snapshot(&[("main;h;dom", 1554), ("main;h;rest", 600)], 1077.0);
        let ratio = CostRatio {
            low: 1.06,
            high: 1.095,
            confidence: 0.95,
        };
        assert!(culprits(&attribute(&base, &cand, None, 1.96), 5).is_empty());
        let d = attribute(&base, &cand, Some(ratio), 1.96);
        assert_eq!(names(&culprits(&d, 5)), ["dom"]);
    }

    /// The cost ratio's error enters the test: a ratio of 1.02 whose interval covers 1 makes no
    /// culprit of a large function whose share did not move, however many samples.
    #[test]
    fn noise_in_the_cost_ratio_names_no_culprit() {
        let spec = [
            ("main;a;x", 100_000),
            ("main;a;y", 50_000),
            ("main;b", 50_000),
        ];
        let ratio = CostRatio {
            low: 0.99,
            high: 1.05,
            confidence: 0.95,
        };
        let d = attribute(
            &snapshot(&spec, 1000.0),
            &snapshot(&spec, 1020.0),
            Some(ratio),
            1.96,
        );
        assert!(culprits(&d, 5).is_empty(), "{:?}", culprits(&d, 5));
        for bad in [
            (0.0, 1.0, 0.95),
            (1.1, 1.0, 0.95),
            (0.9, f64::NAN, 0.95),
            (0.9, 1.1, 1.0),
        ] {
            let ratio = CostRatio {
                low: bad.0,
                high: bad.1,
                confidence: bad.2,
            };
            let d = attribute(
                &snapshot(&spec, 1000.0),
                &snapshot(&spec, 1020.0),
                Some(ratio),
                1.96,
            );
            assert!(culprits(&d, 5).is_empty());
        }
    }

    #[test]
    fn a_function_inlined_into_its_caller_is_a_shift() {
        let base = snapshot(
            &[
                ("main;handler;parse", 300),
                ("main;handler;parse;tokenize", 300),
                ("main;handler;render", 1000),
                ("main;other", 2000),
            ],
            1000.0,
        );
        // `parse` was inlined: its self cost is now `handler`'s.
        let cand = snapshot(
            &[
                ("main;handler", 300),
                ("main;handler;tokenize", 300),
                ("main;handler;render", 1000),
                ("main;other", 2000),
            ],
            1000.0,
        );
        let d = attribute(&base, &cand, None, 1.96);
        let handler = d.iter().find(|x| x.function == "handler").expect("handler");
        assert!(
            handler.q_value <= CULPRIT_FDR && handler.shift,
            "{handler:?}"
        );
        assert!(culprits(&d, 5).is_empty());
    }

    /// The neighbour's own self cost shows the move even when everything it calls makes its
    /// inclusive cost nearly the whole profile.
    #[test]
    fn cost_moved_from_a_sibling_with_a_large_subtree_is_a_shift() {
        let base = snapshot(
            &[
                ("main;p;donor", 1000),
                ("main;p;donor;deep", 8000),
                ("main;p;small", 10),
                ("main;rest", 1000),
            ],
            1000.0,
        );
        let cand = snapshot(
            &[
                ("main;p;donor", 300),
                ("main;p;donor;deep", 8000),
                ("main;p;small", 710),
                ("main;rest", 1000),
            ],
            1000.0,
        );
        let d = attribute(&base, &cand, None, 1.96);
        let small = d.iter().find(|x| x.function == "small").expect("small");
        assert!(small.shift, "{small:?}");
        assert!(culprits(&d, 5).is_empty());
    }

    /// A call that moved to another caller takes no self cost with it, so it neither makes a
    /// culprit nor hides the one that grew beside it.
    #[test]
    fn a_moved_call_neither_is_nor_hides_a_culprit() {
        let base = snapshot(
            &[
                ("main;p;x", 500),
                ("main;p;validate;check", 2000),
                ("main;q;work", 3000),
            ],
            1000.0,
        );
        let cand = snapshot(
            &[
                ("main;p;x", 1000),
                ("main;q;validate;check", 2000),
                ("main;q;work", 3000),
            ],
            1000.0 * 6000.0 / 5500.0,
        );
        let d = attribute(&base, &cand, None, 1.96);
        assert_eq!(names(&culprits(&d, 5)), ["x"]);
    }

    #[test]
    fn empty_profiles_do_not_panic() {
        assert!(attribute(&Snapshot::default(), &Snapshot::default(), None, 1.96).is_empty());
        let one = snapshot(&[("main;a", 10)], 1.0);
        assert!(culprits(&attribute(&Snapshot::default(), &one, None, 1.96), 5).is_empty());
        assert!(culprits(&attribute(&one, &Snapshot::default(), None, 1.96), 5).is_empty());
        let odd = Snapshot {
            stacks: vec![(Vec::new(), 5), (vec!["a".to_owned()], 0)],
            cost_per_request: f64::NAN,
        };
        assert!(culprits(&attribute(&odd, &odd, None, 1.96), 5).is_empty());
        let huge = snapshot(&[("main;a", u64::MAX), ("main;b", u64::MAX)], 1.0);
        assert_eq!(attribute(&huge, &huge, None, 1.96).len(), 3);
    }
}
