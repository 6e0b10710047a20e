//! The one place the evaluation calls the change-point detector.

use profwatch_analyzer::changepoint::{detect, ChangepointConfig};

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
pub fn run(values: &[f64], _times: Option<&[f64]>, cfg: &ChangepointConfig) -> Outcome {
    let found = detect(values, cfg).unwrap_or_default();
    Outcome {
        changes: found.iter().map(|c| c.index).collect(),
        details: found.iter().map(|c| (c.index, c.change_pct)).collect(),
        drift: None,
    }
}

/// Runs the detector with a seasonal period in points.
pub fn run_periodic(values: &[f64], _period: Option<usize>, cfg: &ChangepointConfig) -> Outcome {
    run(values, None, cfg)
}
