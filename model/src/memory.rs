//! Memory samples: what one process held at one moment, read from `/proc/PID/smaps_rollup`
//! (or summed over `/proc/PID/smaps`) by the sidecar.
//!
//! A sample carries the series fields of a request event (service, build, dc, host) plus the
//! process id; its labels obey the same limits and checks as an event's
//! ([`MemorySample::validate`]), and its time the same age and skew rule ([`check_ts`]). Byte
//! counts are bounded by [`MAX_MEMORY_BYTES`], so sums over many samples cannot overflow a
//! `u64` in any realistic store.

use serde::{Deserialize, Serialize};

use crate::event::{check_name, check_ts, Limits, ValidationError};

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
