//! `profwatch-bench flame`: the server's half of a flame graph, from the HTTP request to the
//! last byte of the JSON tree, cold and warm.
//!
//! The profile is the UI test's (`profwatch_e2e::big_profile`: 100k distinct stacks, ~111k
//! nodes), posted once as folded text; the server is then restarted so the answer is read from
//! disk. Each node limit the UI offers is asked for as the dashboard asks
//! (`GET /api/v1/profile?service=&endpoint=&build=&from=&to=&format=json&max_nodes=`): the
//! store read, the merge, the tree build, pruning, serialisation and the transfer are timed.
//! What the browser does next (JSON.parse, then the draw) is not: the UI test writes the draw
//! time to `tests/artifacts/ui/timings.txt`, which this command quotes, labelled, when it
//! exists. JSON.parse in the browser is measured nowhere.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::query::{restart_cold, time_cold, ColdTiming};
use crate::server::Server;
use crate::sys::{median, round};
use crate::{Cli, Report, Setup, StoreOpt};

const SERVICE: &str = "search";
const ENDPOINT: &str = "GET%20/big";
const BUILD: &str = "b1";

#[derive(Debug, Args)]
pub struct FlameArgs {
    /// Timed warm runs per node limit (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Cold runs per node limit: each restarts the server and drops the page cache first.
    #[arg(long, default_value_t = 3)]
    cold_runs: usize,
    /// Node limits (`max_nodes`) to ask for; the UI's default is 20000, and 200000 keeps all
    /// of this profile's ~111k nodes.
    #[arg(long, value_delimiter = ',', default_values_t = [20_000usize, 200_000])]
    nodes: Vec<usize>,
    #[command(flatten)]
    store: StoreOpt,
}

/// One node limit, timed warm and cold.
#[derive(Debug)]
struct Limit {
    max_nodes: usize,
    nodes: u64,
    bytes: usize,
    warmup_secs: f64,
    /// Sorted.
    warm: Vec<f64>,
    cold: Option<ColdTiming>,
}

/// GET `url`; the seconds to the last byte, the body's size and the answer's `nodes`.
fn get_profile(http: &reqwest::blocking::Client, url: &str) -> anyhow::Result<(f64, usize, u64)> {
    let t0 = Instant::now();
    let resp = http.get(url).send().with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().with_context(|| format!("reading GET {url}"))?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: Value = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    Ok((secs, body.len(), nodes_of(&v)?))
}

fn nodes_of(v: &Value) -> anyhow::Result<u64> {
    v["nodes"]
        .as_u64()
        .context("the profile answer has no numeric `nodes`")
}

/// Posts the profile, 20 minutes ago, as the UI test does; returns (seconds, samples).
///
/// A few events of the same service go first, as a service that sends profiles also sends
/// events. Without them the embedded store writes a segment with profiles and no events, whose
/// event time bounds default to 0, and its first retention pass (10 s after a start) deletes
/// it with its profiles: a collector bug this bench ran into, reported, not worked around
/// silently: with `PROFWATCH_BENCH_PROFILE_ONLY=1` the events are left out and it shows.
fn post_profile(server: &Server, ts: i64) -> anyhow::Result<(f64, u64)> {
    let body = profwatch_e2e::big_profile();
    let http = crate::client::http_client()?;
    if std::env::var_os("PROFWATCH_BENCH_PROFILE_ONLY").is_none() {
        let events = profwatch_e2e::ndjson(&profwatch_e2e::events(SERVICE, BUILD, 300));
        let resp = http
            .post(format!("{}/api/v1/events", server.url))
            .header("content-type", "application/x-ndjson")
            .body(events)
            .send()
            .context("POST the events")?;
        anyhow::ensure!(
            resp.status().is_success(),
            "POST /api/v1/events answered {}",
            resp.status()
        );
    }
    let url = format!(
        "{}/api/v1/profiles?format=folded&service={SERVICE}&endpoint={ENDPOINT}&build={BUILD}&ts={ts}",
        server.url
    );
    let t0 = Instant::now();
    let resp = http
        .post(&url)
        .body(body)
        .send()
        .context("POST the profile")?;
    let status = resp.status();
    let text = resp.text().context("reading the answer to the profile")?;
    let secs = t0.elapsed().as_secs_f64();
    if !status.is_success() {
        bail!("POST {url}: HTTP {status}: {}", text.trim());
    }
    let v: Value = serde_json::from_str(&text).context("the profile answer is not JSON")?;
    Ok((secs, v["samples"].as_u64().unwrap_or(0)))
}

fn time_limit(
    setup: &Setup,
    server: Server,
    http: &reqwest::blocking::Client,
    path: &str,
    max_nodes: usize,
    a: &FlameArgs,
) -> anyhow::Result<(Server, Limit)> {
    let url = format!("{}{path}", server.url);
    let (warmup_secs, bytes, nodes) = get_profile(http, &url)?;
    let mut warm = Vec::with_capacity(a.runs);
    for _ in 0..a.runs {
        warm.push(get_profile(http, &url)?.0);
    }
    warm.sort_by(f64::total_cmp);
    let (server, cold) = if a.cold_runs > 0 {
        let (s, c) = time_cold(setup, server, http, path, a.cold_runs, |v| {
            let n = nodes_of(v)?;
            anyhow::ensure!(n == nodes, "{n} nodes, {nodes} when warm");
            Ok(())
        })?;
        (s, Some(c))
    } else {
        (server, None)
    };
    let limit = Limit {
        max_nodes,
        nodes,
        bytes,
        warmup_secs,
        warm,
        cold,
    };
    Ok((server, limit))
}

impl Limit {
    fn report(&self, report: &mut Report) {
        report.line(format!(
            "  max_nodes={}: {} nodes, {:.1} MB of JSON",
            self.max_nodes,
            self.nodes,
            self.bytes as f64 / 1e6
        ));
        if let Some(c) = &self.cold {
            report.line(format!(
                "    cold (server restarted, first answer): median {:.3} s, runs {:?} s; {}",
                c.median(),
                c.runs.iter().map(|s| round(*s, 3)).collect::<Vec<_>>(),
                c.cache_state()
            ));
        }
        let w = median(&self.warm);
        report.line(format!(
            "    warm (repeated): median {w:.3} s, min {:.3} s, max {:.3} s over {} runs (warm-up {:.3} s)",
            self.warm.first().copied().unwrap_or(f64::NAN),
            self.warm.last().copied().unwrap_or(f64::NAN),
            self.warm.len(),
            self.warmup_secs
        ));
        if let Some(c) = &self.cold {
            report.line(format!("    cold / warm (medians): {:.2}x", c.median() / w));
        }
    }

    fn json(&self) -> Value {
        let w = median(&self.warm);
        json!({
            "max_nodes": self.max_nodes,
            "nodes": self.nodes,
            "json_bytes": self.bytes,
            "warm": {
                "warmup_secs": round(self.warmup_secs, 4),
                "runs_secs": self.warm.iter().map(|s| round(*s, 4)).collect::<Vec<_>>(),
                "median_secs": round(w, 4),
            },
            "cold": self.cold.as_ref().map(ColdTiming::json),
            "cold_over_warm": self.cold.as_ref().map(|c| round(c.median() / w, 2)),
        })
    }
}

/// The UI test's browser draw times, if it left them, with how old they are.
fn browser_draw_times() -> Option<(Vec<String>, Duration)> {
    let path = profwatch_e2e::repo_root().join("tests/artifacts/ui/timings.txt");
    let text = std::fs::read_to_string(&path).ok()?;
    let age = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .unwrap_or_default();
    let lines = text
        .lines()
        .filter(|l| l.starts_with("flame graph"))
        .map(str::to_owned)
        .collect();
    Some((lines, age))
}

pub fn run(cli: &Cli, a: &FlameArgs, report: &mut Report) -> anyhow::Result<()> {
    report.set("command", json!("flame"));
    anyhow::ensure!(!a.nodes.is_empty(), "--nodes needs at least one limit");
    let setup = Setup::new(cli, &a.store, report)?;
    let server = setup.start()?;
    let now_s = profwatch_model::timefmt::now_ns() / 1_000_000_000;
    let (post_secs, samples) = post_profile(&server, now_s - 20 * 60)?;
    report.line(format!(
        "profile: 100000 distinct stacks ({samples} samples) of {SERVICE} {ENDPOINT} build {BUILD}, posted as folded text in {post_secs:.2} s"
    ));
    let (mut server, _) = restart_cold(&setup, server)?;
    let (from, to) = (now_s - 6 * 3600, now_s + 60);
    let http = crate::client::http_client()?;
    report.line("server part of a flame graph: GET /api/v1/profile?format=json, request to the last byte of the JSON (store read, merge, tree build, pruning, serialisation, transfer):");
    let mut limits = Vec::new();
    for &max_nodes in &a.nodes {
        eprintln!(
            "timing max_nodes={max_nodes}: 1 warm-up + {} warm runs, {} cold runs...",
            a.runs, a.cold_runs
        );
        let path = format!(
            "/api/v1/profile?service={SERVICE}&endpoint={ENDPOINT}&build={BUILD}&from={from}&to={to}&format=json&max_nodes={max_nodes}"
        );
        let (s, limit) = time_limit(&setup, server, &http, &path, max_nodes, a)?;
        server = s;
        limit.report(report);
        limits.push(limit);
    }
    match browser_draw_times() {
        Some((lines, age)) => report.line(format!(
            "  browser draw only (not this run: tests/e2e/ui.rs wrote it {:.0} h ago, debug server, same profile; JSON.parse not included): {}",
            age.as_secs_f64() / 3600.0,
            lines.join("; ")
        )),
        None => report.line(
            "  browser draw: not measured here; run the UI test (tests/e2e/ui.rs), which writes it to tests/artifacts/ui/timings.txt",
        ),
    }
    report.set(
        "flame",
        json!({
            "stacks": 100_000,
            "samples": samples,
            "post_secs": round(post_secs, 3),
            "limits": limits.iter().map(Limit::json).collect::<Vec<_>>(),
        }),
    );
    server.terminate(crate::SHUTDOWN_TIMEOUT)?;
    setup.finish();
    Ok(())
}
