//! Function-level change points: rises in a function's cost per request, found in its own
//! series, even when its endpoint's total stays within noise (a 5% rise of a function holding 2%
//! of the endpoint moves the endpoint by 0.1%).
//!
//! Each series is one function's self cost per request in one endpoint, bucket by bucket. The
//! detector ([`crate::changepoint`]) runs on each; a series' evidence is the permutation p-value
//! of its most significant rising change (1 when it has none). Benjamini-Hochberg across every
//! series tested controls the false discovery rate across all functions: a pass that tests many
//! functions needs stronger evidence for each. Falls are not reported (an improvement is not a
//! regression). The caller applies the cost-shift filter ([`crate::attribution`]) to what is
//! left, on the windows either side of each change.
//!
//! Invariant: the permutation p-value cannot go below `1 / (permutations + 1)`; with `m` series
//! a discovery needs `p <= fdr / m` at worst, so callers give the detector enough permutations
//! ([`permutations_for`]).

use rayon::prelude::*;

use crate::changepoint::{detect_timed, ChangepointConfig};
use crate::stats::benjamini_hochberg;
use crate::AnalyzerError;

/// One function's cost per request in one endpoint, per bucket.
#[derive(Debug, Clone)]
pub struct FunctionSeries {
    pub endpoint: String,
    pub function: String,
    /// Self cost per request, one value per bucket.
    pub values: Vec<f64>,
    /// The buckets' times (unix seconds), non-decreasing.
    pub times: Vec<f64>,
}

/// A rise found in one series and kept by the false-discovery control.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionChange {
    /// The series' index in the input.
    pub series: usize,
    /// The first bucket after the change.
    pub index: usize,
    pub before: f64,
    pub after: f64,
    pub change_pct: f64,
    pub p_value: f64,
    /// Benjamini-Hochberg q-value across every series tested.
    pub q_value: f64,
}

/// Permutations that let one discovery among `series` tests reach `fdr`: at least
/// `2 * series / fdr` (so the smallest p-value is half the level it must reach), at least
/// `floor`.
pub fn permutations_for(series: usize, fdr: f64, floor: usize) -> usize {
    let need = (2.0 * series as f64 / fdr.max(1e-6)).ceil() as usize;
    need.max(floor)
}

/// The rises in `series` of at least `min_change_pct` whose q-value across all of them is at
/// most `fdr`; one per series at most (its most significant), ordered by series. A series whose
/// detection fails counts as tested with no change.
pub fn function_changes(
    series: &[FunctionSeries],
    cfg: &ChangepointConfig,
    fdr: f64,
    min_change_pct: f64,
) -> Result<Vec<FunctionChange>, AnalyzerError> {
    cfg.validate()?;
    let best: Vec<Option<FunctionChange>> = series
        .par_iter()
        .enumerate()
        .map(|(i, s)| {
            let detection = detect_timed(&s.values, &s.times, cfg).ok()?;
            detection
                .changes
                .iter()
                .filter(|c| c.change_pct >= min_change_pct)
                .min_by(|a, b| a.p_value.total_cmp(&b.p_value))
                .map(|c| FunctionChange {
                    series: i,
                    index: c.index,
                    before: c.before,
                    after: c.after,
                    change_pct: c.change_pct,
                    p_value: c.p_value,
                    q_value: 1.0,
                })
        })
        .collect();
    let p: Vec<f64> = best
        .iter()
        .map(|b| b.as_ref().map_or(1.0, |c| c.p_value))
        .collect();
    let q = benjamini_hochberg(&p);
    Ok(best
        .into_iter()
        .zip(q)
        .filter_map(|(b, q)| b.map(|c| FunctionChange { q_value: q, ..c }))
        .filter(|c| c.q_value <= fdr)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `n` hourly buckets of a function costing `level` per request with `sd` relative noise,
    /// `step` times dearer from `at` on.
    fn series(seed: u64, n: usize, sd: f64, step: f64, at: usize) -> FunctionSeries {
        let mut rng = Rng::new(seed);
        let values = (0..n)
            .map(|i| {
                let level = if i >= at { 100.0 * step } else { 100.0 };
                level * (1.0 + sd * rng.normal())
            })
            .collect();
        FunctionSeries {
            endpoint: "GET /a".into(),
            function: format!("f{seed}"),
            values,
            times: (0..n).map(|i| i as f64 * 3600.0).collect(),
        }
    }

    fn cfg(series: usize) -> ChangepointConfig {
        ChangepointConfig {
            permutations: permutations_for(series, 0.05, 199),
            ..ChangepointConfig::default()
        }
    }

    #[test]
    fn a_rise_in_one_function_among_many_is_found_where_it_is() {
        // 40 functions of 1.5% noise per bucket; one rises 5% at bucket 60 of 100.
        let mut all: Vec<FunctionSeries> = (0..40).map(|s| series(s, 100, 0.015, 1.0, 0)).collect();
        all[17] = series(1017, 100, 0.015, 1.05, 60);
        let found = function_changes(&all, &cfg(all.len()), 0.05, 2.0).expect("detect");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].series, 17);
        assert!(found[0].index.abs_diff(60) <= 2, "{found:#?}");
        assert!((3.0..7.0).contains(&found[0].change_pct), "{found:#?}");
    }

    #[test]
    fn noise_across_many_functions_gives_few_false_discoveries() {
        // 10 seeds of 40 functions with no change: a discovery in at most 2 of the 10 passes
        // (the FDR is 5%: with no true change, a pass has a discovery with probability <= 5%).
        let passes_with_a_discovery = (0..10u64)
            .filter(|pass| {
                let all: Vec<FunctionSeries> = (0..40)
                    .map(|s| series(pass * 1000 + s, 100, 0.015, 1.0, 0))
                    .collect();
                !function_changes(&all, &cfg(all.len()), 0.05, 2.0)
                    .expect("detect")
                    .is_empty()
            })
            .count();
        assert!(passes_with_a_discovery <= 2, "{passes_with_a_discovery}");
    }

    #[test]
    fn falls_are_not_reported() {
        let all = vec![series(3, 100, 0.015, 0.9, 50)];
        assert!(function_changes(&all, &cfg(1), 0.05, 2.0)
            .expect("detect")
            .is_empty());
    }

    #[test]
    fn enough_permutations_for_the_number_of_tests() {
        assert_eq!(permutations_for(1, 0.05, 199), 199);
        assert_eq!(permutations_for(100, 0.05, 199), 4000);
    }
}
