//! Regression detection for profwatch.
//!
//! - [`compare`]: the snapshot compare of two builds per endpoint (clustered, stratified tests).
//! - [`changepoint`]: change points and drifts in a series.
//! - [`function_changes`]: change points in per-function series, FDR-controlled across them.
//! - [`attribution`]: which functions explain a change in cost per request.
//! - [`incident`]: regressions of one cause (a build, a moment) grouped, alerted once.
//! - [`alert`]: webhook delivery of regression alerts (generic JSON, Slack, Alertmanager).
//! - [`changepoints_cmd`] and [`csv_series`]: `profwatch changepoints` over a CSV file.
//! - [`report`]: the compare's table as `profwatch compare` prints it.
//! - [`stats`]: the statistical building blocks the others share.
//! - [`error`]: the one error type.
//! - [`rng`]: the seeded generator (`profwatch_model::rng`, re-exported).
//! - `sim` (feature `sim`): synthetic data with known truth, for the tests, the evaluation
//!   program and benchmarks.
//!
//! The methods, their defaults and the measured quality are described in `analyzer/README.md`;
//! `cargo run --release -p profwatch-analyzer --example eval` measures them again.

pub mod alert;
pub mod attribution;
pub mod changepoint;
pub mod changepoints_cmd;
pub mod compare;
pub mod csv_series;
pub mod error;
pub mod function_changes;
pub mod incident;
pub mod report;
pub use profwatch_model::rng;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod stats;

pub use changepoint::{
    detect, detect_grouped, detect_timed, ChangePoint, ChangepointConfig, Detection, Drift,
    Seasonality,
};
pub use changepoints_cmd::{run_changepoints, ChangepointsArgs, OutputFormat};
pub use compare::{
    choose_builds, compare_all, compare_all_par, BuildTraffic, ClusterBy, CompareConfig,
    Comparison, EndpointSamples, Metric, Sample, Verdict,
};
pub use error::AnalyzerError;
