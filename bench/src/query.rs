//! `profwatch-bench query`: query latency over a large data set, cold and warm, in one report.
//!
//! - **Cold**: before each cold run the server is stopped (SIGTERM, so it keeps nothing in
//!   memory: no parsed segment metadata, no open files), the kernel's page cache is dropped
//!   (`sync; echo 3 > /proc/sys/vm/drop_caches`; on ClickHouse also its mark and uncompressed
//!   caches), the server is started on the same data, and its **first** answer is timed. A
//!   drop that failed is stated next to the figure ("page cache not dropped (not root)"); the
//!   figure is then only metadata-cold and the report says so.
//! - **Warm**: one warm-up, then `--runs` repeated runs on the same server: the page cache and
//!   the server's metadata are full (the query result cache is always off in the bench).
//!
//! The ratio cold / warm of the medians is reported for each query.

use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};

use crate::cache::{self, PageCache};
use crate::client::{self, QueryTiming};
use crate::gen::Profile;
use crate::server::Server;
use crate::sys::{round, CpuMark};
use crate::{Cli, Report, Setup, StoreOpt, GOAL_ENDPOINTS_EVENTS, GOAL_ENDPOINTS_SECS};

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Events to load before querying.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Timed warm runs of each query (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Cold runs of each query: each one restarts the server and drops the page cache first.
    #[arg(long, default_value_t = 3)]
    cold_runs: usize,
    /// Services in the data set. With 1 (the default), one service of 1000 endpoints holds
    /// every event, so the endpoints query covers the whole data set; with more, traffic is
    /// Zipf-distributed over them (1000 endpoints in all) and the busiest one is queried.
    #[arg(long, default_value_t = 1)]
    services: usize,
    /// Events per request while loading.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent client threads while loading.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Where the server's summaries read from: `on` rollups, `off` raw rows, `both` (the
    /// figures below are with rollups, then the endpoints query is timed warm once more on a
    /// server reading raw rows, on the same data in the same run, and the ratio reported).
    #[arg(long, value_enum, default_value_t = Rollups::Both)]
    rollups: Rollups,
    /// The data set: `default` (see `--services`) or `rollup`: one service of 50 endpoints,
    /// 2 builds, 2 dcs, 8 hosts over 10 minutes (issue 13's shape for the rollup figures).
    #[arg(long, value_enum, default_value_t = Shape::Default)]
    shape: Shape,
    #[command(flatten)]
    store: StoreOpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rollups {
    On,
    Off,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    Default,
    Rollup,
}

/// A server restart between cold runs: how long it took and how cold it left the machine.
#[derive(Debug, Clone)]
pub struct Restart {
    pub shutdown_secs: f64,
    pub startup_secs: f64,
    pub page_cache: PageCache,
    /// Why ClickHouse's caches could not be dropped, when they could not.
    pub clickhouse_caches: Option<String>,
}

/// Stops the server, drops every cache it can, and starts it again on the same data.
pub fn restart_cold(setup: &Setup, server: Server) -> anyhow::Result<(Server, Restart)> {
    let down = server.terminate(crate::SHUTDOWN_TIMEOUT)?;
    let page_cache = cache::drop_page_cache();
    let clickhouse_caches = setup
        .clickhouse
        .as_ref()
        .and_then(cache::drop_clickhouse_caches);
    let t0 = Instant::now();
    let server = setup.start()?;
    let restart = Restart {
        shutdown_secs: down.as_secs_f64(),
        startup_secs: t0.elapsed().as_secs_f64(),
        page_cache,
        clickhouse_caches,
    };
    Ok((server, restart))
}

/// The first answers of a query after cold restarts.
#[derive(Debug, Clone)]
pub struct ColdTiming {
    /// First-answer times, sorted.
    pub runs: Vec<f64>,
    pub restarts: Vec<Restart>,
}

impl ColdTiming {
    pub fn median(&self) -> f64 {
        crate::sys::median(&self.runs)
    }

    /// "page cache dropped before every run", or what went wrong.
    pub fn cache_state(&self) -> String {
        let failed: Vec<String> = self
            .restarts
            .iter()
            .filter(|r| !r.page_cache.dropped())
            .map(|r| r.page_cache.describe())
            .collect();
        let mut s = match failed.first() {
            None => "page cache dropped before every run".to_owned(),
            Some(first) => format!(
                "{first} in {} of {} runs: only the server's own state is cold",
                failed.len(),
                self.restarts.len()
            ),
        };
        if let Some(why) = self
            .restarts
            .iter()
            .find_map(|r| r.clickhouse_caches.clone())
        {
            s.push_str(&format!("; ClickHouse caches not dropped ({why})"));
        }
        s
    }

    pub fn json(&self) -> Value {
        json!({
            "runs_secs": self.runs.iter().map(|s| round(*s, 4)).collect::<Vec<_>>(),
            "median_secs": round(self.median(), 4),
            "startup_secs": self.restarts.iter().map(|r| round(r.startup_secs, 2)).collect::<Vec<_>>(),
            "page_cache_dropped": self.restarts.iter().all(|r| r.page_cache.dropped()),
            "cache_state": self.cache_state(),
        })
    }
}

/// `runs` cold first answers of `path` (appended to the server's URL, which changes on every
/// restart); each answer must pass `check` (the same answer as when warm).
pub fn time_cold(
    setup: &Setup,
    mut server: Server,
    http: &reqwest::blocking::Client,
    path: &str,
    runs: usize,
    check: impl Fn(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<(Server, ColdTiming)> {
    let mut out = ColdTiming {
        runs: Vec::with_capacity(runs),
        restarts: Vec::with_capacity(runs),
    };
    for _ in 0..runs {
        let (s, restart) = restart_cold(setup, server)?;
        server = s;
        let (v, took) = client::get_json(http, &format!("{}{path}", server.url))?;
        check(&v).with_context(|| format!("the cold answer to {path}"))?;
        out.runs.push(took.as_secs_f64());
        out.restarts.push(restart);
    }
    out.runs.sort_by(f64::total_cmp);
    Ok((server, out))
}

fn query_profile(services: usize, shape: Shape) -> anyhow::Result<Profile> {
    anyhow::ensure!(services >= 1, "--services must be at least 1");
    Ok(if shape == Shape::Rollup {
        Profile {
            services: 1,
            endpoints_per_service: 50,
            builds: 2,
            dcs: 2,
            hosts: 8,
            span_secs: 600,
            ..Profile::mixed()
        }
    } else if services == 1 {
        Profile::single()
    } else {
        Profile {
            services,
            endpoints_per_service: (1000 / services).max(1),
            ..Profile::mixed()
        }
    })
}

/// One query, timed cold and warm.
struct Timed {
    warm: QueryTiming,
    cold: Option<ColdTiming>,
    scope: u64,
}

impl Timed {
    fn ratio(&self) -> Option<f64> {
        self.cold.as_ref().map(|c| c.median() / self.warm.median())
    }

    fn report(&self, report: &mut Report) {
        let t = &self.warm;
        report.line(format!(
            "  {}: {} rows, {} requests counted (of {} in scope)",
            t.what,
            t.rows,
            t.requests.round(),
            self.scope
        ));
        if let Some(c) = &self.cold {
            report.line(format!(
                "    cold (server restarted, first answer): median {:.3} s, runs {:?} s; {}; start-up to listening {:?} s",
                c.median(),
                c.runs.iter().map(|s| round(*s, 3)).collect::<Vec<_>>(),
                c.cache_state(),
                c.restarts.iter().map(|r| round(r.startup_secs, 1)).collect::<Vec<_>>(),
            ));
        }
        report.line(format!(
            "    warm (same server, repeated): median {:.3} s, min {:.3} s, max {:.3} s over {} runs (warm-up {:.3} s)",
            t.median(),
            t.min(),
            t.max(),
            t.runs.len(),
            t.warmup_secs
        ));
        if let Some(r) = self.ratio() {
            report.line(format!("    cold / warm (medians): {r:.2}x"));
        }
    }

    fn json(&self) -> Value {
        let t = &self.warm;
        json!({
            "url": t.url,
            "events_in_scope": self.scope,
            "rows": t.rows,
            "requests_counted": t.requests,
            "warm": {
                "warmup_secs": round(t.warmup_secs, 4),
                "runs_secs": t.runs.iter().map(|s| round(*s, 4)).collect::<Vec<_>>(),
                "min_secs": round(t.min(), 4),
                "median_secs": round(t.median(), 4),
                "max_secs": round(t.max(), 4),
            },
            "cold": self.cold.as_ref().map(ColdTiming::json),
            "cold_over_warm": self.ratio().map(|r| round(r, 2)),
        })
    }
}

/// `--cold-runs` cold first answers of `path`, if any are asked for.
fn cold(
    setup: &Setup,
    server: Server,
    http: &reqwest::blocking::Client,
    path: &str,
    warm: &QueryTiming,
    a: &QueryArgs,
) -> anyhow::Result<(Server, Option<ColdTiming>)> {
    if a.cold_runs == 0 {
        return Ok((server, None));
    }
    eprintln!(
        "timing {} cold (restart + page-cache drop before each of {} runs)...",
        warm.what, a.cold_runs
    );
    let rows = warm.rows;
    let (server, c) = time_cold(setup, server, http, path, a.cold_runs, |v| {
        let n = v.as_array().map_or(0, Vec::len);
        anyhow::ensure!(n == rows, "{n} rows, {rows} when warm");
        Ok(())
    })?;
    Ok((server, Some(c)))
}

/// The endpoints query timed warm on a server on the same data that reads raw rows, beside
/// the rollups' timing; returns a server that reads rollups again.
fn side_by_side(
    setup: &Setup,
    server: Server,
    http: &reqwest::blocking::Client,
    path: &str,
    rolled: &QueryTiming,
    a: &QueryArgs,
    report: &mut Report,
) -> anyhow::Result<Server> {
    server.terminate(crate::SHUTDOWN_TIMEOUT)?;
    let raw_server = setup.start_with(false)?;
    eprintln!("timing the endpoints query warm on raw rows (--no-rollups)...");
    let raw = client::time_query(
        http,
        &format!("{} on raw rows", rolled.what),
        &format!("{}{path}", raw_server.url),
        a.runs,
    )?;
    raw_server.terminate(crate::SHUTDOWN_TIMEOUT)?;
    if raw.rows != rolled.rows || (raw.requests - rolled.requests).abs() > 1e-6 * raw.requests {
        bail!(
            "rollups and raw rows disagree: {} rows / {} requests vs {} / {}",
            rolled.rows,
            rolled.requests,
            raw.rows,
            raw.requests
        );
    }
    let ratio = rolled.median() / raw.median();
    report.line(format!(
        "  endpoints group_by=build, warm, same data, one run: rollups median {:.4} s (warm-up {:.4} s), raw rows median {:.4} s (warm-up {:.4} s): rollups / raw = {ratio:.3}",
        rolled.median(),
        rolled.warmup_secs,
        raw.median(),
        raw.warmup_secs
    ));
    report.set(
        "rollups_side_by_side",
        json!({
            "rollups_median_secs": round(rolled.median(), 4),
            "rollups_warmup_secs": round(rolled.warmup_secs, 4),
            "raw_median_secs": round(raw.median(), 4),
            "raw_warmup_secs": round(raw.warmup_secs, 4),
            "raw_runs_secs": raw.runs.iter().map(|s| round(*s, 4)).collect::<Vec<_>>(),
            "ratio": round(ratio, 3),
        }),
    );
    setup.start()
}

/// One analysis pass (`POST /api/v1/analyze`) on a warm server. A failed pass is reported
/// (the query figures are still worth having) and returned, to fail the run at its end.
fn analysis_pass(
    http: &reqwest::blocking::Client,
    server: &Server,
    report: &mut Report,
) -> anyhow::Result<Option<String>> {
    eprintln!("timing one analysis pass (POST /api/v1/analyze)...");
    let t0 = Instant::now();
    let resp = http
        .post(format!("{}/api/v1/analyze", server.url))
        .send()
        .context("POST /api/v1/analyze")?;
    let secs = t0.elapsed().as_secs_f64();
    let status = resp.status();
    let body = resp.text().context("analyze body")?;
    if !status.is_success() {
        let failure = format!(
            "analysis pass failed after {secs:.3} s: HTTP {status}: {}",
            body.trim()
        );
        report.line(failure.clone());
        report.set(
            "analysis",
            json!({"secs": round(secs, 3), "error": failure}),
        );
        return Ok(Some(failure));
    }
    let pass: Value = serde_json::from_str(&body).context("analyze JSON")?;
    let compared: usize = pass["services"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| x["endpoints"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    report.line(format!(
        "analysis pass (warm server): {secs:.3} s; {compared} endpoints compared (builds {} vs {}), {} new regressions",
        pass["services"][0]["baseline"].as_str().unwrap_or("-"),
        pass["services"][0]["candidate"].as_str().unwrap_or("-"),
        pass["new_regressions"]
    ));
    report.set(
        "analysis",
        json!({"secs": round(secs, 3), "endpoints_compared": compared, "cache": "warm"}),
    );
    Ok(None)
}

pub fn run(cli: &Cli, a: &QueryArgs, report: &mut Report) -> anyhow::Result<()> {
    report.set("command", json!("query"));
    let mut setup = Setup::new(cli, &a.store, report)?;
    setup.rollups = a.rollups != Rollups::Off;
    report.line(format!(
        "summaries read: {}",
        match a.rollups {
            Rollups::On => "rollups",
            Rollups::Off => "raw rows (--no-rollups)",
            Rollups::Both => "rollups, then raw rows side by side",
        }
    ));
    let profile = query_profile(a.services, a.shape)?;
    let work = crate::generate(&profile, a.events, a.batch, report)?;
    let server = setup.start()?;
    let r = crate::load(&setup, &server, &work, a.clients, "load", report)?;
    // The warm runs read what was persisted, not what the load left in memory.
    let (server, restart) = restart_cold(&setup, server)?;
    report.line(format!(
        "restart after loading: SIGTERM to exit {:.1} s, start to listening {:.1} s",
        restart.shutdown_secs, restart.startup_secs
    ));
    let (from, to) = client::covering_range(&work);
    let (service, service_events) = work.busiest();
    let http = client::http_client()?;
    eprintln!("timing queries warm (1 warm-up + {} runs each)...", a.runs);
    let endpoints_path =
        format!("/api/v1/endpoints?service={service}&from={from}&to={to}&group_by=build");
    let services_path = format!("/api/v1/services?from={from}&to={to}");
    let endpoints_what = format!("endpoints service={service} group_by=build");
    let before = CpuMark::now(server.pid());
    let t_warm = Instant::now();
    let warm_endpoints = client::time_query(
        &http,
        &endpoints_what,
        &format!("{}{endpoints_path}", server.url),
        a.runs,
    )?;
    let warm_services = client::time_query(
        &http,
        "services (whole tenant)",
        &format!("{}{services_path}", server.url),
        a.runs,
    )?;
    let cores = before.cores_until(&CpuMark::now(server.pid()), t_warm.elapsed().as_secs_f64());
    let server = if a.rollups == Rollups::Both {
        side_by_side(
            &setup,
            server,
            &http,
            &endpoints_path,
            &warm_endpoints,
            a,
            report,
        )?
    } else {
        server
    };
    let analysis_failed = analysis_pass(&http, &server, report)?;
    let (server, cold_endpoints) =
        cold(&setup, server, &http, &endpoints_path, &warm_endpoints, a)?;
    let (server, cold_services) = cold(&setup, server, &http, &services_path, &warm_services, a)?;
    let endpoints = Timed {
        warm: warm_endpoints,
        cold: cold_endpoints,
        scope: service_events,
    };
    let services = Timed {
        warm: warm_services,
        cold: cold_services,
        scope: r.acked,
    };
    report.line(format!(
        "query over the full range of {} events (service {service} holds {service_events} = {:.1}% of them):",
        r.acked,
        100.0 * service_events as f64 / r.acked as f64
    ));
    endpoints.report(report);
    services.report(report);
    report.line(format!(
        "  CPU during the warm runs (average cores): profwatch server {}, whole machine {} (so {} for everything else); busiest other processes {}",
        cores["profwatch_server"], cores["machine_busy"], cores["everything_else"], cores["top_other_processes"]
    ));
    report.set(
        "query",
        json!({
            "service": service,
            "endpoints_group_by_build": endpoints.json(),
            "services": services.json(),
            "cpu_cores": cores,
        }),
    );
    if (endpoints.warm.requests.round() as u64) != service_events {
        bail!(
            "the endpoints query counted {} requests, {service_events} were stored for {service}",
            endpoints.warm.requests
        );
    }
    goals(&setup, &endpoints, service_events, report);
    crate::disk(&setup, server, r.acked, report)?;
    setup.finish();
    match analysis_failed {
        Some(failure) => bail!(failure),
        None => Ok(()),
    }
}

/// The endpoints goal, judged on the warm and on the cold median.
fn goals(setup: &Setup, endpoints: &Timed, events: u64, report: &mut Report) {
    let store = if setup.is_embedded() {
        "embedded"
    } else {
        "ClickHouse"
    };
    let at_scale = events >= GOAL_ENDPOINTS_EVENTS;
    let target = format!("<= {GOAL_ENDPOINTS_SECS} s over {GOAL_ENDPOINTS_EVENTS} events");
    let warm = endpoints.warm.median();
    report.goal(
        &format!("endpoints query {store}, warm"),
        target.clone(),
        format!("median {warm:.3} s over {events} events"),
        at_scale.then_some(warm <= GOAL_ENDPOINTS_SECS),
    );
    if let Some(c) = &endpoints.cold {
        report.goal(
            &format!("endpoints query {store}, cold"),
            target,
            format!(
                "median {:.3} s over {events} events ({})",
                c.median(),
                c.cache_state()
            ),
            at_scale.then_some(c.median() <= GOAL_ENDPOINTS_SECS),
        );
    }
}
