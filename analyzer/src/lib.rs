//! Regression detection for profwatch (issue #5): the snapshot compare of two builds per
//! endpoint ([`compare`]), change points in a series ([`changepoint`]) and the
//! `profwatch changepoints` command over a CSV file ([`changepoints_cmd`]).
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
pub mod report;
pub mod rng;
pub mod sim;
pub mod stats;

pub use changepoint::{
    detect, detect_grouped, detect_timed, ChangePoint, ChangepointConfig, Detection, Drift,
    Seasonality,
};
pub use changepoints_cmd::{run_changepoints, ChangepointsArgs, OutputFormat};
pub use compare::{
    choose_builds, compare_all, compare_all_on, BuildTraffic, ClusterBy, CompareConfig, Comparison,
    EndpointSamples, Metric, Sample, Verdict,
};
pub use error::AnalyzerError;
