//! Memory per worker: a service's builds compared on private bytes per worker process, and
//! change points in its private bytes per worker over time. Records are of kind `memory`, the
//! service's (their endpoint is empty, their metric `private_bytes`), and join the incident of
//! their cause beside the CPU records.
//!
//! The compare's unit is one process's mean private bytes over one `memory_step`
//! ([`Store::memory_processes`](profwatch_store::Store::memory_processes)), clustered by host,
//! with the CPU compare's statistics and thresholds (alpha, minimum effect, units and hosts per
//! arm). A process's readings are far less noisy than requests' costs, but they are not
//! independent: the host clusters carry the inference, as they do for requests.
//!
//! Invariants: a build compare is recorded once per (baseline, candidate), a change point once
//! per moment, and not at all when a build compare already recorded its rollout; both close as
//! "went away" like CPU records, and a build record resolves as "fixed in build X" when the
//! newest build X is back within its baseline.

use std::collections::BTreeMap;

use profwatch_analyzer::incident::Cause;
use profwatch_analyzer::{
    choose_builds, compare_all, detect_timed, BuildTraffic, Comparison, EndpointSamples, Metric,
    Sample, Verdict,
};
use profwatch_model::memory::{MemoryGroupBy, MemoryQuery, ProcessMemory};
use profwatch_model::query::TimeRange;
use profwatch_model::regression::{RegressionKind, RegressionRecord, RegressionState, Resolution};
use profwatch_model::timefmt::{format_rfc3339, now_ns, NANOS_PER_SEC};
use profwatch_model::Tenant;

use super::record::{from_comparison, Finding};
use super::{AnalysisError, PassReport, RegressionTracker};

/// The units of one arm: the `(build, host, pid)` means per step that `keep` takes.
fn arm(
    units: &[ProcessMemory],
    dcs: &mut Vec<String>,
    keep: impl Fn(&ProcessMemory) -> bool,
) -> Vec<Sample> {
    let mut hosts: BTreeMap<&str, u32> = BTreeMap::new();
    for u in units.iter().filter(|u| keep(u)) {
        let next = hosts.len() as u32;
        hosts.entry(&u.host).or_insert(next);
    }
    units
        .iter()
        .filter(|u| keep(u) && u.private_bytes > 0.0 && u.private_bytes.is_finite())
        .map(|u| {
            let dc = match dcs.iter().position(|d| *d == u.dc) {
                Some(i) => i as u32,
                None => {
                    dcs.push(u.dc.clone());
                    dcs.len() as u32 - 1
                }
            };
            Sample {
                value: u.private_bytes,
                weight: 1.0,
                host: hosts[u.host.as_str()],
                dc,
                ts: u.ts,
            }
        })
        .collect()
}

/// The compare's input: the units `baseline` takes against those `candidate` takes.
fn memory_samples(
    units: &[ProcessMemory],
    baseline: impl Fn(&ProcessMemory) -> bool,
    candidate: impl Fn(&ProcessMemory) -> bool,
) -> EndpointSamples {
    let mut dcs = Vec::new();
    let baseline = arm(units, &mut dcs, baseline);
    let candidate = arm(units, &mut dcs, candidate);
    EndpointSamples {
        endpoint: String::new(),
        metric: Metric::PrivateBytes,
        dcs,
        baseline,
        candidate,
    }
}

/// Each build's units and first unit, for choosing the two newest builds.
fn build_traffic(units: &[ProcessMemory]) -> Vec<BuildTraffic> {
    let mut builds: BTreeMap<&str, (i64, f64)> = BTreeMap::new();
    for u in units {
        let b = builds.entry(&u.build).or_insert((u.ts, 0.0));
        b.0 = b.0.min(u.ts);
        b.1 += 1.0;
    }
    builds
        .into_iter()
        .map(|(build, (first_seen, requests))| BuildTraffic {
            build: build.to_owned(),
            first_seen,
            requests,
        })
        .collect()
}

fn is_memory_of(r: &RegressionRecord, service: &str) -> bool {
    r.kind == RegressionKind::Memory && r.service == service && r.state != RegressionState::Resolved
}

impl RegressionTracker {
    /// One pass over `service`'s memory: the newest build against the one before it, stale
    /// records fixed, then change points. Nothing happens without memory samples.
    pub(super) async fn pass_memory(
        &self,
        tenant: &Tenant,
        service: &str,
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let units = self.memory_units(tenant, service, self.window()).await?;
        if units.is_empty() {
            return Ok(());
        }
        let min = self.cfg.compare.min_requests as f64;
        if let Some((baseline, candidate)) = choose_builds(&build_traffic(&units), min) {
            self.memory_builds(
                tenant, service, &units, &baseline, &candidate, records, report,
            )
            .await?;
        }
        self.memory_changes(tenant, service, &units, records, report)
            .await
    }

    async fn memory_units(
        &self,
        tenant: &Tenant,
        service: &str,
        range: TimeRange,
    ) -> Result<Vec<ProcessMemory>, AnalysisError> {
        let step = (self.cfg.memory_step.as_nanos() as i64).max(1);
        Ok(self
            .store
            .memory_processes(
                &MemoryQuery {
                    tenant: tenant.clone(),
                    service: service.to_owned(),
                    range,
                    group_by: MemoryGroupBy::None,
                },
                step,
            )
            .await?)
    }

    async fn compare_memory(
        &self,
        input: EndpointSamples,
    ) -> Result<Option<Comparison>, AnalysisError> {
        let cfg = self.cfg.compare.clone();
        let out = tokio::task::spawn_blocking(move || compare_all(&[input], &cfg))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))??;
        Ok(out.into_iter().next())
    }

    /// The build compare: recorded when it shows a regression, a pass gone counted when it
    /// shows none, and records of older candidates fixed once the newest is back within their
    /// baseline.
    #[allow(clippy::too_many_arguments)]
    async fn memory_builds(
        &self,
        tenant: &Tenant,
        service: &str,
        units: &[ProcessMemory],
        baseline: &str,
        candidate: &str,
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let input = memory_samples(units, |u| u.build == baseline, |u| u.build == candidate);
        let Some(c) = self.compare_memory(input).await? else {
            return Ok(());
        };
        match c.verdict {
            Verdict::Regression => {
                let finding = Finding {
                    tenant,
                    service,
                    baseline: baseline.to_owned(),
                    candidate: candidate.to_owned(),
                };
                let record = from_comparison(finding, &c, None, Vec::new(), now_ns());
                let cause = Cause::Build(candidate.to_owned());
                self.record(record, &cause, "memory regression found", records, report)
                    .await?;
            }
            Verdict::Same | Verdict::Improvement => {
                for r in records.iter_mut().filter(|r| {
                    is_memory_of(r, service)
                        && r.changed_at.is_none()
                        && r.baseline == baseline
                        && r.candidate == candidate
                }) {
                    if self.settle_gone(r, true, report).await? {
                        tracing::info!(%service, %candidate, "memory regression went away");
                    }
                }
            }
            Verdict::NotEnoughData => {}
        }
        // Older candidates' records: fixed when the newest build is back within their baseline.
        for r in records.iter_mut().filter(|r| {
            is_memory_of(r, service) && r.changed_at.is_none() && r.candidate != candidate
        }) {
            let input = memory_samples(units, |u| u.build == r.baseline, |u| u.build == candidate);
            let Some(now_vs_base) = self.compare_memory(input).await? else {
                continue;
            };
            if matches!(now_vs_base.verdict, Verdict::Same | Verdict::Improvement) {
                let mut fixed = r.clone();
                fixed.state = RegressionState::Resolved;
                fixed.updated = now_ns();
                fixed.resolution = Some(Resolution::Fixed {
                    build: candidate.to_owned(),
                });
                self.store.put_regression(&fixed).await?;
                *r = fixed;
                report.fixed += 1;
                report.resolved_regressions += 1;
            }
        }
        Ok(())
    }

    /// Change points in the service's private bytes per worker (per `bucket`), each confirmed
    /// by a compare of the units on either side; open change records whose effect is gone are
    /// counted towards "went away".
    async fn memory_changes(
        &self,
        tenant: &Tenant,
        service: &str,
        units: &[ProcessMemory],
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let step = (self.cfg.bucket.as_nanos() as i64).max(NANOS_PER_SEC);
        let span = step.saturating_mul(self.cfg.changepoints.min_segment as i64);
        self.memory_changes_gone(service, units, records, report, span)
            .await?;
        let points = self
            .store
            .memory_timeseries(
                &MemoryQuery {
                    tenant: tenant.clone(),
                    service: service.to_owned(),
                    range: self.window(),
                    group_by: MemoryGroupBy::None,
                },
                step,
            )
            .await?;
        let values: Vec<f64> = points.iter().map(|p| p.row.private_bytes).collect();
        if values.len() < 2 * self.cfg.changepoints.min_segment {
            return Ok(());
        }
        let times: Vec<f64> = points.iter().map(|p| p.time as f64).collect();
        let cp_cfg = self.cfg.changepoints.clone();
        let detected = tokio::task::spawn_blocking(move || detect_timed(&values, &times, &cp_cfg))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))?;
        let changes = match detected {
            Ok(d) => d.changes,
            Err(why) => {
                tracing::warn!(%service, %why, "memory change-point detection failed");
                report
                    .failed_endpoints
                    .push(format!("{service} memory: {why}"));
                return Ok(());
            }
        };
        let builds = build_traffic(units);
        for ch in changes
            .iter()
            .filter(|c| c.change_pct >= self.cfg.compare.min_effect * 100.0)
        {
            let Some(point) = points.get(ch.index) else {
                continue;
            };
            let at = point.time * NANOS_PER_SEC;
            let rollout = builds
                .iter()
                .min_by_key(|b| (b.first_seen - at).abs())
                .filter(|b| (b.first_seen - at).abs() <= 3 * step);
            if rollout.is_some_and(|b| {
                records.iter().any(|r| {
                    r.kind == RegressionKind::Memory
                        && r.service == service
                        && r.candidate == b.build
                })
            }) {
                continue;
            }
            let around = self
                .memory_units(
                    tenant,
                    service,
                    TimeRange {
                        from: at - span,
                        to: at + span,
                    },
                )
                .await?;
            let input = memory_samples(&around, |u| u.ts < at, |u| u.ts >= at);
            let Some(c) = self.compare_memory(input).await? else {
                continue;
            };
            if c.verdict != Verdict::Regression {
                continue;
            }
            let finding = Finding {
                tenant,
                service,
                baseline: format!("before {}", format_rfc3339(at)),
                candidate: rollout.map_or_else(
                    || format!("after {}", format_rfc3339(at)),
                    |b| b.build.clone(),
                ),
            };
            let mut record = from_comparison(finding, &c, Some(ch), Vec::new(), now_ns());
            record.changed_at = Some(at);
            if records.iter().any(|r| r.same_finding(&record)) {
                continue;
            }
            let cause = rollout.map_or(Cause::Time(at), |b| Cause::Build(b.build.clone()));
            self.record(record, &cause, "memory change point found", records, report)
                .await?;
        }
        Ok(())
    }

    /// Open memory change records whose effect is gone: the units of the latest `span`
    /// against those of the `span` before the change no longer show a regression.
    async fn memory_changes_gone(
        &self,
        service: &str,
        units: &[ProcessMemory],
        records: &mut [RegressionRecord],
        report: &mut PassReport,
        span: i64,
    ) -> Result<(), AnalysisError> {
        let now = now_ns();
        for r in records.iter_mut().filter(|r| is_memory_of(r, service)) {
            let Some(at) = r.changed_at else { continue };
            let latest = now.saturating_sub(span).max(at);
            let input = memory_samples(
                units,
                |u| u.ts >= at.saturating_sub(span) && u.ts < at,
                |u| u.ts >= latest,
            );
            let Some(c) = self.compare_memory(input).await? else {
                continue;
            };
            let gone = match c.verdict {
                Verdict::Same | Verdict::Improvement => true,
                Verdict::Regression => false,
                Verdict::NotEnoughData => continue,
            };
            if self.settle_gone(r, gone, report).await? {
                tracing::info!(%service, changed_at = %format_rfc3339(at), "memory change went away");
            }
        }
        Ok(())
    }
}
