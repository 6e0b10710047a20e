//! The noise of a series: isolated spikes taken out, and the lag-one autocorrelation of what
//! remains, estimated so that steps, spikes and a trend hardly move it.
//!
//! Invariants: [`despike`] returns a series as long as its input that differs only at points
//! far (more than [`SPIKE_SCALES`] noise scales) from the median of their neighbourhood, so a
//! step, whose neighbourhood medians follow it, is never changed; [`ar1`] returns a value in
//! `[0, MAX_AR]`, 0 for series too short to tell.

use crate::stats::median;

/// Points on each side of the neighbourhood whose median a spike is compared with: runs of up
/// to this many outlying points are spikes, longer ones are left to the persistence rule.
const SPIKE_HALF_WIDTH: usize = 3;
/// A point is a spike when it is this many noise scales from its neighbourhood's median; the
/// scale is that of first differences over √2, which steps hardly move. Normal noise (AR(1)
/// up to 0.8) crosses 5 scales in fewer than 1 point in 10 000, Student-t(3) noise in 0.8%.
pub(super) const SPIKE_SCALES: f64 = 5.0;
/// Largest autocorrelation used: beyond it the noise is close to a random walk, whose
/// whitening would leave a step as a single spike.
pub(super) const MAX_AR: f64 = 0.95;
/// Shorter series are tested as if their noise were white: below ~60 points the estimate's
/// error (±0.15 and more) would whiten away real steps as often as it helps.
const MIN_AR_POINTS: usize = 60;
/// Estimates below `AR_FLOOR / √m` count as 0 (see [`ar1`]).
const AR_FLOOR: f64 = 1.9;
/// Longest lag whose differences enter the autocorrelation estimate.
const MAX_LAG: usize = 5;
/// Share of the largest squared differences left out at each lag (steps and spikes).
const TRIM: f64 = 0.2;

/// The series with isolated spikes replaced by the median of their neighbourhood (a Hampel
/// filter), and which points were replaced: the median of `2 · SPIKE_HALF_WIDTH + 1` points
/// follows a step, so only short excursions are replaced.
pub(super) fn despike(x: &[f64]) -> (Vec<f64>, Vec<bool>) {
    let n = x.len();
    let local: Vec<f64> = (0..n)
        .map(|i| {
            let lo = i.saturating_sub(SPIKE_HALF_WIDTH);
            let hi = (i + SPIKE_HALF_WIDTH + 1).min(n);
            median(&x[lo..hi]).unwrap_or(x[i])
        })
        .collect();
    let residual: Vec<f64> = x.iter().zip(&local).map(|(v, m)| (v - m).abs()).collect();
    let diffs: Vec<f64> = x.windows(2).map(|w| w[1] - w[0]).collect();
    let centre = median(&diffs).unwrap_or(0.0);
    let spread: Vec<f64> = diffs.iter().map(|d| (d - centre).abs()).collect();
    let Some(scale) = robust_scale(&spread).map(|s| s / std::f64::consts::SQRT_2) else {
        return (x.to_vec(), vec![false; n]);
    };
    let replaced: Vec<bool> = residual.iter().map(|r| *r > SPIKE_SCALES * scale).collect();
    let clean = x
        .iter()
        .zip(&local)
        .zip(&replaced)
        .map(|((&v, &m), &r)| if r { m } else { v })
        .collect();
    (clean, replaced)
}

/// A normal-consistent scale of absolute deviations: 1.4826 × their median, or 1.2533 × their
/// mean where more than half are zero (counts, rounded values); `None` when all are zero.
fn robust_scale(abs_residuals: &[f64]) -> Option<f64> {
    let mad = 1.4826 * median(abs_residuals)?;
    if mad > 0.0 {
        return Some(mad);
    }
    let mean = abs_residuals.iter().sum::<f64>() / abs_residuals.len() as f64;
    (mean > 0.0).then_some(1.2533 * mean)
}

/// The lag-one autocorrelation of the noise, from the variances of its differences at lags
/// 1..=`MAX_LAG`: for AR(1) noise `Var(x[t+k] − x[t]) = 2σ²(1 − φ^k)`. Differences hardly see
/// a step (it enters `k` of them) or a trend (a constant, removed with their median), and
/// each lag's variance is a mean of squares without its largest `TRIM` (so spikes and steps
/// do not count); `φ` is fitted to the log variances on a grid. This generalises the two-lag
/// estimator of Chakar, Lebarbier, Lévy-Leduc and Robin (2017, Bernoulli 23) and is about
/// three times as precise at 1000 points.
///
/// Only differences within the segments that start at `starts` enter (with the changes of a
/// first segmentation there, a step cannot pose as persistence), and none that involves a
/// point in `skip` (a replaced spike is close to its neighbours, so its differences would
/// pose as persistence too).
///
/// Series shorter than [`MIN_AR_POINTS`] get 0, and so does an estimate below
/// [`AR_FLOOR`]`/√m` (`m` differences at lag one): its standard deviation when the noise is
/// white is about `0.8/√m`, so smaller estimates are not told from noise at 1% (one-sided),
/// and whitening with them would only cost power.
pub(super) fn ar1(x: &[f64], starts: &[usize], skip: &[bool]) -> f64 {
    let lags = MAX_LAG.min(x.len() / 4);
    if lags < 2 || x.len() < MIN_AR_POINTS {
        return 0.0;
    }
    let mut ends: Vec<usize> = starts.iter().skip(1).copied().collect();
    ends.push(x.len());
    let mut log_var = Vec::with_capacity(lags);
    let mut pairs = 0;
    for k in 1..=lags {
        let diffs: Vec<f64> = starts
            .iter()
            .zip(&ends)
            .flat_map(|(&a, &b)| (a..b.saturating_sub(k)).map(move |t| (t, t + k)))
            .filter(|&(t, u)| !skip[t] && !skip[u])
            .map(|(t, u)| x[u] - x[t])
            .collect();
        if diffs.len() < 2 * MAX_LAG {
            break;
        }
        if k == 1 {
            pairs = diffs.len();
        }
        match trimmed_variance(&diffs) {
            Some(v) if v > 0.0 => log_var.push(v.ln()),
            _ => return 0.0,
        }
    }
    let lags = log_var.len();
    if lags < 2 {
        return 0.0;
    }
    let mut best = (0.0, f64::INFINITY);
    for step in 0..=(MAX_AR * 200.0).round() as usize {
        let phi = step as f64 / 200.0;
        let shape: Vec<f64> = (1..=lags)
            .map(|k| (1.0 - phi.powi(k as i32)).max(1e-12).ln())
            .collect();
        let offset = log_var.iter().zip(&shape).map(|(v, s)| v - s).sum::<f64>() / lags as f64;
        let misfit: f64 = log_var
            .iter()
            .zip(&shape)
            .map(|(v, s)| (v - s - offset).powi(2))
            .sum();
        if misfit < best.1 {
            best = (phi, misfit);
        }
    }
    if best.0 < AR_FLOOR / (pairs.max(1) as f64).sqrt() {
        0.0
    } else {
        best.0
    }
}

/// Mean square around the median, leaving out the largest `TRIM` of the squares.
fn trimmed_variance(d: &[f64]) -> Option<f64> {
    let m = median(d)?;
    let mut sq: Vec<f64> = d.iter().map(|v| (v - m).powi(2)).collect();
    sq.sort_by(f64::total_cmp);
    let keep = ((sq.len() as f64) * (1.0 - TRIM)).ceil() as usize;
    let kept = &sq[..keep.clamp(1, sq.len())];
    Some(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// `x[t] − φ·x[t−1]`, with the first point scaled by `1 − φ` so that every point of a flat
/// segment has the same mean: for AR(1) noise of coefficient `φ` the result is white.
pub(super) fn whiten(x: &[f64], phi: f64) -> Vec<f64> {
    let mut w = Vec::with_capacity(x.len());
    if let Some(&first) = x.first() {
        w.push((1.0 - phi) * first);
    }
    w.extend(x.windows(2).map(|p| p[1] - phi * p[0]));
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn ar(rng: &mut Rng, n: usize, phi: f64) -> Vec<f64> {
        let mut x = vec![rng.normal()];
        for _ in 1..n {
            let last = x[x.len() - 1];
            x.push(phi * last + (1.0 - phi * phi).sqrt() * rng.normal());
        }
        x
    }

    #[test]
    fn ar1_estimate_is_close_and_steps_and_trends_hardly_move_it() {
        let mut rng = Rng::new(5);
        for phi in [0.0, 0.3, 0.6, 0.8] {
            let x = ar(&mut rng, 2000, phi);
            let none = vec![false; x.len()];
            assert!((ar1(&x, &[0], &none) - phi).abs() < 0.08, "{phi}");
            // A trend and steps the first segmentation found.
            let moved: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(t, v)| v + 0.01 * t as f64 + if t >= 700 { 8.0 } else { 0.0 })
                .collect();
            assert!((ar1(&moved, &[0, 700], &none) - phi).abs() < 0.08, "{phi}");
        }
        let short = ar(&mut rng, 40, 0.8);
        assert_eq!(ar1(&short, &[0], &[false; 40]), 0.0);
    }

    #[test]
    fn despike_replaces_spikes_but_keeps_steps() {
        let mut rng = Rng::new(6);
        let mut x: Vec<f64> = (0..100)
            .map(|t| if t < 50 { 0.0 } else { 1.0 } + 0.01 * rng.normal())
            .collect();
        x[20] += 0.5;
        x[70] -= 0.5;
        let (clean, replaced) = despike(&x);
        assert_eq!(
            replaced.iter().positions(),
            vec![20, 70],
            "{:?}",
            replaced.iter().positions()
        );
        assert!(clean[20].abs() < 0.05 && (clean[70] - 1.0).abs() < 0.05);
        assert_eq!(&clean[45..55], &x[45..55]);
        let (flat, none) = despike(&[3.0; 10]);
        assert_eq!(flat, vec![3.0; 10]);
        assert!(none.iter().all(|r| !r));
    }

    trait Positions {
        fn positions(self) -> Vec<usize>;
    }

    impl<'a, I: Iterator<Item = &'a bool>> Positions for I {
        fn positions(self) -> Vec<usize> {
            self.enumerate()
                .filter(|(_, r)| **r)
                .map(|(i, _)| i)
                .collect()
        }
    }

    #[test]
    fn whitening_an_ar_series_leaves_white_noise() {
        let mut rng = Rng::new(7);
        let x = ar(&mut rng, 5000, 0.7);
        let w = whiten(&x, 0.7);
        let m = w.iter().sum::<f64>() / w.len() as f64;
        let var = w.iter().map(|v| (v - m).powi(2)).sum::<f64>();
        let lag1 = w.windows(2).map(|p| (p[0] - m) * (p[1] - m)).sum::<f64>();
        assert!((lag1 / var).abs() < 0.05, "{}", lag1 / var);
    }
}
