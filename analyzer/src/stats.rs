//! Small statistical building blocks shared by the compare and the change-point detector.
//!
//! Invariants: inputs are finite (callers filter NaN and infinities first); weights are > 0;
//! functions on empty input return `None` rather than panicking.

use statrs::distribution::{ContinuousCDF, Normal};
use statrs::function::gamma::ln_gamma;

use crate::rng::Rng;

/// Up to this many counts the share test sums binomial terms exactly.
const EXACT_COUNTS: u64 = 2_000;

/// The weighted `q`-quantile of `(value, weight)` pairs sorted by value (lower quantile:
/// the first value whose cumulative weight reaches `q` of the total).
pub fn weighted_quantile_sorted(sorted: &[(f64, f64)], q: f64) -> Option<f64> {
    let total: f64 = sorted.iter().map(|p| p.1).sum();
    if sorted.is_empty() || total <= 0.0 {
        return None;
    }
    let target = q.clamp(0.0, 1.0) * total;
    let mut acc = 0.0;
    for &(v, w) in sorted {
        acc += w;
        if acc >= target {
            return Some(v);
        }
    }
    sorted.last().map(|p| p.0)
}

/// The weighted mean of the middle `1 - 2 * trim` of the weight of `(value, weight)` pairs
/// sorted by value; fractional weights at the cut points keep it continuous.
pub fn weighted_trimmed_mean_sorted(sorted: &[(f64, f64)], trim: f64) -> Option<f64> {
    let total: f64 = sorted.iter().map(|p| p.1).sum();
    if sorted.is_empty() || total <= 0.0 {
        return None;
    }
    let lo = trim.clamp(0.0, 0.49) * total;
    let hi = total - lo;
    let (mut acc, mut sum, mut kept) = (0.0, 0.0, 0.0);
    for &(v, w) in sorted {
        let start = acc;
        acc += w;
        let part = acc.min(hi) - start.max(lo);
        if part > 0.0 {
            sum += v * part;
            kept += part;
        }
    }
    if kept > 0.0 {
        Some(sum / kept)
    } else {
        weighted_quantile_sorted(sorted, 0.5)
    }
}

/// Sorts pairs by value (values are finite, so the order is total).
pub fn sort_pairs(pairs: &mut [(f64, f64)]) {
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// Benjamini-Hochberg adjusted p-values (q-values), in the order of `p`.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for rank in (0..m).rev() {
        let i = order[rank];
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// The standard normal upper tail, `P(Z > z)`.
pub fn normal_sf(z: f64) -> f64 {
    Normal::standard().sf(z)
}

/// The standard normal quantile.
pub fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
}

/// `P(X >= k)` for `X ~ Binomial(n, p)`, summing the terms from `k` up.
pub fn binomial_upper_tail(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (nf, kf) = (n as f64, k as f64);
    let log_first = ln_gamma(nf + 1.0) - ln_gamma(kf + 1.0) - ln_gamma(nf - kf + 1.0)
        + kf * p.ln()
        + (nf - kf) * (-p).ln_1p();
    let odds = p / (1.0 - p);
    let mut term = log_first.exp();
    let mut sum = 0.0;
    for j in k..=n {
        sum += term;
        let next = term * (n - j) as f64 / (j + 1) as f64 * odds;
        if next < term && next < sum * 1e-17 {
            break;
        }
        term = next;
    }
    sum.min(1.0)
}

/// One-sided p-value that a count's share of its snapshot rose from `count_a` of `total_a`
/// samples to `count_b` of `total_b`. Given `count_a + count_b`, the second part is
/// binomial with probability `total_b / (total_a + total_b)` when the share did not change
/// (samples are Poisson counts); summed exactly up to 2000 counts, else the normal
/// approximation with Fisher's exact test's (hypergeometric) variance. 1 when a total is 0.
pub fn share_rise_p(count_a: u64, total_a: u64, count_b: u64, total_b: u64) -> f64 {
    if count_b == 0 || total_a == 0 || total_b == 0 {
        return 1.0;
    }
    let m = count_a.saturating_add(count_b);
    let n = total_a.saturating_add(total_b) as f64;
    let pi = total_b as f64 / n;
    if m <= EXACT_COUNTS {
        return binomial_upper_tail(count_b, m, pi);
    }
    let mf = m as f64;
    let var = mf * pi * (1.0 - pi) * ((n - mf) / (n - 1.0)).max(0.0);
    if !(var > 0.0 && var.is_finite()) {
        return 1.0;
    }
    normal_sf((count_b as f64 - 0.5 - mf * pi) / var.sqrt())
}

/// The median of a slice of finite values (sorts a copy).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    })
}

/// Average ranks (1-based) of finite values, ties sharing their mean rank.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
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

/// A Poisson count of mean `lambda` (0 for a mean that is not finite and `> 0`):
/// multiplication of uniforms below a mean of 10, else Hörmann's transformed rejection
/// (PTRS), exact for every mean.
pub fn poisson(rng: &mut Rng, lambda: f64) -> u64 {
    if !(lambda.is_finite() && lambda > 0.0) {
        return 0;
    }
    if lambda < 10.0 {
        let limit = (-lambda).exp();
        let (mut k, mut p) = (0u64, rng.uniform());
        while p > limit {
            k += 1;
            p *= rng.uniform();
        }
        return k;
    }
    let (slam, loglam) = (lambda.sqrt(), lambda.ln());
    let b = 0.931 + 2.53 * slam;
    let a = -0.059 + 0.02483 * b;
    let inv_alpha = 1.1239 + 1.1328 / (b - 3.4);
    let vr = 0.9277 - 3.6224 / (b - 2.0);
    loop {
        let u = rng.uniform() - 0.5;
        let v = rng.uniform();
        let us = 0.5 - u.abs();
        let k = ((2.0 * a / us + b) * u + lambda + 0.43).floor();
        if us >= 0.07 && v <= vr {
            return k as u64;
        }
        if k < 0.0 || (us < 0.013 && v > us) {
            continue;
        }
        if v.ln() + inv_alpha.ln() - (a / (us * us) + b).ln()
            <= -lambda + k * loglam - ln_gamma(k + 1.0)
        {
            return k as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bh_textbook_example() {
        // Ten p-values adjusted by hand: sorted p_(k) * m / k, then the running minimum from the top.
        let p = [0.01, 0.04, 0.03, 0.005, 0.20, 0.50, 0.02, 0.70, 0.04, 0.90];
        let q = benjamini_hochberg(&p);
        let expected = [
            0.05, 0.0666667, 0.0666667, 0.05, 0.2857143, 0.625, 0.0666667, 0.7777778, 0.0666667,
            0.9,
        ];
        for (a, b) in q.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{q:?}");
        }
        assert!(benjamini_hochberg(&[]).is_empty());
    }

    #[test]
    fn binomial_tails_match_hand_sums() {
        // Binomial(10, 0.5): P(X >= 8) = (45 + 10 + 1) / 1024.
        assert!((binomial_upper_tail(8, 10, 0.5) - 56.0 / 1024.0).abs() < 1e-12);
        // Binomial(5, 0.2): P(X >= 1) = 1 - 0.8^5.
        assert!((binomial_upper_tail(1, 5, 0.2) - (1.0 - 0.8f64.powi(5))).abs() < 1e-12);
        assert_eq!(binomial_upper_tail(0, 5, 0.2), 1.0);
        assert_eq!(binomial_upper_tail(6, 5, 0.2), 0.0);
        assert!(binomial_upper_tail(1_000, 1_000, 0.5) > 0.0);
    }

    #[test]
    fn share_test_is_calibrated_and_continuous_at_the_switch() {
        // Equal shares: p near 1/2 either way; all samples in b: 0.5^m.
        assert!((share_rise_p(10, 1000, 10, 1000) - 0.588).abs() < 0.01);
        assert!((share_rise_p(0, 1000, 10, 1000) - 0.5f64.powi(10)).abs() < 1e-9);
        assert_eq!(share_rise_p(5, 1000, 0, 1000), 1.0);
        assert_eq!(share_rise_p(5, 0, 5, 1000), 1.0);
        // A clear rise at large counts, and the exact and normal branches agree at the switch.
        assert!(share_rise_p(50_000, 200_000, 52_000, 200_000) < 1e-8);
        let exact = share_rise_p(950, 400_000, 1050, 400_000);
        let normal = share_rise_p(951, 400_000, 1051, 400_000);
        assert!((exact / normal - 1.0).abs() < 0.1, "{exact} {normal}");
        // Every sample in the function in both snapshots: no rise possible.
        assert_eq!(share_rise_p(3_000, 3_000, 4_000, 4_000), 1.0);
    }

    #[test]
    fn quantiles_and_trimmed_mean() {
        let mut v: Vec<(f64, f64)> = [5.0, 1.0, 3.0, 2.0, 4.0]
            .iter()
            .map(|&x| (x, 1.0))
            .collect();
        sort_pairs(&mut v);
        assert_eq!(weighted_quantile_sorted(&v, 0.5), Some(3.0));
        assert_eq!(weighted_trimmed_mean_sorted(&v, 0.2), Some(3.0));
        v.push((1000.0, 1.0));
        sort_pairs(&mut v);
        let t = weighted_trimmed_mean_sorted(&v, 0.2).unwrap_or(f64::NAN);
        assert!((t - 3.5).abs() < 1e-9, "{t}");
        assert_eq!(weighted_quantile_sorted(&[], 0.5), None);
        assert_eq!(weighted_trimmed_mean_sorted(&[], 0.2), None);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }

    #[test]
    fn ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
        assert!(average_ranks(&[]).is_empty());
    }

    #[test]
    fn poisson_mean_and_variance() {
        let mut r = Rng::new(3);
        for lambda in [0.3, 4.0, 10.0, 37.5, 2_000.0] {
            let n = 40_000;
            let draws: Vec<f64> = (0..n).map(|_| poisson(&mut r, lambda) as f64).collect();
            let m = draws.iter().sum::<f64>() / n as f64;
            let v = draws.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
            // Five standard errors of the mean and (roughly) of the variance.
            assert!(
                (m - lambda).abs() < 5.0 * (lambda / n as f64).sqrt(),
                "{lambda}: {m}"
            );
            assert!((v / lambda - 1.0).abs() < 0.05, "{lambda}: {v}");
        }
        assert_eq!(poisson(&mut r, 0.0), 0);
        assert_eq!(poisson(&mut r, f64::NAN), 0);
        assert_eq!(poisson(&mut r, -1.0), 0);
    }
}
