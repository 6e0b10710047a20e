//! `profwatch agent status`: reads a running sidecar's `/status` and prints a summary.
//!
//! The summary shows a line only for what happened (profiles, set-aside batches, dead
//! letters, a collector that keeps refusing), so a healthy sidecar prints a short summary.

use std::fmt::Write;
use std::time::Duration;

use super::error::SidecarError;
use super::metrics::StatusSnapshot;

/// Fetches the status JSON from the sidecar's metrics address (`host:port` or a URL).
pub async fn fetch(metrics: &str) -> Result<StatusSnapshot, SidecarError> {
    let base = if metrics.starts_with("http://") {
        metrics.trim_end_matches('/').to_owned()
    } else {
        format!("http://{metrics}")
    };
    let url = format!("{base}/status");
    let err = |message: String| SidecarError::Status {
        url: url.clone(),
        message,
    };
    profwatch_model::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| err(e.to_string()))?;
    let resp = client.get(&url).send().await.map_err(|e| {
        err(format!(
            "{e} (is `profwatch agent` running with this --metrics?)"
        ))
    })?;
    if !resp.status().is_success() {
        return Err(err(format!("answered {}", resp.status())));
    }
    let text = resp.text().await.map_err(|e| err(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| err(format!("not a sidecar status: {e}")))
}

/// The human summary.
pub fn render(s: &StatusSnapshot) -> String {
    let mut out = String::new();
    let sum = |v: &[(String, u64)]| v.iter().map(|(_, n)| n).sum::<u64>();
    let nonzero = |v: &[(String, u64)]| {
        let parts: Vec<String> = v
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    };
    let _ = writeln!(out, "profwatch agent on {} → {}", s.host, s.collector);
    let _ = writeln!(out, "  up          {}s", s.uptime_s);
    let _ = writeln!(out, "  received    {} events", s.received);
    let _ = writeln!(
        out,
        "  rejected    {}{}",
        sum(&s.rejected),
        nonzero(&s.rejected)
    );
    let _ = writeln!(
        out,
        "  spool       {} batches, {} events, {} bytes",
        s.spool_records, s.spool_events, s.spool_bytes
    );
    let _ = writeln!(
        out,
        "  shipped     {} events in {} batches",
        s.shipped_events, s.shipped_batches
    );
    let _ = writeln!(out, "  retries     {}", s.retries);
    let _ = writeln!(
        out,
        "  dropped     {}{}",
        sum(&s.dropped),
        nonzero(&s.dropped)
    );
    if s.profiled_processes > 0 || s.profile_samples > 0 {
        let _ = writeln!(
            out,
            "  profiling   {} processes, {} threads; {} samples, {} lost, {} truncated; \
             unwind tables {} KiB",
            s.profiled_processes,
            s.profiled_threads,
            s.profile_samples,
            s.profile_samples_lost,
            s.profile_samples_truncated,
            s.profile_unwind_info_bytes / 1024
        );
    }
    if s.spooled_profiles > 0 || s.received_profiles > 0 {
        let _ = writeln!(
            out,
            "  profiles    {} from apps, {} spooled, {} shipped, {} dropped{}",
            s.received_profiles,
            s.spooled_profiles,
            s.shipped_profiles,
            sum(&s.dropped_profiles),
            nonzero(&s.dropped_profiles)
        );
    }
    if s.memory_processes > 0 || s.memory_samples_read > 0 {
        let _ = writeln!(
            out,
            "  memory      {} processes; {} samples read, {} invalid, {} spooled, {} shipped, \
             {} dead-lettered, {} dropped{}",
            s.memory_processes,
            s.memory_samples_read,
            s.memory_samples_invalid,
            s.memory_samples_spooled,
            s.memory_samples_shipped,
            s.memory_samples_dead_lettered,
            sum(&s.memory_samples_dropped),
            nonzero(&s.memory_samples_dropped)
        );
    }
    if sum(&s.memory_hellos) > 0 {
        let _ = writeln!(
            out,
            "  hellos      {}{}",
            sum(&s.memory_hellos),
            nonzero(&s.memory_hellos)
        );
    }
    delivery_lines(&mut out, s);
    if !s.peers.is_empty() {
        let peers: Vec<String> = s
            .peers
            .iter()
            .map(|p| {
                let pid = p.pid.map_or_else(|| "?".to_owned(), |p| p.to_string());
                format!("pid {pid} (uid {}, gid {})", p.uid, p.gid)
            })
            .collect();
        let _ = writeln!(out, "  apps        {}", peers.join(", "));
    }
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "  last error  {e}");
    }
    out
}

/// Batches set aside, dead letters, and the collector's current run of refusals.
fn delivery_lines(out: &mut String, s: &StatusSnapshot) {
    if s.set_aside > 0 || s.spool_set_aside > 0 {
        let _ = writeln!(
            out,
            "  set aside   {} batches in the spool ({} times: they kept failing, the others went first)",
            s.spool_set_aside, s.set_aside
        );
    }
    if s.dead_letter_records > 0 || s.dead_lettered_events > 0 || s.dead_lettered_profiles > 0 {
        let _ = writeln!(
            out,
            "  dead letter {} batches, {} bytes in <spool>/dead-letter ({} events, {} profiles refused for good)",
            s.dead_letter_records, s.dead_letter_bytes, s.dead_lettered_events, s.dead_lettered_profiles
        );
    }
    if let Some(r) = &s.refusal {
        let _ = writeln!(out, "  delivery    {}", r.describe());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_the_reasons_that_happened() {
        let s = StatusSnapshot {
            host: "web-1".into(),
            collector: "http://c/api/v1/events".into(),
            received: 10,
            rejected: vec![("bad_json".into(), 2), ("too_long".into(), 0)],
            dropped: vec![("spool_full".into(), 0)],
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("received    10 events"), "{text}");
        assert!(text.contains("rejected    2 (bad_json 2)"), "{text}");
        assert!(text.contains("dropped     0\n"), "{text}");
        assert!(!text.contains("profil"), "{text}");
        assert!(!text.contains("set aside"), "{text}");
        assert!(!text.contains("dead letter"), "{text}");
        assert!(!text.contains("refused by collector"), "{text}");
        let s = StatusSnapshot {
            profiled_processes: 2,
            profiled_threads: 9,
            profile_samples: 500,
            spooled_profiles: 4,
            shipped_profiles: 3,
            dropped_profiles: vec![("spool_full".into(), 1)],
            ..Default::default()
        };
        let text = render(&s);
        assert!(
            text.contains("profiling   2 processes, 9 threads; 500 samples, 0 lost"),
            "{text}"
        );
        assert!(
            text.contains(
                "profiles    0 from apps, 4 spooled, 3 shipped, 1 dropped (spool_full 1)"
            ),
            "{text}"
        );
    }

    #[test]
    fn summary_shows_refusals_set_aside_batches_and_dead_letters() {
        let s = StatusSnapshot {
            set_aside: 4,
            spool_set_aside: 1,
            dead_lettered_events: 15,
            dead_letter_records: 3,
            dead_letter_bytes: 900,
            refusal: Some(crate::Refusal {
                status: 401,
                since_ns: 1_767_225_600_000_000_000,
                for_s: 42,
            }),
            ..Default::default()
        };
        let text = render(&s);
        assert!(
            text.contains(
                "delivery    refused by collector: 401 since 2026-01-01T00:00:00Z (for 42s)"
            ),
            "{text}"
        );
        assert!(
            text.contains("set aside   1 batches in the spool (4 times"),
            "{text}"
        );
        assert!(
            text.contains(
                "dead letter 3 batches, 900 bytes in <spool>/dead-letter (15 events, 0 profiles"
            ),
            "{text}"
        );
    }
}
