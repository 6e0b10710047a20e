//! The analysis pass: for every service, compare the newest build with enough traffic against
//! the one before it, endpoint by endpoint; record regressions (with the functions that explain
//! them), resolve the ones the newest build no longer shows, and send one alert per new and per
//! resolved record.
//!
//! Invariants:
//! - A record's id is its finding's key ([`RegressionRecord::make_id`]), so passes, restarts
//!   and several collectors update one record instead of adding duplicates.
//! - A human's acknowledgement survives later passes; `first_seen` never moves.
//! - An alert goes out when a record is created and when it becomes resolved, never otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use profwatch_analyzer::alert::{AlertStatus, Dispatcher};
use profwatch_analyzer::attribution::{self, CostRatio, Snapshot};
use profwatch_analyzer::{
    choose_builds, compare_all, compare_all_on, detect_timed, BuildTraffic, ChangepointConfig,
    CompareConfig, Comparison, EndpointSamples, Metric, Sample, Verdict,
};
use profwatch_model::profile::{LabelFilter, ProfileQuery};
use profwatch_model::query::{
    BuildSummary, BuildsQuery, CostSamples, CostSamplesQuery, SeriesQuery, ServicesQuery, TimeRange,
};
use profwatch_model::regression::{Culprit, RegressionRecord, RegressionState};
use profwatch_model::timefmt::{format_rfc3339, now_ns, NANOS_PER_SEC};
use profwatch_model::Tenant;
use serde::Serialize;

use profwatch_store::{Store, StoreError};

/// Settings of analysis.
#[derive(Debug, Clone)]
pub struct AnalysisConfig {
    /// How far back a pass looks for builds and requests.
    pub window: Duration,
    /// The statistics (alpha, minimum effect, minimum requests...).
    pub compare: CompareConfig,
    /// Functions named per regression.
    pub culprits: usize,
    /// Bucket width of the per-endpoint series that change points are sought in.
    pub bucket: Duration,
    /// The change-point detector's settings.
    pub changepoints: ChangepointConfig,
    /// Buckets with fewer requests are left out of the series (too noisy to place a change).
    pub min_bucket_requests: f64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            window: Duration::from_secs(24 * 3600),
            compare: CompareConfig::default(),
            culprits: 5,
            bucket: Duration::from_secs(600),
            // 199 permutations resolve p down to 0.005, enough for the detector's alpha of 0.01,
            // at a fifth of the CSV command's cost (999): a pass tests every endpoint.
            changepoints: ChangepointConfig {
                permutations: 199,
                ..ChangepointConfig::default()
            },
            min_bucket_requests: 20.0,
        }
    }
}

/// Why analysis failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("analysis: {0}")]
    Analyzer(#[from] profwatch_analyzer::AnalyzerError),
    #[error("analysis task failed: {0}")]
    Task(String),
}

/// One service's compare in a pass.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceCompare {
    pub service: String,
    pub baseline: String,
    pub candidate: String,
    pub endpoints: Vec<Comparison>,
}

/// What a pass did.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PassReport {
    pub services: Vec<ServiceCompare>,
    /// Services skipped for want of two builds with enough traffic.
    pub skipped_services: Vec<String>,
    pub new_regressions: usize,
    pub updated_regressions: usize,
    pub resolved_regressions: usize,
    /// Endpoints whose change-point detection failed this pass, with why (`service endpoint`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_endpoints: Vec<String>,
}

/// An interval with both ends finite, as `(low, high)`; absent ends otherwise.
fn finite_interval(ci: Option<(f64, f64)>) -> (Option<f64>, Option<f64>) {
    match ci {
        Some((lo, hi)) if lo.is_finite() && hi.is_finite() => (Some(lo), Some(hi)),
        _ => (None, None),
    }
}

/// Change points of each series, on every core. Each answer stays at its series' index: a
/// failed or panicked chunk yields an error for each of its series, never a shorter list.
fn detect_all(
    inputs: &[(Vec<f64>, Vec<f64>)],
    cfg: &profwatch_analyzer::changepoint::ChangepointConfig,
) -> Vec<Result<Vec<profwatch_analyzer::ChangePoint>, String>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = inputs.len().div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        let handles: Vec<_> = inputs
            .chunks(chunk)
            .map(|part| {
                let handle = sc.spawn(move || {
                    part.iter()
                        .map(|(v, t)| {
                            detect_timed(v, t, cfg)
                                .map(|d| d.changes)
                                .map_err(|e| e.to_string())
                        })
                        .collect::<Vec<_>>()
                });
                (part.len(), handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(len, h)| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("the detection thread panicked".to_owned()); len])
            })
            .collect()
    })
}

/// Runs passes and compares against a store.
#[derive(Debug, Clone)]
pub struct Analyzer {
    store: Arc<dyn Store>,
    cfg: AnalysisConfig,
    alerts: Option<Dispatcher>,
}

/// Groups per-(endpoint, build) costs into the compare's input, one entry per endpoint present
/// in both builds. Hosts and dcs stay numbers: a host's number is its rank by name in its group
/// (so clusters keep the order of their names; the arms' numbers need not agree), dcs are
/// renumbered into one list per endpoint.
fn endpoint_samples(
    groups: &[CostSamples],
    baseline: &str,
    candidate: &str,
) -> Vec<EndpointSamples> {
    let mut by_endpoint: BTreeMap<&str, (Option<&CostSamples>, Option<&CostSamples>)> =
        BTreeMap::new();
    for g in groups {
        let e = by_endpoint.entry(g.endpoint.as_str()).or_default();
        if g.build == baseline {
            e.0 = Some(g);
        } else if g.build == candidate {
            e.1 = Some(g);
        }
    }
    by_endpoint
        .into_iter()
        .filter_map(|(endpoint, (b, c))| {
            let (b, c) = (b?, c?);
            let counted = b
                .rows
                .iter()
                .chain(&c.rows)
                .all(|r| r.instructions.is_some());
            let metric = if counted {
                Metric::Instructions
            } else {
                Metric::CpuNs
            };
            let mut dcs: Vec<String> = Vec::new();
            let mut convert = |g: &CostSamples| -> Vec<Sample> {
                let dc_of: Vec<u32> = g
                    .dcs
                    .iter()
                    .map(|d| match dcs.iter().position(|x| x == d) {
                        Some(i) => i as u32,
                        None => {
                            dcs.push(d.clone());
                            dcs.len() as u32 - 1
                        }
                    })
                    .collect();
                let mut by_name: Vec<usize> = (0..g.hosts.len()).collect();
                by_name.sort_by(|&x, &y| g.hosts[x].cmp(&g.hosts[y]));
                let mut host_rank = vec![0u32; g.hosts.len()];
                for (rank, &h) in by_name.iter().enumerate() {
                    host_rank[h] = rank as u32;
                }
                g.rows
                    .iter()
                    .map(|r| Sample {
                        value: match metric {
                            Metric::Instructions => r.instructions.unwrap_or(0) as f64,
                            Metric::CpuNs => r.cpu_ns as f64,
                        },
                        weight: r.weight,
                        host: host_rank.get(r.host as usize).copied().unwrap_or(u32::MAX),
                        // A row whose dc is not in its group's list gets a number with no name,
                        // which the compare drops and counts.
                        dc: dc_of.get(r.dc as usize).copied().unwrap_or(u32::MAX),
                        ts: r.ts,
                    })
                    .collect()
            };
            let baseline = convert(b);
            let candidate = convert(c);
            Some(EndpointSamples {
                endpoint: endpoint.to_owned(),
                metric,
                dcs,
                baseline,
                candidate,
            })
        })
        .collect()
}

fn metric_name(m: Metric) -> &'static str {
    match m {
        Metric::Instructions => "instructions",
        Metric::CpuNs => "cpu_ns",
    }
}

impl Analyzer {
    pub fn new(store: Arc<dyn Store>, cfg: AnalysisConfig, alerts: Option<Dispatcher>) -> Analyzer {
        Analyzer { store, cfg, alerts }
    }

    fn window(&self) -> TimeRange {
        let now = now_ns();
        TimeRange {
            from: now - self.cfg.window.as_nanos().min(i64::MAX as u128) as i64,
            to: now + 60_000_000_000,
        }
    }

    /// Compares two builds of a service, endpoint by endpoint (all endpoints, or one).
    pub async fn compare(
        &self,
        tenant: &Tenant,
        service: &str,
        baseline: &str,
        candidate: &str,
        endpoint: Option<&str>,
        range: Option<TimeRange>,
    ) -> Result<Vec<Comparison>, AnalysisError> {
        let groups = self
            .store
            .cost_samples(&CostSamplesQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range: range.unwrap_or_else(|| self.window()),
                builds: vec![baseline.to_owned(), candidate.to_owned()],
                endpoint: endpoint.map(str::to_owned),
            })
            .await?;
        let inputs = endpoint_samples(&groups, baseline, candidate);
        let cfg = self.cfg.compare.clone();
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let out = tokio::task::spawn_blocking(move || compare_all_on(&inputs, &cfg, threads))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))??;
        Ok(out)
    }

    /// The time both builds served, when it holds enough requests of each to compare on: a
    /// compare of concurrent traffic is not confounded by what else changed over time (load,
    /// neighbours, the daily cycle). `None` (the whole window) otherwise.
    fn overlap(
        &self,
        builds: &[BuildSummary],
        baseline: &str,
        candidate: &str,
    ) -> Option<TimeRange> {
        let a = builds.iter().find(|b| b.build == baseline)?;
        let b = builds.iter().find(|b| b.build == candidate)?;
        let from = a.first_seen.max(b.first_seen);
        let to = a.last_seen.min(b.last_seen) + 1;
        if to <= from {
            return None;
        }
        // Requests in the overlap, assuming each build's traffic was spread evenly over its life.
        let share = |x: &BuildSummary| {
            x.requests * (to - from) as f64 / ((x.last_seen - x.first_seen).max(1) as f64)
        };
        let enough = 4.0 * self.cfg.compare.min_requests as f64;
        (share(a) >= enough && share(b) >= enough).then_some(TimeRange { from, to })
    }

    /// The functions that explain a regression of `endpoint` from `baseline` to `candidate`.
    pub async fn culprits(
        &self,
        tenant: &Tenant,
        service: &str,
        c: &Comparison,
        baseline: &str,
        candidate: &str,
    ) -> Result<Vec<Culprit>, AnalysisError> {
        let snapshot = |build: &str, cost: Option<f64>| {
            let q = ProfileQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range: self.window(),
                filters: vec![
                    LabelFilter {
                        key: "endpoint".into(),
                        value: c.endpoint.clone(),
                    },
                    LabelFilter {
                        key: "build".into(),
                        value: build.to_owned(),
                    },
                ],
            };
            let store = self.store.clone();
            async move {
                let p = store.profile(&q).await?;
                Ok::<_, StoreError>(Snapshot {
                    stacks: p.merged().into_iter().map(|(f, n, _)| (f, n)).collect(),
                    cost_per_request: cost.unwrap_or(0.0),
                })
            }
        };
        let b = snapshot(baseline, c.mean_baseline).await?;
        let k = snapshot(candidate, c.mean_candidate).await?;
        if b.stacks.is_empty() || k.stacks.is_empty() {
            return Ok(Vec::new());
        }
        let ratio = c.ratio_of_means_ci.map(|i| CostRatio {
            low: i.low,
            high: i.high,
            confidence: c.confidence,
        });
        let deltas = attribution::attribute(&b, &k, ratio, 1.96);
        Ok(attribution::culprits(&deltas, self.cfg.culprits)
            .into_iter()
            .map(|d| Culprit {
                function: d.function.clone(),
                baseline: d.self_baseline,
                candidate: d.self_candidate,
                delta: d.self_delta,
            })
            .collect())
    }

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
        let traffic: Vec<BuildTraffic> = builds
            .iter()
            .map(|b| BuildTraffic {
                build: b.build.clone(),
                first_seen: b.first_seen,
                requests: b.requests,
            })
            .collect();
        let Some((baseline, candidate)) =
            choose_builds(&traffic, self.cfg.compare.min_requests as f64)
        else {
            report.skipped_services.push(service.to_owned());
            return self
                .pass_windows(tenant, service, &builds, records, report)
                .await;
        };
        let overlap = self.overlap(&builds, &baseline, &candidate);
        let comparisons = self
            .compare(tenant, service, &baseline, &candidate, None, overlap)
            .await?;
        let now = now_ns();
        for c in comparisons
            .iter()
            .filter(|c| c.verdict == Verdict::Regression)
        {
            let metric = metric_name(c.metric);
            let id = RegressionRecord::make_id(
                &tenant.0,
                service,
                &c.endpoint,
                metric,
                &baseline,
                &candidate,
            );
            let culprits = self
                .culprits(tenant, service, c, &baseline, &candidate)
                .await?;
            let existing = records.iter().position(|r| r.id == id);
            let ci = finite_interval(c.ci.map(|i| (i.low, i.high)));
            let mut record = RegressionRecord {
                id: id.clone(),
                tenant: tenant.0.clone(),
                service: service.to_owned(),
                endpoint: c.endpoint.clone(),
                metric: metric.to_owned(),
                baseline: baseline.clone(),
                candidate: candidate.clone(),
                effect: c.effect.unwrap_or(1.0),
                effect_low: ci.0,
                effect_high: ci.1,
                ratio_of_means: c.ratio_of_means,
                p_value: c.p_value.unwrap_or(1.0),
                q_value: c.q_value.unwrap_or(1.0),
                baseline_median: c.median_baseline.unwrap_or(0.0),
                candidate_median: c.median_candidate.unwrap_or(0.0),
                baseline_requests: c.n_baseline as u64,
                candidate_requests: c.n_candidate as u64,
                culprits,
                first_seen: now,
                last_seen: now,
                state: RegressionState::Open,
                updated: now,
            };
            match existing {
                Some(i) => {
                    let old = &records[i];
                    record.first_seen = old.first_seen;
                    record.state = old.state;
                    record.updated = old.updated;
                    if old.state == RegressionState::Resolved {
                        // A human resolved it; this pass's evidence is unchanged, so it stays so.
                        continue;
                    }
                    self.store.put_regression(&record).await?;
                    records[i] = record;
                    report.updated_regressions += 1;
                }
                None => {
                    self.store.put_regression(&record).await?;
                    if let Some(a) = &self.alerts {
                        a.send(AlertStatus::Firing, &record);
                    }
                    tracing::warn!(service, endpoint = %record.endpoint, effect = record.effect, candidate = %candidate, "regression found");
                    records.push(record);
                    report.new_regressions += 1;
                }
            }
        }
        // Open records of older candidates: resolved once the newest build no longer shows the
        // regression against the record's own baseline.
        let stale: Vec<usize> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.service == service
                    && r.state != RegressionState::Resolved
                    && r.candidate != candidate
            })
            .map(|(i, _)| i)
            .collect();
        for i in stale {
            let r = records[i].clone();
            let now_vs_base = self
                .compare(
                    tenant,
                    service,
                    &r.baseline,
                    &candidate,
                    Some(&r.endpoint),
                    None,
                )
                .await?;
            let still = now_vs_base.iter().any(|c| c.verdict == Verdict::Regression);
            let decided = now_vs_base
                .iter()
                .any(|c| c.verdict != Verdict::NotEnoughData);
            if decided && !still {
                let mut resolved = r;
                resolved.state = RegressionState::Resolved;
                resolved.updated = now_ns();
                self.store.put_regression(&resolved).await?;
                if let Some(a) = &self.alerts {
                    a.send(AlertStatus::Resolved, &resolved);
                }
                records[i] = resolved;
                report.resolved_regressions += 1;
            }
        }
        report.services.push(ServiceCompare {
            service: service.to_owned(),
            baseline,
            candidate,
            endpoints: comparisons,
        });
        self.pass_windows(tenant, service, &builds, records, report)
            .await
    }

    /// Change points in each endpoint's series, each confirmed by a compare of the windows on
    /// either side and tied to the build rollout nearest to it. A change that a build compare
    /// already recorded (same endpoint, that build as candidate) is not recorded twice.
    async fn pass_windows(
        &self,
        tenant: &Tenant,
        service: &str,
        builds: &[BuildSummary],
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let step = (self.cfg.bucket.as_nanos() as i64).max(NANOS_PER_SEC);
        let series = self
            .store
            .endpoint_series(&SeriesQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range: self.window(),
                step,
            })
            .await?;
        // Series worth testing, then detection on every core (it is the costly part), then
        // the confirmations, which read the store.
        let mut prepared: Vec<(
            String,
            Vec<profwatch_model::query::TimeseriesPoint>,
            Vec<f64>,
        )> = Vec::new();
        for s in series {
            let points: Vec<profwatch_model::query::TimeseriesPoint> = s
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
                prepared.push((s.endpoint, points, values));
            }
        }
        let inputs: Vec<(Vec<f64>, Vec<f64>)> = prepared
            .iter()
            .map(|p| (p.2.clone(), p.1.iter().map(|q| q.time as f64).collect()))
            .collect();
        let cp_cfg = self.cfg.changepoints.clone();
        let detected = tokio::task::spawn_blocking(move || detect_all(&inputs, &cp_cfg))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))?;
        for ((endpoint, points, _), changes) in prepared.into_iter().zip(detected) {
            let changes = match changes {
                Ok(c) => c,
                Err(why) => {
                    tracing::warn!(%service, %endpoint, %why, "change-point detection failed");
                    report
                        .failed_endpoints
                        .push(format!("{service} {endpoint}: {why}"));
                    continue;
                }
            };
            for ch in changes
                .into_iter()
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
                if let Some(b) = rollout {
                    if records.iter().any(|r| {
                        r.endpoint == endpoint && r.candidate == b.build && r.service == service
                    }) {
                        continue;
                    }
                }
                // Confirm with a compare of equal windows on either side of the change.
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
                    .compare_windows(tenant, service, &endpoint, before, after)
                    .await?
                else {
                    continue;
                };
                if c.verdict != Verdict::Regression {
                    continue;
                }
                let metric = metric_name(c.metric);
                let baseline = format!("before {}", format_rfc3339(at));
                let candidate = rollout.map_or_else(
                    || format!("after {}", format_rfc3339(at)),
                    |b| b.build.clone(),
                );
                let id = RegressionRecord::make_id(
                    &tenant.0, service, &endpoint, metric, &baseline, &candidate,
                );
                if records.iter().any(|r| r.id == id) {
                    continue;
                }
                let now = now_ns();
                let ci = finite_interval(c.ci.map(|i| (i.low, i.high)));
                let record = RegressionRecord {
                    id,
                    tenant: tenant.0.clone(),
                    service: service.to_owned(),
                    endpoint: endpoint.clone(),
                    metric: metric.to_owned(),
                    baseline,
                    candidate,
                    effect: c.effect.unwrap_or(1.0),
                    effect_low: ci.0,
                    effect_high: ci.1,
                    ratio_of_means: c.ratio_of_means,
                    p_value: c.p_value.unwrap_or(ch.p_value),
                    q_value: c.q_value.unwrap_or(1.0),
                    baseline_median: c.median_baseline.unwrap_or(ch.before),
                    candidate_median: c.median_candidate.unwrap_or(ch.after),
                    baseline_requests: c.n_baseline as u64,
                    candidate_requests: c.n_candidate as u64,
                    culprits: Vec::new(),
                    first_seen: now,
                    last_seen: now,
                    state: RegressionState::Open,
                    updated: now,
                };
                self.store.put_regression(&record).await?;
                if let Some(a) = &self.alerts {
                    a.send(AlertStatus::Firing, &record);
                }
                tracing::warn!(service, endpoint = %record.endpoint, at = %format_rfc3339(at), "change point found");
                records.push(record);
                report.new_regressions += 1;
            }
        }
        Ok(())
    }

    /// Compares one endpoint's requests in two time windows (all builds).
    async fn compare_windows(
        &self,
        tenant: &Tenant,
        service: &str,
        endpoint: &str,
        before: TimeRange,
        after: TimeRange,
    ) -> Result<Option<Comparison>, AnalysisError> {
        let query = |range: TimeRange| CostSamplesQuery {
            tenant: tenant.clone(),
            service: service.to_owned(),
            range,
            builds: Vec::new(),
            endpoint: Some(endpoint.to_owned()),
        };
        let merge = |groups: Vec<CostSamples>, name: &str| {
            let mut all = CostSamples {
                endpoint: endpoint.to_owned(),
                build: name.to_owned(),
                ..Default::default()
            };
            for g in groups {
                all.append(&g);
            }
            all
        };
        let a = merge(self.store.cost_samples(&query(before)).await?, "before");
        let b = merge(self.store.cost_samples(&query(after)).await?, "after");
        let inputs = endpoint_samples(&[a, b], "before", "after");
        let cfg = self.cfg.compare.clone();
        let out = tokio::task::spawn_blocking(move || compare_all(&inputs, &cfg))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))??;
        Ok(out.into_iter().next())
    }

    /// Takes or renews a store lease (see [`Store::try_lease`]).
    pub async fn lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, AnalysisError> {
        Ok(self.store.try_lease(name, holder, ttl).await?)
    }

    /// Sets a record's state by hand (ack or resolve); sends the resolved alert when resolving.
    pub async fn set_state(
        &self,
        tenant: &Tenant,
        id: &str,
        state: RegressionState,
    ) -> Result<Option<RegressionRecord>, AnalysisError> {
        let records = self.store.regressions(tenant).await?;
        let Some(mut r) = records.into_iter().find(|r| r.id == id) else {
            return Ok(None);
        };
        if r.state == state {
            return Ok(Some(r));
        }
        r.state = state;
        r.updated = now_ns();
        self.store.put_regression(&r).await?;
        if state == RegressionState::Resolved {
            if let Some(a) = &self.alerts {
                a.send(AlertStatus::Resolved, &r);
            }
        }
        Ok(Some(r))
    }
}
