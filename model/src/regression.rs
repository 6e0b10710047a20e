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

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegressionKind {
    /// CPU per request of an endpoint (or of a function in it). Records written before kinds
    /// were all CPU.
    #[default]
    Cpu,
    /// Private memory per worker process of a service (`endpoint` is empty, the metric
    /// `private_bytes`).
    Memory,
}

impl RegressionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RegressionKind::Cpu => "cpu",
            RegressionKind::Memory => "memory",
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
    /// `cpu` or `memory`.
    #[serde(default)]
    pub kind: RegressionKind,
    /// The endpoint (`METHOD /route`); empty for a memory record, which is the service's.
    pub endpoint: String,
    /// For a function-level regression: the function whose self cost per request rose (its
    /// `metric` is then `samples`, its effect the rise of the function's cost, not the
    /// endpoint's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// `instructions`, `cpu_ns`, or `samples` (self samples per request, for a function).
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
    /// The incident the record belongs to (absent in records written before incidents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<String>,
    /// Unix ns of the change point that found it, for records found in a series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed_at: Option<i64>,
    /// Why a resolved record was resolved (absent while it is not, and in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Passes in a row whose compare of its own builds no longer shows it while its candidate is
    /// still the newest build; reset when one shows it again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub passes_gone: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Why a record was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resolution {
    /// Its effect disappeared while its build was still serving (noise, a neighbour, a cache
    /// warming up): no build fixed it.
    WentAway,
    /// A later build brought the endpoint back to the baseline.
    Fixed { build: String },
    /// A human resolved it.
    ByHand,
}

impl Resolution {
    /// A few words for alerts and logs: `went away`, `fixed in build 813`, `resolved by hand`.
    pub fn describe(&self) -> String {
        match self {
            Resolution::WentAway => "went away".to_owned(),
            Resolution::Fixed { build } => format!("fixed in build {build}"),
            Resolution::ByHand => "resolved by hand".to_owned(),
        }
    }
}

impl RegressionRecord {
    /// Whether `self` and `other` record the same finding: the same tenant, service, kind,
    /// endpoint, function, metric, baseline and candidate. A finding keeps its record (and its id) across
    /// passes and restarts by this, not by its id: ids are random, so none can be guessed.
    pub fn same_finding(&self, other: &RegressionRecord) -> bool {
        self.tenant == other.tenant
            && self.service == other.service
            && self.kind == other.kind
            && self.endpoint == other.endpoint
            && self.function == other.function
            && self.metric == other.metric
            && self.baseline == other.baseline
            && self.candidate == other.candidate
    }

    /// The incident this record belongs to, or for a record from before incidents, the one of
    /// its candidate build.
    pub fn incident_id(&self) -> String {
        self.incident
            .clone()
            .unwrap_or_else(|| IncidentCause::Build(self.candidate.clone()).id(&self.tenant))
    }
}

/// FNV-1a over the parts, each ended by a zero byte (so `("ab", "")` and `("a", "b")` differ).
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// What made the regressions of one incident: a build, or a moment (change points with no
/// rollout near them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentCause {
    /// The candidate build.
    Build(String),
    /// Unix ns of the first change point in the incident.
    Time(i64),
}

impl IncidentCause {
    /// The incident's id for `tenant`: `b-` or `t-` and 16 hex digits.
    pub fn id(&self, tenant: &str) -> String {
        match self {
            IncidentCause::Build(b) => format!("b-{:016x}", fnv1a(&[tenant, "build", b])),
            IncidentCause::Time(t) => {
                format!("t-{:016x}", fnv1a(&[tenant, "time", &t.to_string()]))
            }
        }
    }

    /// Whether `id` is the id of a time-caused incident.
    pub fn is_time_id(id: &str) -> bool {
        id.starts_with("t-")
    }
}

/// Regressions with one cause, as `GET /api/v1/incidents` shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub tenant: String,
    pub cause: IncidentCause,
    /// Open while any of its records is open, then acknowledged while any is, else resolved.
    pub state: RegressionState,
    /// The earliest `first_seen` and latest `last_seen` of its records (Unix ns).
    pub first_seen: i64,
    pub last_seen: i64,
    /// The services it touches, sorted.
    pub services: Vec<String>,
    /// Its records, largest effect first.
    pub regressions: Vec<RegressionRecord>,
}

impl Incident {
    /// Groups records by incident; incidents in the order of their state (open first), then
    /// newest `last_seen` first.
    pub fn group(records: Vec<RegressionRecord>) -> Vec<Incident> {
        let mut by_id: std::collections::BTreeMap<String, Vec<RegressionRecord>> =
            Default::default();
        for r in records {
            by_id.entry(r.incident_id()).or_default().push(r);
        }
        let mut out: Vec<Incident> = by_id
            .into_iter()
            .map(|(id, mut regs)| {
                regs.sort_by(|a, b| b.effect.total_cmp(&a.effect).then(a.id.cmp(&b.id)));
                let state = [RegressionState::Open, RegressionState::Acknowledged]
                    .into_iter()
                    .find(|s| regs.iter().any(|r| r.state == *s))
                    .unwrap_or(RegressionState::Resolved);
                let cause = match regs.iter().filter_map(|r| r.changed_at).min() {
                    Some(t) if IncidentCause::is_time_id(&id) => IncidentCause::Time(t),
                    _ => IncidentCause::Build(regs[0].candidate.clone()),
                };
                let mut services: Vec<String> = regs.iter().map(|r| r.service.clone()).collect();
                services.sort();
                services.dedup();
                Incident {
                    tenant: regs[0].tenant.clone(),
                    first_seen: regs.iter().map(|r| r.first_seen).min().unwrap_or(0),
                    last_seen: regs.iter().map(|r| r.last_seen).max().unwrap_or(0),
                    id,
                    cause,
                    state,
                    services,
                    regressions: regs,
                }
            })
            .collect();
        out.sort_by_key(|i| (state_rank(i.state), std::cmp::Reverse(i.last_seen)));
        out
    }
}

/// Open first, then acknowledged, then resolved.
pub fn state_rank(s: RegressionState) -> u8 {
    match s {
        RegressionState::Open => 0,
        RegressionState::Acknowledged => 1,
        RegressionState::Resolved => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_is_its_key_fields_not_its_id() {
        let a = rec("x1", "s", "2", 1.1);
        let same = RegressionRecord {
            id: "x2".into(),
            effect: 1.3,
            ..a.clone()
        };
        assert!(a.same_finding(&same));
        for other in [
            RegressionRecord {
                tenant: "u".into(),
                ..a.clone()
            },
            RegressionRecord {
                endpoint: "GET /other".into(),
                ..a.clone()
            },
            RegressionRecord {
                function: Some("price".into()),
                ..a.clone()
            },
            RegressionRecord {
                metric: "instructions".into(),
                ..a.clone()
            },
            RegressionRecord {
                baseline: "0".into(),
                ..a.clone()
            },
            rec("x1", "s", "3", 1.1),
        ] {
            assert!(!a.same_finding(&other), "{other:?}");
        }
    }

    fn rec(id: &str, service: &str, candidate: &str, effect: f64) -> RegressionRecord {
        RegressionRecord {
            id: id.into(),
            tenant: "t".into(),
            service: service.into(),
            endpoint: format!("GET /{id}"),
            metric: "cpu_ns".into(),
            baseline: "1".into(),
            candidate: candidate.into(),
            effect,
            effect_low: None,
            effect_high: None,
            ratio_of_means: None,
            p_value: 0.001,
            q_value: 0.001,
            baseline_median: 1.0,
            candidate_median: effect,
            baseline_requests: 1000,
            candidate_requests: 1000,
            culprits: Vec::new(),
            first_seen: 10,
            last_seen: 20,
            state: RegressionState::Open,
            updated: 10,
            incident: None,
            changed_at: None,
            resolution: None,
            passes_gone: 0,
            kind: RegressionKind::Cpu,
            function: None,
        }
    }

    #[test]
    fn records_of_one_cause_form_one_incident() {
        let build = IncidentCause::Build("2".into()).id("t");
        let time = IncidentCause::Time(5_000).id("t");
        assert!(build.starts_with("b-") && IncidentCause::is_time_id(&time));
        assert_ne!(
            build,
            IncidentCause::Build("2".into()).id("u"),
            "tenant-scoped"
        );
        let mut recs = vec![
            rec("a", "shop", "2", 1.05),
            rec("b", "cart", "2", 1.10),
            rec("c", "shop", "after x", 1.07),
            rec("d", "cart", "after y", 1.08),
            // Written before incidents: grouped by its candidate build.
            rec("e", "shop", "2", 1.02),
        ];
        for r in &mut recs[..2] {
            r.incident = Some(build.clone());
        }
        for (r, t) in recs[2..4].iter_mut().zip([5_000, 5_600]) {
            r.incident = Some(time.clone());
            r.changed_at = Some(t);
        }
        recs[3].state = RegressionState::Resolved;
        recs[4].state = RegressionState::Acknowledged;
        let got = Incident::group(recs);
        assert_eq!(got.len(), 2, "{got:#?}");
        let b = got.iter().find(|i| i.id == build).expect("build incident");
        assert_eq!(b.cause, IncidentCause::Build("2".into()));
        assert_eq!(b.services, ["cart", "shop"]);
        let ids: Vec<&str> = b.regressions.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "e"], "largest effect first");
        assert_eq!(b.state, RegressionState::Open);
        let t = got.iter().find(|i| i.id == time).expect("time incident");
        assert_eq!(t.cause, IncidentCause::Time(5_000));
        assert_eq!(t.state, RegressionState::Open, "open while any record is");
    }

    #[test]
    fn records_without_the_new_fields_still_parse() {
        let mut v = serde_json::to_value(rec("a", "s", "2", 1.1)).expect("json");
        let o = v.as_object_mut().expect("object");
        for k in ["incident", "changed_at", "resolution", "passes_gone"] {
            assert!(!o.contains_key(k), "{k} left out while unset");
        }
        let back: RegressionRecord = serde_json::from_value(v).expect("parse");
        assert_eq!(back.incident_id(), IncidentCause::Build("2".into()).id("t"));
        let fixed = serde_json::to_value(Resolution::Fixed { build: "3".into() }).expect("json");
        assert_eq!(fixed, serde_json::json!({"kind": "fixed", "build": "3"}));
    }
}
