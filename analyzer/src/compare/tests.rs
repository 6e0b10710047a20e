use super::*;
use crate::rng::Rng;
use crate::sim::Scenario;

fn endpoint(scenario: &Scenario, seed: u64) -> EndpointSamples {
    scenario.endpoint(&mut Rng::new(seed), "GET /x")
}

fn sample(value: f64, host: u32, dc: u32) -> Sample {
    Sample {
        value,
        weight: 1.0,
        host,
        dc,
        ts: 0,
    }
}

#[test]
fn injected_five_percent_regression_with_10k_is_flagged() {
    let c = compare(
        &endpoint(&Scenario::typical(10_000, 1.05), 1),
        &CompareConfig::default(),
    )
    .expect("valid config");
    assert_eq!(c.verdict, Verdict::Regression, "{c:?}");
    let ci = c.ci.expect("interval");
    assert!(ci.low < 1.05 && 1.05 < ci.high, "{ci:?}");
    assert!((c.effect.unwrap_or(0.0) - 1.05).abs() < 0.015);
    let improvement = compare(
        &endpoint(&Scenario::typical(10_000, 1.0 / 1.05), 2),
        &CompareConfig::default(),
    )
    .expect("valid config");
    assert_eq!(improvement.verdict, Verdict::Improvement, "{improvement:?}");
}

#[test]
fn strong_host_effect_a_a_is_not_a_regression() {
    let mut s = Scenario::typical(20_000, 1.0);
    s.host_sigma = 0.10;
    for seed in 0..20 {
        let c = compare(&endpoint(&s, seed), &CompareConfig::default()).expect("valid config");
        assert_eq!(c.verdict, Verdict::Same, "seed {seed}: {c:?}");
    }
}

#[test]
fn dc_mix_shift_is_not_flagged() {
    let mut s = Scenario::typical(10_000, 1.0).with_mix_shift();
    s.dcs[2].cost_factor = 1.5;
    let c = compare(&endpoint(&s, 3), &CompareConfig::default()).expect("valid config");
    assert_eq!(c.verdict, Verdict::Same, "{c:?}");
    // The unstratified pooled medians do move: that is what stratification protects against.
    let pooled = c.median_candidate.unwrap_or(0.0) / c.median_baseline.unwrap_or(1.0);
    assert!(pooled > 1.03, "{pooled}");
}

#[test]
fn a_a_false_positive_rate_over_seeds() {
    let s = Scenario::typical(2_000, 1.0);
    let cfg = CompareConfig {
        bootstrap_iterations: 0,
        ..CompareConfig::default()
    };
    let flagged = (0..300)
        .filter(|&seed| {
            compare(&endpoint(&s, 1000 + seed), &cfg)
                .map(|c| c.verdict)
                .ok()
                != Some(Verdict::Same)
        })
        .count();
    // The goal is a false-positive rate of at most 1%.
    assert!(
        flagged <= 3,
        "{flagged} of 300 A/A comparisons flagged (goal: at most 1%)"
    );
}

#[test]
fn empty_nan_and_one_sided_input_never_panic() {
    let cfg = CompareConfig::default();
    let empty = EndpointSamples {
        endpoint: "e".to_owned(),
        metric: Metric::CpuNs,
        ..EndpointSamples::default()
    };
    let c = compare(&empty, &cfg).expect("valid config");
    assert_eq!(c.verdict, Verdict::NotEnoughData);
    let junk = EndpointSamples {
        endpoint: "e".to_owned(),
        metric: Metric::CpuNs,
        dcs: vec!["a".to_owned(), "b".to_owned()],
        baseline: vec![
            sample(f64::NAN, 0, 0),
            sample(-1.0, 0, 0),
            sample(0.0, 0, 0),
            // A dc index with no name.
            sample(5.0, 0, 7),
        ],
        candidate: vec![sample(f64::INFINITY, 0, 0), sample(5.0, 0, 1)],
    };
    let c = compare(&junk, &cfg).expect("valid config");
    assert_eq!(c.verdict, Verdict::NotEnoughData);
    assert_eq!(c.dropped, 5);
    assert_eq!(c.dcs_skipped, vec!["b".to_owned()]);
    let json = serde_json::to_string(&c).expect("serialises");
    assert!(json.contains("\"not_enough_data\""), "{json}");
}

#[test]
fn dc_in_one_arm_only_is_reported_and_ignored() {
    let mut e = endpoint(&Scenario::typical(5_000, 1.0), 9);
    e.dcs.push("new-dc".to_owned());
    let new_dc = e.dcs.len() as u32 - 1;
    for i in 0..500 {
        e.candidate.push(sample(9e9, 1000 + i % 7, new_dc));
    }
    let c = compare(&e, &CompareConfig::default()).expect("valid config");
    assert_eq!(c.dcs_skipped, vec!["new-dc".to_owned()]);
    assert_eq!(c.verdict, Verdict::Same);
}

#[test]
fn bh_across_endpoints_fills_q_values() {
    let eps: Vec<EndpointSamples> = (0..5)
        .map(|i| {
            endpoint(
                &Scenario::typical(3_000, if i == 0 { 1.10 } else { 1.0 }),
                40 + i,
            )
        })
        .collect();
    let out = compare_all(&eps, &CompareConfig::default()).expect("valid config");
    assert_eq!(out[0].verdict, Verdict::Regression);
    for c in &out {
        let (p, q) = (c.p_value.unwrap_or(2.0), c.q_value.unwrap_or(-1.0));
        assert!(q >= p && q <= 1.0, "{c:?}");
    }
}

#[test]
fn dcs_match_by_name_whatever_their_numbers() {
    let s = Scenario::typical(5_000, 1.0);
    let e = endpoint(&s, 12);
    // The same data with the dc list reversed and the samples renumbered to match.
    let n = e.dcs.len() as u32;
    let renumber = |v: &[Sample]| -> Vec<Sample> {
        v.iter()
            .map(|x| Sample {
                dc: n - 1 - x.dc,
                ..*x
            })
            .collect()
    };
    let reversed = EndpointSamples {
        dcs: e.dcs.iter().rev().cloned().collect(),
        baseline: renumber(&e.baseline),
        candidate: renumber(&e.candidate),
        ..e.clone()
    };
    let cfg = CompareConfig::default();
    let (a, b) = (
        compare(&e, &cfg).expect("valid config"),
        compare(&reversed, &cfg).expect("valid config"),
    );
    assert_eq!(a, b);
    assert_eq!(a.dcs, vec!["fra", "iad", "sin"]);
}

#[test]
fn invalid_config_is_refused() {
    let cfg = CompareConfig {
        alpha: 0.0,
        ..CompareConfig::default()
    };
    assert!(compare_all(&[], &cfg).is_err());
}
