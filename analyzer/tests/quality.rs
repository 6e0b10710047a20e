//! The detector's quality gate, run by the test command on every change: a quick section of the
//! evaluation (`examples/eval.rs`) on generated data whose truth is known.
//!
//! - A/A (the same build on both arms, different hosts): at most 1.5% of comparisons may be
//!   flagged (the goal is 1%; the full eval measures 0.3–0.5%).
//! - Recall: a +5% regression at 10k requests per arm is called a regression in at least 95% of
//!   cases (the full eval measures 100%).
//!
//! Seeds are fixed, so a run is deterministic; a change to the statistics that moves these
//! figures past their bounds fails here rather than in production.

use profwatch_analyzer::compare::{compare, CompareConfig, Verdict};
use profwatch_analyzer::rng::Rng;
use profwatch_analyzer::sim::Scenario;

fn verdicts(scenario: &Scenario, seeds: std::ops::Range<u64>) -> Vec<Verdict> {
    let cfg = CompareConfig::default();
    seeds
        .map(|seed| {
            let e = scenario.endpoint(&mut Rng::new(seed), "GET /quality");
            compare(&e, &cfg)
                .expect("the default config is valid")
                .verdict
        })
        .collect()
}

#[test]
fn a_a_comparisons_are_flagged_at_most_1_5_percent_of_the_time() {
    let runs = verdicts(&Scenario::typical(1_000, 1.0), 10_000..11_000);
    let flagged = runs
        .iter()
        .filter(|v| matches!(v, Verdict::Regression | Verdict::Improvement))
        .count();
    let judged = runs
        .iter()
        .filter(|v| !matches!(v, Verdict::NotEnoughData))
        .count();
    assert_eq!(judged, runs.len(), "every A/A case has enough data");
    assert!(
        flagged * 1000 <= runs.len() * 15,
        "A/A false-positive rate {flagged} of {} exceeds 1.5%",
        runs.len()
    );
}

#[test]
fn a_five_percent_regression_is_found_at_least_95_percent_of_the_time() {
    let runs = verdicts(&Scenario::typical(10_000, 1.05), 50_000..50_200);
    let found = runs.iter().filter(|v| **v == Verdict::Regression).count();
    assert!(
        found * 100 >= runs.len() * 95,
        "recall at +5%: {found} of {}",
        runs.len()
    );
}
