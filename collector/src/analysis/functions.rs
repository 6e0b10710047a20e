//! Function-level change points: each service's top functions, one series per (endpoint,
//! function) of self samples per request per bucket, change points in each with the false
//! discovery rate controlled across all of them ([`profwatch_analyzer::function_changes`]); each
//! rise is then checked on the windows either side with the attribution's share test and its
//! cost-shift filter, so a cost shift (the cost came from a caller or a sibling) is not reported. A rise is reported even when the
//! endpoint's total stays within noise.
//!
//! An open function record closes itself as "went away" when, for `went_away_passes` passes in a
//! row, the function's self share over the latest windows is shown to have lost at least half of
//! the recorded rise against the windows before the change (the same share statistics that
//! confirmed it); a pass whose share test still names the function starts the count again, and
//! one whose samples cannot tell changes nothing.
//!
//! Cost: one function query for the window (the stores' hourly per-function rollups answer it
//! but for the partial hours at its ends), then one per endpoint with requests, each a series
//! of the window's buckets (from the rollups when the bucket is a whole number of hours; the
//! default 10-minute bucket reads the samples), per service with profiles; nothing when a
//! service has none. Two profile queries per open function record.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use profwatch_analyzer::attribution::{self, Snapshot};
use profwatch_analyzer::function_changes::{
    function_changes, permutations_for, FunctionChange, FunctionSeries,
};
use profwatch_analyzer::incident::Cause;
use profwatch_model::functions::{FunctionQuery, FunctionTotals};
use profwatch_model::profile::{LabelFilter, ProfileQuery};
use profwatch_model::query::{BuildSummary, SeriesQuery, TimeRange};
use profwatch_model::regression::{Culprit, RegressionRecord, RegressionState};
use profwatch_model::timefmt::{format_rfc3339, now_ns, NANOS_PER_SEC};
use profwatch_model::Tenant;

use super::{AnalysisError, PassReport, RegressionTracker};

/// Functions per service whose series are tested (by self samples over the window).
pub const TOP_FUNCTIONS: usize = 20;
/// False discovery rate across every (endpoint, function) series of a pass's service.
pub const FUNCTION_FDR: f64 = 0.05;

/// Self samples per (endpoint, function) of one profile, and the endpoints it has samples of.
#[derive(Default)]
struct SelfCounts {
    by_function: HashMap<(String, String), u64>,
    endpoints: HashSet<String>,
}

impl RegressionTracker {
    pub(super) async fn pass_functions(
        &self,
        tenant: &Tenant,
        service: &str,
        builds: &[BuildSummary],
        records: &mut Vec<RegressionRecord>,
        report: &mut PassReport,
    ) -> Result<(), AnalysisError> {
        let step = (self.cfg.bucket.as_nanos() as i64).max(NANOS_PER_SEC);
        self.functions_gone(tenant, service, records, report, step)
            .await?;
        let costs = |endpoint: Option<&String>, step: Option<i64>| FunctionQuery {
            tenant: tenant.clone(),
            service: service.to_owned(),
            range: self.window(),
            endpoint: endpoint.cloned(),
            build: None,
            function: None,
            step,
        };
        let whole = self.store.function_costs(&costs(None, None)).await?;
        let top = top_functions(&whole, TOP_FUNCTIONS);
        if top.is_empty() {
            return Ok(());
        }
        // Requests per (endpoint, bucket) with enough of them.
        let series = self
            .store
            .endpoint_series(&SeriesQuery {
                tenant: tenant.clone(),
                service: service.to_owned(),
                range: self.window(),
                step,
            })
            .await?;
        let mut requests: BTreeMap<i64, HashMap<String, f64>> = BTreeMap::new();
        for s in series {
            for p in s.points {
                if p.stats.requests >= self.cfg.min_bucket_requests {
                    requests
                        .entry(p.time)
                        .or_default()
                        .insert(s.endpoint.clone(), p.stats.requests);
                }
            }
        }
        if requests.len() < 2 * self.cfg.changepoints.min_segment {
            return Ok(());
        }
        // Self samples per (endpoint, function) in each bucket with requests: one series of
        // every function per endpoint.
        let mut per_bucket: BTreeMap<i64, SelfCounts> = requests
            .keys()
            .map(|t| (*t, SelfCounts::default()))
            .collect();
        let endpoints: BTreeSet<&String> = requests.values().flat_map(|m| m.keys()).collect();
        for endpoint in endpoints {
            let rows = self
                .store
                .function_costs(&costs(Some(endpoint), Some(step)))
                .await?;
            for r in rows {
                let bucket = r.time.map(|t| t.div_euclid(NANOS_PER_SEC));
                let Some(counts) = bucket.and_then(|t| per_bucket.get_mut(&t)) else {
                    continue;
                };
                counts.endpoints.insert(endpoint.clone());
                if r.self_samples > 0 {
                    *counts
                        .by_function
                        .entry((endpoint.clone(), r.function))
                        .or_default() += r.self_samples;
                }
            }
        }
        let per_bucket: Vec<(i64, SelfCounts)> = per_bucket.into_iter().collect();
        let inputs = build_series(&top, &requests, &per_bucket, &self.cfg);
        if inputs.is_empty() {
            return Ok(());
        }
        let cfg = profwatch_analyzer::ChangepointConfig {
            permutations: permutations_for(
                inputs.len(),
                FUNCTION_FDR,
                self.cfg.changepoints.permutations,
            ),
            ..self.cfg.changepoints.clone()
        };
        let min_pct = self.cfg.compare.min_effect * 100.0;
        let tested = inputs.clone();
        let found = tokio::task::spawn_blocking(move || {
            function_changes(&tested, &cfg, FUNCTION_FDR, min_pct)
        })
        .await
        .map_err(|e| AnalysisError::Task(e.to_string()))??;
        for ch in found {
            let s = &inputs[ch.series];
            if let Some((record, cause)) = self
                .confirm_function(tenant, service, builds, s, &ch, step)
                .await?
            {
                self.record(record, &cause, "function regression found", records, report)
                    .await?;
            }
        }
        Ok(())
    }

    /// The record of function change `ch` in `s` when the attribution on the series either side
    /// of it names the function (a significant rise of its self share, not a cost shift).
    async fn confirm_function(
        &self,
        tenant: &Tenant,
        service: &str,
        builds: &[BuildSummary],
        s: &FunctionSeries,
        ch: &FunctionChange,
        step: i64,
    ) -> Result<Option<(RegressionRecord, Cause)>, AnalysisError> {
        let Some(&t) = s.times.get(ch.index) else {
            return Ok(None);
        };
        let at = t as i64 * NANOS_PER_SEC;
        // The whole series either side of the change: a small function's rise needs every
        // sample the series has (a 5% rise of a 2% function at ~4000 samples per bucket is
        // about 3 standard errors over 5 buckets, too little once tested across functions).
        let first = s.times.first().map_or(at, |&f| f as i64 * NANOS_PER_SEC);
        let last = s.times.last().map_or(at, |&l| l as i64 * NANOS_PER_SEC) + step;
        let (before, after) = (
            TimeRange {
                from: first,
                to: at,
            },
            TimeRange { from: at, to: last },
        );
        let c = self
            .compare_windows(tenant, service, &s.endpoint, before, after)
            .await?;
        // Shares alone (equal costs, no cost ratio): the samples measure the function's cost
        // themselves, and the noise of the endpoint's mean CPU per request (which the ratio test
        // counts, and which scales both sides' costs) would hide a small function's rise behind
        // the endpoint's noise, the very case this step is for.
        let b = self
            .endpoint_snapshot(tenant, service, &s.endpoint, before)
            .await?;
        let k = self
            .endpoint_snapshot(tenant, service, &s.endpoint, after)
            .await?;
        let deltas = attribution::attribute(&b, &k, None, 1.96);
        let Some(d) = attribution::culprits(&deltas, usize::MAX)
            .into_iter()
            .find(|d| d.function == s.function)
        else {
            return Ok(None);
        };
        let rollout = builds
            .iter()
            .min_by_key(|b| (b.first_seen - at).abs())
            .filter(|b| (b.first_seen - at).abs() <= 3 * step);
        let baseline = format!("before {}", format_rfc3339(at));
        let candidate = rollout.map_or_else(
            || format!("after {}", format_rfc3339(at)),
            |b| b.build.clone(),
        );
        let now = now_ns();
        let record = RegressionRecord {
            id: super::record::new_id(),
            tenant: tenant.0.clone(),
            service: service.to_owned(),
            endpoint: s.endpoint.clone(),
            function: Some(s.function.clone()),
            metric: "samples".to_owned(),
            baseline,
            candidate,
            effect: if ch.before > 0.0 {
                ch.after / ch.before
            } else {
                1.0 + ch.change_pct / 100.0
            },
            effect_low: None,
            effect_high: None,
            ratio_of_means: c.as_ref().and_then(|c| c.ratio_of_means),
            p_value: ch.p_value,
            q_value: ch.q_value,
            baseline_median: ch.before,
            candidate_median: ch.after,
            baseline_requests: c.as_ref().map_or(0, |c| c.n_baseline as u64),
            candidate_requests: c.as_ref().map_or(0, |c| c.n_candidate as u64),
            culprits: vec![Culprit {
                function: d.function.clone(),
                baseline: ch.before,
                candidate: ch.after,
                delta: ch.after - ch.before,
            }],
            first_seen: now,
            last_seen: now,
            state: RegressionState::Open,
            updated: now,
            incident: None,
            changed_at: Some(at),
            resolution: None,
            passes_gone: 0,
            kind: profwatch_model::regression::RegressionKind::Cpu,
        };
        let cause = rollout.map_or(Cause::Time(at), |b| Cause::Build(b.build.clone()));
        Ok(Some((record, cause)))
    }
    /// `endpoint`'s stacks over `range`, as shares (a cost of 1 per request).
    async fn endpoint_snapshot(
        &self,
        tenant: &Tenant,
        service: &str,
        endpoint: &str,
        range: TimeRange,
    ) -> Result<Snapshot, AnalysisError> {
        let q = ProfileQuery {
            tenant: tenant.clone(),
            service: service.to_owned(),
            range,
            filters: vec![LabelFilter {
                key: "endpoint".into(),
                value: endpoint.to_owned(),
            }],
        };
        let p = self.store.profile(&q).await?;
        Ok(Snapshot {
            stacks: p
                .merged()
                .into_iter()
                .map(|(f, n, _)| (f.to_vec(), n))
                .collect(),
            cost_per_request: 1.0,
        })
    }

    /// Open function records of `service` whose rise is gone (see the module docs): the latest
    /// `2 × min_segment` buckets against up to `4 × min_segment` buckets before the change.
    async fn functions_gone(
        &self,
        tenant: &Tenant,
        service: &str,
        records: &mut [RegressionRecord],
        report: &mut PassReport,
        step: i64,
    ) -> Result<(), AnalysisError> {
        let span = step.saturating_mul(self.cfg.changepoints.min_segment as i64);
        let now = now_ns();
        let window = self.window();
        for r in records.iter_mut().filter(|r| {
            r.service == service
                && r.function.is_some()
                && r.changed_at.is_some()
                && r.state != RegressionState::Resolved
        }) {
            let (Some(function), Some(at)) = (r.function.clone(), r.changed_at) else {
                continue;
            };
            let before = TimeRange {
                from: at.saturating_sub(span.saturating_mul(4)).max(window.from),
                to: at,
            };
            let latest = TimeRange {
                from: now.saturating_sub(span.saturating_mul(2)).max(at),
                to: now,
            };
            if before.from >= before.to || latest.from >= latest.to {
                continue;
            }
            let b = self
                .endpoint_snapshot(tenant, service, &r.endpoint, before)
                .await?;
            let k = self
                .endpoint_snapshot(tenant, service, &r.endpoint, latest)
                .await?;
            let Some(gone) = rise_gone(&b, &k, &function, r.effect) else {
                continue;
            };
            if self.settle_gone(r, gone, report).await? {
                tracing::info!(%service, endpoint = %r.endpoint, %function,
                    changed_at = %format_rfc3339(at), "function rise went away");
            }
        }
        Ok(())
    }
}

/// Whether `function`'s recorded rise (`effect`: self samples per request after the change over
/// before) is gone from `latest` against `before`, by its self share of the samples: `Some(true)`
/// when the share's rise, at 95%, is below half the recorded rise; `Some(false)` when the share
/// test still names the function (a significant rise, not a cost shift); `None` when the samples
/// cannot tell, or the function had no samples before.
fn rise_gone(before: &Snapshot, latest: &Snapshot, function: &str, effect: f64) -> Option<bool> {
    let deltas = attribution::attribute(before, latest, None, 1.96);
    let d = deltas.iter().find(|d| d.function == function)?;
    if attribution::culprits(&deltas, usize::MAX)
        .iter()
        .any(|c| c.function == function)
    {
        return Some(false);
    }
    let half_rise = d.self_baseline * (effect - 1.0) / 2.0;
    let has_samples = |s: &Snapshot| s.stacks.iter().any(|(_, n)| *n > 0);
    if half_rise.is_nan() || half_rise <= 0.0 || !has_samples(latest) {
        return None;
    }
    (d.self_delta_high < half_rise).then_some(true)
}

/// The `n` functions with the most self samples in `p`.
/// The `n` functions with the most self samples (leaves only), most first.
fn top_functions(costs: &[FunctionTotals], n: usize) -> Vec<String> {
    let mut v: Vec<&FunctionTotals> = costs.iter().filter(|c| c.self_samples > 0).collect();
    v.sort_by(|a, b| {
        b.self_samples
            .cmp(&a.self_samples)
            .then(a.function.cmp(&b.function))
    });
    v.into_iter().take(n).map(|c| c.function.clone()).collect()
}

/// One series per (endpoint, top function) that has samples: self samples per request in each
/// bucket where the endpoint had enough requests and any samples; long enough for two segments.
fn build_series(
    top: &[String],
    requests: &BTreeMap<i64, HashMap<String, f64>>,
    per_bucket: &[(i64, SelfCounts)],
    cfg: &super::AnalysisConfig,
) -> Vec<FunctionSeries> {
    let mut endpoints: Vec<&String> = requests.values().flat_map(|m| m.keys()).collect();
    endpoints.sort();
    endpoints.dedup();
    let mut out = Vec::new();
    for endpoint in endpoints {
        for function in top {
            let key = (endpoint.clone(), function.clone());
            let mut values = Vec::new();
            let mut times = Vec::new();
            for (t, counts) in per_bucket {
                let Some(n) = requests.get(t).and_then(|m| m.get(endpoint)) else {
                    continue;
                };
                if !counts.endpoints.contains(endpoint) {
                    continue;
                }
                let own = counts.by_function.get(&key).copied().unwrap_or(0);
                values.push(own as f64 / n);
                times.push(*t as f64);
            }
            if values.len() >= 2 * cfg.changepoints.min_segment && values.iter().any(|v| *v > 0.0) {
                out.push(FunctionSeries {
                    endpoint: endpoint.clone(),
                    function: function.clone(),
                    values,
                    times,
                });
            }
        }
    }
    out
}
