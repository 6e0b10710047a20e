//! Stack profiles: samples of stacks, each attributed to the labels of the request (or process)
//! that was running, and the shapes the profile queries answer with.
//!
//! A stack is its frames root-first. Stores keep each distinct stack once, under
//! [`stack_hash`], and samples refer to it by that hash. The labels of a sample are the same
//! series fields as a request event (service, endpoint, build, dc, host) plus extra labels.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::event::{check_labels, check_name, Labels, Limits, Tenant, ValidationError};
use crate::query::TimeRange;

/// The labels every sample carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
pub struct SampleLabels {
    pub service: String,
    /// Route template plus method, or empty when no request was running.
    pub endpoint: String,
    pub build: String,
    pub dc: String,
    pub host: String,
    /// Everything else (feature flags, Pyroscope labels we do not map).
    pub extra: Labels,
}

/// One distinct stack in a batch with what was measured on it.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSample {
    /// Frames root-first (`main` first, the leaf last).
    pub frames: Vec<String>,
    /// Number of samples.
    pub samples: u64,
    /// CPU time those samples stand for, nanoseconds (0 when unknown).
    pub cpu_ns: u64,
}

/// A profile as ingested: samples over `[start, end)` for one label set.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileBatch {
    /// Unix ns; stores keep samples at this time.
    pub ts: i64,
    pub labels: SampleLabels,
    pub samples: Vec<StackSample>,
}

/// The content hash of a stack: 64-bit FNV-1a over the frames, each followed by a 0 byte.
/// Stable across processes and versions (it is stored).
pub fn stack_hash(frames: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in frames {
        for b in f.as_bytes().iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A filter on one label: `endpoint`, `build`, `dc`, `host` or an extra label's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelFilter {
    pub key: String,
    pub value: String,
}

/// Which samples a profile query takes.
#[derive(Debug, Clone)]
pub struct ProfileQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
    /// All must match.
    pub filters: Vec<LabelFilter>,
}

/// One row of a profile answer: a stack under one label set, with its totals in the range.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub labels: SampleLabels,
    pub frames: Vec<String>,
    pub samples: u64,
    pub cpu_ns: u64,
}

/// A profile answer: rows sorted by (labels, frames), each (labels, stack) once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StackProfile {
    pub rows: Vec<ProfileRow>,
    /// The time the answer's samples span: from the first batch's time to just after the
    /// last's (`to` is exclusive). `None` when no sample matched.
    pub span: Option<TimeRange>,
}

impl StackProfile {
    /// Totals per stack across label sets, sorted by frames.
    pub fn merged(&self) -> Vec<(Vec<String>, u64, u64)> {
        let mut m: BTreeMap<&[String], (u64, u64)> = BTreeMap::new();
        for r in &self.rows {
            let e = m.entry(r.frames.as_slice()).or_default();
            e.0 += r.samples;
            e.1 += r.cpu_ns;
        }
        m.into_iter()
            .map(|(f, (s, c))| (f.to_vec(), s, c))
            .collect()
    }
}

impl SampleLabels {
    /// Sets the field `key` names to `value`. Every input maps label names the same way:
    /// `service`/`service_name` → service; `endpoint` → endpoint; `build`/`version` → build;
    /// `dc`/`region` → dc; `host`/`hostname` → host; keys starting with `__` (Pyroscope's
    /// `__name__`, ...) are internal and dropped; everything else is an extra label. A later
    /// value for a field replaces an earlier one.
    pub fn apply(&mut self, key: &str, value: &str) {
        let slot = match key {
            "service" | "service_name" => &mut self.service,
            "endpoint" => &mut self.endpoint,
            "build" | "version" => &mut self.build,
            "dc" | "region" => &mut self.dc,
            "host" | "hostname" => &mut self.host,
            k if k.starts_with("__") || k.is_empty() => return,
            k => {
                self.extra.insert(k.to_owned(), value.to_owned());
                return;
            }
        };
        value.clone_into(slot);
    }

    /// Refuses a label set the stores cannot take: no service, fields too long or holding
    /// control characters, too many or bad extra labels (the limits of request events).
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        check_name("service", &self.service, limits.max_name_len, false)?;
        check_name("endpoint", &self.endpoint, limits.max_endpoint_len, true)?;
        for (field, value) in [
            ("build", &self.build),
            ("dc", &self.dc),
            ("host", &self.host),
        ] {
            check_name(field, value, limits.max_name_len, true)?;
        }
        check_labels(&self.extra, limits)
    }

    /// The value of a label by name, as a filter sees it.
    pub fn get(&self, key: &str) -> Option<&str> {
        match key {
            "service" => Some(&self.service),
            "endpoint" => Some(&self.endpoint),
            "build" => Some(&self.build),
            "dc" => Some(&self.dc),
            "host" => Some(&self.host),
            other => self.extra.get(other).map(String::as_str),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_separates_frames() {
        let a = vec!["main".to_owned(), "run".to_owned()];
        let b = vec!["mainr".to_owned(), "un".to_owned()];
        assert_ne!(stack_hash(&a), stack_hash(&b));
        // Pinned: the hash is stored, so it must never change.
        assert_eq!(stack_hash(&a), stack_hash(&a.clone()));
        assert_eq!(stack_hash(&[]), 0xcbf2_9ce4_8422_2325);
    }
}
