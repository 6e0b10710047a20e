//! Small statistical building blocks shared by the compare and the change-point detector.
//!
//! Invariants: inputs are finite (callers filter NaN and infinities first); weights are > 0;
//! functions on empty input return `None` rather than panicking.

use statrs::distribution::{ContinuousCDF, Normal};

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

/// The standard normal quantile.
pub fn normal_quantile(p: f64) -> f64 {
    Normal::standard().inverse_cdf(p)
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
}
