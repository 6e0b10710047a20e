//! Measures the analyzer on generated data whose truth is known (see `profwatch_analyzer::sim`).
//!
//! Run: `cargo run --release -p profwatch-analyzer --example eval [compare] [attribution]
//! [changepoints] [realdata] [holdout] [holdout2]` (all sections but the held-out ones when none
//! is named; a few minutes on 2 cores). `holdout` and `holdout2` are held-out sets of real
//! series: run them only to check a finished detector, never while tuning it (`holdout` was run
//! at the end of the work on drift and autocorrelation, `holdout2` at the end of issue 17's
//! second part).
//! Prints the A/A false-positive rate, recall of injected regressions, the minimum detectable
//! effect against the statistical bound, the dc-mix-shift check, cost shifts (not flagged),
//! attribution (the function made more expensive is named first), change-point precision and
//! recall, false changes, drift and delay on generated series ([`changepoints`]) and the
//! documented changes of real series. Everything is seeded: two runs print the same figures.

mod changepoints;
mod detector;

use std::time::Instant;

use profwatch_analyzer::attribution::{attribute, culprits, CostRatio, Snapshot};
use profwatch_analyzer::changepoint::ChangepointConfig;
use profwatch_analyzer::compare::{compare, CompareConfig, Comparison, Sample, Verdict};
use profwatch_analyzer::rng::Rng;
use profwatch_analyzer::sim::profile::{CallTree, ShiftKind};
use profwatch_analyzer::sim::Scenario;
use profwatch_analyzer::stats::normal_quantile;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn reps_for(n: usize, small: usize, large: usize) -> usize {
    if n >= 100_000 {
        large
    } else {
        small
    }
}

fn comparison(s: &Scenario, seed: u64, cfg: &CompareConfig) -> Comparison {
    let e = s.endpoint(&mut Rng::new(seed), "GET /eval");
    match compare(&e, cfg) {
        Ok(c) => c,
        Err(err) => panic!("invalid config: {err}"),
    }
}

fn run(s: &Scenario, seed: u64, cfg: &CompareConfig) -> (Verdict, f64, Option<(f64, f64)>) {
    let c = comparison(s, seed, cfg);
    (
        c.verdict,
        c.effect.unwrap_or(1.0).ln(),
        c.ci.map(|i| (i.low, i.high)),
    )
}

/// Standard deviation of log values within a dc (pooled), from one generated baseline.
fn sigma_log(s: &Scenario) -> f64 {
    let (a, _) = s.generate(&mut Rng::new(99));
    let mut by_dc: std::collections::BTreeMap<u32, Vec<f64>> = Default::default();
    for x in &a {
        by_dc.entry(x.dc).or_default().push(x.value.ln());
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

    let sections: Vec<String> = std::env::args().skip(1).collect();
    // The held-out real series run only when named.
    let wants = |name: &str| {
        sections.iter().any(|s| s == name) || (sections.is_empty() && !name.starts_with("holdout"))
    };
    let mut timings = Vec::new();
    for (name, run) in [
        ("compare", compare_quality as fn(&CompareConfig)),
        ("attribution", attribution_quality),
        ("changepoints", changepoint_quality),
        ("realdata", realdata_quality),
        ("holdout", holdout_quality),
        ("holdout2", holdout2_quality),
    ] {
        if wants(name) {
            let t = Instant::now();
            run(&cfg);
            timings.push(format!("{name} {:.0}s", t.elapsed().as_secs_f64()));
        }
    }
    println!(
        "\nfinished in {:.0}s ({})",
        started.elapsed().as_secs_f64(),
        timings.join(", ")
    );
}

/// A/A false positives, recall, minimum detectable effect, dc-mix shift.
fn compare_quality(cfg: &CompareConfig) {
    let cfg = cfg.clone();
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
        let e = s.endpoint(&mut Rng::new(90_000 + r), "GET /mix");
        pooled += (median(&e.candidate) / median(&e.baseline)).ln();
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
}

/// Cost shifts and attribution.
fn attribution_quality(cfg: &CompareConfig) {
    cost_shifts(cfg);
    attribution(cfg);
    regression_with_shift(cfg);
}

/// Change-point quality on generated series.
fn changepoint_quality(_: &CompareConfig) {
    let cfg = ChangepointConfig::default();
    changepoints::ci_histories(&cfg);
    changepoints::without_steps(&cfg);
    changepoints::with_steps(&cfg);
}

/// Change points in the development set of real series.
fn realdata_quality(_: &CompareConfig) {
    changepoints::real_development(&ChangepointConfig::default());
}

/// Change points in the held-out real series.
fn holdout_quality(_: &CompareConfig) {
    changepoints::real_holdout(&ChangepointConfig::default());
}

/// Change points in the second held-out set of real series.
fn holdout2_quality(_: &CompareConfig) {
    changepoints::real_holdout2(&ChangepointConfig::default());
}

/// Culprits named per regression, as in the analysis pass.
const CULPRITS: usize = 5;
/// The interval's normal quantile, as in the analysis pass.
const Z: f64 = 1.96;
/// CPU per request (ms) of the generated endpoints: a 99 Hz sampler takes `99 × ms / 1000`
/// samples per request.
const CPU_MS: [f64; 3] = [2.0, 20.0, 200.0];

const SHIFTS: [(&str, ShiftKind); 5] = [
    ("inlined into its caller", ShiftKind::Inline),
    ("renamed", ShiftKind::Rename),
    ("self cost moved to a sibling", ShiftKind::Siblings),
    ("a call moved to another caller", ShiftKind::CallMoved),
    ("self cost moved under another parent", ShiftKind::Distant),
];

fn samples_per_arm(requests: usize, cpu_ms: f64) -> f64 {
    99.0 * requests as f64 * cpu_ms / 1000.0
}

/// A call tree of 200 to 2000 functions.
fn tree(rng: &mut Rng) -> CallTree {
    let functions = 200 + rng.below(1801);
    CallTree::generate(rng, functions)
}

/// Snapshots of `base` and `changed` at `samples` expected baseline samples (the candidate's
/// count scales with its cost), with the compare's mean costs per request (as the pass does).
fn snapshots(
    base: &CallTree,
    changed: &CallTree,
    samples: f64,
    c: &Comparison,
    rng: &mut Rng,
) -> (Snapshot, Snapshot) {
    let rate = samples / base.total();
    (
        Snapshot {
            stacks: base.sample(rng, rate),
            cost_per_request: c.mean_baseline.unwrap_or(0.0),
        },
        Snapshot {
            stacks: changed.sample(rng, rate),
            cost_per_request: c.mean_candidate.unwrap_or(0.0),
        },
    )
}

/// The compare's interval of the cost ratio, as the pass gives it to attribution.
fn ratio(c: &Comparison) -> Option<CostRatio> {
    c.ratio_of_means_ci.map(|i| CostRatio {
        low: i.low,
        high: i.high,
        confidence: c.confidence,
    })
}

fn pct(a: usize, b: usize) -> String {
    if b == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

fn cost_shifts(cfg: &CompareConfig) {
    let (requests, reps) = (10_000, 200);
    println!("\n## Cost shifts (cost moves between functions; the cost per request is unchanged)");
    println!(
        "{reps} cases per kind and volume: requests A/A ({requests} per arm, the data above), a \
         generated profile of 200-2000 functions with Poisson sample counts, the shifted cost drawn \
         where the time is; culprits = culprits(attribute(.., {Z}), {CULPRITS}) with the compare's \
         mean costs and ratio interval, computed for every case (the pass computes them only for \
         regressions)."
    );
    println!(
        "| shift | samples per arm | median cost moved | regression verdict | some culprit | \
         the function that gained is a culprit | reported by the pass (regression with a culprit) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let s = Scenario::typical(requests, 1.0);
    for (k, (name, kind)) in SHIFTS.into_iter().enumerate() {
        let cases: Vec<(Comparison, CallTree, _)> = (0..reps)
            .map(|r| {
                let seed = 300_000 + (k * 1000 + r) as u64;
                let c = comparison(&s, seed, cfg);
                let mut rng = Rng::new(seed);
                let (t, change) = loop {
                    let t = tree(&mut rng);
                    if let Some(change) = (0..20).find_map(|_| t.shift(&mut rng, kind)) {
                        break (t, change);
                    }
                };
                (c, t, change)
            })
            .collect();
        let mut moved: Vec<f64> = cases.iter().map(|x| x.2.share).collect();
        moved.sort_by(f64::total_cmp);
        let flagged = cases
            .iter()
            .filter(|x| x.0.verdict == Verdict::Regression)
            .count();
        for (v, &ms) in CPU_MS.iter().enumerate() {
            let samples = samples_per_arm(requests, ms);
            let (mut any, mut gained, mut reported) = (0, 0, 0);
            for (r, (c, t, change)) in cases.iter().enumerate() {
                let mut rng = Rng::new(400_000 + (k * 10_000 + v * 1000 + r) as u64);
                let (b, n) = snapshots(t, &change.tree, samples, c, &mut rng);
                let deltas = attribute(&b, &n, ratio(c), Z);
                let named = culprits(&deltas, CULPRITS);
                any += usize::from(!named.is_empty());
                gained += usize::from(named.iter().any(|d| d.function == change.gained));
                reported += usize::from(!named.is_empty() && c.verdict == Verdict::Regression);
            }
            println!(
                "| {name} | {samples:.0} | {:.1}% | {} | {} | {} | {} |",
                100.0 * moved[moved.len() / 2],
                pct(flagged, reps),
                pct(any, reps),
                pct(gained, reps),
                pct(reported, reps)
            );
        }
    }
}

/// A regression of one function and a cost shift elsewhere in the same build: the regressed
/// function should be named first, the shift's receiver not at all.
fn regression_with_shift(cfg: &CompareConfig) {
    let (requests, reps, effect) = (10_000, 200, 0.05);
    println!(
        "\n## A regression (+{:.0}% in one function) and a cost shift elsewhere in the same build",
        effect * 100.0
    );
    println!(
        "{reps} cases per kind and volume, {requests} requests per arm; rates over the detected cases."
    );
    println!(
        "| shift | samples per arm | detected | regressed function named first | \
         the shift's receiver is a culprit |"
    );
    println!("|---|---:|---:|---:|---:|");
    let s = Scenario::typical(requests, 1.0 + effect);
    for (k, (name, kind)) in SHIFTS.into_iter().enumerate() {
        let cases: Vec<_> = (0..reps)
            .map(|r| {
                let seed = 700_000 + (k * 1000 + r) as u64;
                let c = comparison(&s, seed, cfg);
                let mut rng = Rng::new(seed);
                loop {
                    let t = tree(&mut rng);
                    let Some(shift) = (0..20).find_map(|_| t.shift(&mut rng, kind)) else {
                        continue;
                    };
                    let f = t.pick_function(&mut rng);
                    let regressed = t.name(f);
                    if regressed == shift.gained || Some(regressed) == shift.lost.as_deref() {
                        continue;
                    }
                    let both = shift.tree.regress(f, effect);
                    break (c, t, both, shift.gained);
                }
            })
            .filter(|x| x.0.verdict == Verdict::Regression)
            .collect();
        for (v, &ms) in CPU_MS.iter().enumerate() {
            let samples = samples_per_arm(requests, ms);
            let (mut first, mut receiver) = (0, 0);
            for (r, (c, t, both, gained)) in cases.iter().enumerate() {
                let mut rng = Rng::new(800_000 + (k * 10_000 + v * 1000 + r) as u64);
                let (b, n) = snapshots(t, &both.tree, samples, c, &mut rng);
                let deltas = attribute(&b, &n, ratio(c), Z);
                let named = culprits(&deltas, CULPRITS);
                first += usize::from(named.first().is_some_and(|d| d.function == both.gained));
                receiver += usize::from(named.iter().any(|d| &d.function == gained));
            }
            println!(
                "| {name} | {samples:.0} | {} | {} | {} |",
                cases.len(),
                pct(first, cases.len()),
                pct(receiver, cases.len())
            );
        }
    }
}

/// Which function an attribution case makes more expensive.
#[derive(Clone, Copy)]
enum Target {
    /// Drawn in proportion to self cost.
    WhereTheTimeIs,
    /// The one with the most self cost.
    Largest,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::WhereTheTimeIs => "where the time is",
            Target::Largest => "the largest",
        }
    }

    fn pick(self, t: &CallTree, rng: &mut Rng) -> usize {
        match self {
            Target::WhereTheTimeIs => t.pick_function(rng),
            Target::Largest => t.largest_function(),
        }
    }
}

fn attribution(cfg: &CompareConfig) {
    println!("\n## Attribution (one function made more expensive; is it named first?)");
    println!(
        "Per case: a generated profile of 200-2000 functions; the function made more expensive \
         (drawn where the time is, in proportion to self cost, or the largest one) has its self cost \
         raised by the endpoint-level effect; requests of the typical scenario with that effect; \
         Poisson sample counts at 99 Hz x requests x CPU per request. Rates are over the cases the \
         compare detected (verdict regression); culprits as in the pass."
    );
    println!(
        "| function | requests per arm | samples per arm | effect | cases | detected | named first by culprits() | \
         in culprits' top 3 | another function named first | no culprit | first by attribute() |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let effects = [0.02, 0.05, 0.10];
    // (which function, requests per arm, cases, CPU ms per request)
    let runs: [(Target, usize, usize, &[f64]); 3] = [
        (Target::WhereTheTimeIs, 10_000, 200, &CPU_MS[..]),
        (Target::WhereTheTimeIs, 100_000, 50, &CPU_MS[1..2]),
        (Target::Largest, 10_000, 200, &CPU_MS[..2]),
    ];
    for (j, (target, requests, reps, volumes)) in runs.into_iter().enumerate() {
        let which = target.name();
        for (k, &effect) in effects.iter().enumerate() {
            let s = Scenario::typical(requests, 1.0 + effect);
            let cases: Vec<_> = (0..reps)
                .map(|r| {
                    let seed = 500_000 + (requests / 1000 * 10_000 + k * 1000 + r) as u64;
                    let c = comparison(&s, seed, cfg);
                    let mut rng = Rng::new(seed);
                    let t = tree(&mut rng);
                    let f = target.pick(&t, &mut rng);
                    let change = t.regress(f, effect);
                    (c, t, change)
                })
                .collect();
            let detected: Vec<_> = cases
                .iter()
                .filter(|x| x.0.verdict == Verdict::Regression)
                .collect();
            for (v, &ms) in volumes.iter().enumerate() {
                let samples = samples_per_arm(requests, ms);
                let (mut first, mut top3, mut wrong, mut none, mut top_delta) = (0, 0, 0, 0, 0);
                for (r, (c, t, change)) in detected.iter().enumerate() {
                    let seed = 600_000 + (j * 100_000 + k * 10_000 + v * 1000 + r) as u64;
                    let (b, n) = snapshots(t, &change.tree, samples, c, &mut Rng::new(seed));
                    let deltas = attribute(&b, &n, ratio(c), Z);
                    let named = culprits(&deltas, CULPRITS);
                    let at = named.iter().position(|d| d.function == change.gained);
                    first += usize::from(at == Some(0));
                    top3 += usize::from(at.is_some_and(|i| i < 3));
                    top_delta +=
                        usize::from(deltas.first().is_some_and(|d| d.function == change.gained));
                    none += usize::from(named.is_empty());
                    wrong += usize::from(!named.is_empty() && at != Some(0));
                }
                let d = detected.len();
                println!(
                    "| {which} | {requests} | {samples:.0} | +{:.0}% | {reps} | {d} | {} | {} | {} | {} | {} |",
                    effect * 100.0,
                    pct(first, d),
                    pct(top3, d),
                    pct(wrong, d),
                    pct(none, d),
                    pct(top_delta, d)
                );
            }
        }
    }
}

fn median(samples: &[Sample]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|s| s.value).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
