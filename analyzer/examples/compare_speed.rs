//! Times the analyzer's side of an analysis pass: `compare_all_par` over 1000 endpoints of two
//! builds with 5000 requests per build each (10M samples), on every core.
//!
//! Run: `cargo run --release -p profwatch-analyzer --example compare_speed [endpoints] [requests]`.

use std::time::Instant;

use profwatch_analyzer::compare::{compare_all_par, CompareConfig, EndpointSamples, Verdict};
use profwatch_analyzer::rng::Rng;
use profwatch_analyzer::sim::Scenario;

fn main() {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>().ok());
    let endpoints = args.next().flatten().unwrap_or(1000);
    let requests = args.next().flatten().unwrap_or(5000);
    let started = Instant::now();
    let inputs: Vec<EndpointSamples> = (0..endpoints)
        .map(|i| {
            // One endpoint in ten regressed by 3%.
            let effect = if i % 10 == 0 { 1.03 } else { 1.0 };
            Scenario::typical(requests, effect)
                .endpoint(&mut Rng::new(i as u64), &format!("GET /e{i}"))
        })
        .collect();
    let generated = started.elapsed().as_secs_f64();
    let threads = rayon::current_num_threads();
    let cfg = CompareConfig::default();
    for run in 0..3 {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let out = compare_all_par(&inputs, &cfg).expect("valid config");
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds().zip(cpu).map(|(b, a)| b - a);
        let regressions = out
            .iter()
            .filter(|c| c.verdict == Verdict::Regression)
            .count();
        println!(
            "run {run}: {endpoints} endpoints x 2 builds x {requests} requests on {threads} threads: \
             {secs:.2} s, CPU {} ({regressions} regressions; inputs generated in {generated:.1} s)",
            cpu.map_or("unknown".to_owned(), |c| format!("{c:.2} s"))
        );
    }
}

/// User + system CPU time of this process, from `/proc/self/stat` (Linux; clock ticks of 10 ms).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
