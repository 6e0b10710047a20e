//! Incidents: the regressions one cause explains, alerted once (FBDetect's deduplication of
//! correlated regressions).
//!
//! A bad build that touches thirty endpoints is one problem, not thirty. Every regression a
//! build compare finds, and every change point tied to a rollout, belongs to the incident of its
//! candidate build (across endpoints and services of the tenant). A change point with no rollout
//! near it belongs to the incident of its moment: it joins an incident of change points whose
//! times lie within `tolerance` of its own, else it starts one.
//!
//! Invariants:
//! - An incident's id depends only on its cause (tenant and build, or tenant and the time of its
//!   first change point), so passes, restarts and several collectors agree on it.
//! - One alert per incident: it goes out in the pass that first finds any of its regressions and
//!   lists every regression found in that pass; a regression found later joins the incident
//!   without a new alert.

use std::collections::{BTreeMap, HashSet};

use profwatch_model::regression::{IncidentCause, RegressionRecord};

/// What a new finding is explained by, before it has an incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The candidate build of a compare, or the rollout nearest to a change point.
    Build(String),
    /// A change point at this time (Unix ns) with no rollout near it.
    Time(i64),
}

/// The incident `record` (with `cause`) belongs to, given the records already known (those of
/// this pass included): a build's incident, or the time incident of a known change point within
/// `tolerance` ns (the nearest), or a new time incident.
pub fn incident_for(
    record: &RegressionRecord,
    cause: &Cause,
    known: &[RegressionRecord],
    tolerance: i64,
) -> String {
    match cause {
        Cause::Build(b) => IncidentCause::Build(b.clone()).id(&record.tenant),
        Cause::Time(t) => known
            .iter()
            .filter(|k| k.tenant == record.tenant)
            .filter_map(|k| match (&k.incident, k.changed_at) {
                (Some(id), Some(at))
                    if IncidentCause::is_time_id(id) && (at - t).abs() <= tolerance =>
                {
                    Some(((at - t).abs(), id))
                }
                _ => None,
            })
            .min()
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| IncidentCause::Time(*t).id(&record.tenant)),
    }
}

/// The alerts a pass sends: the pass's new records grouped by incident, each group largest
/// effect first, leaving out incidents already `alerted` before the pass.
pub fn alert_groups(
    new: &[RegressionRecord],
    alerted: &HashSet<String>,
) -> Vec<Vec<RegressionRecord>> {
    let mut groups: BTreeMap<String, Vec<RegressionRecord>> = BTreeMap::new();
    for r in new {
        let id = r.incident_id();
        if !alerted.contains(&id) {
            groups.entry(id).or_default().push(r.clone());
        }
    }
    let mut out: Vec<Vec<RegressionRecord>> = groups.into_values().collect();
    for g in &mut out {
        g.sort_by(|a, b| b.effect.total_cmp(&a.effect));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use profwatch_model::regression::RegressionState;

    fn rec(endpoint: &str, tenant: &str) -> RegressionRecord {
        RegressionRecord {
            id: format!("{tenant}/{endpoint}"),
            tenant: tenant.into(),
            service: "s".into(),
            endpoint: endpoint.into(),
            metric: "cpu_ns".into(),
            baseline: "1".into(),
            candidate: "2".into(),
            effect: 1.05,
            effect_low: None,
            effect_high: None,
            ratio_of_means: None,
            p_value: 0.001,
            q_value: 0.001,
            baseline_median: 1.0,
            candidate_median: 1.05,
            baseline_requests: 100,
            candidate_requests: 100,
            culprits: Vec::new(),
            first_seen: 0,
            last_seen: 0,
            state: RegressionState::Open,
            updated: 0,
            incident: None,
            changed_at: None,
            resolution: None,
            passes_gone: 0,
            kind: profwatch_model::regression::RegressionKind::Cpu,
            function: None,
        }
    }

    /// Finds `r` with `cause` as a pass does: its incident set, then known.
    fn found(known: &mut Vec<RegressionRecord>, mut r: RegressionRecord, cause: Cause) -> String {
        if let Cause::Time(t) = cause {
            r.changed_at = Some(t);
        }
        let id = incident_for(&r, &cause, known, 1_000);
        r.incident = Some(id.clone());
        known.push(r);
        id
    }

    #[test]
    fn one_build_across_endpoints_and_services_is_one_incident() {
        let mut known = Vec::new();
        let ids: Vec<String> = (0..30)
            .map(|i| {
                let mut r = rec(&format!("GET /{i}"), "t");
                r.service = format!("svc{}", i % 3);
                found(&mut known, r, Cause::Build("812".into()))
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
        let other = found(&mut known, rec("GET /x", "t"), Cause::Build("813".into()));
        assert_ne!(other, ids[0], "another build, another incident");
        let tenant = found(&mut known, rec("GET /0", "u"), Cause::Build("812".into()));
        assert_ne!(tenant, ids[0], "another tenant, another incident");
        let groups = alert_groups(&known, &HashSet::new());
        assert_eq!(groups.len(), 3, "one alert per incident");
        assert_eq!(groups.iter().map(Vec::len).max(), Some(30));
    }

    #[test]
    fn change_points_near_in_time_share_an_incident_and_far_ones_do_not() {
        let mut known = Vec::new();
        let a = found(&mut known, rec("GET /a", "t"), Cause::Time(10_000));
        let b = found(&mut known, rec("GET /b", "t"), Cause::Time(10_800));
        // Within the tolerance of b, though not of a: chains to the nearest.
        let c = found(&mut known, rec("GET /c", "t"), Cause::Time(11_500));
        let far = found(&mut known, rec("GET /d", "t"), Cause::Time(50_000));
        let other_tenant = found(&mut known, rec("GET /e", "u"), Cause::Time(10_000));
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_ne!(a, far);
        assert_ne!(a, other_tenant);
        assert!(IncidentCause::is_time_id(&a));
        // A build's incident is never joined by time.
        let mut r = rec("GET /f", "t");
        r.changed_at = Some(10_000);
        let built = found(&mut known, r, Cause::Build("9".into()));
        let near_build = found(&mut known, rec("GET /g", "t"), Cause::Time(10_100));
        assert_ne!(built, near_build);
        assert_eq!(near_build, a);
    }

    #[test]
    fn an_incident_alerted_before_is_not_alerted_again() {
        let mut known = Vec::new();
        let id = found(&mut known, rec("GET /a", "t"), Cause::Build("2".into()));
        found(&mut known, rec("GET /b", "t"), Cause::Build("3".into()));
        let alerted: HashSet<String> = [id].into_iter().collect();
        let groups = alert_groups(&known, &alerted);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0][0].endpoint, "GET /b");
    }
}
