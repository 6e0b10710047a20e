//! Timestamps as the APIs accept them: integers (unix seconds in query parameters, unix
//! nanoseconds in events) or RFC 3339 strings. Everything inside profwatch is unix nanoseconds
//! in an `i64`.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a time: give unix seconds (e.g. 1767225600) or RFC 3339 (e.g. 2026-01-01T00:00:00Z)")]
pub struct TimeParseError {
    pub input: String,
}

/// The current wall-clock time in unix nanoseconds.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Parses an RFC 3339 string into unix nanoseconds.
pub fn parse_rfc3339_ns(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Parses a query parameter: unix seconds (integer or decimal) or RFC 3339.
pub fn parse_query_time_ns(s: &str) -> Result<i64, TimeParseError> {
    let err = || TimeParseError {
        input: s.chars().take(64).collect(),
    };
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return secs.checked_mul(NANOS_PER_SEC).ok_or_else(err);
    }
    if let Ok(secs) = s.parse::<f64>() {
        let ns = secs * NANOS_PER_SEC as f64;
        // Strictly inside the i64 range (2^63 ≈ 9.22e18), so the conversion below is exact
        // to the float's precision and never saturates.
        if ns.is_finite() && ns.abs() < 9.2e18 {
            return Ok(ns as i64);
        }
        return Err(err());
    }
    parse_rfc3339_ns(s).ok_or_else(err)
}

/// Formats unix nanoseconds as RFC 3339 (UTC).
pub fn format_rfc3339(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_seconds_and_rfc3339() {
        assert_eq!(parse_query_time_ns("10"), Ok(10 * NANOS_PER_SEC));
        assert_eq!(
            parse_query_time_ns("2026-01-01T00:00:00Z"),
            Ok(1_767_225_600 * NANOS_PER_SEC)
        );
        assert_eq!(
            parse_query_time_ns("2026-01-01T01:00:00+01:00"),
            Ok(1_767_225_600 * NANOS_PER_SEC)
        );
        assert!(parse_query_time_ns("yesterday").is_err());
        assert!(parse_query_time_ns("99999999999999999").is_err());
        assert!(parse_query_time_ns("99999999999.5").is_err());
        assert_eq!(parse_query_time_ns("1.5"), Ok(1_500_000_000));
    }

    #[test]
    fn formats_back() {
        assert_eq!(
            format_rfc3339(1_767_225_600 * NANOS_PER_SEC),
            "2026-01-01T00:00:00Z"
        );
    }
}
