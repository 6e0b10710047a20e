//! The one place the evaluation calls the change-point detector.

use profwatch_analyzer::changepoint::{detect, detect_timed, ChangepointConfig, Detection};

/// A reported drift: average slope per point and its interval (%).
#[derive(Debug, Clone, Copy)]
pub struct DriftOut {
    pub slope_pct: f64,
    pub low_pct: f64,
    pub high_pct: f64,
}

/// What the detector reported on one series.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub changes: Vec<usize>,
    /// Each change's index and size (%).
    pub details: Vec<(usize, f64)>,
    pub drift: Option<DriftOut>,
}

/// Runs the detector; `times` are unix seconds.
pub fn run(values: &[f64], times: Option<&[f64]>, cfg: &ChangepointConfig) -> Outcome {
    let found = match times {
        Some(t) => detect_timed(values, t, cfg),
        None => detect(values, cfg),
    };
    outcome(found.unwrap_or_default())
}

/// Runs the detector with a seasonal period in points.
pub fn run_periodic(values: &[f64], period: Option<usize>, cfg: &ChangepointConfig) -> Outcome {
    let cfg = ChangepointConfig {
        period,
        ..cfg.clone()
    };
    outcome(detect(values, &cfg).unwrap_or_default())
}

fn outcome(d: Detection) -> Outcome {
    Outcome {
        changes: d.changes.iter().map(|c| c.index).collect(),
        details: d.changes.iter().map(|c| (c.index, c.change_pct)).collect(),
        drift: d.drift.map(|d| DriftOut {
            slope_pct: d.slope_pct,
            low_pct: d.slope_low_pct,
            high_pct: d.slope_high_pct,
        }),
    }
}
