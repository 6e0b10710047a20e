//! `profwatch changepoints`: the change-point detector on any series read from a CSV file.
//!
//! The binary parses flags into [`ChangepointsArgs`] and prints what [`run_changepoints`]
//! returns: the changes, the drift (if any), the noise's autocorrelation and the seasonal
//! profile removed. A time column whose every value is a unix time (s, ms, µs or ns, told
//! apart by magnitude) or an RFC 3339 time gives the detector timestamps, so a daily cycle of
//! a series spanning 3 days or more is taken out. Invariant: bad input is an [`AnalyzerError`]
//! whose message names the line and column to fix; nothing here panics on any file content.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::changepoint::{
    detect, detect_grouped, detect_timed, ChangepointConfig, Detection, Seasonality,
};
use crate::csv_series::read_series;
use crate::error::AnalyzerError;

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A JSON object (see [`Report`]).
    #[default]
    Json,
    /// An aligned text table for people.
    Table,
}

impl std::str::FromStr for OutputFormat {
    type Err = AnalyzerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(OutputFormat::Json),
            "table" => Ok(OutputFormat::Table),
            other => Err(AnalyzerError::UnknownFormat(other.to_owned())),
        }
    }
}

/// The arguments of `profwatch changepoints`.
#[derive(Debug, Clone)]
pub struct ChangepointsArgs {
    /// `--csv FILE`
    pub csv: PathBuf,
    /// `--column NAME`: the numeric series.
    pub column: String,
    /// `--time-column NAME`: copied to the output as is.
    pub time_column: Option<String>,
    /// `--build-column NAME`: consecutive rows of one build are one snapshot.
    pub build_column: Option<String>,
    /// `--format json|table`
    pub format: OutputFormat,
    pub config: ChangepointConfig,
}

/// One change as printed: `index` is the 0-based data row of the first point after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChangeRow {
    pub index: usize,
    /// The time column's value at `index` (a number when it parses as one), else `null`.
    pub time: Option<serde_json::Value>,
    /// The build column's value at `index`, else `null`.
    pub build: Option<String>,
    pub before: f64,
    pub after: f64,
    pub change_pct: f64,
    pub p_value: f64,
}

/// A drift as printed: `start` and `end` are 0-based data rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftRow {
    pub start: usize,
    pub end: usize,
    /// The time column's values at `start` and `end`, else `null`.
    pub start_time: Option<serde_json::Value>,
    pub end_time: Option<serde_json::Value>,
    /// Average change per row (%), and its 95% interval.
    pub slope_pct: f64,
    pub slope_low_pct: f64,
    pub slope_high_pct: f64,
    /// Change from `start` to `end` (%), steps excluded.
    pub total_pct: f64,
}

/// Everything `profwatch changepoints` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub changes: Vec<ChangeRow>,
    pub drift: Option<DriftRow>,
    /// The noise's lag-one autocorrelation the tests allowed for.
    pub autocorrelation: f64,
    /// The seasonal profile removed, if any.
    pub seasonality: Option<Seasonality>,
}

/// Reads the file, detects the changes and renders them in the requested format.
pub fn run_changepoints(args: &ChangepointsArgs) -> Result<String, AnalyzerError> {
    args.config.validate()?;
    let series = read_series(
        &args.csv,
        &args.column,
        args.time_column.as_deref(),
        args.build_column.as_deref(),
    )?;
    let min = args.config.min_points();
    let found: Detection = match &series.builds {
        Some(builds) => {
            let snapshots = 1 + builds.windows(2).filter(|w| w[0] != w[1]).count();
            if series.values.is_empty() || snapshots < min {
                return Err(AnalyzerError::TooFewRows {
                    rows: if series.values.is_empty() {
                        0
                    } else {
                        snapshots
                    },
                    min,
                });
            }
            detect_grouped(&series.values, builds, &args.config)?
        }
        None => {
            if series.values.len() < min {
                return Err(AnalyzerError::TooFewRows {
                    rows: series.values.len(),
                    min,
                });
            }
            match series.times.as_deref().and_then(unix_seconds) {
                Some(t) => detect_timed(&series.values, &t, &args.config)?,
                None => detect(&series.values, &args.config)?,
            }
        }
    };
    let time_at = |i: usize| series.times.as_ref().map(|t| time_value(&t[i]));
    let report = Report {
        changes: found
            .changes
            .into_iter()
            .map(|c| ChangeRow {
                index: c.index,
                time: time_at(c.index),
                build: series.builds.as_ref().map(|b| b[c.index].clone()),
                before: c.before,
                after: c.after,
                change_pct: c.change_pct,
                p_value: c.p_value,
            })
            .collect(),
        drift: found.drift.map(|d| DriftRow {
            start: d.start,
            end: d.end,
            start_time: time_at(d.start),
            end_time: time_at(d.end),
            slope_pct: d.slope_pct,
            slope_low_pct: d.slope_low_pct,
            slope_high_pct: d.slope_high_pct,
            total_pct: d.total_pct,
        }),
        autocorrelation: found.autocorrelation,
        seasonality: found.seasonality,
    };
    match args.format {
        OutputFormat::Json => Ok(serde_json::to_string_pretty(&report)? + "\n"),
        OutputFormat::Table => Ok(table(&report)),
    }
}

/// Unix seconds of every time value, or `None` when any is neither a number nor RFC 3339.
/// Numbers are seconds, milliseconds, microseconds or nanoseconds by magnitude (a time after
/// 1973 in seconds is below 1e11; in milliseconds below 1e14; in microseconds below 1e17).
fn unix_seconds(raw: &[String]) -> Option<Vec<f64>> {
    raw.iter()
        .map(|r| {
            if let Ok(v) = r.parse::<f64>() {
                let a = v.abs();
                let scale = if a >= 1e17 {
                    1e-9
                } else if a >= 1e14 {
                    1e-6
                } else if a >= 1e11 {
                    1e-3
                } else {
                    1.0
                };
                return v.is_finite().then_some(v * scale);
            }
            profwatch_model::timefmt::parse_rfc3339_ns(r).map(|ns| ns as f64 / 1e9)
        })
        .collect()
}

fn time_value(raw: &str) -> serde_json::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return i.into();
    }
    match raw.parse::<f64>() {
        Ok(f) if f.is_finite() => serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or_else(|| raw.into()),
        _ => raw.into(),
    }
}

fn cell(t: &Option<serde_json::Value>) -> String {
    match t {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    }
}

fn table(report: &Report) -> String {
    let mut out = if report.changes.is_empty() {
        "no change points\n".to_owned()
    } else {
        changes_table(&report.changes)
    };
    if let Some(d) = &report.drift {
        let when = match (&d.start_time, &d.end_time) {
            (Some(_), Some(_)) => format!(" ({} to {})", cell(&d.start_time), cell(&d.end_time)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "drift: {:+.3}% per row (95% CI {:+.3}% to {:+.3}%), {:+.1}% from row {} to row {}{when}",
            d.slope_pct, d.slope_low_pct, d.slope_high_pct, d.total_pct, d.start, d.end
        );
    }
    let season = match report.seasonality {
        Some(Seasonality::Daily) => "; daily cycle removed".to_owned(),
        Some(Seasonality::Period { points }) => format!("; cycle of {points} rows removed"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "noise: lag-one autocorrelation {:.2}{season}",
        report.autocorrelation
    );
    out
}

fn changes_table(rows: &[ChangeRow]) -> String {
    let mut cells = vec![[
        "index", "time", "build", "before", "after", "change", "p_value",
    ]
    .map(str::to_owned)
    .to_vec()];
    for r in rows {
        cells.push(vec![
            r.index.to_string(),
            cell(&r.time),
            r.build.clone().unwrap_or_else(|| "-".to_owned()),
            format!("{:.6}", r.before),
            format!("{:.6}", r.after),
            format!("{:+.2}%", r.change_pct),
            format!("{:.4}", r.p_value),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|c| {
            cells
                .iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests;
