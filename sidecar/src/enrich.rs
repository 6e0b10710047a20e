//! Enrichment: what the sidecar knows about the host and adds to every event (and, host and
//! dc only, to every profile).
//!
//! Invariants: enrichment only fills what an event lacks (an empty `host` or `dc`, an absent
//! `kernel` or `cpu_model` label) and never pushes an event past the collector's limits: the
//! labels are added only while the event has fewer than `max_labels`, and the values are
//! trimmed to printable text within the label and name lengths.

use profwatch_model::profile::SampleLabels;
use profwatch_model::{Limits, RequestEvent};

/// The label carrying the kernel release (`/proc/sys/kernel/osrelease`).
pub const KERNEL_LABEL: &str = "kernel";
/// The label carrying the CPU model (`model name` in `/proc/cpuinfo`).
pub const CPU_MODEL_LABEL: &str = "cpu_model";

/// The host facts added to events.
#[derive(Debug, Clone)]
pub struct Enricher {
    host: String,
    dc: Option<String>,
    kernel: Option<String>,
    cpu_model: Option<String>,
    max_labels: usize,
}

impl Enricher {
    /// `host` and `dc` fill events without them; with `system_labels`, the kernel release and
    /// CPU model are read once from `/proc` (absent when unreadable).
    pub fn new(host: &str, dc: Option<&str>, system_labels: bool) -> Enricher {
        let limits = Limits::default();
        let (kernel, cpu_model) = if system_labels {
            (
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .ok()
                    .and_then(|s| clean(&s, limits.max_label_value_len)),
                std::fs::read_to_string("/proc/cpuinfo")
                    .ok()
                    .and_then(|s| cpu_model(&s))
                    .and_then(|s| clean(&s, limits.max_label_value_len)),
            )
        } else {
            (None, None)
        };
        Enricher {
            host: clean(host, limits.max_name_len).unwrap_or_default(),
            dc: dc.and_then(|d| clean(d, limits.max_name_len)),
            kernel,
            cpu_model,
            max_labels: limits.max_labels,
        }
    }

    /// The kernel release added as the `kernel` label, if known.
    pub fn kernel(&self) -> Option<&str> {
        self.kernel.as_deref()
    }

    /// The CPU model added as the `cpu_model` label, if known.
    pub fn cpu_model(&self) -> Option<&str> {
        self.cpu_model.as_deref()
    }

    /// The host name filled in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The data center filled in, if any.
    pub fn dc(&self) -> Option<&str> {
        self.dc.as_deref()
    }

    /// Fills an empty `host` and `dc` of a profile's labels. The `kernel` and `cpu_model`
    /// labels are not added: extra labels split a profile's series.
    pub fn apply_profile(&self, labels: &mut SampleLabels) {
        if labels.host.is_empty() {
            labels.host.clone_from(&self.host);
        }
        if labels.dc.is_empty() {
            if let Some(dc) = &self.dc {
                labels.dc.clone_from(dc);
            }
        }
    }

    /// Fills what `event` lacks.
    pub fn apply(&self, event: &mut RequestEvent) {
        if event.host.is_empty() {
            event.host.clone_from(&self.host);
        }
        if event.dc.is_empty() {
            if let Some(dc) = &self.dc {
                event.dc.clone_from(dc);
            }
        }
        for (key, value) in [
            (KERNEL_LABEL, &self.kernel),
            (CPU_MODEL_LABEL, &self.cpu_model),
        ] {
            if let Some(value) = value {
                if event.labels.len() < self.max_labels && !event.labels.contains_key(key) {
                    event.labels.insert(key.to_owned(), value.clone());
                }
            }
        }
    }
}

/// The first `model name` (x86) or `Hardware`/`CPU part` style line of `/proc/cpuinfo`.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "Model", "Hardware", "cpu model", "cpu"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_owned())
            })
        })
}

/// Collapses whitespace, drops control characters, cuts to `max` bytes on a char boundary.
fn clean(s: &str, max: usize) -> Option<String> {
    let joined: String = s
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let mut end = joined.len().min(max);
    while !joined.is_char_boundary(end) {
        end -= 1;
    }
    let out = joined[..end].trim_end();
    (!out.is_empty()).then(|| out.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> RequestEvent {
        RequestEvent {
            ts: 1,
            service: "s".into(),
            endpoint: "GET /".into(),
            build: String::new(),
            dc: String::new(),
            host: String::new(),
            status: 200,
            cpu_ns: 1,
            instructions: None,
            wall_ns: 1,
            weight: 1.0,
            labels: Default::default(),
        }
    }

    #[test]
    fn fills_only_what_is_missing_and_respects_the_label_limit() {
        let mut en = Enricher::new("web-1", Some("eu1"), false);
        en.kernel = Some("6.1.0".into());
        en.cpu_model = Some("Xeon".into());
        let mut e = event();
        en.apply(&mut e);
        assert_eq!((e.host.as_str(), e.dc.as_str()), ("web-1", "eu1"));
        assert_eq!(e.labels["kernel"], "6.1.0");
        assert_eq!(e.labels["cpu_model"], "Xeon");

        let mut e = event();
        e.host = "own".into();
        e.dc = "us2".into();
        e.labels.insert("kernel".into(), "mine".into());
        for i in 0..15 {
            e.labels.insert(format!("f{i}"), "on".into());
        }
        en.apply(&mut e);
        assert_eq!((e.host.as_str(), e.dc.as_str()), ("own", "us2"));
        assert_eq!(e.labels["kernel"], "mine");
        assert_eq!(e.labels.len(), 16, "full: cpu_model not added");
        assert!(e.validate(&Limits::default(), 1).is_ok());
    }

    #[test]
    fn reads_cpuinfo_and_cleans_values() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R)  Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("Intel(R)  Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(clean(" a \t b\n", 128).as_deref(), Some("a b"));
        assert_eq!(clean(&"x".repeat(300), 128).map(|s| s.len()), Some(128));
        assert_eq!(clean("\u{1}", 128), None);
        assert!(Enricher::new("h", None, true).kernel().is_some());
    }
}
