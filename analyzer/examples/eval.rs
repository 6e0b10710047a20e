//! Measures the analyzer on generated data whose truth is known (see `profwatch_analyzer::sim`).
//!
//! Run: `cargo run --release -p profwatch-analyzer --example eval` (a few minutes on 2 cores).
//! Prints the A/A false-positive rate, recall of injected regressions, the minimum detectable
//! effect against the statistical bound, the dc-mix-shift check and change-point precision and
//! recall. Everything is seeded: two runs print the same figures.

use std::time::Instant;

use profwatch_analyzer::changepoint::{detect, ChangepointConfig};
use profwatch_analyzer::compare::{
    compare, CompareConfig, EndpointSamples, Metric, Sample, Verdict,
};
use profwatch_analyzer::rng::Rng;
use profwatch_analyzer::sim::{Scenario, SeriesSpec};
use profwatch_analyzer::stats::normal_quantile;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn reps_for(n: usize, small: usize, large: usize) -> usize {
    if n >= 100_000 {
        large
    } else {
        small
    }
}

fn run(s: &Scenario, seed: u64, cfg: &CompareConfig) -> (Verdict, f64, Option<(f64, f64)>) {
    let (baseline, candidate) = s.generate(&mut Rng::new(seed));
    let e = EndpointSamples {
        endpoint: "GET /eval".to_owned(),
        metric: Metric::Instructions,
        baseline,
        candidate,
    };
    match compare(&e, cfg) {
        Ok(c) => (
            c.verdict,
            c.effect.unwrap_or(1.0).ln(),
            c.ci.map(|i| (i.low, i.high)),
        ),
        Err(err) => panic!("invalid config: {err}"),
    }
}

/// Standard deviation of log values within a dc (pooled), from one generated baseline.
fn sigma_log(s: &Scenario) -> f64 {
    let (a, _) = s.generate(&mut Rng::new(99));
    let mut by_dc: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for x in &a {
        by_dc.entry(x.dc.as_str()).or_default().push(x.value.ln());
    }
    let (mut ss, mut n) = (0.0, 0.0);
    for v in by_dc.values() {
        let m = v.iter().sum::<f64>() / v.len() as f64;
        ss += v.iter().map(|x| (x - m).powi(2)).sum::<f64>();
        n += v.len() as f64 - 1.0;
    }
    (ss / n).sqrt()
}

fn main() {
    let started = Instant::now();
    let cfg = CompareConfig::default();
    println!(
        "profwatch analyzer evaluation (alpha {}, min effect {:.1}%, CI {:.0}%, {} bootstrap iterations)",
        cfg.alpha,
        cfg.min_effect * 100.0,
        cfg.confidence * 100.0,
        cfg.bootstrap_iterations
    );
    let example = Scenario::typical(10_000, 1.0);
    println!(
        "data: log-normal cost (sigma_log {}), host effect sd {:.0}% (hosts run one build each, {} per arm), \
         daily cycle +-{:.0}%, {:.1}% spikes of {}x, 3 dcs of cost 1.0/1.15/0.9",
        example.sigma_log,
        example.host_sigma * 100.0,
        example.dcs.iter().map(|d| d.hosts_per_arm).sum::<usize>(),
        example.daily_amplitude * 100.0,
        example.spike_rate * 100.0,
        example.spike_factor
    );

    println!("\n## A/A false positives (same build on both arms, different hosts)");
    println!("| requests per arm | comparisons | flagged | false-positive rate | CI covers 1.0 |");
    println!("|---:|---:|---:|---:|---:|");
    let mut estimator_sd = Vec::new();
    for &n in &SIZES {
        let reps = reps_for(n, 1000, 200);
        let s = Scenario::typical(n, 1.0);
        let (mut flagged, mut covered) = (0, 0);
        let mut effects = Vec::with_capacity(reps);
        for r in 0..reps {
            let (v, e, ci) = run(&s, 10_000 + r as u64, &cfg);
            if v == Verdict::Regression || v == Verdict::Improvement {
                flagged += 1;
            }
            if ci.is_some_and(|(lo, hi)| lo <= 1.0 && 1.0 <= hi) {
                covered += 1;
            }
            effects.push(e);
        }
        let m = effects.iter().sum::<f64>() / reps as f64;
        let sd =
            (effects.iter().map(|e| (e - m).powi(2)).sum::<f64>() / (reps as f64 - 1.0)).sqrt();
        estimator_sd.push(sd);
        println!(
            "| {n} | {reps} | {flagged} | {:.2}% | {:.1}% |",
            100.0 * flagged as f64 / reps as f64,
            100.0 * covered as f64 / reps as f64
        );
    }

    println!("\n## Recall of injected regressions (verdict = regression)");
    let effects = [0.005, 0.01, 0.02, 0.05];
    print!("| requests per arm | reps |");
    for e in effects {
        print!(" +{:.1}% |", e * 100.0);
    }
    println!("\n|---:|---:|---:|---:|---:|---:|");
    for &n in &SIZES {
        let reps = reps_for(n, 200, 50);
        print!("| {n} | {reps} |");
        for (k, &e) in effects.iter().enumerate() {
            let s = Scenario::typical(n, 1.0 + e);
            let hits = (0..reps)
                .filter(|&r| run(&s, 50_000 + (k * 1000 + r) as u64, &cfg).0 == Verdict::Regression)
                .count();
            print!(" {:.0}% |", 100.0 * hits as f64 / reps as f64);
        }
        println!();
    }
    let reps = 200;
    print!("| 10000, quieter endpoint (sigma_log 0.2) | {reps} |");
    for (k, &e) in effects.iter().enumerate() {
        let mut s = Scenario::typical(10_000, 1.0 + e);
        s.sigma_log = 0.2;
        let hits = (0..reps)
            .filter(|&r| run(&s, 70_000 + (k * 1000 + r) as u64, &cfg).0 == Verdict::Regression)
            .count();
        print!(" {:.0}% |", 100.0 * hits as f64 / reps as f64);
    }
    println!();

    println!(
        "\n## Minimum detectable effect (80% power, two-sided alpha {})",
        cfg.alpha
    );
    println!("bound: (z_(1-alpha/2) + z_0.8) * sigma_log * sqrt(2 * deff / n), deff = 1 + (m - 1) * rho,");
    println!("m = requests per host, rho = host variance / total log variance; measured: the same z's times");
    println!("the standard deviation of the effect estimate over the A/A runs; the verdict also needs the");
    println!("point effect >= min effect, so the usable MDE is max(measured, min effect).");
    println!(
        "| requests per arm | sigma_log | deff | bound | measured | measured / bound | usable |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let z = normal_quantile(1.0 - cfg.alpha / 2.0) + normal_quantile(0.8);
    for (k, &n) in SIZES.iter().enumerate() {
        let s = Scenario::typical(n, 1.0);
        let sigma = sigma_log(&s);
        let hosts: usize = s.dcs.iter().map(|d| d.hosts_per_arm).sum();
        let m = n as f64 / hosts as f64;
        let rho = s.host_sigma.powi(2) / (sigma.powi(2) + s.host_sigma.powi(2));
        let deff = 1.0 + (m - 1.0) * rho;
        let bound = z * sigma * (2.0 * deff / n as f64).sqrt();
        let measured = z * estimator_sd[k];
        println!(
            "| {n} | {sigma:.3} | {deff:.2} | {:.2}% | {:.2}% | {:.2} | {:.2}% |",
            bound * 100.0,
            measured * 100.0,
            measured / bound,
            measured.max(cfg.min_effect) * 100.0
        );
    }

    println!(
        "\n## Traffic-mix shift (dc shares 50/30/20 -> 20/30/50, dc costs 1.0/1.15/1.5, no change)"
    );
    let reps = 1000;
    let mut s = Scenario::typical(10_000, 1.0).with_mix_shift();
    s.dcs[2].cost_factor = 1.5;
    let mut flagged = 0;
    let mut pooled = 0.0;
    for r in 0..reps {
        let (baseline, candidate) = s.generate(&mut Rng::new(90_000 + r));
        pooled += (median(&candidate) / median(&baseline)).ln();
        let e = EndpointSamples {
            endpoint: "GET /mix".to_owned(),
            metric: Metric::Instructions,
            baseline,
            candidate,
        };
        if let Ok(c) = compare(&e, &cfg) {
            if c.verdict == Verdict::Regression || c.verdict == Verdict::Improvement {
                flagged += 1;
            }
        }
    }
    println!(
        "{reps} comparisons at 10000 per arm: {flagged} flagged ({:.2}%); the unstratified ratio of medians would read {:+.1}%",
        100.0 * flagged as f64 / reps as f64,
        ((pooled / reps as f64).exp() - 1.0) * 100.0
    );

    println!(
        "\n## Change points (a change counts as found within 5 points; one match per true change)"
    );
    println!("| series | count | points | true changes | reported | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let cp_cfg = ChangepointConfig::default();
    let specs = [
        (
            "steps 5-20%, noise 1.5% heavy-tailed, 3% spikes, trend <=2%",
            SeriesSpec::default(),
        ),
        (
            "short CI history",
            SeriesSpec {
                len: 40,
                max_steps: 2,
                min_gap: 10,
                ..SeriesSpec::default()
            },
        ),
        (
            "noisy: noise 3%, 6% spikes, trend <=4%",
            SeriesSpec {
                noise: 0.03,
                spike_rate: 0.06,
                max_trend: 0.04,
                step_range: (0.08, 0.25),
                ..SeriesSpec::default()
            },
        ),
        (
            "no steps: spikes, trend and noise only",
            SeriesSpec {
                max_steps: 0,
                ..SeriesSpec::default()
            },
        ),
    ];
    for (name, spec) in specs {
        let count = 500;
        let (mut truth, mut reported, mut tp) = (0, 0, 0);
        for r in 0..count {
            let series = spec.generate(&mut Rng::new(200_000 + r));
            let found: Vec<usize> = detect(&series.values, &cp_cfg)
                .map(|v| v.into_iter().map(|c| c.index).collect())
                .unwrap_or_default();
            truth += series.changes.len();
            reported += found.len();
            let mut used = vec![false; found.len()];
            for &c in &series.changes {
                if let Some(k) = (0..found.len()).find(|&k| !used[k] && found[k].abs_diff(c) <= 5) {
                    used[k] = true;
                    tp += 1;
                }
            }
        }
        let ratio = |a: usize, b: usize| {
            if b == 0 {
                "-".to_owned()
            } else {
                format!("{:.1}%", 100.0 * a as f64 / b as f64)
            }
        };
        println!(
            "| {name} | {count} | {} | {truth} | {reported} | {} | {} |",
            spec.len,
            ratio(tp, reported),
            ratio(tp, truth)
        );
    }
    println!("\nfinished in {:.0}s", started.elapsed().as_secs_f64());
}

fn median(samples: &[Sample]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|s| s.value).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
