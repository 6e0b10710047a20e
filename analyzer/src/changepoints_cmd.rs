//! `profwatch changepoints`: the change-point detector on any series read from a CSV file.
//!
//! The binary parses flags into [`ChangepointsArgs`] and prints what [`run_changepoints`]
//! returns. Invariant: bad input is an [`AnalyzerError`] whose message names the line and
//! column to fix; nothing here panics on any file content.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::changepoint::{detect, detect_grouped, ChangePoint, ChangepointConfig};
use crate::csv_series::read_series;
use crate::error::AnalyzerError;

/// How the result is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// A JSON array of change objects (see [`ChangeRow`]).
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
    let changes: Vec<ChangePoint> = match &series.builds {
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
            detect_grouped(&series.values, builds, &args.config)?.changes
        }
        None => {
            if series.values.len() < min {
                return Err(AnalyzerError::TooFewRows {
                    rows: series.values.len(),
                    min,
                });
            }
            detect(&series.values, &args.config)?.changes
        }
    };
    let rows: Vec<ChangeRow> = changes
        .into_iter()
        .map(|c| ChangeRow {
            index: c.index,
            time: series.times.as_ref().map(|t| time_value(&t[c.index])),
            build: series.builds.as_ref().map(|b| b[c.index].clone()),
            before: c.before,
            after: c.after,
            change_pct: c.change_pct,
            p_value: c.p_value,
        })
        .collect();
    match args.format {
        OutputFormat::Json => Ok(serde_json::to_string_pretty(&rows)? + "\n"),
        OutputFormat::Table => Ok(table(&rows)),
    }
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

fn table(rows: &[ChangeRow]) -> String {
    if rows.is_empty() {
        return "no change points\n".to_owned();
    }
    let mut cells = vec![[
        "index", "time", "build", "before", "after", "change", "p_value",
    ]
    .map(str::to_owned)
    .to_vec()];
    for r in rows {
        cells.push(vec![
            r.index.to_string(),
            r.time
                .as_ref()
                .map(|t| match t {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .unwrap_or_else(|| "-".to_owned()),
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
