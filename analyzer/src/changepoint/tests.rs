//! The detector's properties, each pinned on seeded series: steps found where they are, spikes,
//! transients, trends, autocorrelated noise and daily cycles not taken for steps.

use super::*;
use crate::rng::Rng;

fn noisy(rng: &mut Rng, n: usize, level: f64) -> Vec<f64> {
    (0..n)
        .map(|_| level * (1.0 + 0.01 * rng.normal()))
        .collect()
}

#[test]
fn clean_step_found_at_the_right_index() {
    let mut rng = Rng::new(3);
    let mut v = noisy(&mut rng, 30, 100.0);
    v.extend(noisy(&mut rng, 30, 110.0));
    let cps = detect(&v, &ChangepointConfig::default())
        .expect("valid input")
        .changes;
    assert_eq!(cps.len(), 1, "{cps:?}");
    assert_eq!(cps[0].index, 30);
    assert!((cps[0].change_pct - 10.0).abs() < 1.5, "{cps:?}");
    assert!(cps[0].p_value <= 0.01);
}

#[test]
fn single_spike_and_short_transient_not_reported() {
    let mut rng = Rng::new(4);
    let mut v = noisy(&mut rng, 60, 100.0);
    v[30] = 500.0;
    assert!(detect(&v, &ChangepointConfig::default())
        .expect("valid input")
        .changes
        .is_empty());
    for x in &mut v[40..43] {
        *x = 130.0;
    }
    assert!(detect(&v, &ChangepointConfig::default())
        .expect("valid input")
        .changes
        .is_empty());
}

#[test]
fn change_at_the_end_waits_for_persistence() {
    let mut rng = Rng::new(5);
    let mut v = noisy(&mut rng, 40, 100.0);
    v.extend(noisy(&mut rng, 3, 120.0));
    assert!(detect(&v, &ChangepointConfig::default())
        .expect("valid input")
        .changes
        .is_empty());
    v.extend(noisy(&mut rng, 7, 120.0));
    let cps = detect(&v, &ChangepointConfig::default())
        .expect("valid input")
        .changes;
    assert_eq!(cps.iter().map(|c| c.index).collect::<Vec<_>>(), vec![40]);
}

#[test]
fn small_step_below_min_change_not_reported() {
    let mut rng = Rng::new(6);
    let mut v: Vec<f64> = (0..50).map(|_| 100.0 + 0.05 * rng.normal()).collect();
    v.extend((0..50).map(|_| 101.0 + 0.05 * rng.normal()));
    assert!(detect(&v, &ChangepointConfig::default())
        .expect("valid input")
        .changes
        .is_empty());
}

#[test]
fn grouped_change_lands_on_first_row_of_a_build() {
    let mut rng = Rng::new(7);
    let mut values = Vec::new();
    let mut builds = Vec::new();
    for b in 0..16 {
        let level = if b < 8 { 100.0 } else { 115.0 };
        for _ in 0..3 {
            values.push(level * (1.0 + 0.01 * rng.normal()));
            builds.push(format!("b{b}"));
        }
    }
    let cps = detect_grouped(&values, &builds, &ChangepointConfig::default())
        .expect("valid input")
        .changes;
    assert_eq!(cps.iter().map(|c| c.index).collect::<Vec<_>>(), vec![24]);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let cfg = ChangepointConfig::default();
    assert!(matches!(
        detect(&[], &cfg),
        Err(AnalyzerError::TooFewRows { .. })
    ));
    assert!(matches!(
        detect(&[1.0], &cfg),
        Err(AnalyzerError::TooFewRows { .. })
    ));
    let mut v = vec![1.0; 20];
    v[3] = f64::NAN;
    assert!(matches!(
        detect(&v, &cfg),
        Err(AnalyzerError::NotFinite { line: 4, .. })
    ));
    assert!(detect_grouped(&[1.0; 20], &[1; 3], &cfg).is_err());
    let constant = vec![5.0; 30];
    assert!(detect(&constant, &cfg)
        .expect("valid input")
        .changes
        .is_empty());
}

use crate::sim::series::{SeriesModel, Trend};

fn quiet(len: usize) -> SeriesModel {
    SeriesModel::quiet(len)
}

fn run(model: &SeriesModel, seed: u64) -> (Detection, Vec<usize>) {
    let s = model.generate(&mut Rng::new(seed));
    let found = detect_timed(&s.values, &s.times, &ChangepointConfig::default()).expect("valid");
    (found, s.changes)
}

/// Issue 17: steady growth of +0.2% per point in 1% noise reported a change every 10-20
/// points. It is one drift, with the true average slope in its interval.
#[test]
fn steady_linear_growth_is_one_drift_and_no_change() {
    let model = SeriesModel {
        trend: Trend::Linear(0.002),
        ..quiet(500)
    };
    let true_slope = 100.0 * (1.998f64.powf(1.0 / 499.0) - 1.0);
    for seed in 0..2 {
        let (found, _) = run(&model, seed);
        assert!(found.changes.is_empty(), "{seed}: {:?}", found.changes);
        let d = found.drift.expect("a drift");
        assert!(
            d.slope_low_pct < true_slope && true_slope < d.slope_high_pct,
            "{seed}: {d:?} vs {true_slope}"
        );
        assert!((d.total_pct - 99.8).abs() < 5.0, "{d:?}");
        assert_eq!((d.start, d.end), (0, 499));
    }
}

/// Issue 17: exponential growth likewise.
#[test]
fn exponential_growth_is_one_drift_and_no_change() {
    let model = SeriesModel {
        trend: Trend::Exponential(0.002),
        ..quiet(500)
    };
    for seed in 0..2 {
        let (found, _) = run(&model, 10 + seed);
        assert!(found.changes.is_empty(), "{seed}: {:?}", found.changes);
        let d = found.drift.expect("a drift");
        assert!(
            d.slope_low_pct < 0.2 && 0.2 < d.slope_high_pct,
            "{seed}: {d:?}"
        );
    }
}

/// Issue 17: AR(1) noise of coefficient 0.8 and 2% sd gave 2-8 false changes per 500 points.
/// Over 4000 points of each coefficient up to 0.8, at most 1 per 1000 points.
#[test]
fn autocorrelated_noise_gives_at_most_one_false_change_per_1000_points() {
    for (k, phi) in [0.3, 0.6, 0.8].into_iter().enumerate() {
        let model = SeriesModel {
            ar: phi,
            noise_sd: 0.02,
            ..quiet(1000)
        };
        let mut false_changes = 0;
        for seed in 0..4 {
            let (found, _) = run(&model, 100 * k as u64 + seed);
            false_changes += found.changes.len();
            assert!(
                (found.autocorrelation - phi).abs() < 0.12,
                "{phi}: estimated {}",
                found.autocorrelation
            );
            assert!(found.drift.is_none(), "{phi}: {:?}", found.drift);
        }
        assert!(false_changes <= 4, "{phi}: {false_changes} in 4000 points");
    }
}

/// Issue 17: a 5% step in AR(1) noise (0.6, 1% sd) is found within 5 points.
#[test]
fn five_percent_step_in_autocorrelated_noise_is_found_within_five_points() {
    let model = SeriesModel {
        ar: 0.6,
        steps: 1,
        step_range: (0.05, 0.05),
        ..quiet(300)
    };
    for seed in 0..6 {
        let (found, truth) = run(&model, 200 + seed);
        let at: Vec<usize> = found.changes.iter().map(|c| c.index).collect();
        assert_eq!(at.len(), 1, "{seed}: {at:?} vs {truth:?}");
        assert!(at[0].abs_diff(truth[0]) <= 5, "{seed}: {at:?} vs {truth:?}");
        let size = found.changes[0].change_pct.abs();
        assert!((size - 5.0).abs() < 1.5, "{seed}: {size}");
    }
}

/// A daily cycle of ±10% over 14 days is taken out (no change, no drift), and a step inside
/// it is found; over 2 days the cycle cannot be told from steps and is left in.
#[test]
fn daily_cycle_is_taken_out_from_three_days() {
    let cycle = SeriesModel {
        daily_amplitude: 0.1,
        ..quiet(336)
    };
    for seed in 0..3 {
        let (found, _) = run(&cycle, 300 + seed);
        assert_eq!(found.seasonality, Some(Seasonality::Daily));
        assert!(found.changes.is_empty(), "{seed}: {:?}", found.changes);
        assert!(found.drift.is_none(), "{seed}: {:?}", found.drift);
    }
    let with_step = SeriesModel {
        steps: 1,
        ..cycle.clone()
    };
    for seed in 0..3 {
        let (found, truth) = run(&with_step, 310 + seed);
        let at: Vec<usize> = found.changes.iter().map(|c| c.index).collect();
        assert_eq!(at.len(), 1, "{seed}: {at:?} vs {truth:?}");
        assert!(at[0].abs_diff(truth[0]) <= 5, "{seed}: {at:?} vs {truth:?}");
    }
    let (short, _) = run(&SeriesModel { len: 48, ..cycle }, 320);
    assert_eq!(short.seasonality, None);
}

/// A cycle given in points (monthly data, 12) is taken out like a daily one.
#[test]
fn periodic_cycle_is_taken_out() {
    let mut rng = Rng::new(21);
    let values: Vec<f64> = (0..120)
        .map(|i| {
            let season = 1.0 + 0.15 * (std::f64::consts::TAU * (i % 12) as f64 / 12.0).sin();
            100.0 * season * (1.0 + 0.01 * rng.normal())
        })
        .collect();
    let cfg = ChangepointConfig {
        period: Some(12),
        ..ChangepointConfig::default()
    };
    let found = detect(&values, &cfg).expect("valid");
    assert_eq!(found.seasonality, Some(Seasonality::Period { points: 12 }));
    assert!(found.changes.is_empty(), "{:?}", found.changes);
    let ignored = detect(&values, &ChangepointConfig::default()).expect("valid");
    assert_eq!(ignored.seasonality, None);
}

/// Isolated spikes (3% of points, 1.5-3x) are never change points.
#[test]
fn isolated_spikes_are_not_changes() {
    let model = SeriesModel {
        spike_rate: 0.03,
        ..quiet(500)
    };
    for seed in 0..4 {
        let (found, _) = run(&model, 400 + seed);
        assert!(found.changes.is_empty(), "{seed}: {:?}", found.changes);
    }
}

/// Steps inside growth: each found within 5 points, no others, and the drift kept.
#[test]
fn steps_inside_growth_are_found_and_the_growth_is_a_drift() {
    let model = SeriesModel {
        trend: Trend::Linear(0.002),
        steps: 2,
        step_range: (0.08, 0.15),
        min_gap: 60,
        ..quiet(500)
    };
    for seed in 0..2 {
        let (found, truth) = run(&model, 500 + seed);
        let at: Vec<usize> = found.changes.iter().map(|c| c.index).collect();
        assert_eq!(at.len(), truth.len(), "{seed}: {at:?} vs {truth:?}");
        assert!(
            at.iter().zip(&truth).all(|(a, t)| a.abs_diff(*t) <= 5),
            "{seed}: {at:?} vs {truth:?}"
        );
        assert!(found.drift.is_some(), "{seed}");
    }
}

/// Invariants on varied random series: indices increase, are `min_segment` apart and from
/// the ends, levels are finite and the sizes match them; scaling the series by a constant
/// moves no index.
#[test]
fn output_invariants_hold_on_varied_series() {
    let cfg = ChangepointConfig::default();
    let mut rng = Rng::new(77);
    for case in 0..30u64 {
        let model = SeriesModel {
            len: 20 + rng.below(200),
            ar: 0.9 * rng.uniform(),
            noise_sd: 0.005 + 0.05 * rng.uniform(),
            heavy_tails: rng.uniform() < 0.5,
            trend: Trend::Linear(0.004 * (rng.uniform() - 0.5)),
            spike_rate: 0.05 * rng.uniform(),
            steps: rng.below(4),
            min_gap: 8,
            ..quiet(100)
        };
        let s = model.generate(&mut Rng::new(case));
        let found = detect(&s.values, &cfg).expect("valid");
        let at: Vec<usize> = found.changes.iter().map(|c| c.index).collect();
        let n = s.values.len();
        let mut previous = 0;
        for (k, c) in found.changes.iter().enumerate() {
            assert!(c.index >= previous + cfg.min_segment, "{case}: {at:?}");
            assert!(c.index + cfg.min_segment <= n, "{case}: {at:?} of {n}");
            assert!(c.before.is_finite() && c.after.is_finite(), "{case}: {c:?}");
            assert!((relative(c.before, c.after) * 100.0 - c.change_pct).abs() < 1e-9);
            assert!(
                c.change_pct.abs() >= 100.0 * cfg.min_change - 1e-9,
                "{case} {k}"
            );
            previous = c.index;
        }
        assert!((0.0..=1.0).contains(&found.autocorrelation), "{case}");
        let scaled: Vec<f64> = s.values.iter().map(|v| v * 37.5).collect();
        let again = detect(&scaled, &cfg).expect("valid");
        let moved: Vec<usize> = again.changes.iter().map(|c| c.index).collect();
        assert_eq!(moved, at, "{case}: scaling moved the changes");
    }
}

/// A grouped series' drift spans its first to its last row.
#[test]
fn grouped_drift_spans_all_rows() {
    let mut rng = Rng::new(8);
    let mut values = Vec::new();
    let mut builds = Vec::new();
    for b in 0..100 {
        for _ in 0..2 {
            values.push(100.0 * (1.0 + 0.004 * b as f64) * (1.0 + 0.005 * rng.normal()));
            builds.push(b);
        }
    }
    let found = detect_grouped(&values, &builds, &ChangepointConfig::default()).expect("valid");
    assert!(found.changes.is_empty(), "{:?}", found.changes);
    let d = found.drift.expect("a drift");
    assert_eq!((d.start, d.end), (0, 199));
}
