//! Stack profiles: samples of stacks, each attributed to the labels of the request (or process)
//! that was running, and the shapes the profile queries answer with.
//!
//! A stack is its frames root-first. Stores keep each distinct stack once and samples refer to
//! it by an id: a 128-bit hash of the tenant and the frames, keyed by the store's own secret
//! (`store/src/stack_ids.rs`). The labels of a sample are the same series fields as a request
//! event (service, endpoint, build, dc, host) plus extra labels.

use std::collections::HashMap;
use std::sync::Arc;

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
/// The frames are shared (a store hands out its one copy of a stack to every row of it).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRow {
    pub labels: SampleLabels,
    pub frames: Arc<[String]>,
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
    /// Totals per stack across label sets, sorted by frames; the frames are borrowed.
    ///
    /// The rows come sorted by label set, then frames ([`StackProfile::sort_rows`]), so each
    /// label set is one sorted run: a stable sort merges the runs (one run, one pass), and equal
    /// stacks end up side by side.
    pub fn merged(&self) -> Vec<(&[String], u64, u64)> {
        let mut all: Vec<(&[String], u64, u64)> = self
            .rows
            .iter()
            .map(|r| (r.frames.as_ref(), r.samples, r.cpu_ns))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: Vec<(&[String], u64, u64)> = Vec::with_capacity(all.len());
        for (frames, samples, cpu_ns) in all {
            match out.last_mut() {
                Some(last) if last.0 == frames => {
                    last.1 = last.1.saturating_add(samples);
                    last.2 = last.2.saturating_add(cpu_ns);
                }
                _ => out.push((frames, samples, cpu_ns)),
            }
        }
        out
    }

    /// Sorts rows by label set, then frames, as both stores answer. The distinct label sets are
    /// ordered once and each row sorts by its set's rank and its frames, so two rows' labels
    /// (five strings and a map) are never compared: with one label set and 100k stacks that
    /// comparison was most of a profile query's time.
    pub fn sort_rows(rows: &mut Vec<ProfileRow>) {
        let mut sets: HashMap<&SampleLabels, u32> = HashMap::new();
        let set_of: Vec<u32> = rows
            .iter()
            .map(|r| {
                let next = sets.len() as u32;
                *sets.entry(&r.labels).or_insert(next)
            })
            .collect();
        let mut by_labels: Vec<(&SampleLabels, u32)> = sets.into_iter().collect();
        by_labels.sort_unstable();
        let mut rank = vec![0u32; by_labels.len()];
        for (r, (_, set)) in by_labels.iter().enumerate() {
            rank[*set as usize] = r as u32;
        }
        let mut keyed: Vec<(u32, ProfileRow)> = rows
            .drain(..)
            .zip(set_of)
            .map(|(row, set)| (rank[set as usize], row))
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.frames.cmp(&b.1.frames)));
        rows.extend(keyed.into_iter().map(|(_, row)| row));
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
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Rows sorted by rank and frames are in the order of comparing (labels, frames), and
        /// the merged stacks are the totals per stack in frame order.
        #[test]
        fn rows_sort_as_labels_then_frames_and_merge_per_stack(
            raw in prop::collection::vec((0u8..3, 0u8..2, prop::collection::vec(0u8..3, 0..4), 1u64..9), 0..40),
        ) {
            let rows: Vec<ProfileRow> = raw
                .iter()
                .map(|(e, b, f, n)| ProfileRow {
                    labels: SampleLabels {
                        service: "s".into(),
                        endpoint: format!("GET /{e}"),
                        build: b.to_string(),
                        ..SampleLabels::default()
                    },
                    frames: f.iter().map(|i| ["main", "a", "b"][*i as usize].to_owned()).collect(),
                    samples: *n,
                    cpu_ns: 10 * n,
                })
                .collect();
            // As the stores answer: one row per (label set, stack).
            let mut seen = std::collections::HashSet::new();
            let rows: Vec<ProfileRow> = rows
                .into_iter()
                .filter(|r| seen.insert((r.labels.clone(), r.frames.clone())))
                .collect();
            let mut fast = rows.clone();
            StackProfile::sort_rows(&mut fast);
            let mut slow = rows.clone();
            slow.sort_by(|a, b| (&a.labels, &a.frames).cmp(&(&b.labels, &b.frames)));
            prop_assert_eq!(&fast, &slow);

            let p = StackProfile { rows: fast, span: None };
            let mut totals: std::collections::BTreeMap<&[String], (u64, u64)> = Default::default();
            for r in &rows {
                let t = totals.entry(r.frames.as_ref()).or_default();
                t.0 += r.samples;
                t.1 += r.cpu_ns;
            }
            let expected: Vec<(&[String], u64, u64)> =
                totals.into_iter().map(|(f, (n, c))| (f, n, c)).collect();
            prop_assert_eq!(p.merged(), expected);
        }
    }
}
