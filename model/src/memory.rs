//! Memory samples: what one process held at one moment, read from `/proc/PID/smaps_rollup`
//! (or summed over `/proc/PID/smaps`) by the sidecar.
//!
//! A sample carries the series fields of a request event (service, build, dc, host) plus the
//! process id; its labels obey the same limits and checks as an event's
//! ([`MemorySample::validate`]), and its time the same age and skew rule ([`check_ts`]). Byte
//! counts are bounded by [`MAX_MEMORY_BYTES`], so sums over many samples cannot overflow a
//! `u64` in any realistic store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{check_name, check_ts, Limits, Tenant, ValidationError};
use crate::query::TimeRange;

/// The largest byte count a sample field may hold: 1 PiB, far above any process's memory.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// The memory of one process, in bytes, as the kernel's smaps fields name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBytes {
    /// Resident set size.
    pub rss: u64,
    /// Proportional set size: each shared page divided by the processes that map it.
    pub pss: u64,
    pub shared_clean: u64,
    pub shared_dirty: u64,
    pub private_clean: u64,
    pub private_dirty: u64,
    pub swap: u64,
}

impl MemoryBytes {
    /// Pages mapped by this process alone (clean and dirty).
    pub fn private(&self) -> u64 {
        self.private_clean.saturating_add(self.private_dirty)
    }

    /// Pages also mapped by other processes (clean and dirty).
    pub fn shared(&self) -> u64 {
        self.shared_clean.saturating_add(self.shared_dirty)
    }

    /// Each field with its name, in the order of the struct.
    pub fn fields(&self) -> [(&'static str, u64); 7] {
        [
            ("rss", self.rss),
            ("pss", self.pss),
            ("shared_clean", self.shared_clean),
            ("shared_dirty", self.shared_dirty),
            ("private_clean", self.private_clean),
            ("private_dirty", self.private_dirty),
            ("swap", self.swap),
        ]
    }
}

/// One process's memory at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySample {
    /// Unix time in nanoseconds.
    pub ts: i64,
    pub service: String,
    pub build: String,
    pub dc: String,
    pub host: String,
    /// The process id, `> 0`.
    pub pid: u32,
    pub bytes: MemoryBytes,
}

/// Memory samples as the sidecar ships them: the JSON body of `POST /api/v1/memory`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBatch {
    pub samples: Vec<MemorySample>,
}

impl MemorySample {
    /// Checks the sample against `limits` at wall-clock time `now` (unix ns): the labels as an
    /// event's, the time as an event's, a pid above 0 and every byte count within
    /// [`MAX_MEMORY_BYTES`].
    pub fn validate(&self, limits: &Limits, now: i64) -> Result<(), ValidationError> {
        check_name("service", &self.service, limits.max_name_len, false)?;
        check_name("build", &self.build, limits.max_name_len, true)?;
        check_name("dc", &self.dc, limits.max_name_len, true)?;
        check_name("host", &self.host, limits.max_name_len, true)?;
        if self.pid == 0 {
            return Err(ValidationError::Pid);
        }
        for (field, value) in self.bytes.fields() {
            if value > MAX_MEMORY_BYTES {
                return Err(ValidationError::TooLarge {
                    field,
                    value: value.to_string(),
                    max: MAX_MEMORY_BYTES.to_string(),
                });
            }
        }
        check_ts(self.ts, limits, now)
    }
}

/// What memory rows are grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryGroupBy {
    /// One row for the whole service (its group is empty).
    None,
    Build,
    Host,
}

impl MemoryGroupBy {
    /// `none`, `build` or `host`.
    pub fn parse(text: &str) -> Option<MemoryGroupBy> {
        match text {
            "none" => Some(MemoryGroupBy::None),
            "build" => Some(MemoryGroupBy::Build),
            "host" => Some(MemoryGroupBy::Host),
            _ => None,
        }
    }

    /// The group of a sample.
    pub fn group_of<'a>(&self, s: &'a MemorySample) -> &'a str {
        match self {
            MemoryGroupBy::None => "",
            MemoryGroupBy::Build => &s.build,
            MemoryGroupBy::Host => &s.host,
        }
    }
}

/// Which memory samples a memory query takes: one service's, in the range.
#[derive(Debug, Clone)]
pub struct MemoryQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
    pub group_by: MemoryGroupBy,
}

/// One group's memory per process. A process is a (host, pid); each figure is the mean over
/// the group's processes of each process's mean over its samples, so a process sampled more
/// often does not weigh more.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryRow {
    /// The build or host; empty without grouping.
    pub group: String,
    /// Distinct processes (host, pid) with samples.
    pub processes: u64,
    pub rss_bytes: f64,
    pub pss_bytes: f64,
    /// Private clean + private dirty.
    pub private_bytes: f64,
    /// Shared clean + shared dirty.
    pub shared_bytes: f64,
    pub swap_bytes: f64,
}

/// A [`MemoryRow`] of one time bucket (as `GET /api/v1/memory/timeseries` answers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryPoint {
    /// Bucket start, unix seconds (buckets start at multiples of the step).
    pub time: i64,
    #[serde(flatten)]
    pub row: MemoryRow,
}

/// One process's mean memory in one time bucket: the unit builds are compared on (private
/// bytes per worker, clustered by host), as the store's `memory_processes` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcessMemory {
    /// Bucket start, unix ns (buckets start at multiples of the step).
    pub ts: i64,
    pub build: String,
    /// The dc of the process's first sample in the bucket (a process does not move).
    pub dc: String,
    pub host: String,
    pub pid: u32,
    /// Samples averaged.
    pub samples: u64,
    /// Private clean + private dirty, mean over the samples.
    pub private_bytes: f64,
    /// Shared clean + shared dirty, mean over the samples.
    pub shared_bytes: f64,
}

/// The start of the bucket of width `step` (> 0) that holds `ts`.
pub fn bucket_of(ts: i64, step: i64) -> i64 {
    ts - ts.rem_euclid(step)
}

/// The per-process sums of one (key, group): samples and field totals per (host, pid).
#[derive(Debug, Default)]
pub struct MemoryAccumulator {
    processes: BTreeMap<(String, u32), [f64; 6]>,
}

impl MemoryAccumulator {
    /// Adds one sample of process (`host`, `pid`).
    pub fn add(&mut self, s: &MemorySample) {
        let sums = self
            .processes
            .entry((s.host.clone(), s.pid))
            .or_insert([0.0; 6]);
        let b = &s.bytes;
        for (sum, v) in sums.iter_mut().zip([
            1.0,
            b.rss as f64,
            b.pss as f64,
            b.private() as f64,
            b.shared() as f64,
            b.swap as f64,
        ]) {
            *sum += v;
        }
    }

    /// The row of this group: per-process means, then their mean.
    pub fn row(&self, group: String) -> MemoryRow {
        let n = self.processes.len().max(1) as f64;
        let mut means = [0.0f64; 5];
        for sums in self.processes.values() {
            for (mean, sum) in means.iter_mut().zip(&sums[1..]) {
                *mean += sum / sums[0];
            }
        }
        let [rss, pss, private, shared, swap] = means.map(|m| m / n);
        MemoryRow {
            group,
            processes: self.processes.len() as u64,
            rss_bytes: rss,
            pss_bytes: pss,
            private_bytes: private,
            shared_bytes: shared,
            swap_bytes: swap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn sample() -> MemorySample {
        MemorySample {
            ts: NOW,
            service: "checkout".into(),
            build: "812".into(),
            dc: "eu1".into(),
            host: "web-1".into(),
            pid: 4242,
            bytes: MemoryBytes {
                rss: 100 << 20,
                pss: 60 << 20,
                shared_clean: 30 << 20,
                shared_dirty: 10 << 20,
                private_clean: 5 << 20,
                private_dirty: 55 << 20,
                swap: 0,
            },
        }
    }

    #[test]
    fn a_plain_sample_is_valid_and_sums_its_kinds() {
        let s = sample();
        assert_eq!(s.validate(&Limits::default(), NOW), Ok(()));
        assert_eq!(s.bytes.private(), 60 << 20);
        assert_eq!(s.bytes.shared(), 40 << 20);
    }

    #[test]
    fn each_limit_is_enforced() {
        let limits = Limits::default();
        type Mutation = Box<dyn Fn(&mut MemorySample)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("service", Box::new(|s| s.service.clear())),
            ("service", Box::new(|s| s.service = "x".repeat(129))),
            ("build", Box::new(|s| s.build = "a\u{7}".into())),
            ("host", Box::new(|s| s.host = "a\nb".into())),
            ("dc", Box::new(|s| s.dc = "d".repeat(500))),
            ("pid", Box::new(|s| s.pid = 0)),
            ("rss", Box::new(|s| s.bytes.rss = u64::MAX)),
            ("swap", Box::new(|s| s.bytes.swap = MAX_MEMORY_BYTES + 1)),
            ("ts", Box::new(|s| s.ts = NOW + 3600 * 1_000_000_000)),
            ("ts", Box::new(|s| s.ts = 0)),
        ];
        for (what, mutate) in cases {
            let mut s = sample();
            mutate(&mut s);
            let err = s.validate(&limits, NOW).expect_err(what);
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
    }

    #[test]
    fn rows_are_means_of_per_process_means() {
        let mut acc = MemoryAccumulator::default();
        let mut s = sample();
        let at = |s: &MemorySample, pid, host: &str, private| MemorySample {
            pid,
            host: host.into(),
            bytes: MemoryBytes {
                private_dirty: private,
                private_clean: 0,
                ..s.bytes
            },
            ..s.clone()
        };
        // Process 1 sampled three times (mean 20), process 2 once (40): the mean is 30, not 25.
        for private in [10, 20, 30] {
            acc.add(&at(&s, 1, "a", private));
        }
        acc.add(&at(&s, 2, "a", 40));
        // The same pid on another host is another process.
        s.bytes.private_dirty = 0;
        acc.add(&at(&s, 1, "b", 30));
        let row = acc.row("812".into());
        assert_eq!(row.processes, 3);
        assert_eq!(row.private_bytes, 30.0);
        assert_eq!(row.rss_bytes, (100 << 20) as f64);
        assert_eq!(bucket_of(125, 60), 120);
        assert_eq!(bucket_of(-5, 60), -60);
        assert_eq!(MemoryGroupBy::parse("host"), Some(MemoryGroupBy::Host));
        assert_eq!(MemoryGroupBy::parse("endpoint"), None);
    }

    #[test]
    fn json_names_every_field_and_refuses_unknown_ones() {
        let s = sample();
        let text = serde_json::to_string(&s).expect("serialize");
        for (field, _) in s.bytes.fields() {
            assert!(text.contains(&format!("\"{field}\"")), "{text}");
        }
        let back: MemorySample = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, s);
        let extra = text.replacen("\"pid\"", "\"bogus\":1,\"pid\"", 1);
        assert!(serde_json::from_str::<MemorySample>(&extra).is_err());
    }
}
