//! The request event and its limits.
//!
//! Every event that reaches a store has passed [`RequestEvent::validate`] under the server's
//! [`Limits`]; stores may rely on those bounds (string lengths, label count, finite weights).
//! The tenant is never part of an event: it comes from the bearer token.

use std::collections::BTreeMap;
use std::fmt;

/// Extra labels of an event (feature flags and the like), sorted by key.
pub type Labels = BTreeMap<String, String>;

/// The tenant that owns a batch, taken from its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tenant(pub String);

impl Tenant {
    /// The tenant used when the server runs without tokens (loopback only).
    pub fn default_tenant() -> Self {
        Tenant("default".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The cost of one (sampled) request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestEvent {
    /// Unix time in nanoseconds.
    pub ts: i64,
    pub service: String,
    /// Route template plus method, e.g. `GET /users/{id}`.
    pub endpoint: String,
    pub build: String,
    pub dc: String,
    pub host: String,
    /// HTTP-like status code, `0..=999`.
    pub status: u16,
    /// Thread CPU time spent on this request.
    pub cpu_ns: u64,
    /// User-space instructions; `None` where the CPU has no usable counter.
    pub instructions: Option<u64>,
    pub wall_ns: u64,
    /// Inverse of the sampling rate; `> 0`.
    pub weight: f64,
    pub labels: Labels,
}

/// The bounds every event must respect. The defaults are the documented limits
/// (`docs/limits.md`); a server may tighten them but the stores assume at most these.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bytes in `service`, `build`, `dc`, `host`.
    pub max_name_len: usize,
    /// Bytes in `endpoint`.
    pub max_endpoint_len: usize,
    /// Labels per event.
    pub max_labels: usize,
    /// Bytes in a label key.
    pub max_label_key_len: usize,
    /// Bytes in a label value.
    pub max_label_value_len: usize,
    /// Largest `cpu_ns` and `wall_ns` (one day).
    pub max_duration_ns: u64,
    /// Largest `instructions`.
    pub max_instructions: u64,
    /// Largest `weight`.
    pub max_weight: f64,
    /// How far in the future `ts` may be, in nanoseconds.
    pub max_future_skew_ns: i64,
    /// How far in the past `ts` may be, in nanoseconds.
    pub max_age_ns: i64,
}

const SECOND: i64 = 1_000_000_000;

/// The default (and largest) [`Limits::max_name_len`].
pub const MAX_NAME_LEN: usize = 128;
/// The default (and largest) [`Limits::max_endpoint_len`].
pub const MAX_ENDPOINT_LEN: usize = 256;
/// The default (and largest) [`Limits::max_labels`].
pub const MAX_LABELS: usize = 16;
/// The default (and largest) [`Limits::max_label_key_len`].
pub const MAX_LABEL_KEY_LEN: usize = 64;
/// The default (and largest) [`Limits::max_label_value_len`].
pub const MAX_LABEL_VALUE_LEN: usize = 128;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_len: MAX_NAME_LEN,
            max_endpoint_len: MAX_ENDPOINT_LEN,
            max_labels: MAX_LABELS,
            max_label_key_len: MAX_LABEL_KEY_LEN,
            max_label_value_len: MAX_LABEL_VALUE_LEN,
            max_duration_ns: 86_400 * SECOND as u64,
            max_instructions: 1_000_000_000_000_000,
            max_weight: 1_000_000.0,
            max_future_skew_ns: 10 * 60 * SECOND,
            max_age_ns: 30 * 86_400 * SECOND,
        }
    }
}

/// Why an event was refused. The `Display` form names the field and tells what to fix.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    #[error("field `{field}` is empty; it must be 1 to {max} bytes")]
    Empty { field: &'static str, max: usize },
    #[error("field `{field}` is {len} bytes; the limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "field `{field}` contains a control character at byte {at}; only printable text is allowed"
    )]
    ControlChar { field: &'static str, at: usize },
    #[error("label key {key:?} is invalid; keys match [A-Za-z_][A-Za-z0-9_.-]* and are at most {max} bytes")]
    LabelKey { key: String, max: usize },
    #[error("{count} labels; the limit is {max} per event")]
    TooManyLabels { count: usize, max: usize },
    #[error("label {key:?}: value is {len} bytes; the limit is {max}")]
    LabelValueTooLong { key: String, len: usize, max: usize },
    #[error("field `{field}` is {value}; the limit is {max}")]
    TooLarge {
        field: &'static str,
        value: String,
        max: String,
    },
    #[error("field `pid` is 0; it must be a process id above 0")]
    Pid,
    #[error("field `status` is {0}; it must be 0..=999")]
    Status(u64),
    #[error("field `weight` is {0}; it must be a finite number > 0")]
    Weight(f64),
    #[error("field `ts` is {skew_s}s in the future; at most {max_s}s of clock skew is accepted")]
    Future { skew_s: i64, max_s: i64 },
    #[error("field `ts` is {age_s}s old; data older than {max_s}s (the retention) is refused")]
    TooOld { age_s: i64, max_s: i64 },
}

impl RequestEvent {
    /// Checks the event against `limits` at wall-clock time `now` (unix ns).
    pub fn validate(&self, limits: &Limits, now: i64) -> Result<(), ValidationError> {
        check_name("service", &self.service, limits.max_name_len, false)?;
        check_name("endpoint", &self.endpoint, limits.max_endpoint_len, false)?;
        check_name("build", &self.build, limits.max_name_len, true)?;
        check_name("dc", &self.dc, limits.max_name_len, true)?;
        check_name("host", &self.host, limits.max_name_len, true)?;
        if self.status > 999 {
            return Err(ValidationError::Status(self.status.into()));
        }
        check_max("cpu_ns", self.cpu_ns, limits.max_duration_ns)?;
        check_max("wall_ns", self.wall_ns, limits.max_duration_ns)?;
        if let Some(instructions) = self.instructions {
            check_max("instructions", instructions, limits.max_instructions)?;
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(ValidationError::Weight(self.weight));
        }
        if self.weight > limits.max_weight {
            return Err(ValidationError::TooLarge {
                field: "weight",
                value: self.weight.to_string(),
                max: limits.max_weight.to_string(),
            });
        }
        check_ts(self.ts, limits, now)?;
        check_labels(&self.labels, limits)
    }
}

/// Checks a time (unix ns) against the accepted age and clock skew at `now`: events and
/// profiles follow the same rule, so nothing is accepted that queries could not show.
pub fn check_ts(ts: i64, limits: &Limits, now: i64) -> Result<(), ValidationError> {
    if ts > now.saturating_add(limits.max_future_skew_ns) {
        return Err(ValidationError::Future {
            skew_s: ts.saturating_sub(now) / SECOND,
            max_s: limits.max_future_skew_ns / SECOND,
        });
    }
    if ts < now.saturating_sub(limits.max_age_ns) {
        return Err(ValidationError::TooOld {
            age_s: now.saturating_sub(ts) / SECOND,
            max_s: limits.max_age_ns / SECOND,
        });
    }
    Ok(())
}

/// Checks a label set on its own (count, keys, values); [`RequestEvent::validate`] calls it.
pub fn check_labels(labels: &Labels, limits: &Limits) -> Result<(), ValidationError> {
    if labels.len() > limits.max_labels {
        return Err(ValidationError::TooManyLabels {
            count: labels.len(),
            max: limits.max_labels,
        });
    }
    for (key, value) in labels {
        if !valid_label_key(key, limits.max_label_key_len) {
            return Err(ValidationError::LabelKey {
                key: truncate_for_message(key),
                max: limits.max_label_key_len,
            });
        }
        if value.len() > limits.max_label_value_len {
            return Err(ValidationError::LabelValueTooLong {
                key: key.clone(),
                len: value.len(),
                max: limits.max_label_value_len,
            });
        }
        if let Some(at) = value.find(char::is_control) {
            return Err(ValidationError::ControlChar {
                field: "labels",
                at,
            });
        }
    }
    Ok(())
}

pub(crate) fn check_name(
    field: &'static str,
    value: &str,
    max: usize,
    may_be_empty: bool,
) -> Result<(), ValidationError> {
    if value.is_empty() && !may_be_empty {
        return Err(ValidationError::Empty { field, max });
    }
    if value.len() > max {
        return Err(ValidationError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if let Some(at) = value.find(char::is_control) {
        return Err(ValidationError::ControlChar { field, at });
    }
    Ok(())
}

fn check_max(field: &'static str, value: u64, max: u64) -> Result<(), ValidationError> {
    if value > max {
        return Err(ValidationError::TooLarge {
            field,
            value: value.to_string(),
            max: max.to_string(),
        });
    }
    Ok(())
}

/// Whether `key` is a valid label key of at most `max` bytes.
pub fn valid_label_key(key: &str, max: usize) -> bool {
    let mut chars = key.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    key.len() <= max
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// `s` cut to 64 bytes (at a character boundary) for an error message.
pub fn truncate_for_message(s: &str) -> String {
    if s.len() <= 64 {
        return s.to_owned();
    }
    let mut end = 64;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn event(now: i64) -> RequestEvent {
        RequestEvent {
            ts: now,
            service: "checkout".into(),
            endpoint: "GET /cart/{id}".into(),
            build: "812".into(),
            dc: "eu1".into(),
            host: "web-1".into(),
            status: 200,
            cpu_ns: 1_000_000,
            instructions: Some(5_000_000),
            wall_ns: 2_000_000,
            weight: 1.0,
            labels: Labels::new(),
        }
    }

    const NOW: i64 = 1_800_000_000 * SECOND;

    #[test]
    fn a_plain_event_is_valid() {
        assert_eq!(event(NOW).validate(&Limits::default(), NOW), Ok(()));
    }

    #[test]
    fn each_limit_is_enforced() {
        let limits = Limits::default();
        type Mutation = Box<dyn Fn(&mut RequestEvent)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("service", Box::new(|e| e.service.clear())),
            ("endpoint", Box::new(|e| e.endpoint = "x".repeat(257))),
            ("host", Box::new(|e| e.host = "a\nb".into())),
            ("status", Box::new(|e| e.status = 1000)),
            ("cpu_ns", Box::new(|e| e.cpu_ns = u64::MAX)),
            ("weight", Box::new(|e| e.weight = f64::NAN)),
            ("weight", Box::new(|e| e.weight = 0.0)),
            ("ts", Box::new(|e| e.ts = NOW + 3600 * SECOND)),
            ("ts", Box::new(|e| e.ts = NOW - 31 * 86_400 * SECOND)),
            (
                "label",
                Box::new(|e| {
                    e.labels.insert("flag".into(), "v".repeat(1 << 20));
                }),
            ),
            (
                "labels",
                Box::new(|e| {
                    for i in 0..10_000 {
                        e.labels.insert(format!("k{i}"), "v".into());
                    }
                }),
            ),
            (
                "label key",
                Box::new(|e| {
                    e.labels.insert("9bad".into(), "v".into());
                }),
            ),
        ];
        for (what, mutate) in cases {
            let mut e = event(NOW);
            mutate(&mut e);
            let err = e.validate(&limits, NOW).expect_err(what);
            assert!(
                err.to_string()
                    .contains(what.split(' ').next().unwrap_or(what)),
                "{what}: {err}"
            );
        }
    }
}
