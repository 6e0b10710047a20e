//! `profwatch agent status`: reads a running sidecar's `/status` and prints a summary.

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
            "  profiling   {} processes, {} threads; {} samples, {} lost",
            s.profiled_processes, s.profiled_threads, s.profile_samples, s.profile_samples_lost
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
    if let Some(e) = &s.last_error {
        let _ = writeln!(out, "  last error  {e}");
    }
    out
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
}
