//! The drift of a series between its steps: a smooth curve shared by all segments, fitted by
//! generalised least squares under AR(1) noise, and chosen by BIC among no drift, a straight
//! line and a cubic spline.
//!
//! Model: `x[t] = level[segment(t)] + g(t) + u[t]`, `u` AR(1) with the given `φ`. Each segment
//! is whitened on its own (`x[t] − φ·x[t−1]`, its first point dropped), so a segment's level
//! becomes a constant that is removed by centring the segment; `g` is then ordinary least
//! squares on the centred, whitened basis. The spline has a knot every ~100 points and is only
//! tried from 200 points (2 knots' worth), so it follows growth that bends slowly over
//! hundreds of points (linear growth on the log scale, exponential growth on the raw scale)
//! but cannot form a step, which the segment levels take; a shorter series bends too little
//! over its length for a line to miss (linear growth of +0.2% per point bends by 0.4% over
//! 120 points), and a cubic over so few points would take steps for a bend.
//!
//! Invariants: a fitted curve has one value per point; the straight line and the spline are
//! only chosen when their BIC beats no drift, with the segment levels in every model.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Shorter series get no drift: over a few dozen points two steps of one sign and a line fit
/// about equally well, and the steps are what a short history (a CI benchmark's) is read for.
pub(super) const MIN_DRIFT_POINTS: usize = 60;
/// Points per knot of the spline.
const KNOT_SPACING: usize = 100;
/// Most interior knots (the curve stays smooth on very long series).
const MAX_KNOTS: usize = 15;
/// Points left out at each end of a segment: a change placed a point or two off, or placed
/// where the noise happened to favour it, would otherwise tilt the segment and pose as drift.
const MARGIN: usize = 2;
/// Fewest whitened rows per drift coefficient for a model to be considered.
const ROWS_PER_COEFFICIENT: usize = 8;

/// The drift chosen for a series.
#[derive(Debug, Clone)]
pub(super) struct DriftFit {
    /// `g(t)` for every point (any constant offset: the levels absorb it).
    pub curve: Vec<f64>,
    /// Average slope per point, `(g(n−1) − g(0)) / (n − 1)`.
    pub slope: f64,
    /// Standard error of `slope`.
    pub slope_se: f64,
    /// Residual degrees of freedom.
    pub df: f64,
}

impl DriftFit {
    /// The two-sided `confidence` interval of the average slope.
    pub fn slope_interval(&self, confidence: f64) -> (f64, f64) {
        let q = StudentsT::new(0.0, 1.0, self.df.max(1.0))
            .map(|t| t.inverse_cdf(0.5 + confidence / 2.0))
            .unwrap_or(1.96);
        (
            self.slope - q * self.slope_se,
            self.slope + q * self.slope_se,
        )
    }
}

/// Which fitted curve [`fit`] returns once BIC prefers some drift to none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Curve {
    /// The model BIC chose (the line or the spline): for reporting.
    Chosen,
    /// The spline (the line below 200 points): for taking the drift out while steps are still
    /// sought. Steps found in a
    /// series with bending growth form a staircase that, with a line, fits about as well as
    /// the spline alone, so BIC given those steps would keep the line and the staircase; the
    /// spline takes the bend out and the staircase goes in the next round.
    Flexible,
}

/// Fits the drift of `x` whose segments start at `starts` (the first is 0); `None` when BIC
/// prefers no drift.
pub(super) fn fit(x: &[f64], starts: &[usize], phi: f64, curve: Curve) -> Option<DriftFit> {
    fit_scored(x, starts, phi, curve).1
}

/// [`fit`] and the BIC of the model BIC chose (levels not counted), with the log likelihood
/// scaled to all `n` points so that models with different segments compare.
pub(super) fn fit_scored(
    x: &[f64],
    starts: &[usize],
    phi: f64,
    curve: Curve,
) -> (f64, Option<DriftFit>) {
    let n = x.len();
    if n < MIN_DRIFT_POINTS {
        return (f64::INFINITY, None);
    }
    let Some(y) = centred_whitened(&[x.to_vec()], starts, phi).pop() else {
        return (f64::INFINITY, None);
    };
    let rows = y.len() as f64;
    let rss0: f64 = y.iter().map(|v| v * v).sum();
    if n < 3 || rows < 2.0 {
        return (f64::INFINITY, None);
    }
    let points = n as f64;
    let bic = |rss: f64, p: usize| {
        points * (rss.max(f64::MIN_POSITIVE) / rows).ln() + p as f64 * points.ln()
    };
    let none = bic(rss0, 0);
    if rss0 <= 0.0 {
        return (none, None);
    }
    let knots = (n / KNOT_SPACING).saturating_sub(1).min(MAX_KNOTS);
    let mut bases = vec![vec![line(n)]];
    if knots > 0 {
        bases.push(spline(n, knots));
    }
    let fits: Vec<(f64, Vec<Vec<f64>>, Ols)> = bases
        .into_iter()
        .filter(|basis| y.len() >= ROWS_PER_COEFFICIENT * basis.len())
        .filter_map(|basis| {
            let ols = least_squares(&y, &centred_whitened(&basis, starts, phi))?;
            Some((bic(ols.rss, basis.len()), basis, ols))
        })
        .collect();
    let Some(best) = fits
        .iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|f| f.0 < none)
    else {
        return (none, None);
    };
    let (_, basis, ols) = match curve {
        Curve::Chosen => best,
        Curve::Flexible => fits.last().unwrap_or(best),
    };
    let curve: Vec<f64> = (0..n)
        .map(|t| basis.iter().zip(&ols.beta).map(|(col, b)| col[t] * b).sum())
        .collect();
    let span = (n - 1) as f64;
    let contrast: Vec<f64> = basis
        .iter()
        .map(|col| (col[n - 1] - col[0]) / span)
        .collect();
    let df = (rows - (basis.len() + starts.len()) as f64).max(1.0);
    let sigma2 = ols.rss / df;
    let var = quadratic_form(&ols.inverse, &contrast) * sigma2;
    let fit = DriftFit {
        slope: (curve[n - 1] - curve[0]) / span,
        slope_se: var.max(0.0).sqrt(),
        df,
        curve,
    };
    (best.0, Some(fit))
}

/// Each column whitened within each segment and centred within it, leaving out the first
/// point and [`MARGIN`] more at each end; all columns share the rows. Segments too short for
/// 2 rows add none.
fn centred_whitened(columns: &[Vec<f64>], starts: &[usize], phi: f64) -> Vec<Vec<f64>> {
    let n = columns.first().map_or(0, Vec::len);
    let mut ends: Vec<usize> = starts.iter().skip(1).copied().collect();
    ends.push(n);
    columns
        .iter()
        .map(|col| {
            let mut out = Vec::with_capacity(n);
            for (&a, &b) in starts.iter().zip(&ends) {
                let (from, to) = (a + 1 + MARGIN, b.saturating_sub(MARGIN));
                if to < from + 2 {
                    continue;
                }
                let part: Vec<f64> = (from..to).map(|t| col[t] - phi * col[t - 1]).collect();
                let mean = part.iter().sum::<f64>() / part.len() as f64;
                out.extend(part.iter().map(|v| v - mean));
            }
            out
        })
        .collect()
}

/// The straight line `t / (n − 1)`.
fn line(n: usize) -> Vec<f64> {
    let span = (n.max(2) - 1) as f64;
    (0..n).map(|t| t as f64 / span).collect()
}

/// Cubic B-splines on `[0, 1]` with `knots` uniform interior knots, evaluated at
/// `t / (n − 1)`, but the first: they sum to 1, which the levels already span.
fn spline(n: usize, knots: usize) -> Vec<Vec<f64>> {
    let mut columns = all_splines(n, knots);
    columns.remove(0);
    columns
}

/// All cubic B-splines of [`spline`].
fn all_splines(n: usize, knots: usize) -> Vec<Vec<f64>> {
    const DEGREE: usize = 3;
    let mut k: Vec<f64> = vec![0.0; DEGREE + 1];
    k.extend((1..=knots).map(|i| i as f64 / (knots + 1) as f64));
    k.extend(vec![1.0; DEGREE + 1]);
    let count = knots + DEGREE + 1;
    let span = (n.max(2) - 1) as f64;
    let rows: Vec<Vec<f64>> = (0..n)
        .map(|t| bspline_row(&k, t as f64 / span, DEGREE, count))
        .collect();
    (0..count)
        .map(|i| rows.iter().map(|r| r[i]).collect())
        .collect()
}

/// The values of all `count` B-splines of `degree` on knot vector `k` at `u` (Cox-de Boor);
/// at `u = 1` the last one is 1.
fn bspline_row(k: &[f64], u: f64, degree: usize, count: usize) -> Vec<f64> {
    if u >= 1.0 {
        let mut b = vec![0.0; count];
        b[count - 1] = 1.0;
        return b;
    }
    let mut b: Vec<f64> = (0..k.len() - 1)
        .map(|i| if k[i] <= u && u < k[i + 1] { 1.0 } else { 0.0 })
        .collect();
    for d in 1..=degree {
        for i in 0..k.len() - 1 - d {
            let left = if k[i + d] > k[i] {
                (u - k[i]) / (k[i + d] - k[i]) * b[i]
            } else {
                0.0
            };
            let right = if k[i + d + 1] > k[i + 1] {
                (k[i + d + 1] - u) / (k[i + d + 1] - k[i + 1]) * b[i + 1]
            } else {
                0.0
            };
            b[i] = left + right;
        }
    }
    b.truncate(count);
    b
}

/// An ordinary least-squares fit.
struct Ols {
    beta: Vec<f64>,
    /// `(XᵀX)⁻¹`.
    inverse: Vec<Vec<f64>>,
    rss: f64,
}

/// Least squares of `y` on the columns `x` through the normal equations (a few columns).
fn least_squares(y: &[f64], x: &[Vec<f64>]) -> Option<Ols> {
    let p = x.len();
    let mut xtx = vec![vec![0.0; p]; p];
    let mut xty = vec![0.0; p];
    for i in 0..p {
        xty[i] = x[i].iter().zip(y).map(|(a, b)| a * b).sum();
        for j in 0..=i {
            let v: f64 = x[i].iter().zip(&x[j]).map(|(a, b)| a * b).sum();
            xtx[i][j] = v;
            xtx[j][i] = v;
        }
    }
    let inverse = invert_spd(&xtx)?;
    let beta: Vec<f64> = (0..p)
        .map(|i| (0..p).map(|j| inverse[i][j] * xty[j]).sum())
        .collect();
    let rss = (0..y.len())
        .map(|r| {
            let fitted: f64 = (0..p).map(|i| x[i][r] * beta[i]).sum();
            (y[r] - fitted).powi(2)
        })
        .sum();
    Some(Ols { beta, inverse, rss })
}

/// `vᵀ A v`.
fn quadratic_form(a: &[Vec<f64>], v: &[f64]) -> f64 {
    (0..v.len())
        .map(|i| (0..v.len()).map(|j| v[i] * a[i][j] * v[j]).sum::<f64>())
        .sum()
}

/// The inverse of a symmetric positive definite matrix (Cholesky); `None` when it is
/// singular to working precision.
fn invert_spd(a: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let p = a.len();
    let mut l = vec![vec![0.0; p]; p];
    let scale = (0..p).map(|i| a[i][i]).fold(0.0, f64::max);
    for i in 0..p {
        for j in 0..=i {
            let s: f64 = a[i][j] - (0..j).map(|k| l[i][k] * l[j][k]).sum::<f64>();
            if i == j {
                if s <= 1e-10 * scale {
                    return None;
                }
                l[i][i] = s.sqrt();
            } else {
                l[i][j] = s / l[j][j];
            }
        }
    }
    // Column `col` of the inverse solves L Lᵀ x = e_col; the inverse is symmetric, so the
    // columns are also its rows.
    let columns = (0..p)
        .map(|col| {
            let mut z = vec![0.0; p];
            for i in 0..p {
                let rhs = if i == col { 1.0 } else { 0.0 };
                z[i] = (rhs - (0..i).map(|k| l[i][k] * z[k]).sum::<f64>()) / l[i][i];
            }
            let mut x = vec![0.0; p];
            for i in (0..p).rev() {
                x[i] = (z[i] - (i + 1..p).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
            }
            x
        })
        .collect();
    Some(columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn splines_are_a_partition_of_unity() {
        for (n, knots) in [(50, 0), (500, 4), (1000, 9)] {
            let cols = all_splines(n, knots);
            assert_eq!(cols.len(), knots + 4);
            for t in 0..n {
                let sum: f64 = cols.iter().map(|c| c[t]).sum();
                assert!((sum - 1.0).abs() < 1e-12, "{n} {knots} {t}: {sum}");
                assert!(cols.iter().all(|c| c[t] >= -1e-15));
            }
            assert_eq!(spline(n, knots).len(), knots + 3);
        }
    }

    #[test]
    fn inverse_of_a_small_matrix() {
        let a = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        let inv = invert_spd(&a).expect("positive definite");
        // [[3, -2], [-2, 4]] / 8
        assert!((inv[0][0] - 0.375).abs() < 1e-12);
        assert!((inv[0][1] + 0.25).abs() < 1e-12);
        assert!((inv[1][1] - 0.5).abs() < 1e-12);
        assert!(invert_spd(&[vec![1.0, 1.0], vec![1.0, 1.0]]).is_none());
    }

    #[test]
    fn a_line_with_a_step_is_fitted_and_flat_noise_is_not() {
        assert!(fit(&line(MIN_DRIFT_POINTS - 1), &[0], 0.0, Curve::Chosen).is_none());
        let mut rng = Rng::new(11);
        let x: Vec<f64> = (0..200)
            .map(|t| 0.001 * t as f64 + if t >= 120 { 0.1 } else { 0.0 } + 0.005 * rng.normal())
            .collect();
        let drift = fit(&x, &[0, 120], 0.0, Curve::Chosen).expect("a drift");
        let (low, high) = drift.slope_interval(0.95);
        assert!(low < 0.001 && 0.001 < high, "{drift:?}");
        assert!(high - low < 0.0002, "{drift:?}");
        let flat: Vec<f64> = (0..200).map(|_| 0.005 * rng.normal()).collect();
        assert!(fit(&flat, &[0], 0.0, Curve::Chosen).is_none());
    }
}
