//! The analyzer's one error type. Every variant carries what a user needs to fix the input.

use std::path::PathBuf;

/// Why an analysis could not run. Statistical "not enough data" is not an error: it is a
/// [`crate::compare::Verdict`]; errors are for input that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyzerError {
    /// The file could not be opened or read.
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file has no header row.
    #[error("{path} is empty; expected a header row and at least {min_rows} data rows")]
    EmptyFile { path: PathBuf, min_rows: usize },
    /// A named column is not in the header.
    #[error("column `{column}` is not in the header; the columns are: {}", available.join(", "))]
    MissingColumn {
        column: String,
        available: Vec<String>,
    },
    /// A row has a different number of fields than the header.
    #[error("line {line}: {found} fields, but the header has {expected}")]
    RaggedRow {
        line: usize,
        expected: usize,
        found: usize,
    },
    /// A quoted field is not closed before the end of the file.
    #[error("line {line}: a quoted field is not closed")]
    UnterminatedQuote { line: usize },
    /// A value in the series column is not a number.
    #[error("line {line}, column `{column}`: {value:?} is not a number")]
    NotANumber {
        line: usize,
        column: String,
        value: String,
    },
    /// A value in the series column is NaN or infinite.
    #[error("line {line}, column `{column}`: {value:?} is not a finite number (NaN and infinity are refused)")]
    NotFinite {
        line: usize,
        column: String,
        value: String,
    },
    /// The series is too short to hold a change.
    #[error("{rows} data rows (or builds); change points need at least {min}")]
    TooFewRows { rows: usize, min: usize },
    /// An output format name that is not `json` or `table`.
    #[error("unknown format {0:?}; use `json` or `table`")]
    UnknownFormat(String),
    /// A configuration value outside its allowed range.
    #[error("invalid setting `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// Writing JSON output failed.
    #[error("cannot encode the output as JSON: {0}")]
    Json(#[from] serde_json::Error),
}
