//! `profwatch-bench flame`: a flame graph from the request to the rendered frame, cold and warm.
//!
//! The profile is the UI test's (`profwatch_e2e::big_profile`: 100k distinct stacks, ~111k
//! nodes), posted once as folded text; the server is then restarted so the answer is read from
//! disk. For each node limit the UI offers:
//! - the server's half: `GET /api/v1/profile?...&format=json&max_nodes=` as the dashboard asks
//!   it, from the request to the last byte (store read, merge, tree build, pruning,
//!   serialisation, transfer), warm and cold;
//! - the whole of it, in headless Chromium (when installed): the dashboard's flame page loaded
//!   fresh, from its first request to the first frame after the draw, as the page records it in
//!   `window.__pw.loads.flame` (its requests, JSON.parse, the tree build and the draw), once right
//!   after a cold restart and then warm.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use profwatch_e2e::webdriver::Browser;

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
    let (took, body) = crate::client::get_timed(http, url)?;
    let v: Value = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    Ok((took.as_secs_f64(), body.len(), nodes_of(&v)?))
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

/// One load of the dashboard's flame page, as it timed itself (`window.__pw.loads.flame`), ms.
#[derive(Debug, Clone)]
struct PageLoad {
    frame_ms: f64,
    request_ms: f64,
    profile_parse_ms: f64,
    draw_ms: f64,
}

impl PageLoad {
    fn json(&self) -> Value {
        json!({
            "frame_ms": round(self.frame_ms, 1),
            "requests_ms": round(self.request_ms, 1),
            "profile_json_parse_ms": round(self.profile_parse_ms, 1),
            "draw_ms": round(self.draw_ms, 1),
        })
    }
}

/// The browser's loads of one node limit: the first after a cold restart, then warm ones.
#[derive(Debug)]
struct BrowserLoads {
    max_nodes: usize,
    cold: PageLoad,
    /// Sorted by `frame_ms`.
    warm: Vec<PageLoad>,
}

/// Opens the flame page fresh (from a blank page, so nothing of the last load is reused but
/// the browser's cache of the dashboard's own files) and waits for its load timing.
fn load_flame_page(browser: &Browser, page: &str) -> anyhow::Result<PageLoad> {
    browser.goto("about:blank");
    browser.goto(page);
    browser.wait_for(
        "the flame page's load timing (window.__pw.loads.flame)",
        "return !!(window.__pw && window.__pw.loads && window.__pw.loads.flame)",
        Duration::from_secs(300),
    );
    let errors = browser.js("return window.__pwErrors || []", json!([]));
    anyhow::ensure!(
        errors.as_array().is_none_or(|e| e.is_empty()),
        "the flame page reported errors: {errors}"
    );
    let v = browser.js("return window.__pw.loads.flame", json!([]));
    let ms = |k: &str| {
        v[k].as_f64()
            .with_context(|| format!("window.__pw.loads.flame has no number {k}: {v}"))
    };
    Ok(PageLoad {
        frame_ms: ms("frame_ms")?,
        request_ms: ms("request_ms")?,
        profile_parse_ms: ms("profile_parse_ms")?,
        draw_ms: ms("draw_ms")?,
    })
}

/// Times the flame page of `max_nodes` in the browser: once after a cold restart, then `runs`
/// warm loads.
fn time_browser(
    setup: &Setup,
    server: Server,
    browser: &Browser,
    window: (i64, i64),
    max_nodes: usize,
    runs: usize,
) -> anyhow::Result<(Server, BrowserLoads)> {
    let (server, _) = restart_cold(setup, server)?;
    let page = format!(
        "{}/#/flame?service={SERVICE}&endpoint={ENDPOINT}&build={BUILD}&from={}&to={}&nodes={max_nodes}",
        server.url, window.0, window.1
    );
    let cold = load_flame_page(browser, &page)?;
    let mut warm = Vec::with_capacity(runs);
    for _ in 0..runs {
        warm.push(load_flame_page(browser, &page)?);
    }
    warm.sort_by(|a, b| a.frame_ms.total_cmp(&b.frame_ms));
    Ok((
        server,
        BrowserLoads {
            max_nodes,
            cold,
            warm,
        },
    ))
}

impl BrowserLoads {
    fn report(&self, report: &mut Report) {
        let frames: Vec<f64> = self.warm.iter().map(|l| l.frame_ms).collect();
        let mid = &self.warm[self.warm.len() / 2];
        report.line(format!(
            "  max_nodes={}: cold (first load after a restart) {:.0} ms; warm median {:.0} ms (min {:.0}, max {:.0}, {} loads); of the warm median load: requests {:.0} ms, JSON.parse of the profile {:.0} ms, draw {:.0} ms",
            self.max_nodes,
            self.cold.frame_ms,
            median(&frames),
            frames.first().copied().unwrap_or(f64::NAN),
            frames.last().copied().unwrap_or(f64::NAN),
            frames.len(),
            mid.request_ms,
            mid.profile_parse_ms,
            mid.draw_ms,
        ));
    }

    fn json(&self) -> Value {
        let frames: Vec<f64> = self.warm.iter().map(|l| l.frame_ms).collect();
        json!({
            "max_nodes": self.max_nodes,
            "cold": self.cold.json(),
            "warm": self.warm.iter().map(PageLoad::json).collect::<Vec<_>>(),
            "warm_median_frame_ms": round(median(&frames), 1),
        })
    }
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
    let mut loads = Vec::new();
    match Browser::installed() {
        Ok(()) => {
            report.line("the whole flame graph in headless Chromium: the dashboard's flame page, from its first request to the first frame after the draw (requests, JSON.parse, tree build, draw); the browser's cache holds the dashboard's own files:");
            let browser = Browser::start(1400, 1000);
            for &max_nodes in &a.nodes {
                eprintln!("loading the flame page in the browser, max_nodes={max_nodes}...");
                let (s, l) = time_browser(
                    &setup,
                    server,
                    &browser,
                    (from, to),
                    max_nodes,
                    a.runs.max(1),
                )?;
                server = s;
                l.report(report);
                loads.push(l);
            }
        }
        Err(why) => report.line(format!(
            "the whole flame graph in a browser: NOT MEASURED: {why}"
        )),
    }
    report.set(
        "flame",
        json!({
            "stacks": 100_000,
            "samples": samples,
            "post_secs": round(post_secs, 3),
            "limits": limits.iter().map(Limit::json).collect::<Vec<_>>(),
            "browser": loads.iter().map(BrowserLoads::json).collect::<Vec<_>>(),
        }),
    );
    server.terminate(crate::SHUTDOWN_TIMEOUT)?;
    setup.finish();
    Ok(())
}
