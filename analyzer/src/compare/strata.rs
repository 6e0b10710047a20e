//! Clusters and dc strata of one endpoint: the point estimates, the cluster-robust test and
//! the cluster bootstrap.
//!
//! Invariants: a stratum is a dc with at least two clusters in each arm; stratum weights are
//! fixed from sample counts (not re-estimated inside the bootstrap); every cluster has a
//! positive weight and a finite summary.

use std::collections::BTreeMap;

use super::{ClusterBy, CompareConfig, Comparison, EndpointSamples, Interval, Sample, Verdict};
use crate::rng::Rng;
use crate::stats::{sort_pairs, weighted_quantile_sorted, weighted_trimmed_mean_sorted};

/// One cluster's summary.
#[derive(Debug, Clone, Copy)]
struct Cluster {
    /// Sum of sampling weights.
    weight: f64,
    /// Trimmed mean of log values.
    loc: f64,
    /// Sum of weight * value (for the ratio of means).
    raw_sum: f64,
}

/// One arm within one dc.
#[derive(Debug, Default)]
struct Arm {
    clusters: Vec<Cluster>,
    /// (value, weight) of every sample, sorted by value.
    values: Vec<(f64, f64)>,
}

impl Arm {
    fn n(&self) -> usize {
        self.values.len()
    }

    fn mean(&self) -> f64 {
        let w: f64 = self.clusters.iter().map(|c| c.weight).sum();
        self.clusters.iter().map(|c| c.raw_sum).sum::<f64>() / w
    }
}

/// Traffic-weighted mean of cluster locations and its sandwich variance.
fn location(clusters: &[Cluster]) -> (f64, f64) {
    let w: f64 = clusters.iter().map(|c| c.weight).sum();
    let l = clusters.iter().map(|c| c.weight * c.loc).sum::<f64>() / w;
    let c = clusters.len() as f64;
    let ss: f64 = clusters
        .iter()
        .map(|k| (k.weight * (k.loc - l)).powi(2))
        .sum();
    (l, c / (c - 1.0) * ss / (w * w))
}

#[derive(Debug)]
struct Stratum {
    baseline: Arm,
    candidate: Arm,
    weight: f64,
}

/// Arms by dc rank (the dc's place among the distinct dc names, so that maps keyed by it run in
/// name order).
type DcArms = BTreeMap<u32, Arm>;

/// (dc rank, host, time block).
type ClusterKey = (u32, u32, i64);

/// The distinct dc names, sorted, and each dc index's rank among them.
fn dc_ranks(dcs: &[String]) -> (Vec<&str>, Vec<u32>) {
    let mut names: Vec<&str> = dcs.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    let rank = dcs
        .iter()
        .map(|d| names.binary_search(&d.as_str()).unwrap_or(0) as u32)
        .collect();
    (names, rank)
}

fn build_arms(
    samples: &[Sample],
    rank: &[u32],
    cfg: &CompareConfig,
    dropped: &mut usize,
) -> DcArms {
    let mut groups: BTreeMap<ClusterKey, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        let valid = s.value.is_finite() && s.value > 0.0 && s.weight.is_finite() && s.weight > 0.0;
        let Some(&dc) = rank.get(s.dc as usize).filter(|_| valid) else {
            *dropped += 1;
            continue;
        };
        let block = match cfg.cluster_by {
            ClusterBy::Host => 0,
            ClusterBy::HostAndTimeBlock { block_ns } => s.ts.div_euclid(block_ns.max(1)),
        };
        groups
            .entry((dc, s.host, block))
            .or_default()
            .push((s.value, s.weight));
    }
    let mut arms = DcArms::new();
    for ((dc, _, _), mut pairs) in groups {
        let arm = arms.entry(dc).or_default();
        let raw_sum = pairs.iter().map(|p| p.0 * p.1).sum();
        let weight = pairs.iter().map(|p| p.1).sum();
        // Sorted once: the arm's values take the cluster as a sorted run (the arm's sort below
        // then only merges runs), and the logarithm keeps the order.
        sort_pairs(&mut pairs);
        arm.values.extend_from_slice(&pairs);
        for p in &mut pairs {
            p.0 = p.0.ln();
        }
        if let Some(loc) = weighted_trimmed_mean_sorted(&pairs, cfg.trim) {
            arm.clusters.push(Cluster {
                weight,
                loc,
                raw_sum,
            });
        }
    }
    for arm in arms.values_mut() {
        sort_pairs(&mut arm.values);
    }
    arms
}

/// Compares one endpoint; `q_value` is left empty and the verdict is provisional
/// (`Same` or `NotEnoughData`) until [`super::compare_all`] applies BH.
pub(super) fn compare_one(input: &EndpointSamples, cfg: &CompareConfig) -> Comparison {
    let mut dropped = 0;
    let (dc_names, rank) = dc_ranks(&input.dcs);
    let mut base = build_arms(&input.baseline, &rank, cfg, &mut dropped);
    let mut cand = build_arms(&input.candidate, &rank, cfg, &mut dropped);
    let mut skipped: Vec<u32> = Vec::new();
    let mut strata: BTreeMap<u32, Stratum> = BTreeMap::new();
    let all_dcs: Vec<u32> = base.keys().chain(cand.keys()).copied().collect();
    for dc in all_dcs {
        if strata.contains_key(&dc) || skipped.contains(&dc) {
            continue;
        }
        match (base.remove(&dc), cand.remove(&dc)) {
            (Some(b), Some(c)) if b.clusters.len() >= 2 && c.clusters.len() >= 2 => {
                let (nb, nc) = (b.n() as f64, c.n() as f64);
                strata.insert(
                    dc,
                    Stratum {
                        baseline: b,
                        candidate: c,
                        weight: nb * nc / (nb + nc),
                    },
                );
            }
            _ => skipped.push(dc),
        }
    }
    skipped.sort_unstable();
    let name = |dc: &u32| dc_names.get(*dc as usize).map_or("", |n| n).to_owned();
    let total_weight: f64 = strata.values().map(|s| s.weight).sum();
    for s in strata.values_mut() {
        s.weight /= total_weight;
    }
    let count = |f: &dyn Fn(&Stratum) -> usize| strata.values().map(f).sum::<usize>();
    let mut out = Comparison {
        endpoint: input.endpoint.clone(),
        metric: input.metric,
        n_baseline: count(&|s| s.baseline.n()),
        n_candidate: count(&|s| s.candidate.n()),
        clusters_baseline: count(&|s| s.baseline.clusters.len()),
        clusters_candidate: count(&|s| s.candidate.clusters.len()),
        dropped,
        median_baseline: None,
        median_candidate: None,
        mean_baseline: None,
        mean_candidate: None,
        ratio_of_medians: None,
        ratio_of_means: None,
        effect: None,
        ci: None,
        ratio_of_means_ci: None,
        confidence: cfg.confidence,
        p_value: None,
        q_value: None,
        verdict: Verdict::NotEnoughData,
        dcs: strata.keys().map(name).collect(),
        dcs_skipped: skipped.iter().map(name).collect(),
    };
    if strata.is_empty() {
        return out;
    }
    let pooled = |arm: fn(&Stratum) -> &Arm| {
        let mut all: Vec<(f64, f64)> = strata
            .values()
            .flat_map(|s| arm(s).values.iter().copied())
            .collect();
        sort_pairs(&mut all);
        let w: f64 = all.iter().map(|p| p.1).sum();
        let mean = all.iter().map(|p| p.0 * p.1).sum::<f64>() / w;
        (weighted_quantile_sorted(&all, 0.5), Some(mean))
    };
    (out.median_baseline, out.mean_baseline) = pooled(|s| &s.baseline);
    (out.median_candidate, out.mean_candidate) = pooled(|s| &s.candidate);
    let median = |a: &Arm| weighted_quantile_sorted(&a.values, 0.5).unwrap_or(f64::NAN);
    let log_medians: f64 = strata
        .values()
        .map(|s| s.weight * (median(&s.candidate) / median(&s.baseline)).ln())
        .sum();
    out.ratio_of_medians = Some(log_medians.exp());
    out.ratio_of_means = Some(log_mean_ratio(&strata).exp());

    let (effect, var) = effect_and_variance(strata.values().map(|s| {
        (
            s.weight,
            &s.baseline.clusters[..],
            &s.candidate.clusters[..],
        )
    }));
    out.effect = Some(effect.exp());
    out.p_value = Some(permutation_p(&strata, studentized(effect, var), cfg));
    let (ci, means_ci) = bootstrap(&strata, cfg);
    out.ci = ci;
    out.ratio_of_means_ci = means_ci;
    let enough = out.n_baseline >= cfg.min_requests
        && out.n_candidate >= cfg.min_requests
        && out.clusters_baseline >= cfg.min_clusters
        && out.clusters_candidate >= cfg.min_clusters;
    out.verdict = if enough {
        Verdict::Same
    } else {
        Verdict::NotEnoughData
    };
    out
}

fn log_mean_ratio(strata: &BTreeMap<u32, Stratum>) -> f64 {
    strata
        .values()
        .map(|s| s.weight * (s.candidate.mean() / s.baseline.mean()).ln())
        .sum()
}

/// The stratified log effect and its variance, from `(stratum weight, baseline clusters,
/// candidate clusters)`.
fn effect_and_variance<'a>(
    strata: impl Iterator<Item = (f64, &'a [Cluster], &'a [Cluster])>,
) -> (f64, f64) {
    let (mut effect, mut var) = (0.0, 0.0);
    for (w, b, c) in strata {
        let (lb, vb) = location(b);
        let (lc, vc) = location(c);
        effect += w * (lc - lb);
        var += w * w * (vb + vc);
    }
    (effect, var)
}

fn studentized(effect: f64, var: f64) -> f64 {
    if var > 0.0 {
        effect / var.sqrt()
    } else if effect == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Permutations exceeding the observed statistic after which a p-value clearly above `alpha`
/// stops the test.
const FUTILITY_EXCEEDANCES: usize = 20;

/// Two-sided p-value of the studentized effect by permuting arm labels of whole clusters
/// within each dc. Exact under exchangeability of clusters (no build effect), and the
/// studentization keeps it valid when the arms' cluster sizes differ. Permutations are drawn
/// in rounds and stop once the p-value is clearly above `alpha` (above `5·alpha` after a
/// round, or as soon as 20 permutations exceeded the observed statistic while it is: a clearly
/// null endpoint costs about `20 / p` permutations instead of 999), so only borderline and
/// significant endpoints pay for the maximum. Stopping early only ever ends a test that could
/// not have rejected at that point, so the level holds; a p-value that does not stop is the
/// same as with every permutation drawn.
fn permutation_p(strata: &BTreeMap<u32, Stratum>, observed: f64, cfg: &CompareConfig) -> f64 {
    let mut pools: Vec<(f64, usize, Vec<Cluster>)> = strata
        .values()
        .map(|s| {
            let mut all = s.baseline.clusters.clone();
            all.extend_from_slice(&s.candidate.clusters);
            (s.weight, s.baseline.clusters.len(), all)
        })
        .collect();
    let mut rng = Rng::new(cfg.seed ^ 0x9E37_79B9);
    let target = observed.abs() - 1e-12;
    let clearly_above =
        |exceed: usize, done: usize| (exceed + 1) as f64 / (done + 1) as f64 > 5.0 * cfg.alpha;
    let (mut done, mut exceed) = (0usize, 0usize);
    let mut round = 999.min(cfg.permutations);
    'rounds: while done < cfg.permutations {
        for _ in 0..round {
            for (_, _, pool) in &mut pools {
                rng.shuffle(pool);
            }
            let (e, v) = effect_and_variance(
                pools
                    .iter()
                    .map(|(w, nb, pool)| (*w, &pool[..*nb], &pool[*nb..])),
            );
            done += 1;
            if studentized(e, v).abs() >= target {
                exceed += 1;
                // Besag-Clifford futility stop: enough exceedances to know the p-value is
                // far above alpha.
                if exceed >= FUTILITY_EXCEEDANCES && clearly_above(exceed, done) {
                    break 'rounds;
                }
            }
        }
        if clearly_above(exceed, done) {
            break;
        }
        round = (cfg.permutations - done).min(4 * done + 4);
    }
    (exceed + 1) as f64 / (done + 1) as f64
}

/// Percentile cluster-bootstrap intervals of the effect and of the ratio of means.
fn bootstrap(
    strata: &BTreeMap<u32, Stratum>,
    cfg: &CompareConfig,
) -> (Option<Interval>, Option<Interval>) {
    let iters = cfg.bootstrap_iterations;
    if iters < 2 {
        return (None, None);
    }
    let mut rng = Rng::new(cfg.seed);
    let mut effects = Vec::with_capacity(iters);
    let mut means = Vec::with_capacity(iters);
    let resample = |arm: &Arm, rng: &mut Rng| {
        let (mut w, mut wl, mut raw) = (0.0, 0.0, 0.0);
        for _ in 0..arm.clusters.len() {
            let c = arm.clusters[rng.below(arm.clusters.len())];
            w += c.weight;
            wl += c.weight * c.loc;
            raw += c.raw_sum;
        }
        (wl / w, (raw / w).ln())
    };
    for _ in 0..iters {
        let (mut e, mut m) = (0.0, 0.0);
        for s in strata.values() {
            let (lb, mb) = resample(&s.baseline, &mut rng);
            let (lc, mc) = resample(&s.candidate, &mut rng);
            e += s.weight * (lc - lb);
            m += s.weight * (mc - mb);
        }
        effects.push(e);
        means.push(m);
    }
    let interval = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let tail = (1.0 - cfg.confidence) / 2.0;
        let at = |q: f64| v[((q * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
        Some(Interval {
            low: at(tail).exp(),
            high: at(1.0 - tail).exp(),
        })
    };
    (interval(&mut effects), interval(&mut means))
}
