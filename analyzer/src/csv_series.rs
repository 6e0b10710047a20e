//! Reading a series from a CSV file for `profwatch changepoints`.
//!
//! Format: a header row, then one row per point; fields separated by commas; a field may be
//! double-quoted (a quote inside is written twice; commas and line breaks inside quotes are
//! data); CRLF or LF line ends; blank lines are skipped. Invariant: a returned [`CsvSeries`]
//! has only finite values and one optional time and build string per value.

use std::path::Path;

use crate::error::AnalyzerError;

/// The columns read from the file; all vectors are as long as `values`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSeries {
    pub values: Vec<f64>,
    pub times: Option<Vec<String>>,
    pub builds: Option<Vec<String>>,
}

/// Reads `column` (and the optional time and build columns) from the CSV file at `path`.
pub fn read_series(
    path: &Path,
    column: &str,
    time_column: Option<&str>,
    build_column: Option<&str>,
) -> Result<CsvSeries, AnalyzerError> {
    let text = std::fs::read_to_string(path).map_err(|source| AnalyzerError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut rows = parse(&text)?.into_iter();
    let Some((_, header)) = rows.next() else {
        return Err(AnalyzerError::EmptyFile {
            path: path.to_owned(),
            min_rows: 2,
        });
    };
    let header: Vec<String> = header.into_iter().map(|h| h.trim().to_owned()).collect();
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| AnalyzerError::MissingColumn {
                column: name.to_owned(),
                available: header.clone(),
            })
    };
    let value_at = find(column)?;
    let time_at = time_column.map(find).transpose()?;
    let build_at = build_column.map(find).transpose()?;
    let mut out = CsvSeries {
        values: Vec::new(),
        times: time_at.map(|_| Vec::new()),
        builds: build_at.map(|_| Vec::new()),
    };
    for (line, row) in rows {
        if row.len() != header.len() {
            return Err(AnalyzerError::RaggedRow {
                line,
                expected: header.len(),
                found: row.len(),
            });
        }
        let raw = row[value_at].trim();
        let value: f64 = raw.parse().map_err(|_| AnalyzerError::NotANumber {
            line,
            column: column.to_owned(),
            value: raw.to_owned(),
        })?;
        if !value.is_finite() {
            return Err(AnalyzerError::NotFinite {
                line,
                column: column.to_owned(),
                value: raw.to_owned(),
            });
        }
        out.values.push(value);
        if let (Some(at), Some(times)) = (time_at, out.times.as_mut()) {
            times.push(row[at].trim().to_owned());
        }
        if let (Some(at), Some(builds)) = (build_at, out.builds.as_mut()) {
            builds.push(row[at].trim().to_owned());
        }
    }
    Ok(out)
}

/// Splits CSV text into rows of fields, each with the 1-based line it starts on; blank lines
/// are skipped.
fn parse(text: &str) -> Result<Vec<(usize, Vec<String>)>, AnalyzerError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let (mut line, mut row_line) = (1, 1);
    let mut in_quotes = false;
    let mut quote_line = 0;
    let mut chars = text.chars().peekable();
    let mut row_has_content = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quote_line = line;
                row_has_content = true;
            }
            ',' => {
                row.push(std::mem::take(&mut field));
                row_has_content = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if row_has_content || !field.trim().is_empty() {
                    row.push(std::mem::take(&mut field));
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                field.clear();
                row_has_content = false;
                line += 1;
                row_line = line;
            }
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(AnalyzerError::UnterminatedQuote { line: quote_line });
    }
    if row_has_content || !field.trim().is_empty() {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_crlf_and_blank_lines() {
        let rows = parse("a,\"b,c\",d\r\n\r\n1,\"x \"\"y\"\"\",3\n4,\"multi\nline\",6")
            .expect("valid input");
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].1, vec!["a", "b,c", "d"]);
        assert_eq!(
            rows[1],
            (
                3,
                vec!["1".to_owned(), "x \"y\"".to_owned(), "3".to_owned()]
            )
        );
        assert_eq!(rows[2].0, 4);
        assert_eq!(rows[2].1[1], "multi\nline");
        assert!(matches!(
            parse("a,\"b\n1,2"),
            Err(AnalyzerError::UnterminatedQuote { line: 1 })
        ));
        assert!(parse("").expect("valid input").is_empty());
    }
}
