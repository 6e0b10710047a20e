//! A regression record from the comparison that found it.

use profwatch_analyzer::{ChangePoint, Comparison, Metric};
use profwatch_model::regression::{Culprit, RegressionKind, RegressionRecord, RegressionState};
use profwatch_model::Tenant;

/// What a finding is about (with the endpoint and metric of its comparison).
#[derive(Debug)]
pub(super) struct Finding<'a> {
    pub(super) tenant: &'a Tenant,
    pub(super) service: &'a str,
    pub(super) baseline: String,
    pub(super) candidate: String,
}

/// A new record's id: 128 random bits in hex, so that no id can be guessed from what the
/// record is about. A finding finds its record again by its fields
/// ([`RegressionRecord::same_finding`]), never by id.
pub(super) fn new_id() -> String {
    let mut bits = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bits) {
        // No randomness from the OS (a sandbox without getrandom(2) or /dev/urandom): the
        // process's random hash keys (std's, drawn once per thread) over a counter and the time.
        tracing::warn!(error = %e, "no OS randomness for a regression id; using the hash keys");
        bits = fallback_bits();
    }
    bits.iter().map(|b| format!("{b:02x}")).collect()
}

fn fallback_bits() -> [u8; 16] {
    use std::hash::BuildHasher;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let now = profwatch_model::timefmt::now_ns();
    let half = |salt: u8| std::collections::hash_map::RandomState::new().hash_one((n, salt, now));
    ((u128::from(half(1)) << 64) | u128::from(half(2))).to_be_bytes()
}

/// A new, open record of the regression `c` shows (first and last seen `now`). Figures the
/// compare could not give come from the change point that prompted it, when there is one.
pub(super) fn from_comparison(
    finding: Finding<'_>,
    c: &Comparison,
    change: Option<&ChangePoint>,
    culprits: Vec<Culprit>,
    now: i64,
) -> RegressionRecord {
    let metric = c.metric.name();
    let (effect_low, effect_high) = finite_interval(c.ci.map(|i| (i.low, i.high)));
    RegressionRecord {
        id: new_id(),
        tenant: finding.tenant.0.clone(),
        service: finding.service.to_owned(),
        kind: match c.metric {
            Metric::PrivateBytes => RegressionKind::Memory,
            Metric::Instructions | Metric::CpuNs => RegressionKind::Cpu,
        },
        endpoint: c.endpoint.clone(),
        metric: metric.to_owned(),
        baseline: finding.baseline,
        candidate: finding.candidate,
        effect: c.effect.unwrap_or(1.0),
        effect_low,
        effect_high,
        ratio_of_means: c.ratio_of_means,
        p_value: c.p_value.or(change.map(|ch| ch.p_value)).unwrap_or(1.0),
        q_value: c.q_value.unwrap_or(1.0),
        baseline_median: c
            .median_baseline
            .or(change.map(|ch| ch.before))
            .unwrap_or(0.0),
        candidate_median: c
            .median_candidate
            .or(change.map(|ch| ch.after))
            .unwrap_or(0.0),
        baseline_requests: c.n_baseline as u64,
        candidate_requests: c.n_candidate as u64,
        culprits,
        first_seen: now,
        last_seen: now,
        state: RegressionState::Open,
        updated: now,
        incident: None,
        changed_at: None,
        resolution: None,
        passes_gone: 0,
        function: None,
    }
}

/// An interval with both ends finite, as `(low, high)`; absent ends otherwise.
fn finite_interval(ci: Option<(f64, f64)>) -> (Option<f64>, Option<f64>) {
    match ci {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() => (Some(lo), Some(hi)),
        _ => (None, None),
    }
}
