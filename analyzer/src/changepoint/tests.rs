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
