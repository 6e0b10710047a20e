//! One analysis pass: per service, the newest build against the one before it; each regression
//! it shows is recorded (or its record updated) and alerted once; records of older candidates are
//! resolved once the newest build no longer shows them. Then the change points ([`super::windows`]).

use profwatch_analyzer::alert::AlertStatus;
use profwatch_analyzer::{choose_builds, BuildTraffic, Verdict};
use profwatch_model::query::{BuildSummary, BuildsQuery, ServicesQuery};
use profwatch_model::regression::{RegressionRecord, RegressionState};
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
            for s in services {
                self.pass_service(tenant, &s.service, &mut records, &mut report)
                    .await?;
            }
        }
        Ok(report)
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
            .await
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
            self.record_and_alert(record, "regression found", records, report)
                .await?;
        }
        Ok(ServiceCompare {
            service: service.to_owned(),
            baseline,
            candidate,
            endpoints: comparisons,
        })
    }

    /// Stores a finding. A new one is alerted; a known one keeps its `first_seen` and state (a
    /// human's acknowledgement survives), and one a human resolved stays so, untouched.
    pub(super) async fn record_and_alert(
        &self,
        mut record: RegressionRecord,
        what: &str,
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        match records.iter().position(|r| r.id == record.id) {
            Some(i) => {
                let old = &records[i];
                if old.state == RegressionState::Resolved {
                    return Ok(());
                }
                record.first_seen = old.first_seen;
                record.state = old.state;
                record.updated = old.updated;
                self.store.put_regression(&record).await?;
                records[i] = record;
                report.updated_regressions += 1;
            }
            None => {
                self.store.put_regression(&record).await?;
                if let Some(a) = &self.alerts {
                    a.send(AlertStatus::Firing, &record);
                }
                tracing::warn!(service = %record.service, endpoint = %record.endpoint,
                    effect = record.effect, baseline = %record.baseline,
                    candidate = %record.candidate, "{what}");
                records.push(record);
                report.new_regressions += 1;
            }
        }
        Ok(())
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
            r.service == service && r.state != RegressionState::Resolved && r.candidate != candidate
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
                self.store.put_regression(&resolved).await?;
                if let Some(a) = &self.alerts {
                    a.send(AlertStatus::Resolved, &resolved);
                }
                *r = resolved;
                report.resolved_regressions += 1;
            }
        }
        Ok(())
    }
}
