//! Change points in each endpoint's series: detected on every core, each confirmed by a compare
//! of equal windows on either side, tied to the build rollout nearest to it, and recorded. A
//! change that a build compare already recorded (same endpoint, that build as candidate) is not
//! recorded twice.

use profwatch_analyzer::incident::Cause;
use profwatch_analyzer::{detect_timed, ChangePoint, ChangepointConfig, Verdict};
use profwatch_model::query::{BuildSummary, SeriesQuery, TimeRange, TimeseriesPoint};
use profwatch_model::regression::{RegressionKind, RegressionRecord, RegressionState};
use profwatch_model::timefmt::{format_rfc3339, now_ns, NANOS_PER_SEC};
use profwatch_model::Tenant;
use rayon::prelude::*;

use super::record::{from_comparison, Finding};
use super::{AnalysisError, PassReport, RegressionTracker};

/// One endpoint's series, worth testing: its buckets with enough requests and their values.
struct Series {
    endpoint: String,
    points: Vec<TimeseriesPoint>,
    /// The median instructions per bucket when every bucket counted them, else median CPU ns.
    values: Vec<f64>,
}

impl RegressionTracker {
    pub(super) async fn pass_windows(
        &self,
        tenant: &Tenant,
        service: &str,
        builds: &[BuildSummary],
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let step = (self.cfg.bucket.as_nanos() as i64).max(NANOS_PER_SEC);
        self.changes_gone(tenant, service, records, report, step)
            .await?;
        let series = self.series_to_test(tenant, service, step).await?;
        // Detection on every core (it is the costly part), then the confirmations, which read
        // the store.
        let inputs: Vec<(Vec<f64>, Vec<f64>)> = series
            .iter()
            .map(|s| {
                (
                    s.values.clone(),
                    s.points.iter().map(|q| q.time as f64).collect(),
                )
            })
            .collect();
        let cp_cfg = self.cfg.changepoints.clone();
        let detected = tokio::task::spawn_blocking(move || detect_all(&inputs, &cp_cfg))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))?;
        for (s, changes) in series.iter().zip(detected) {
            let changes = match changes {
                Ok(c) => c,
                Err(why) => {
                    tracing::warn!(%service, endpoint = %s.endpoint, %why, "change-point detection failed");
                    report
                        .failed_endpoints
                        .push(format!("{service} {}: {why}", s.endpoint));
                    continue;
                }
            };
            for ch in changes
                .iter()
                .filter(|c| c.change_pct >= self.cfg.compare.min_effect * 100.0)
            {
                let confirmed = self
                    .confirm(tenant, service, builds, records, s, ch, step)
                    .await?;
                if let Some((record, cause)) = confirmed {
                    self.record(record, &cause, "change point found", records, report)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// Open change-point records of `service`'s endpoints whose effect is gone: the latest
    /// window of the confirmation's length, against the same window before the change, is no
    /// longer a regression (a spike, a neighbour, a warming cache). One more pass gone, and
    /// closed as "went away" after `went_away_passes`; a pass that still shows the regression
    /// starts the count again. Undecided compares (too few requests) change nothing.
    async fn changes_gone(
        &self,
        tenant: &Tenant,
        service: &str,
        records: &mut [RegressionRecord],
        report: &mut PassReport,
        step: i64,
    ) -> Result<(), AnalysisError> {
        let span = step.saturating_mul(self.cfg.changepoints.min_segment as i64);
        let now = now_ns();
        for r in records.iter_mut().filter(|r| {
            r.service == service
                && r.kind == RegressionKind::Cpu
                && r.function.is_none()
                && r.changed_at.is_some()
                && r.state != RegressionState::Resolved
        }) {
            let Some(at) = r.changed_at else { continue };
            let before = TimeRange {
                from: at.saturating_sub(span),
                to: at,
            };
            let latest = TimeRange {
                from: now.saturating_sub(span).max(at),
                to: now,
            };
            if latest.from >= latest.to {
                continue;
            }
            let Some(c) = self
                .compare_windows(tenant, service, &r.endpoint, before, latest)
                .await?
            else {
                continue;
            };
            let gone = match c.verdict {
                Verdict::Same | Verdict::Improvement => true,
                Verdict::Regression => false,
                Verdict::NotEnoughData => continue,
            };
            if self.settle_gone(r, gone, report).await? {
                tracing::info!(%service, endpoint = %r.endpoint, changed_at = %format_rfc3339(at),
                    "change went away");
            }
        }
        Ok(())
    }

    /// Every endpoint's series over the window, without the buckets too thin to place a change
    /// in; only series long enough for two segments.
    async fn series_to_test(
        &self,
        tenant: &Tenant,
        service: &str,
        step: i64,
    ) -> Result<Vec<Series>, AnalysisError> {
        let series = self
            .store
            .endpoint_series(&SeriesQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range: self.window(),
                step,
            })
            .await?;
        let mut out = Vec::new();
        for s in series {
            let points: Vec<TimeseriesPoint> = s
                .points
                .into_iter()
                .filter(|p| p.stats.requests >= self.cfg.min_bucket_requests)
                .collect();
            let counted = points.iter().all(|p| p.stats.instructions.is_some());
            let values: Vec<f64> = points
                .iter()
                .map(|p| match (&p.stats.instructions, counted) {
                    (Some(d), true) => d.p50,
                    _ => p.stats.cpu_ns.p50,
                })
                .collect();
            if values.len() >= 2 * self.cfg.changepoints.min_segment {
                out.push(Series {
                    endpoint: s.endpoint,
                    points,
                    values,
                });
            }
        }
        Ok(out)
    }

    /// The record of change `ch` in `s` and its cause (the rollout near it, else its time), when
    /// a compare of equal windows on either side confirms it as a regression and no record of it
    /// (or of the build compare that found it) exists.
    #[allow(clippy::too_many_arguments)]
    async fn confirm(
        &self,
        tenant: &Tenant,
        service: &str,
        builds: &[BuildSummary],
        records: &[RegressionRecord],
        s: &Series,
        ch: &ChangePoint,
        step: i64,
    ) -> Result<Option<(RegressionRecord, Cause)>, AnalysisError> {
        let Some(point) = s.points.get(ch.index) else {
            return Ok(None);
        };
        let at = point.time * NANOS_PER_SEC;
        let rollout = builds
            .iter()
            .min_by_key(|b| (b.first_seen - at).abs())
            .filter(|b| (b.first_seen - at).abs() <= 3 * step);
        if let Some(b) = rollout {
            if records.iter().any(|r| {
                r.kind == RegressionKind::Cpu
                    && r.endpoint == s.endpoint
                    && r.candidate == b.build
                    && r.service == service
            }) {
                return Ok(None);
            }
        }
        let span = step * self.cfg.changepoints.min_segment as i64;
        let before = TimeRange {
            from: at - span,
            to: at,
        };
        let after = TimeRange {
            from: at,
            to: at + span,
        };
        let Some(c) = self
            .compare_windows(tenant, service, &s.endpoint, before, after)
            .await?
        else {
            return Ok(None);
        };
        if c.verdict != Verdict::Regression {
            return Ok(None);
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
        let cause = rollout.map_or(Cause::Time(at), |b| Cause::Build(b.build.clone()));
        Ok((!records.iter().any(|r| r.same_finding(&record))).then_some((record, cause)))
    }
}

/// Change points of each series, on the rayon pool. Each answer stays at its series' index: a
/// failed or panicked detection yields an error for its series, never a shorter list.
fn detect_all(
    inputs: &[(Vec<f64>, Vec<f64>)],
    cfg: &ChangepointConfig,
) -> Vec<Result<Vec<ChangePoint>, String>> {
    inputs
        .par_iter()
        .map(|(v, t)| {
            std::panic::catch_unwind(|| detect_timed(v, t, cfg))
                .map_err(|_| "the detection panicked".to_owned())?
                .map(|d| d.changes)
                .map_err(|e| e.to_string())
        })
        .collect()
}
