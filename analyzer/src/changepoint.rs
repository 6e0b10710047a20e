//! Change points in a series: binary segmentation with a rank statistic and a permutation
//! p-value, then a minimum magnitude between segment medians.
//!
//! - Statistic: for every split with at least `min_segment` points on each side, the
//!   standardised Mann-Whitney rank sum of the left part; the split with the largest |z| is the
//!   candidate. Ranks make it indifferent to the noise's shape and bound a spike's influence to
//!   one rank.
//! - p-value: the same maximum over splits, recomputed on random permutations of the segment
//!   (fixed seed), so the p-value accounts for searching over every split. A significant split
//!   is kept and both sides are searched again.
//! - Magnitude: the medians of the final segments on both sides of a change must differ by at
//!   least `min_change` (relative); the smallest offending change is merged away first, then
//!   the rest are re-checked.
//! - Persistence: a change needs `min_segment` points after it, so a change near the end is not
//!   reported until enough points confirm it; a transient shorter than that is never reported,
//!   and re-running as points arrive drops a candidate whose level went back.
//!
//! Invariants: input values are finite (checked); output indices are strictly increasing, each
//! at least `min_segment` from the previous change and from both ends; in a grouped series a
//! change index is always the first row of a group.

use serde::Serialize;

use crate::error::AnalyzerError;
use crate::rng::Rng;
use crate::stats::median;

/// Settings of the detector. Defaults are justified in `analyzer/README.md`.
#[derive(Debug, Clone)]
pub struct ChangepointConfig {
    /// Fewest points (snapshots when grouped) on each side of a change.
    pub min_segment: usize,
    /// Largest permutation p-value of a split that is kept.
    pub alpha: f64,
    /// Permutations per tested segment.
    pub permutations: usize,
    /// Smallest relative difference between the medians of adjacent segments (0.02 = 2%).
    pub min_change: f64,
    pub seed: u64,
}

impl Default for ChangepointConfig {
    fn default() -> Self {
        ChangepointConfig {
            min_segment: 5,
            alpha: 0.01,
            permutations: 999,
            min_change: 0.02,
            seed: 0x00C4_A96E,
        }
    }
}

impl ChangepointConfig {
    pub fn validate(&self) -> Result<(), AnalyzerError> {
        let bad = |field, reason: &str| {
            Err(AnalyzerError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.min_segment < 2 {
            return bad("min_segment", "must be at least 2");
        }
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha", "must be in (0, 1)");
        }
        if self.alpha * ((self.permutations + 1) as f64) < 1.0 {
            return bad(
                "permutations",
                "must be at least 1/alpha - 1, or no p-value can reach alpha",
            );
        }
        if !(self.min_change >= 0.0 && self.min_change.is_finite()) {
            return bad("min_change", "must be a finite number >= 0");
        }
        Ok(())
    }

    /// Fewest points (or groups) a series needs.
    pub fn min_points(&self) -> usize {
        2 * self.min_segment
    }
}

/// One detected change. `index` is the first point (row) after the change.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangePoint {
    pub index: usize,
    /// Median of the segment before the change.
    pub before: f64,
    /// Median of the segment after the change.
    pub after: f64,
    /// `(after - before) / |before| * 100`.
    pub change_pct: f64,
    /// Permutation p-value of the split when it was found.
    pub p_value: f64,
}

/// Detects changes in `values`.
pub fn detect(values: &[f64], cfg: &ChangepointConfig) -> Result<Vec<ChangePoint>, AnalyzerError> {
    cfg.validate()?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(AnalyzerError::NotFinite {
            line: i + 1,
            column: "value".to_owned(),
            value: values[i].to_string(),
        });
    }
    if values.len() < cfg.min_points() {
        return Err(AnalyzerError::TooFewRows {
            rows: values.len(),
            min: cfg.min_points(),
        });
    }
    let mut rng = Rng::new(cfg.seed);
    let mut found: Vec<(usize, f64)> = Vec::new();
    let mut stack = vec![(0, values.len())];
    while let Some((lo, hi)) = stack.pop() {
        let Some((split, p)) = best_split(&values[lo..hi], cfg, &mut rng) else {
            continue;
        };
        let (left, right) = (split, hi - lo - split);
        if left >= cfg.min_segment && right >= cfg.min_segment {
            found.push((lo + split, p));
            stack.push((lo, lo + split));
            stack.push((lo + split, hi));
        } else if right < cfg.min_segment {
            // Not persistent yet: too few points after it. Search what lies before it.
            stack.push((lo, lo + split));
        } else {
            stack.push((lo + split, hi));
        }
    }
    found.sort_by_key(|f| f.0);
    Ok(prune(values, found, cfg.min_change))
}

/// Detects changes in a series whose consecutive rows with equal `groups` keys are one snapshot
/// (for example the runs of one build): each snapshot is its median, and a change is reported at
/// the first row of its snapshot. `groups` must be as long as `values`.
pub fn detect_grouped<K: PartialEq>(
    values: &[f64],
    groups: &[K],
    cfg: &ChangepointConfig,
) -> Result<Vec<ChangePoint>, AnalyzerError> {
    if groups.len() != values.len() {
        return Err(AnalyzerError::InvalidConfig {
            field: "groups",
            reason: format!("{} group keys for {} values", groups.len(), values.len()),
        });
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(AnalyzerError::NotFinite {
            line: i + 1,
            column: "value".to_owned(),
            value: values[i].to_string(),
        });
    }
    let mut starts: Vec<usize> = Vec::new();
    for i in 0..values.len() {
        if i == 0 || groups[i] != groups[i - 1] {
            starts.push(i);
        }
    }
    let snapshot: Vec<f64> = starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(values.len());
            median(&values[s..end]).unwrap_or(0.0)
        })
        .collect();
    let mut changes = detect(&snapshot, cfg)?;
    for c in &mut changes {
        c.index = starts[c.index];
    }
    Ok(changes)
}

/// Average ranks (1-based) of a segment, ties sharing their mean rank.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// The split with the largest standardised rank sum, and its |z|.
fn max_split(r: &[f64], min_segment: usize) -> (usize, f64) {
    let n = r.len() as f64;
    let mut prefix = 0.0;
    let mut best = (0, -1.0);
    for (t, &rank) in r.iter().enumerate().take(r.len() - min_segment) {
        prefix += rank;
        let left = (t + 1) as f64;
        if t + 1 < min_segment {
            continue;
        }
        let sd = (left * (n - left) * (n + 1.0) / 12.0).sqrt();
        let z = ((prefix - left * (n + 1.0) / 2.0) / sd).abs();
        if z > best.1 {
            best = (t + 1, z);
        }
    }
    best
}

/// The significant split of a segment, if any, with its permutation p-value.
fn best_split(x: &[f64], cfg: &ChangepointConfig, rng: &mut Rng) -> Option<(usize, f64)> {
    if x.len() < 2 * cfg.min_segment {
        return None;
    }
    let mut r = ranks(x);
    let (rough, observed) = max_split(&r, cfg.min_segment);
    if observed <= 0.0 {
        return None;
    }
    let limit = (cfg.alpha * (cfg.permutations + 1) as f64).floor() as usize;
    let mut exceed = 0;
    for _ in 0..cfg.permutations {
        rng.shuffle(&mut r);
        if max_split(&r, cfg.min_segment).1 >= observed - 1e-12 {
            exceed += 1;
            if exceed >= limit {
                return None;
            }
        }
    }
    let split = refine(x, rough, cfg.min_segment);
    Some((split, (exceed + 1) as f64 / (cfg.permutations + 1) as f64))
}

/// Places a detected change where the two sides are most homogeneous: the split near `rough`
/// that minimises the sum of absolute deviations from each side's median. The result may be
/// closer than `min_segment` to an end; the caller then treats it as not persistent. The standardised
/// rank statistic detects well but localises poorly near the ends (its denominator favours
/// the middle); absolute deviations use the magnitudes and stay robust to spikes.
fn refine(x: &[f64], rough: usize, min_segment: usize) -> usize {
    let reach = 3 * min_segment;
    let lo = rough.saturating_sub(reach).max(1);
    let hi = (rough + reach).min(x.len() - 1);
    let cost = |part: &[f64]| {
        let m = median(part).unwrap_or(0.0);
        part.iter().map(|v| (v - m).abs()).sum::<f64>()
    };
    let mut best = (rough, f64::INFINITY);
    for t in lo..=hi {
        let c = cost(&x[..t]) + cost(&x[t..]);
        if c < best.1 {
            best = (t, c);
        }
    }
    best.0
}

fn relative(before: f64, after: f64) -> f64 {
    let base = if before != 0.0 {
        before.abs()
    } else {
        after.abs().max(f64::MIN_POSITIVE)
    };
    (after - before) / base
}

/// Drops changes whose adjacent segment medians differ by less than `min_change`, smallest
/// first, and fills in the medians of the final segments.
fn prune(values: &[f64], mut found: Vec<(usize, f64)>, min_change: f64) -> Vec<ChangePoint> {
    let medians = |found: &[(usize, f64)]| -> Vec<f64> {
        let mut bounds = vec![0];
        bounds.extend(found.iter().map(|f| f.0));
        bounds.push(values.len());
        bounds
            .windows(2)
            .map(|w| median(&values[w[0]..w[1]]).unwrap_or(0.0))
            .collect()
    };
    loop {
        let m = medians(&found);
        let weakest = (0..found.len())
            .map(|k| (k, relative(m[k], m[k + 1]).abs()))
            .filter(|&(_, size)| size < min_change)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match weakest {
            Some((k, _)) => {
                found.remove(k);
            }
            None => {
                return found
                    .iter()
                    .enumerate()
                    .map(|(k, &(index, p_value))| ChangePoint {
                        index,
                        before: m[k],
                        after: m[k + 1],
                        change_pct: relative(m[k], m[k + 1]) * 100.0,
                        p_value,
                    })
                    .collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn noisy(rng: &mut Rng, n: usize, level: f64) -> Vec<f64> {
        (0..n)
            .map(|_| level * (1.0 + 0.01 * rng.normal()))
            .collect()
    }

    #[test]
    fn clean_step_found_at_the_right_index() {
        let mut rng = Rng::new(3);
        let mut v = noisy(&mut rng, 30, 100.0);
        v.extend(noisy(&mut rng, 30, 110.0));
        let cps = detect(&v, &ChangepointConfig::default()).expect("valid input");
        assert_eq!(cps.len(), 1, "{cps:?}");
        assert_eq!(cps[0].index, 30);
        assert!((cps[0].change_pct - 10.0).abs() < 1.5, "{cps:?}");
        assert!(cps[0].p_value <= 0.01);
    }

    #[test]
    fn single_spike_and_short_transient_not_reported() {
        let mut rng = Rng::new(4);
        let mut v = noisy(&mut rng, 60, 100.0);
        v[30] = 500.0;
        assert!(detect(&v, &ChangepointConfig::default())
            .expect("valid input")
            .is_empty());
        for x in &mut v[40..43] {
            *x = 130.0;
        }
        assert!(detect(&v, &ChangepointConfig::default())
            .expect("valid input")
            .is_empty());
    }

    #[test]
    fn change_at_the_end_waits_for_persistence() {
        let mut rng = Rng::new(5);
        let mut v = noisy(&mut rng, 40, 100.0);
        v.extend(noisy(&mut rng, 3, 120.0));
        assert!(detect(&v, &ChangepointConfig::default())
            .expect("valid input")
            .is_empty());
        v.extend(noisy(&mut rng, 7, 120.0));
        let cps = detect(&v, &ChangepointConfig::default()).expect("valid input");
        assert_eq!(cps.iter().map(|c| c.index).collect::<Vec<_>>(), vec![40]);
    }

    #[test]
    fn small_step_below_min_change_not_reported() {
        let mut rng = Rng::new(6);
        let mut v: Vec<f64> = (0..50).map(|_| 100.0 + 0.05 * rng.normal()).collect();
        v.extend((0..50).map(|_| 101.0 + 0.05 * rng.normal()));
        assert!(detect(&v, &ChangepointConfig::default())
            .expect("valid input")
            .is_empty());
    }

    #[test]
    fn grouped_change_lands_on_first_row_of_a_build() {
        let mut rng = Rng::new(7);
        let mut values = Vec::new();
        let mut builds = Vec::new();
        for b in 0..16 {
            let level = if b < 8 { 100.0 } else { 115.0 };
            for _ in 0..3 {
                values.push(level * (1.0 + 0.01 * rng.normal()));
                builds.push(format!("b{b}"));
            }
        }
        let cps =
            detect_grouped(&values, &builds, &ChangepointConfig::default()).expect("valid input");
        assert_eq!(cps.iter().map(|c| c.index).collect::<Vec<_>>(), vec![24]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let cfg = ChangepointConfig::default();
        assert!(matches!(
            detect(&[], &cfg),
            Err(AnalyzerError::TooFewRows { .. })
        ));
        assert!(matches!(
            detect(&[1.0], &cfg),
            Err(AnalyzerError::TooFewRows { .. })
        ));
        let mut v = vec![1.0; 20];
        v[3] = f64::NAN;
        assert!(matches!(
            detect(&v, &cfg),
            Err(AnalyzerError::NotFinite { line: 4, .. })
        ));
        assert!(detect_grouped(&[1.0; 20], &[1; 3], &cfg).is_err());
        let constant = vec![5.0; 30];
        assert!(detect(&constant, &cfg).expect("valid input").is_empty());
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }
}
