//! `profwatch demo`, shortened: it must flag exactly the endpoint whose function got dearer in
//! build 2 and name that function, flag build 2's heavier workers as a memory regression of the
//! service, and flag nothing else.

use profwatch_e2e::*;

#[test]
fn the_demo_catches_its_regression_and_names_the_function() {
    let art = artifacts("the_demo_catches_its_regression_and_names_the_function");
    let out = std::process::Command::new(profwatch_bin())
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "150",
            "--baseline-secs",
            "30",
        ])
        .env("PROFWATCH_LOG", "warn")
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    std::fs::write(art.join("stdout.txt"), &stdout).expect("write");
    std::fs::write(art.join("stderr.txt"), &stderr).expect("write");
    assert!(out.status.success(), "the demo failed:\n{stdout}\n{stderr}");
    let flagged: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("REGRESSION:"))
        .collect();
    assert_eq!(
        flagged.len(),
        2,
        "exactly two regressions (CPU and memory):\n{stdout}"
    );
    assert!(
        flagged
            .iter()
            .any(|l| l.contains("GET /cart/{id}") && l.contains("build 2 vs 1")),
        "{stdout}"
    );
    let memory = flagged
        .iter()
        .find(|l| l.contains("memory per worker of demo-shop") && l.contains("build 2 vs 1"))
        .unwrap_or_else(|| panic!("a memory regression of the service:\n{stdout}"));
    // "REGRESSION: memory per worker of demo-shop is +15.2% (...": about the 15% build 2 adds.
    let pct: f64 = memory
        .split(" is ")
        .nth(1)
        .and_then(|r| r.split('%').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("an effect in {memory}"));
    assert!((10.0..=20.0).contains(&pct), "about +15%: {memory}");
    // The last answer counts (each pass re-attributes with more samples).
    let named = stdout
        .lines()
        .rfind(|l| l.contains("the function that got dearer"))
        .unwrap_or_else(|| panic!("a function is named:\n{stdout}"));
    assert!(
        named.contains(": profwatch_demo::service::shop::cart::price"),
        "the function is named:\n{stdout}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("summary:"))
        .expect("a summary line");
    assert!(
        summary.contains("GET /cart/{id} in build 2")
            && summary.contains("profwatch_demo::service::shop::cart::price)")
            && summary.contains("memory per worker of demo-shop in build 2"),
        "{summary}"
    );
}
