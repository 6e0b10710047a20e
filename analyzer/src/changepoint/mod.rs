//! Change points in a series: steps (lasting level shifts) told apart from a drift, from
//! autocorrelated noise, from a daily cycle and from spikes.
//!
//! The series is modelled as `level[segment] + drift(t) + season(phase) + noise`, the noise
//! AR(1) with occasional spikes, on the log scale when every value is positive (effects are
//! multiplicative), else as it is. In order:
//!
//! 1. Season ([`season`]): a daily profile (timestamped series spanning at least 3 days) or a
//!    profile of `period` points, estimated robustly and removed when a Friedman test finds it.
//! 2. Spikes ([`noise::despike`]): points far from the median of their 7-point neighbourhood are
//!    replaced by it for the least-squares fits; the rank tests see the series as it is (a
//!    spike is one rank), and a spike is never a change.
//! 3. Autocorrelation ([`noise::ar1`]): the lag-one coefficient `φ` of the noise from the
//!    variances of differences within the segments of a first segmentation with `φ = 0`, so
//!    steps, spikes and trends hardly move it; 0 below 60 points or when not significant.
//! 4. Steps ([`segment`]): binary segmentation with a permutation test of a rank statistic on
//!    the whitened series (`x[t] − φ·x[t−1]`): under AR(1) noise the permutations stay valid.
//! 5. Drift ([`drift`], [`model`]): from 60 points, a line or a slowly bending spline shared by
//!    all segments, fitted under AR(1) noise with the segment levels and chosen by BIC against
//!    none; steps are sought again in the series minus the drift and the drift refitted, from
//!    two starts, and BIC (a step costing 3 parameters) picks the model among the rounds. A
//!    steady trend thus ends as one drift and no steps: the first round's staircase scores
//!    worse than the line, and the series without the line has no step.
//! 6. Magnitude: the levels on both sides of a change (segment medians net of drift and season,
//!    placed at the change) must differ by at least `min_change`; the smallest offending
//!    change is merged away first. A drift is reported when its average slope's 95% interval
//!    excludes zero and it moves the level by at least `min_change` over the series.
//!
//! Persistence: a change needs `min_segment` points after it, so a change near the end is not
//! reported until enough points confirm it; a transient shorter than that is never reported,
//! and re-running as points arrive drops a candidate whose level went back.
//!
//! Invariants: input values are finite (checked); output change indices are strictly
//! increasing, each at least `min_segment` from the previous change and from both ends; in a
//! grouped series a change index is always the first row of a group; the same input and
//! config give the same output (seeded permutations); multiplying a positive series by a
//! constant changes no index.

mod drift;
mod model;
mod noise;
mod season;
mod segment;
#[cfg(test)]
mod tests;

use serde::Serialize;

use crate::error::AnalyzerError;
use crate::stats::median;

/// Confidence of the drift's slope interval.
const DRIFT_CONFIDENCE: f64 = 0.95;

/// Settings of the detector. Defaults are justified in `analyzer/README.md`.
#[derive(Debug, Clone)]
pub struct ChangepointConfig {
    /// Fewest points (snapshots when grouped) on each side of a change.
    pub min_segment: usize,
    /// Largest permutation p-value of a split that is kept.
    pub alpha: f64,
    /// Permutations per tested segment.
    pub permutations: usize,
    /// Smallest relative difference between the levels of adjacent segments (0.02 = 2%), and
    /// smallest total drift reported.
    pub min_change: f64,
    pub seed: u64,
    /// A seasonal cycle of this many points (12 for monthly data with a yearly cycle); without
    /// it, timestamped series get a daily cycle.
    pub period: Option<usize>,
}

impl Default for ChangepointConfig {
    fn default() -> Self {
        ChangepointConfig {
            min_segment: 5,
            alpha: 0.01,
            permutations: 999,
            min_change: 0.02,
            seed: 0x00C4_A96E,
            period: None,
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
        if self.period.is_some_and(|p| p < 2) {
            return bad("period", "must be at least 2 points");
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
    /// The level before the change: the median of the segment before it, net of the drift and
    /// the seasonal profile, put at the change (the segment's median when there are none).
    pub before: f64,
    /// The level after the change, likewise.
    pub after: f64,
    /// `(after - before) / |before| * 100`.
    pub change_pct: f64,
    /// Permutation p-value of the split when it was found.
    pub p_value: f64,
}

/// A steady change of the level that is not a step: reported once for the whole series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    /// First and last point (row) of the drift.
    pub start: usize,
    pub end: usize,
    /// Average change of the level per point (%), and its 95% interval.
    pub slope_pct: f64,
    pub slope_low_pct: f64,
    pub slope_high_pct: f64,
    /// Change of the level from `start` to `end` (%), steps excluded.
    pub total_pct: f64,
}

/// A seasonal profile that was removed before changes were sought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Seasonality {
    /// By hour of day (UTC), from the timestamps.
    Daily,
    /// By position in a cycle of `points`.
    Period { points: usize },
}

/// What the detector found in a series.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Detection {
    pub changes: Vec<ChangePoint>,
    pub drift: Option<Drift>,
    /// The noise's lag-one autocorrelation that the tests allowed for.
    pub autocorrelation: f64,
    pub seasonality: Option<Seasonality>,
}

/// Detects changes and drift in `values` (no timestamps: no daily cycle).
pub fn detect(values: &[f64], cfg: &ChangepointConfig) -> Result<Detection, AnalyzerError> {
    analyse(values, None, cfg)
}

/// Detects changes and drift in `values` taken at `times` (unix seconds, non-decreasing); a
/// daily cycle is removed when the series spans at least 3 days and the cycle is significant.
pub fn detect_timed(
    values: &[f64],
    times: &[f64],
    cfg: &ChangepointConfig,
) -> Result<Detection, AnalyzerError> {
    if times.len() != values.len() {
        return Err(AnalyzerError::InvalidConfig {
            field: "times",
            reason: format!("{} timestamps for {} values", times.len(), values.len()),
        });
    }
    analyse(values, Some(times), cfg)
}

/// Detects changes in a series whose consecutive rows with equal `groups` keys are one snapshot
/// (for example the runs of one build): each snapshot is its median, a change is reported at
/// the first row of its snapshot, and a drift spans the first to the last row. `groups` must
/// be as long as `values`.
pub fn detect_grouped<K: PartialEq>(
    values: &[f64],
    groups: &[K],
    cfg: &ChangepointConfig,
) -> Result<Detection, AnalyzerError> {
    if groups.len() != values.len() {
        return Err(AnalyzerError::InvalidConfig {
            field: "groups",
            reason: format!("{} group keys for {} values", groups.len(), values.len()),
        });
    }
    check_finite(values)?;
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
    let mut found = detect(&snapshot, cfg)?;
    for c in &mut found.changes {
        c.index = starts[c.index];
    }
    if let Some(d) = &mut found.drift {
        d.start = 0;
        d.end = values.len() - 1;
    }
    Ok(found)
}

fn check_finite(values: &[f64]) -> Result<(), AnalyzerError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(AnalyzerError::NotFinite {
            line: i + 1,
            column: "value".to_owned(),
            value: values[i].to_string(),
        }),
        None => Ok(()),
    }
}

/// The scale the model works on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scale {
    /// Natural log: every value is positive.
    Log,
    /// The values as they are.
    Raw,
}

impl Scale {
    fn to_value(self, w: f64) -> f64 {
        match self {
            Scale::Log => w.exp(),
            Scale::Raw => w,
        }
    }
}

fn analyse(
    values: &[f64],
    times: Option<&[f64]>,
    cfg: &ChangepointConfig,
) -> Result<Detection, AnalyzerError> {
    cfg.validate()?;
    check_finite(values)?;
    if values.len() < cfg.min_points() {
        return Err(AnalyzerError::TooFewRows {
            rows: values.len(),
            min: cfg.min_points(),
        });
    }
    let scale = if values.iter().all(|v| *v > 0.0) {
        Scale::Log
    } else {
        Scale::Raw
    };
    let z: Vec<f64> = match scale {
        Scale::Log => values.iter().map(|v| v.ln()).collect(),
        Scale::Raw => values.to_vec(),
    };
    let seasonal = season::profile(&z, times, cfg.period);
    let adjusted: Vec<f64> = match &seasonal {
        Some((_, p)) => z.iter().zip(p).map(|(v, s)| v - s).collect(),
        None => z.clone(),
    };
    let (clean, replaced) = noise::despike(&adjusted);
    let first = model::starts(&segment::segment(&adjusted, 0.0, cfg));
    let phi = noise::ar1(&clean, &first, &replaced);
    let series = model::Series {
        raw: &adjusted,
        clean: &clean,
        phi,
        cfg,
        scale,
    };
    let (found, fit) = series.search();
    let curve: Vec<f64> = fit
        .as_ref()
        .map_or_else(|| vec![0.0; z.len()], |f| f.curve.clone());
    let net: Vec<f64> = adjusted.iter().zip(&curve).map(|(v, g)| v - g).collect();
    let changes = prune(&net, &curve, found, cfg.min_change, scale)
        .into_iter()
        .map(|(index, p_value, before, after)| ChangePoint {
            index,
            before,
            after,
            change_pct: relative(before, after) * 100.0,
            p_value,
        })
        .collect();
    let drift = fit.and_then(|f| report_drift(&f, scale, &z, cfg.min_change));
    Ok(Detection {
        changes,
        drift,
        autocorrelation: phi,
        seasonality: seasonal.map(|s| s.0),
    })
}

fn relative(before: f64, after: f64) -> f64 {
    let base = if before != 0.0 {
        before.abs()
    } else {
        after.abs().max(f64::MIN_POSITIVE)
    };
    (after - before) / base
}

/// A change kept by [`prune`]: index, p-value, and the levels before and after it.
type Kept = (usize, f64, f64, f64);

/// Drops changes whose adjacent levels differ by less than `min_change`, smallest first, and
/// fills in the levels: each segment's median of `net` (the series net of drift and season),
/// plus the drift at the change.
fn prune(
    net: &[f64],
    curve: &[f64],
    mut found: Vec<(usize, f64)>,
    min_change: f64,
    scale: Scale,
) -> Vec<Kept> {
    loop {
        let mut bounds = vec![0];
        bounds.extend(found.iter().map(|f| f.0));
        bounds.push(net.len());
        let medians: Vec<f64> = bounds
            .windows(2)
            .map(|w| median(&net[w[0]..w[1]]).unwrap_or(0.0))
            .collect();
        let levels: Vec<(f64, f64)> = found
            .iter()
            .enumerate()
            .map(|(k, &(at, _))| {
                let g = curve[at];
                (
                    scale.to_value(medians[k] + g),
                    scale.to_value(medians[k + 1] + g),
                )
            })
            .collect();
        let weakest = levels
            .iter()
            .enumerate()
            .map(|(k, &(b, a))| (k, relative(b, a).abs()))
            .filter(|&(_, size)| size < min_change)
            .min_by(|a, b| a.1.total_cmp(&b.1));
        match weakest {
            Some((k, _)) => {
                found.remove(k);
            }
            None => {
                return found
                    .iter()
                    .zip(levels)
                    .map(|(&(index, p), (before, after))| (index, p, before, after))
                    .collect();
            }
        }
    }
}

/// The drift as reported, if its slope's interval excludes zero and its total reaches
/// `min_change`; percentages are relative to the level (on the raw scale, to the median).
fn report_drift(fit: &drift::DriftFit, scale: Scale, z: &[f64], min_change: f64) -> Option<Drift> {
    let n = fit.curve.len();
    let (low, high) = fit.slope_interval(DRIFT_CONFIDENCE);
    if low <= 0.0 && high >= 0.0 {
        return None;
    }
    let pct: Box<dyn Fn(f64) -> f64> = match scale {
        Scale::Log => Box::new(|w: f64| 100.0 * w.exp_m1()),
        Scale::Raw => {
            let base = median(z)?.abs();
            if base == 0.0 {
                return None;
            }
            Box::new(move |w: f64| 100.0 * w / base)
        }
    };
    let total_pct = pct(fit.curve[n - 1] - fit.curve[0]);
    if total_pct.abs() < 100.0 * min_change {
        return None;
    }
    Some(Drift {
        start: 0,
        end: n - 1,
        slope_pct: pct(fit.slope),
        slope_low_pct: pct(low),
        slope_high_pct: pct(high),
        total_pct,
    })
}
