//! One analysis pass: per service, the newest build against the one before it; each regression
//! it shows is recorded (or its record updated) in its incident; records of older candidates are
//! resolved once the newest build no longer shows them. Then the change points ([`super::windows`]).
//! At the end of a tenant's pass, one alert per new incident lists its new records, and one per
//! incident with records resolved lists those.

use std::collections::{HashMap, HashSet};

use profwatch_analyzer::alert::AlertStatus;
use profwatch_analyzer::incident::{alert_groups, incident_for, Cause};
use profwatch_analyzer::{choose_builds, BuildTraffic, Comparison, Verdict};
use profwatch_model::query::{BuildSummary, BuildsQuery, ServicesQuery};
use profwatch_model::regression::{RegressionKind, RegressionRecord, RegressionState, Resolution};
use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;

use super::record::{from_comparison, Finding};
use super::{AnalysisError, PassReport, RegressionTracker, ServiceCompare};

impl RegressionTracker {
    /// One pass over every service of `tenants`.
    pub async fn run_pass(&self, tenants: &[Tenant]) -> Result<PassReport, AnalysisError> {
        let mut report = PassReport::default();
        for tenant in tenants {
            let services = self
                .store
                .services(&ServicesQuery {
                    tenant: tenant.clone(),
                    range: self.window(),
                })
                .await?;
            let mut records = self.store.regressions(tenant).await?;
            let before: HashMap<String, RegressionState> =
                records.iter().map(|r| (r.id.clone(), r.state)).collect();
            // Services that only the sidecar's memory watch knows (no requests) get the memory
            // pass alone.
            let memory_only: Vec<String> = self
                .store
                .memory_services(tenant, self.window())
                .await?
                .into_iter()
                .filter(|m| !services.iter().any(|s| &s.service == m))
                .collect();
            let mut outcome = Ok(());
            for s in services {
                outcome = self
                    .pass_service(tenant, &s.service, &mut records, &mut report)
                    .await;
                if outcome.is_err() {
                    break;
                }
            }
            for service in memory_only {
                if outcome.is_err() {
                    break;
                }
                outcome = self
                    .pass_memory(tenant, &service, &mut records, &mut report)
                    .await;
            }
            // What was stored is alerted even when a later step failed: a record is new once.
            self.alert_incidents(&records, &before, &mut report);
            outcome?;
        }
        Ok(report)
    }

    /// One alert per incident that has a new record this pass and none before it, listing the
    /// pass's new records of it; one per incident whose records this pass resolved, listing
    /// them. `before` is each record's state before the pass.
    fn alert_incidents(
        &self,
        records: &[RegressionRecord],
        before: &HashMap<String, RegressionState>,
        report: &mut PassReport,
    ) {
        let known: HashSet<String> = records
            .iter()
            .filter(|r| before.contains_key(&r.id))
            .map(RegressionRecord::incident_id)
            .collect();
        let new: Vec<RegressionRecord> = records
            .iter()
            .filter(|r| !before.contains_key(&r.id))
            .cloned()
            .collect();
        let resolved: Vec<RegressionRecord> = records
            .iter()
            .filter(|r| {
                r.state == RegressionState::Resolved
                    && before
                        .get(&r.id)
                        .is_some_and(|s| *s != RegressionState::Resolved)
            })
            .cloned()
            .collect();
        let firing = alert_groups(&new, &known);
        report.new_incidents += firing.len();
        for group in firing {
            tracing::warn!(incident = %group[0].incident_id(), regressions = group.len(),
                candidate = %group[0].candidate, "incident found");
            if let Some(a) = &self.alerts {
                a.send_incident(AlertStatus::Firing, &group);
            }
        }
        for group in alert_groups(&resolved, &HashSet::new()) {
            if let Some(a) = &self.alerts {
                a.send_incident(AlertStatus::Resolved, &group);
            }
        }
    }

    async fn pass_service(
        &self,
        tenant: &Tenant,
        service: &str,
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let builds = self
            .store
            .builds(&BuildsQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range: self.window(),
            })
            .await?;
        match self.newest_two(&builds) {
            Some((baseline, candidate)) => {
                let compared = self
                    .compare_builds(
                        tenant, service, &builds, baseline, candidate, records, report,
                    )
                    .await?;
                self.resolve_stale(tenant, service, &compared.candidate, records, report)
                    .await?;
                report.services.push(compared);
            }
            None => report.skipped_services.push(service.to_owned()),
        }
        self.pass_windows(tenant, service, &builds, records, report)
            .await?;
        self.pass_functions(tenant, service, &builds, records, report)
            .await?;
        self.pass_memory(tenant, service, records, report).await
    }

    /// The baseline and candidate builds: the newest with enough traffic and the one before it.
    fn newest_two(&self, builds: &[BuildSummary]) -> Option<(String, String)> {
        let traffic: Vec<BuildTraffic> = builds
            .iter()
            .map(|b| BuildTraffic {
                build: b.build.clone(),
                first_seen: b.first_seen,
                requests: b.requests,
            })
            .collect();
        choose_builds(&traffic, self.cfg.compare.min_requests as f64)
    }

    /// Compares the two builds and records every regression found, with its culprits.
    #[allow(clippy::too_many_arguments)]
    async fn compare_builds(
        &self,
        tenant: &Tenant,
        service: &str,
        builds: &[BuildSummary],
        baseline: String,
        candidate: String,
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<ServiceCompare, AnalysisError> {
        let overlap = self.overlap(builds, &baseline, &candidate);
        let comparisons = self
            .compare(tenant, service, &baseline, &candidate, None, overlap)
            .await?;
        for c in comparisons
            .iter()
            .filter(|c| c.verdict == Verdict::Regression)
        {
            let culprits = self
                .culprits(tenant, service, c, &baseline, &candidate, overlap)
                .await?;
            let finding = Finding {
                tenant,
                service,
                baseline: baseline.clone(),
                candidate: candidate.clone(),
            };
            let record = from_comparison(finding, c, None, culprits, now_ns());
            let cause = Cause::Build(candidate.clone());
            self.record(record, &cause, "regression found", records, report)
                .await?;
        }
        self.went_away(
            service,
            &baseline,
            &candidate,
            &comparisons,
            records,
            report,
        )
        .await?;
        Ok(ServiceCompare {
            service: service.to_owned(),
            baseline,
            candidate,
            endpoints: comparisons,
        })
    }

    /// Stores a finding in its incident (alerted at the end of the pass). A known one keeps its
    /// `first_seen`, incident and state (a human's acknowledgement survives), and one a human
    /// resolved stays so, untouched.
    pub(super) async fn record(
        &self,
        mut record: RegressionRecord,
        cause: &Cause,
        what: &str,
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        match records.iter().position(|r| r.same_finding(&record)) {
            Some(i) => {
                let old = &records[i];
                if old.state == RegressionState::Resolved {
                    return Ok(());
                }
                record.id = old.id.clone();
                record.first_seen = old.first_seen;
                record.state = old.state;
                record.updated = old.updated;
                record.incident = old.incident.clone().or_else(|| Some(old.incident_id()));
                record.changed_at = old.changed_at.or(record.changed_at);
                self.store.put_regression(&record).await?;
                records[i] = record;
                report.updated_regressions += 1;
            }
            None => {
                let tolerance = 3 * self.cfg.bucket.as_nanos().min(i64::MAX as u128 / 4) as i64;
                record.incident = Some(incident_for(&record, cause, records, tolerance));
                self.store.put_regression(&record).await?;
                tracing::warn!(service = %record.service, endpoint = %record.endpoint,
                    effect = record.effect, baseline = %record.baseline,
                    candidate = %record.candidate, "{what}");
                records.push(record);
                report.new_regressions += 1;
            }
        }
        Ok(())
    }

    /// Open records of this compare (`service`, `baseline` → `candidate`) that it no longer shows
    /// (a decided verdict other than regression): one more pass gone, and closed as "went away"
    /// after `went_away_passes`. A pass that shows one again has reset its count (its record was
    /// rewritten from the compare).
    async fn went_away(
        &self,
        service: &str,
        baseline: &str,
        candidate: &str,
        comparisons: &[Comparison],
        records: &mut [RegressionRecord],
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        for r in records.iter_mut().filter(|r| {
            r.service == service
                && r.kind == RegressionKind::Cpu
                && r.baseline == baseline
                && r.candidate == candidate
                && r.state != RegressionState::Resolved
        }) {
            let gone = comparisons.iter().any(|c| {
                c.endpoint == r.endpoint
                    && c.metric.name() == r.metric
                    && matches!(c.verdict, Verdict::Same | Verdict::Improvement)
            });
            if !gone {
                continue;
            }
            if self.settle_gone(r, true, report).await? {
                tracing::info!(%service, endpoint = %r.endpoint, %candidate, "regression went away");
            }
        }
        Ok(())
    }

    /// Stores `r` after a pass that could tell whether its effect is `gone`: one more pass gone
    /// (see [`Self::one_more_pass_gone`]), or the count started again when the effect is still
    /// there. Nothing is written when nothing changed (still there, and no pass gone to forget).
    /// True when this pass closed it.
    pub(super) async fn settle_gone(
        &self,
        r: &mut RegressionRecord,
        gone: bool,
        report: &mut PassReport,
    ) -> Result<bool, AnalysisError> {
        let mut next = r.clone();
        let closed = if gone {
            self.one_more_pass_gone(&mut next, report)
        } else if next.passes_gone == 0 {
            return Ok(false);
        } else {
            next.passes_gone = 0;
            false
        };
        self.store.put_regression(&next).await?;
        *r = next;
        Ok(closed)
    }

    /// Counts one more pass without `r`'s effect; at `went_away_passes` it is resolved as went
    /// away (and counted in `report`). True when this pass closed it.
    fn one_more_pass_gone(&self, r: &mut RegressionRecord, report: &mut PassReport) -> bool {
        r.passes_gone += 1;
        if r.passes_gone < self.cfg.went_away_passes {
            return false;
        }
        r.state = RegressionState::Resolved;
        r.resolution = Some(Resolution::WentAway);
        r.updated = now_ns();
        report.resolved_regressions += 1;
        report.went_away += 1;
        true
    }

    /// Open records of `service` for older candidates: resolved (and alerted) once `candidate`,
    /// the newest build, no longer shows the regression against the record's own baseline and
    /// the compare could decide.
    async fn resolve_stale(
        &self,
        tenant: &Tenant,
        service: &str,
        candidate: &str,
        records: &mut [RegressionRecord],
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        for r in records.iter_mut().filter(|r| {
            r.service == service
                && r.kind == RegressionKind::Cpu
                && r.state != RegressionState::Resolved
                && r.candidate != candidate
        }) {
            let now_vs_base = self
                .compare(
                    tenant,
                    service,
                    &r.baseline,
                    candidate,
                    Some(&r.endpoint),
                    None,
                )
                .await?;
            let still = now_vs_base.iter().any(|c| c.verdict == Verdict::Regression);
            let decided = now_vs_base
                .iter()
                .any(|c| c.verdict != Verdict::NotEnoughData);
            if decided && !still {
                let mut resolved = r.clone();
                resolved.state = RegressionState::Resolved;
                resolved.updated = now_ns();
                resolved.resolution = Some(Resolution::Fixed {
                    build: candidate.to_owned(),
                });
                report.fixed += 1;
                self.store.put_regression(&resolved).await?;
                *r = resolved;
                report.resolved_regressions += 1;
            }
        }
        Ok(())
    }
}
