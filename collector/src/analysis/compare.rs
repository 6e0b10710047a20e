//! The compare's input from the store, and the compares themselves: two builds of a service
//! (optionally over their common time), two time windows of one endpoint, and the functions
//! that explain a regression.

use std::collections::BTreeMap;

use profwatch_analyzer::attribution::{self, CostRatio, Snapshot};
use profwatch_analyzer::{
    compare_all, compare_all_par, Comparison, EndpointSamples, Metric, Sample,
};
use profwatch_model::profile::{LabelFilter, ProfileQuery};
use profwatch_model::query::{BuildSummary, CostSamples, CostSamplesQuery, TimeRange};
use profwatch_model::regression::Culprit;
use profwatch_model::Tenant;
use profwatch_store::StoreError;

use super::{AnalysisError, RegressionTracker};

/// Groups per-(endpoint, build) costs into the compare's input, one entry per endpoint present
/// in both builds. Hosts and dcs stay numbers: a host's number is its rank by name in its group
/// (so clusters keep the order of their names; the arms' numbers need not agree), dcs are
/// renumbered into one list per endpoint.
pub(super) fn endpoint_samples(
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
                            Metric::CpuNs | Metric::PrivateBytes => r.cpu_ns as f64,
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

impl RegressionTracker {
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
        let out = tokio::task::spawn_blocking(move || compare_all_par(&inputs, &cfg))
            .await
            .map_err(|e| AnalysisError::Task(e.to_string()))??;
        Ok(out)
    }

    /// The time both builds served, when it holds enough requests of each to compare on: a
    /// compare of concurrent traffic is not confounded by what else changed over time (load,
    /// neighbours, the daily cycle). `None` (the whole window) otherwise.
    pub(super) fn overlap(
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
    /// `range` is the compare's (the builds' overlap, or `None`: the whole window): profiles
    /// of another time than the costs they are scaled by would blame whatever changed in
    /// between (a baseline profile that includes its hosts' start-up, say, makes a steady
    /// function look dearer in the candidate).
    pub async fn culprits(
        &self,
        tenant: &Tenant,
        service: &str,
        c: &Comparison,
        baseline: &str,
        candidate: &str,
        range: Option<TimeRange>,
    ) -> Result<Vec<Culprit>, AnalysisError> {
        let range = range.unwrap_or_else(|| self.window());
        let snapshot = |build: &str, cost: Option<f64>| {
            let q = ProfileQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range,
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
                    stacks: p
                        .merged()
                        .into_iter()
                        .map(|(f, n, _)| (f.to_vec(), n))
                        .collect(),
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

    /// Compares one endpoint's requests in two time windows (all builds).
    pub(super) async fn compare_windows(
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
}
