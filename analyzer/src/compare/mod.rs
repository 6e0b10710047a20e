//! Snapshot compare: build A (baseline) against build B (candidate), per endpoint.
//!
//! Method (details and the reasons in `analyzer/README.md`):
//! - the metric is compared on the log scale; a sample whose value or weight is not finite and
//!   `> 0` is dropped and counted, never fatal;
//! - requests are grouped into clusters (a host, or a host and a time block) inside each dc,
//!   because requests on one host are not independent; each cluster is summarised once by the
//!   weighted 20%-trimmed mean of its log values (robust to spikes, ~94% as efficient as the
//!   mean under normality);
//! - an arm's location in a dc is the traffic-weighted mean of its cluster summaries; the effect
//!   is the difference of locations, per dc, combined across the dcs present in both arms with
//!   fixed weights `n_a n_b / (n_a + n_b)`, so a change of dc mix is not read as a regression;
//! - the test statistic is that effect divided by its cluster-robust (sandwich) standard error;
//!   its p-value comes from permuting the arm labels of whole clusters within each dc (valid
//!   with few clusters, where the t approximation was measured to be anticonservative); the
//!   confidence interval is a percentile cluster bootstrap of the same effect (clusters
//!   resampled within arm and dc); both use a fixed seed, so results are reproducible;
//! - [`compare_all`] applies Benjamini-Hochberg across every endpoint it tested, then decides
//!   the verdicts.
//!
//! Invariants: no input panics (empty arms, NaN, zero weights give
//! [`Verdict::NotEnoughData`]); the output is a pure function of the input and the config.

mod builds;
mod strata;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use profwatch_model::event::RequestEvent;

use crate::error::AnalyzerError;
use crate::stats::benjamini_hochberg;

pub use builds::{choose_builds, BuildTraffic};

/// One request's cost, as the compare sees it. Hosts and dcs are numbers, so that millions of
/// samples carry no strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// The metric per request (instructions or CPU nanoseconds); must be finite and `> 0`.
    pub value: f64,
    /// Inverse sampling rate; must be finite and `> 0`.
    pub weight: f64,
    /// The host that served it: samples of one arm with the same number come from one host
    /// (the numbers of the two arms need not agree; a host's name is never reported).
    pub host: u32,
    /// Index of its dc in [`EndpointSamples::dcs`]; a sample with no such dc is dropped.
    pub dc: u32,
    /// Unix nanoseconds; used only when clustering by time block.
    pub ts: i64,
}

/// Which measurement of a request is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Instructions per request (hardware counter); preferred: far less noisy than time.
    #[default]
    Instructions,
    /// CPU nanoseconds per request.
    CpuNs,
    /// Private bytes per worker process (a memory compare: each sample is one process's mean
    /// over a time bucket, never a request's).
    PrivateBytes,
}

impl Metric {
    /// Instructions when every event of both arms carries a count, else CPU time (mixing the
    /// two within one comparison would compare different things).
    pub fn choose(baseline: &[RequestEvent], candidate: &[RequestEvent]) -> Metric {
        let all_counted = baseline
            .iter()
            .chain(candidate)
            .all(|e| e.instructions.is_some());
        if all_counted && !(baseline.is_empty() && candidate.is_empty()) {
            Metric::Instructions
        } else {
            Metric::CpuNs
        }
    }

    /// The value of this metric for one event: its instructions, else its CPU time (a
    /// request has no memory metric of its own).
    pub fn value(self, event: &RequestEvent) -> f64 {
        match self {
            Metric::Instructions => event.instructions.unwrap_or(0) as f64,
            Metric::CpuNs | Metric::PrivateBytes => event.cpu_ns as f64,
        }
    }

    /// The metric's name in records and reports: `instructions`, `cpu_ns`, `private_bytes`.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Instructions => "instructions",
            Metric::CpuNs => "cpu_ns",
            Metric::PrivateBytes => "private_bytes",
        }
    }
}

/// The samples of one endpoint in both builds.
#[derive(Debug, Clone, Default)]
pub struct EndpointSamples {
    pub endpoint: String,
    pub metric: Metric,
    /// Names of the dcs, indexed by [`Sample::dc`] in both arms.
    pub dcs: Vec<String>,
    pub baseline: Vec<Sample>,
    pub candidate: Vec<Sample>,
}

/// Numbers strings in order of first appearance.
#[derive(Debug, Default)]
struct Interner<'a> {
    ids: std::collections::HashMap<&'a str, u32>,
    names: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn id(&mut self, name: &'a str) -> u32 {
        let next = self.names.len() as u32;
        *self.ids.entry(name).or_insert_with(|| {
            self.names.push(name);
            next
        })
    }
}

impl EndpointSamples {
    /// Converts events of one endpoint, choosing the metric with [`Metric::choose`].
    pub fn from_events(
        endpoint: &str,
        baseline: &[RequestEvent],
        candidate: &[RequestEvent],
    ) -> EndpointSamples {
        fn convert<'a>(
            events: &'a [RequestEvent],
            metric: Metric,
            dcs: &mut Interner<'a>,
        ) -> Vec<Sample> {
            let mut hosts = Interner::default();
            events
                .iter()
                .map(|e| Sample {
                    value: metric.value(e),
                    weight: e.weight,
                    host: hosts.id(&e.host),
                    dc: dcs.id(&e.dc),
                    ts: e.ts,
                })
                .collect()
        }
        let metric = Metric::choose(baseline, candidate);
        let mut dcs = Interner::default();
        let baseline = convert(baseline, metric, &mut dcs);
        let candidate = convert(candidate, metric, &mut dcs);
        EndpointSamples {
            endpoint: endpoint.to_owned(),
            metric,
            dcs: dcs.names.iter().map(|d| (*d).to_owned()).collect(),
            baseline,
            candidate,
        }
    }
}

/// What a cluster (a unit treated as independent) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterBy {
    /// One cluster per host (within a dc). The default: host effects persist for hours, so
    /// the minutes of one host are not independent of each other.
    Host,
    /// One cluster per host and time block of `block_ns`; only sound when host effects are
    /// negligible against the noise between blocks.
    HostAndTimeBlock { block_ns: i64 },
}

/// Settings of the compare. The defaults are justified in `analyzer/README.md`.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// False discovery rate for Benjamini-Hochberg across the endpoints of one pass.
    pub alpha: f64,
    /// Smallest relative change worth a verdict (0.01 = 1%); the point effect must reach it.
    pub min_effect: f64,
    /// Smallest number of samples per arm (in the dcs compared).
    pub min_requests: usize,
    /// Smallest number of clusters per arm (in the dcs compared).
    pub min_clusters: usize,
    pub cluster_by: ClusterBy,
    /// Fraction trimmed from each tail of a cluster's log values.
    pub trim: f64,
    pub bootstrap_iterations: usize,
    /// Most permutations for the p-value (fewer when the p-value is clearly above `alpha`);
    /// the smallest reachable p-value is `1 / (permutations + 1)`.
    pub permutations: usize,
    /// Level of the confidence interval (0.95 = 95%).
    pub confidence: f64,
    /// Seed of the bootstrap.
    pub seed: u64,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            alpha: 0.005,
            min_effect: 0.01,
            min_requests: 500,
            min_clusters: 6,
            cluster_by: ClusterBy::Host,
            trim: 0.2,
            bootstrap_iterations: 1000,
            permutations: 19_999,
            confidence: 0.95,
            seed: 0x5EED,
        }
    }
}

impl CompareConfig {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<(), AnalyzerError> {
        let bad = |field, reason: &str| {
            Err(AnalyzerError::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return bad("alpha", "must be in (0, 1)");
        }
        if !(self.min_effect >= 0.0 && self.min_effect.is_finite()) {
            return bad("min_effect", "must be a finite number >= 0");
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return bad("confidence", "must be in (0, 1)");
        }
        if !(0.0..0.5).contains(&self.trim) {
            return bad("trim", "must be in [0, 0.5)");
        }
        if self.alpha * ((self.permutations + 1) as f64) < 1.0 {
            return bad(
                "permutations",
                "must be at least 1/alpha - 1, or no p-value can reach alpha",
            );
        }
        if self.min_clusters < 2 {
            return bad(
                "min_clusters",
                "must be at least 2 (a variance needs two clusters)",
            );
        }
        if let ClusterBy::HostAndTimeBlock { block_ns } = self.cluster_by {
            if block_ns <= 0 {
                return bad("cluster_by", "the time block must be > 0 ns");
            }
        }
        Ok(())
    }
}

/// A confidence interval of a ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// The outcome of one endpoint's compare. Higher cost is worse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significant after BH and the cost rose by at least the minimum effect.
    Regression,
    /// Significant after BH and the cost fell by at least the minimum effect.
    Improvement,
    /// Enough data, and no significant change of at least the minimum effect.
    Same,
    /// Fewer samples or clusters than the minimums, in the dcs present in both arms.
    NotEnoughData,
}

/// The result of comparing one endpoint. Ratios are candidate / baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub endpoint: String,
    pub metric: Metric,
    /// Samples per arm in the dcs compared (after dropping invalid ones).
    pub n_baseline: usize,
    pub n_candidate: usize,
    pub clusters_baseline: usize,
    pub clusters_candidate: usize,
    /// Samples dropped because the value or weight was not finite and `> 0`.
    pub dropped: usize,
    /// Weighted medians and means of the metric, pooled over the dcs compared.
    pub median_baseline: Option<f64>,
    pub median_candidate: Option<f64>,
    pub mean_baseline: Option<f64>,
    pub mean_candidate: Option<f64>,
    /// Ratio of weighted medians, per dc, combined across dcs (geometric, stratum weights).
    pub ratio_of_medians: Option<f64>,
    /// Ratio of weighted means, per dc, combined across dcs.
    pub ratio_of_means: Option<f64>,
    /// The tested effect: the robust estimate of the ratio of medians (exp of the difference of
    /// cluster-trimmed log locations), stratified by dc.
    pub effect: Option<f64>,
    /// Cluster-bootstrap interval of `effect` at `confidence`.
    pub ci: Option<Interval>,
    /// Cluster-bootstrap interval of `ratio_of_means` at `confidence`.
    pub ratio_of_means_ci: Option<Interval>,
    pub confidence: f64,
    /// Two-sided cluster-permutation p-value, before adjustment.
    pub p_value: Option<f64>,
    /// Benjamini-Hochberg q-value across the endpoints of the pass.
    pub q_value: Option<f64>,
    pub verdict: Verdict,
    /// Dcs compared (present in both arms with at least two clusters each).
    pub dcs: Vec<String>,
    /// Dcs left out: present in one arm only, or with fewer than two clusters in an arm.
    pub dcs_skipped: Vec<String>,
}

/// Compares every endpoint, applies Benjamini-Hochberg across those with enough data, and
/// sets the verdicts.
pub fn compare_all(
    endpoints: &[EndpointSamples],
    cfg: &CompareConfig,
) -> Result<Vec<Comparison>, AnalyzerError> {
    cfg.validate()?;
    let out = endpoints
        .iter()
        .map(|e| strata::compare_one(e, cfg))
        .collect();
    Ok(adjust(out, cfg))
}

/// [`compare_all`] with the endpoints spread over the process's rayon pool (the one parallel
/// executor of the workspace). The result is the same: each endpoint's compare is seeded on its
/// own, and Benjamini-Hochberg runs over all of them.
pub fn compare_all_par(
    endpoints: &[EndpointSamples],
    cfg: &CompareConfig,
) -> Result<Vec<Comparison>, AnalyzerError> {
    cfg.validate()?;
    let out = endpoints
        .par_iter()
        .map(|e| strata::compare_one(e, cfg))
        .collect();
    Ok(adjust(out, cfg))
}

/// Benjamini-Hochberg q-values over the endpoints that were tested, and the verdicts.
fn adjust(mut out: Vec<Comparison>, cfg: &CompareConfig) -> Vec<Comparison> {
    let tested: Vec<usize> = (0..out.len())
        .filter(|&i| out[i].verdict != Verdict::NotEnoughData && out[i].p_value.is_some())
        .collect();
    let p: Vec<f64> = tested
        .iter()
        .map(|&i| out[i].p_value.unwrap_or(1.0))
        .collect();
    for (&i, q) in tested.iter().zip(benjamini_hochberg(&p)) {
        let c = &mut out[i];
        c.q_value = Some(q);
        c.verdict = decide(q, c.effect.unwrap_or(1.0), cfg);
    }
    out
}

/// Compares one endpoint on its own (BH over one test leaves the p-value unchanged).
pub fn compare(
    endpoint: &EndpointSamples,
    cfg: &CompareConfig,
) -> Result<Comparison, AnalyzerError> {
    let mut all = compare_all(std::slice::from_ref(endpoint), cfg)?;
    all.pop().ok_or(AnalyzerError::InvalidConfig {
        field: "endpoints",
        reason: "no comparison produced".to_owned(),
    })
}

fn decide(q: f64, effect: f64, cfg: &CompareConfig) -> Verdict {
    if q > cfg.alpha {
        Verdict::Same
    } else if effect >= 1.0 + cfg.min_effect {
        Verdict::Regression
    } else if effect <= 1.0 / (1.0 + cfg.min_effect) {
        Verdict::Improvement
    } else {
        Verdict::Same
    }
}

#[cfg(test)]
mod tests;
