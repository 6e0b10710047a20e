//! A seasonal profile (the daily cycle of a timestamped series, or a cycle of a given number of
//! points) estimated robustly and removed before changes are sought.
//!
//! Each point's deviation from the running median of one whole cycle around it (which follows
//! steps and trends but averages the cycle out) is grouped by phase (hour of day, or position in
//! the cycle); the profile is the median deviation per phase, centred. It is removed only when
//! the series spans at least [`MIN_CYCLES`] cycles and a Friedman test over the complete cycles
//! (each cycle a block, the phases its treatments) finds the phases differ at [`SEASON_ALPHA`]:
//! with fewer cycles a step inside one cycle could not be told from the profile, and an
//! insignificant profile would only add its estimation noise.
//!
//! Invariants: the returned profile has one value per point and mean zero over the phases;
//! timestamps that are not finite and non-decreasing disable the daily cycle.

use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::Seasonality;
use crate::stats::{average_ranks, median};

/// Fewest whole cycles a series must span for its profile to be estimated.
pub(super) const MIN_CYCLES: usize = 3;
/// Largest Friedman p-value at which a profile is removed.
const SEASON_ALPHA: f64 = 0.01;
const DAY_SECS: f64 = 86_400.0;
const HOUR_SECS: f64 = 3_600.0;

/// Phase and cycle of every point, and how far (in points or seconds) the running median
/// reaches on each side.
struct Layout {
    phase: Vec<usize>,
    cycle: Vec<i64>,
    phases: usize,
}

/// The seasonal profile to subtract from `z` (one value per point), if one is significant.
pub(super) fn profile(
    z: &[f64],
    times: Option<&[f64]>,
    period: Option<usize>,
) -> Option<(Seasonality, Vec<f64>)> {
    let (kind, layout, level) = match (period, times) {
        (Some(p), _) if p >= 2 && z.len() >= MIN_CYCLES * p => {
            let layout = Layout {
                phase: (0..z.len()).map(|i| i % p).collect(),
                cycle: (0..z.len()).map(|i| (i / p) as i64).collect(),
                phases: p,
            };
            let level = running_median_points(z, p / 2);
            (Seasonality::Period { points: p }, layout, level)
        }
        (None, Some(t)) if daily_applies(t) => {
            let layout = Layout {
                phase: t
                    .iter()
                    .map(|s| (s.rem_euclid(DAY_SECS) / HOUR_SECS) as usize % 24)
                    .collect(),
                cycle: t.iter().map(|s| (s / DAY_SECS).floor() as i64).collect(),
                phases: 24,
            };
            let level = running_median_time(z, t, DAY_SECS / 2.0);
            (Seasonality::Daily, layout, level)
        }
        _ => return None,
    };
    let deviation: Vec<f64> = z.iter().zip(&level).map(|(v, m)| v - m).collect();
    if friedman_p(&deviation, &layout)? > SEASON_ALPHA {
        return None;
    }
    let mut by_phase = vec![Vec::new(); layout.phases];
    for (d, &h) in deviation.iter().zip(&layout.phase) {
        by_phase[h].push(*d);
    }
    let per_phase: Vec<Option<f64>> = by_phase.iter().map(|v| median(v)).collect();
    let present: Vec<f64> = per_phase.iter().flatten().copied().collect();
    let centre = present.iter().sum::<f64>() / present.len().max(1) as f64;
    let out = layout
        .phase
        .iter()
        .map(|&h| per_phase[h].map_or(0.0, |v| v - centre))
        .collect();
    Some((kind, out))
}

/// Timestamps allow a daily profile: finite, non-decreasing, spanning `MIN_CYCLES` days.
fn daily_applies(t: &[f64]) -> bool {
    let ordered = t.iter().all(|v| v.is_finite()) && t.windows(2).all(|w| w[0] <= w[1]);
    match (t.first(), t.last()) {
        (Some(a), Some(b)) if ordered => b - a >= MIN_CYCLES as f64 * DAY_SECS,
        _ => false,
    }
}

/// The Friedman test's p-value that the phases' deviations are exchangeable within cycles,
/// over the cycles in which every phase that occurs has a point (a cycle's cell is the median
/// of its points); `None` with fewer than `MIN_CYCLES` such cycles or fewer than 2 phases.
fn friedman_p(deviation: &[f64], layout: &Layout) -> Option<f64> {
    let mut occurring: Vec<usize> = layout.phase.clone();
    occurring.sort_unstable();
    occurring.dedup();
    let h = occurring.len();
    if h < 2 {
        return None;
    }
    let mut cells: std::collections::BTreeMap<i64, Vec<Vec<f64>>> = Default::default();
    for ((d, &p), &c) in deviation.iter().zip(&layout.phase).zip(&layout.cycle) {
        let slot = occurring.binary_search(&p).unwrap_or(0);
        cells.entry(c).or_insert_with(|| vec![Vec::new(); h])[slot].push(*d);
    }
    let mut rank_sums = vec![0.0; h];
    let mut blocks = 0usize;
    for row in cells.values() {
        let meds: Option<Vec<f64>> = row.iter().map(|v| median(v)).collect();
        let Some(meds) = meds else {
            continue;
        };
        for (sum, r) in rank_sums.iter_mut().zip(average_ranks(&meds)) {
            *sum += r;
        }
        blocks += 1;
    }
    if blocks < MIN_CYCLES {
        return None;
    }
    let (b, k) = (blocks as f64, h as f64);
    let q = 12.0 / (b * k * (k + 1.0)) * rank_sums.iter().map(|r| r * r).sum::<f64>()
        - 3.0 * b * (k + 1.0);
    let chi = ChiSquared::new(k - 1.0).ok()?;
    Some(chi.sf(q.max(0.0)))
}

/// The median of the points within `reach` positions on each side.
fn running_median_points(z: &[f64], reach: usize) -> Vec<f64> {
    (0..z.len())
        .map(|i| {
            let lo = i.saturating_sub(reach);
            let hi = (i + reach + 1).min(z.len());
            median(&z[lo..hi]).unwrap_or(z[i])
        })
        .collect()
}

/// The median of the points within `reach` seconds on each side (`t` non-decreasing).
fn running_median_time(z: &[f64], t: &[f64], reach: f64) -> Vec<f64> {
    let (mut lo, mut hi) = (0, 0);
    let mut out = Vec::with_capacity(z.len());
    let mut window = Vec::new();
    for i in 0..z.len() {
        while t[i] - t[lo] > reach {
            lo += 1;
        }
        while hi < z.len() && t[hi] - t[i] <= reach {
            hi += 1;
        }
        window.clear();
        window.extend_from_slice(&z[lo..hi]);
        let mid = window.len() / 2;
        let (_, m, _) = window.select_nth_unstable_by(mid, f64::total_cmp);
        out.push(*m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn hourly(days: usize, amplitude: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
        let mut rng = Rng::new(seed);
        let times: Vec<f64> = (0..days * 24).map(|h| 1.7e9 + 3600.0 * h as f64).collect();
        let z = times
            .iter()
            .map(|t| {
                let phase = std::f64::consts::TAU * t.rem_euclid(DAY_SECS) / DAY_SECS;
                amplitude * phase.sin() + 0.01 * rng.normal()
            })
            .collect();
        (z, times)
    }

    #[test]
    fn a_daily_profile_is_found_centred_and_follows_the_cycle() {
        let (z, t) = hourly(5, 0.1, 1);
        let (kind, p) = profile(&z, Some(&t), None).expect("a profile");
        assert_eq!(kind, Seasonality::Daily);
        assert_eq!(p.len(), z.len());
        let mean = p[..24].iter().sum::<f64>() / 24.0;
        assert!(mean.abs() < 1e-9, "{mean}");
        let off = t
            .iter()
            .zip(&p)
            .map(|(t, p)| {
                (0.1 * (std::f64::consts::TAU * t.rem_euclid(DAY_SECS) / DAY_SECS).sin() - p).abs()
            })
            .fold(0.0, f64::max);
        assert!(off < 0.03, "{off}");
    }

    #[test]
    fn no_profile_without_a_cycle_or_with_fewer_than_three_days() {
        let mut significant = 0;
        for seed in 0..20 {
            let (z, t) = hourly(7, 0.0, 10 + seed);
            significant += usize::from(profile(&z, Some(&t), None).is_some());
        }
        // The Friedman test at 1%: a false profile in 20 white series is possible, 3 is not.
        assert!(significant <= 2, "{significant}");
        let (z, t) = hourly(2, 0.1, 2);
        assert!(profile(&z, Some(&t), None).is_none());
        let backwards: Vec<f64> = t.iter().rev().copied().collect();
        let (z, _) = hourly(5, 0.1, 3);
        assert!(profile(&z, Some(&backwards[..z.len().min(backwards.len())]), None).is_none());
    }
}
