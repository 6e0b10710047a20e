//! Change-point quality: the CI-history series of `SeriesSpec` (precision and recall), series
//! with growth, AR(1) noise, a daily cycle and spikes, with and without steps (false changes per
//! 1000 points, detection rate, location error, delay, drift), and real series with documented
//! changes (`analyzer/tests/data/`).

use profwatch_analyzer::changepoint::ChangepointConfig;
use profwatch_analyzer::csv_series::read_series;
use profwatch_analyzer::rng::Rng;
use profwatch_analyzer::sim::series::{SeriesModel, TimedSeries, Trend};
use profwatch_analyzer::sim::SeriesSpec;

use crate::detector::{run, run_periodic, Outcome};

/// A change counts as found when reported within this many points of it.
const TOLERANCE: usize = 5;

/// True changes matched (one report per true change) and the location error of each match.
fn matches(truth: &[usize], found: &[usize]) -> Vec<usize> {
    let mut used = vec![false; found.len()];
    let mut errors = Vec::new();
    for &c in truth {
        let best = (0..found.len())
            .filter(|&k| !used[k] && found[k].abs_diff(c) <= TOLERANCE)
            .min_by_key(|&k| found[k].abs_diff(c));
        if let Some(k) = best {
            used[k] = true;
            errors.push(found[k].abs_diff(c));
        }
    }
    errors
}

/// F1 of the reported changes against the documented ones, as change-point benchmarks score it
/// (van den Burg and Williams 2020, "An evaluation of change point detection algorithms"): the
/// first point counts as a change in both sets, a report within `TOLERANCE` points of a
/// documented change is a true positive (one per documented change). The detector that reports
/// nothing scores `2 / (2 + documented)` this way, the bar a useful detector must clear.
fn f1(truth: &[usize], found: &[usize]) -> f64 {
    let truth: Vec<usize> = std::iter::once(0).chain(truth.iter().copied()).collect();
    let found: Vec<usize> = std::iter::once(0)
        .chain(found.iter().copied().filter(|&i| i != 0))
        .collect();
    let tp = matches(&truth, &found).len() as f64;
    let (precision, recall) = (tp / found.len() as f64, tp / truth.len() as f64);
    if tp == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

fn ratio(a: usize, b: usize) -> String {
    if b == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", 100.0 * a as f64 / b as f64)
    }
}

fn quantile(v: &mut [usize], q: f64) -> String {
    if v.is_empty() {
        return "-".to_owned();
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * q).round() as usize].to_string()
}

/// The CI-history series the detector was first tuned on (no timestamps).
pub fn ci_histories(cfg: &ChangepointConfig) {
    println!(
        "\n## Change points (a change counts as found within 5 points; one match per true change)"
    );
    println!("| series | count | points | true changes | reported | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
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
            let found = run(&series.values, None, cfg).changes;
            truth += series.changes.len();
            reported += found.len();
            tp += matches(&series.changes, &found).len();
        }
        println!(
            "| {name} | {count} | {} | {truth} | {reported} | {} | {} |",
            spec.len,
            ratio(tp, reported),
            ratio(tp, truth)
        );
    }
}

/// A kind of generated series, and the average slope per point (%) of its trend.
struct Kind {
    name: &'static str,
    model: SeriesModel,
    slope_pct: f64,
}

fn kind(name: &'static str, model: SeriesModel) -> Kind {
    let n = model.len.saturating_sub(1).max(1) as f64;
    let total = model.trend.factor(model.len.saturating_sub(1));
    Kind {
        name,
        slope_pct: 100.0 * (total.powf(1.0 / n) - 1.0),
        model,
    }
}

/// The kinds of series, without steps.
fn kinds() -> Vec<Kind> {
    let q = SeriesModel::quiet;
    vec![
        kind(
            "linear growth +0.2%/point, 1% noise",
            SeriesModel {
                trend: Trend::Linear(0.002),
                ..q(500)
            },
        ),
        kind(
            "exponential growth +0.2%/point, 1% noise",
            SeriesModel {
                trend: Trend::Exponential(0.002),
                ..q(500)
            },
        ),
        kind(
            "AR(1) phi 0.3, 2% sd",
            SeriesModel {
                ar: 0.3,
                noise_sd: 0.02,
                ..q(1000)
            },
        ),
        kind(
            "AR(1) phi 0.6, 2% sd",
            SeriesModel {
                ar: 0.6,
                noise_sd: 0.02,
                ..q(1000)
            },
        ),
        kind(
            "AR(1) phi 0.8, 2% sd",
            SeriesModel {
                ar: 0.8,
                noise_sd: 0.02,
                ..q(1000)
            },
        ),
        kind(
            "AR(1) phi 0.8, innovations 2% sd (3.3% sd)",
            SeriesModel {
                ar: 0.8,
                noise_sd: 0.02 / 0.6,
                ..q(1000)
            },
        ),
        kind(
            "daily cycle +-10%, 10-min points, 7 days, AR 0.3 1% noise",
            SeriesModel {
                daily_amplitude: 0.1,
                points_per_day: 144,
                ar: 0.3,
                ..q(1008)
            },
        ),
        kind(
            "daily cycle +-10%, hourly points, 14 days, 1% noise",
            SeriesModel {
                daily_amplitude: 0.1,
                ..q(336)
            },
        ),
        kind(
            "daily cycle +-10%, hourly points, 2 days (too short to remove)",
            SeriesModel {
                daily_amplitude: 0.1,
                ..q(48)
            },
        ),
        kind(
            "spikes: 3% of points x1.5-3, 1% noise",
            SeriesModel {
                spike_rate: 0.03,
                ..q(500)
            },
        ),
        kind(
            "all: growth +0.1%/point, AR 0.6 2% sd, daily +-10%, 2% spikes, heavy tails",
            SeriesModel {
                trend: Trend::Linear(0.001),
                ar: 0.6,
                noise_sd: 0.02,
                heavy_tails: true,
                daily_amplitude: 0.1,
                spike_rate: 0.02,
                ..q(504)
            },
        ),
    ]
}

fn series_of(model: &SeriesModel, seed: u64) -> TimedSeries {
    model.generate(&mut Rng::new(seed))
}

/// Series without steps: false changes and drift reports.
pub fn without_steps(cfg: &ChangepointConfig) {
    println!("\n## Change points in series without steps (false changes; drift)");
    println!(
        "| series | count | points | false changes per 1000 points | series with a false change | drift reported | drift CI covers the true slope | median reported slope (true) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (k, kind) in kinds().into_iter().enumerate() {
        let count = 200;
        let (mut false_changes, mut any, mut drifts, mut covered) = (0, 0, 0, 0);
        let mut slopes = Vec::new();
        for r in 0..count {
            let s = series_of(&kind.model, 300_000 + 1000 * k as u64 + r);
            let out = run(&s.values, Some(&s.times), cfg);
            false_changes += out.changes.len();
            any += usize::from(!out.changes.is_empty());
            if let Some(d) = out.drift {
                drifts += 1;
                covered += usize::from(d.low_pct <= kind.slope_pct && kind.slope_pct <= d.high_pct);
                slopes.push(d.slope_pct);
            }
        }
        let points = count as usize * kind.model.len;
        slopes.sort_by(f64::total_cmp);
        let median = slopes
            .get(slopes.len() / 2)
            .map_or("-".to_owned(), |m| format!("{m:+.3}%"));
        println!(
            "| {} | {count} | {} | {:.2} | {} | {} | {} | {median} ({:+.3}%) |",
            kind.name,
            kind.model.len,
            1000.0 * false_changes as f64 / points as f64,
            ratio(any, count as usize),
            ratio(drifts, count as usize),
            ratio(covered, drifts),
            kind.slope_pct
        );
    }
}

/// Points after a change until it is reported, re-running the detector as points arrive
/// (up to 40); `None` when it is not reported within 40 points.
fn delay(s: &TimedSeries, cfg: &ChangepointConfig) -> Option<usize> {
    let c = *s.changes.first()?;
    (cfg.min_segment..=40)
        .filter(|k| c + k <= s.values.len())
        .find(|&k| {
            let out = run(&s.values[..c + k], Some(&s.times[..c + k]), cfg);
            out.changes.iter().any(|&f| f.abs_diff(c) <= TOLERANCE)
        })
}

/// Series with steps of 5-15%: detection rate, precision, location error, delay.
pub fn with_steps(cfg: &ChangepointConfig) {
    println!(
        "\n## Steps inside each kind of series (5-15%, 1-3 per series, 40+ points apart; found within 5 points)"
    );
    println!(
        "| series | count | true changes | reported | precision | detection rate | false changes per 1000 points | location error median / 90th | delay median / 90th (first step, 50 series) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = kinds();
    all.push(kind(
        "5% step in AR(1) phi 0.6, 1% sd",
        SeriesModel {
            ar: 0.6,
            step_range: (0.05, 0.05),
            ..SeriesModel::quiet(300)
        },
    ));
    for (k, kind) in all.into_iter().enumerate() {
        let mut model = kind.model.clone();
        if model.steps == 0 {
            model.steps = 1 + (model.len / 400).min(2);
            model.min_gap = 40.min(model.len / 3);
            model.step_range = (0.05, 0.15);
        } else {
            model.steps = 1;
        }
        if kind.name.contains("5% step") {
            model.steps = 1;
        }
        let count = 200;
        let (mut truth, mut reported, mut tp, mut points) = (0, 0, 0, 0);
        let (mut errors, mut delays, mut missed) = (Vec::new(), Vec::new(), 0);
        for r in 0..count {
            let s = series_of(&model, 400_000 + 1000 * k as u64 + r);
            let found = run(&s.values, Some(&s.times), cfg).changes;
            let m = matches(&s.changes, &found);
            truth += s.changes.len();
            reported += found.len();
            tp += m.len();
            points += s.values.len();
            errors.extend(m);
            if r < 50 {
                match delay(&s, cfg) {
                    Some(d) => delays.push(d),
                    None => missed += 1,
                }
            }
        }
        println!(
            "| {} | {count} | {truth} | {reported} | {} | {} | {:.2} | {} / {} | {} / {}{} |",
            kind.name,
            ratio(tp, reported),
            ratio(tp, truth),
            1000.0 * (reported - tp) as f64 / points as f64,
            quantile(&mut errors, 0.5),
            quantile(&mut errors, 0.9),
            quantile(&mut delays, 0.5),
            quantile(&mut delays, 0.9),
            if missed > 0 {
                format!(" ({missed} not within 40)")
            } else {
                String::new()
            }
        );
    }
}

/// A real series from `analyzer/tests/data/` and its documented changes.
struct Real {
    name: &'static str,
    file: &'static str,
    column: &'static str,
    time: &'static str,
    period: Option<usize>,
    labels: &'static [usize],
}

const DEVELOPMENT: [Real; 3] = [
    Real {
        name: "Nile flow (Cobb 1978: near 1898)",
        file: "nile.csv",
        column: "volume",
        time: "year",
        period: None,
        labels: &[28],
    },
    Real {
        name: "beaver2 body temperature (activity from row 38)",
        file: "beaver2.csv",
        column: "temp",
        time: "time",
        period: None,
        labels: &[38],
    },
    Real {
        name: "UK front-seat casualties (seat belt law 1983-02)",
        file: "seatbelts.csv",
        column: "front",
        time: "month",
        period: Some(12),
        labels: &[169],
    },
];

const HOLDOUT: [Real; 2] = [
    Real {
        name: "coal-mine disasters per year (around 1890)",
        file: "coal.csv",
        column: "disasters",
        time: "year",
        period: None,
        labels: &[40],
    },
    Real {
        name: "UK drivers killed or seriously injured (1973-11, 1983-02)",
        file: "seatbelts.csv",
        column: "drivers",
        time: "month",
        period: Some(12),
        labels: &[58, 169],
    },
];

/// Chosen after `HOLDOUT` was spent, and run once (`eval holdout2`) on the finished detector:
/// a disease series with a documented intervention, a third series of the seat belt law, and a
/// control series the law did not cover (documented: no change).
const HOLDOUT2: [Real; 3] = [
    Real {
        name: "US measles cases per year 1928–2002 (vaccine 1963; resurgence 1989)",
        file: "measles_us.csv",
        column: "cases",
        time: "year",
        period: None,
        labels: &[35, 61],
    },
    Real {
        name: "UK van drivers killed (seat belt law 1983-02)",
        file: "seatbelts.csv",
        column: "vans",
        time: "month",
        period: Some(12),
        labels: &[169],
    },
    Real {
        name: "UK rear-seat casualties (not covered by the law: no change)",
        file: "seatbelts.csv",
        column: "rear",
        time: "month",
        period: Some(12),
        labels: &[],
    },
];

fn real(title: &str, set: &[Real], cfg: &ChangepointConfig) {
    println!("\n## {title} (found: reported within 5 points of a documented change)");
    println!("| series | points | documented | reported (time: change) | found | other reports | drift | F1 | F1 of reporting nothing |");
    println!("|---|---:|---|---|---:|---:|---|---:|---:|");
    let (mut sum, mut sum_zero) = (0.0, 0.0);
    for r in set {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(r.file);
        let s = match read_series(&path, r.column, Some(r.time), None) {
            Ok(s) => s,
            Err(e) => panic!("{}: {e}", path.display()),
        };
        let times = s.times.unwrap_or_default();
        let out: Outcome = run_periodic(&s.values, r.period, cfg);
        let at = |i: usize| times.get(i).cloned().unwrap_or_default();
        let documented: Vec<String> = r.labels.iter().map(|&i| at(i)).collect();
        let reported: Vec<String> = out
            .details
            .iter()
            .map(|(i, pct)| format!("{}: {pct:+.0}%", at(*i)))
            .collect();
        let found = matches(r.labels, &out.changes).len();
        let (score, zero) = (f1(r.labels, &out.changes), f1(r.labels, &[]));
        sum += score;
        sum_zero += zero;
        println!(
            "| {} | {} | {} | {} | {found} of {} | {} | {} | {score:.3} | {zero:.3} |",
            r.name,
            s.values.len(),
            if documented.is_empty() {
                "none".to_owned()
            } else {
                documented.join(", ")
            },
            if reported.is_empty() {
                "none".to_owned()
            } else {
                reported.join(", ")
            },
            r.labels.len(),
            out.changes.len() - found,
            out.drift
                .map_or("none".to_owned(), |d| format!("{:+.2}%/point", d.slope_pct))
        );
    }
    println!(
        "\nMean F1 over {} series: {:.3} (reporting nothing: {:.3})",
        set.len(),
        sum / set.len() as f64,
        sum_zero / set.len() as f64
    );
}

/// The development set of real series.
pub fn real_development(cfg: &ChangepointConfig) {
    real("Real series, development set", &DEVELOPMENT, cfg);
}

/// The held-out real series: run only when named (`eval holdout`).
pub fn real_holdout(cfg: &ChangepointConfig) {
    real("Real series, held-out set", &HOLDOUT, cfg);
}

/// The second held-out set: run only when named (`eval holdout2`).
pub fn real_holdout2(cfg: &ChangepointConfig) {
    real("Real series, held-out set 2", &HOLDOUT2, cfg);
}
