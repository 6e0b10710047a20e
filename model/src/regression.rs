//! Regression records: what the analyzer found, as the stores keep it and the API shows it.
//!
//! A record's `id` is derived from what identifies the finding (tenant, service, endpoint,
//! metric, baseline and candidate), so finding the same regression again updates the same
//! record instead of adding one: records are deduplicated by construction, across passes and
//! across collectors.

use serde::{Deserialize, Serialize};

/// Where a record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionState {
    Open,
    Acknowledged,
    Resolved,
}

impl RegressionState {
    pub fn parse(s: &str) -> Option<RegressionState> {
        match s {
            "open" => Some(RegressionState::Open),
            "acknowledged" => Some(RegressionState::Acknowledged),
            "resolved" => Some(RegressionState::Resolved),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RegressionState::Open => "open",
            RegressionState::Acknowledged => "acknowledged",
            RegressionState::Resolved => "resolved",
        }
    }
}

/// A function that explains part of a regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    pub function: String,
    /// Self cost per request, baseline and candidate (in the record's metric units, or samples).
    pub baseline: f64,
    pub candidate: f64,
    /// candidate - baseline.
    pub delta: f64,
}

/// One regression.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegressionRecord {
    pub id: String,
    pub tenant: String,
    pub service: String,
    pub endpoint: String,
    /// `instructions` or `cpu_ns`.
    pub metric: String,
    /// Baseline and candidate: builds for a snapshot compare.
    pub baseline: String,
    pub candidate: String,
    /// Candidate / baseline (robust ratio of medians) and its interval; the interval is absent
    /// (`null`) when it could not be computed. A record never holds a non-finite number.
    pub effect: f64,
    #[serde(default)]
    pub effect_low: Option<f64>,
    #[serde(default)]
    pub effect_high: Option<f64>,
    pub ratio_of_means: Option<f64>,
    pub p_value: f64,
    pub q_value: f64,
    pub baseline_median: f64,
    pub candidate_median: f64,
    pub baseline_requests: u64,
    pub candidate_requests: u64,
    /// The functions that explain it, largest increase first.
    pub culprits: Vec<Culprit>,
    /// Unix ns.
    pub first_seen: i64,
    pub last_seen: i64,
    pub state: RegressionState,
    /// Unix ns of the last state change.
    pub updated: i64,
}

impl RegressionRecord {
    /// The deterministic id of a finding: 16 hex digits of a FNV-1a hash of its key fields.
    pub fn make_id(
        tenant: &str,
        service: &str,
        endpoint: &str,
        metric: &str,
        baseline: &str,
        candidate: &str,
    ) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for part in [tenant, service, endpoint, metric, baseline, candidate] {
            for b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = RegressionRecord::make_id("t", "s", "GET /", "cpu_ns", "1", "2");
        assert_eq!(
            a,
            RegressionRecord::make_id("t", "s", "GET /", "cpu_ns", "1", "2")
        );
        assert_ne!(
            a,
            RegressionRecord::make_id("t", "s", "GET /", "cpu_ns", "12", "")
        );
        assert_eq!(a.len(), 16);
    }
}
