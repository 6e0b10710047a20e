//! `profwatch-bench functions`: a service's `top`, a function's series and its flame graph
//! over 30 days of stack samples, with the per-function rollups and without.
//!
//! The samples are written straight into the store under test through `profwatch-store` (the
//! embedded data directory, or the scratch ClickHouse database), as a sidecar would have sent
//! them: every host sends one batch per endpoint and minute. What is timed is the server's
//! answer over HTTP, from the request to the last byte: warm (median of repeated runs) and the
//! first answer after a restart (with the page cache dropped where the machine allows).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::rng::Rng;
use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
use profwatch_model::Tenant;
use profwatch_store::Store;
use serde_json::{json, Value};

use crate::server::{Server, StoreArgs};
use crate::sys::{median, round};
use crate::{cache, client, Cli, Report, Setup, StoreOpt};

const SERVICE: &str = "shop";
/// The stated goal: a 30-day top or flame graph of a service within 2 s on 2 cores.
const GOAL_SECS: f64 = 2.0;
const MINUTE_NS: i64 = 60 * NANOS_PER_SEC;

#[derive(Debug, Args)]
pub struct FunctionsArgs {
    /// Days of samples, ending now.
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Hosts, each sending one batch per endpoint and minute.
    #[arg(long, default_value_t = 4)]
    hosts: usize,
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Distinct stacks per endpoint.
    #[arg(long, default_value_t = 100)]
    stacks: usize,
    /// Stacks in each batch (drawn from the endpoint's).
    #[arg(long, default_value_t = 20)]
    per_batch: usize,
    /// Timed warm runs per query (after one warm-up).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[command(flatten)]
    store: StoreOpt,
}

/// Each endpoint's stacks: `main;serve;handle_<e>` then 3 to 13 frames from 300 functions
/// shared by all endpoints (so `top` has many functions and each appears under many stacks).
fn stacks(endpoints: usize, per_endpoint: usize) -> Vec<Vec<Vec<String>>> {
    let mut rng = Rng::new(42);
    (0..endpoints)
        .map(|e| {
            (0..per_endpoint)
                .map(|_| {
                    let mut frames =
                        vec!["main".to_owned(), "serve".to_owned(), format!("handle_{e}")];
                    for _ in 0..3 + rng.below(11) {
                        let f = rng.below(300);
                        frames.push(format!("lib{}::f{f}", f % 17));
                    }
                    frames
                })
                .collect()
        })
        .collect()
}

/// Writes the samples through the store's own API; returns (batches, sample rows, seconds).
fn write(store_args: &StoreArgs, a: &FunctionsArgs, start: i64) -> anyhow::Result<(u64, u64, f64)> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    rt.block_on(async {
        let retention = Duration::from_secs((a.days as u64 + 2) * 86_400);
        let store: Box<dyn Store> = match store_args {
            StoreArgs::Embedded { data_dir } => {
                let mut cfg = profwatch_store::embedded::EmbeddedConfig::new(data_dir);
                cfg.retention = retention;
                Box::new(profwatch_store::embedded::EmbeddedStore::open(cfg)?)
            }
            StoreArgs::ClickHouse { url, database } => {
                let mut cfg = profwatch_store::clickhouse::ClickHouseConfig::new(
                    url.clone(),
                    database.clone(),
                );
                cfg.retention = retention;
                Box::new(profwatch_store::clickhouse::ClickHouseStore::connect(cfg).await?)
            }
            StoreArgs::ClickHouseCluster { .. } => {
                anyhow::bail!("the functions bench runs on one store, not a cluster")
            }
        };
        let stacks = stacks(a.endpoints, a.stacks);
        let mut rng = Rng::new(7);
        let tenant = Tenant::default_tenant();
        let minutes = a.days * 1440;
        let (mut batches, mut rows) = (0u64, 0u64);
        let t0 = Instant::now();
        let mut pending = Vec::new();
        for m in 0..minutes {
            for h in 0..a.hosts {
                for (e, own) in stacks.iter().enumerate() {
                    let samples: Vec<StackSample> = (0..a.per_batch)
                        .map(|_| {
                            let n = 1 + rng.below(20) as u64;
                            StackSample {
                                frames: own[rng.below(own.len())].clone(),
                                samples: n,
                                cpu_ns: n * 10_101_010,
                            }
                        })
                        .collect();
                    rows += samples.len() as u64;
                    pending.push(ProfileBatch {
                        ts: start + m * MINUTE_NS + h as i64 * NANOS_PER_SEC,
                        labels: SampleLabels {
                            service: SERVICE.into(),
                            endpoint: format!("GET /e{e}"),
                            build: "b1".into(),
                            dc: "dc1".into(),
                            host: format!("h{h}"),
                            extra: Default::default(),
                        },
                        samples,
                    });
                }
            }
            if pending.len() >= 2000 || m + 1 == minutes {
                batches += pending.len() as u64;
                store
                    .write_profiles(&tenant, std::mem::take(&mut pending))
                    .await
                    .context("writing profiles")?;
            }
            if m % (1440 * 3) == 0 {
                eprintln!("  day {} of {}...", m / 1440 + 1, a.days);
            }
        }
        store.shutdown().await.context("shutting the store down")?;
        Ok((batches, rows, t0.elapsed().as_secs_f64()))
    })
}

/// One query's timings.
struct Timed {
    what: &'static str,
    rollups: bool,
    warm: Vec<f64>,
    cold: f64,
    bytes: usize,
}

/// GET `url`: seconds to the last byte and the answer's size.
fn get(http: &reqwest::blocking::Client, url: &str) -> anyhow::Result<(f64, usize)> {
    let (took, body) = client::get_timed(http, url)?;
    Ok((took.as_secs_f64(), body.len()))
}

pub fn run(cli: &Cli, a: &FunctionsArgs, report: &mut Report) -> anyhow::Result<()> {
    report.set("command", json!("functions"));
    anyhow::ensure!(a.days >= 1 && a.hosts >= 1 && a.endpoints >= 1 && a.stacks >= 1);
    let setup = Setup::new(cli, &a.store, report)?;
    let now = now_ns();
    let start = (now - a.days * 86_400 * NANOS_PER_SEC) / MINUTE_NS * MINUTE_NS + MINUTE_NS;
    eprintln!(
        "writing {} days of samples: {} hosts x {} endpoints, one batch per minute each...",
        a.days, a.hosts, a.endpoints
    );
    let (batches, rows, write_secs) = write(&setup.store, a, start)?;
    report.line(format!(
        "data: {} days of service {SERVICE}: {} hosts x {} endpoints, one batch per host, endpoint and minute ({batches} batches), {} stacks per batch from {} per endpoint (3 to 13 frames below main;serve;handle_<e>, over 300 functions): {rows} sample rows, written through profwatch-store in {write_secs:.0} s",
        a.days, a.hosts, a.endpoints, a.per_batch, a.stacks
    ));
    let size = match &setup.store {
        StoreArgs::Embedded { data_dir } => Some(crate::sys::dir_size(data_dir)?.0),
        _ => None,
    };
    if let Some(b) = size {
        report.line(format!("  on disk: {:.0} MB", b as f64 / 1e6));
    }
    let (from, to) = (start / NANOS_PER_SEC - 60, now / NANOS_PER_SEC + 60);
    let range = format!("from={from}&to={to}");
    let queries: [(&'static str, String); 4] = [
        (
            "top of the service",
            format!("/api/v1/top?service={SERVICE}&{range}&limit=50"),
        ),
        (
            "top of one endpoint",
            format!("/api/v1/top?service={SERVICE}&endpoint=GET%20%2Fe3&{range}&limit=50"),
        ),
        (
            "a function's series, hourly",
            format!("/api/v1/function_series?service={SERVICE}&function=lib5::f5&{range}&step=1h"),
        ),
        (
            "flame graph of the service (JSON tree, 20000 nodes)",
            format!("/api/v1/profile?service={SERVICE}&{range}&format=json&max_nodes=20000"),
        ),
    ];
    let http = client::http_client()?;
    let retention = format!("{}d", a.days + 2);
    let mut timed = Vec::new();
    for rollups in [true, false] {
        let mut flags = vec!["--retention", retention.as_str()];
        if !rollups {
            flags.push("--no-rollups");
        }
        for (what, path) in &queries {
            // The flame graph reads samples either way: time it once.
            if !rollups && what.starts_with("flame") {
                continue;
            }
            let page_cache = cache::drop_page_cache();
            if !page_cache.dropped() {
                eprintln!("  page cache: {}", page_cache.describe());
            }
            if let Some(ch) = &setup.clickhouse {
                if let Some(e) = cache::drop_clickhouse_caches(ch) {
                    eprintln!("  ClickHouse caches: {e}");
                }
            }
            let server = Server::start_with(&setup.bin, &setup.store, &setup.log, &flags)?;
            let url = format!("{}{path}", server.url);
            eprintln!(
                "timing {what} (rollups {})...",
                if rollups { "on" } else { "off" }
            );
            let (cold, bytes) = get(&http, &url)?;
            let mut warm = Vec::new();
            for _ in 0..a.runs.max(1) {
                warm.push(get(&http, &url)?.0);
            }
            warm.sort_by(f64::total_cmp);
            server.terminate(crate::SHUTDOWN_TIMEOUT)?;
            timed.push(Timed {
                what,
                rollups,
                warm,
                cold,
                bytes,
            });
        }
    }
    report.line("answers over the whole range, request to last byte (cold: the first answer of a fresh server, page cache dropped where the machine allows; warm: median of the repeats):");
    for t in &timed {
        report.line(format!(
            "  {} (rollups {}): cold {:.3} s, warm {:.3} s ({} bytes)",
            t.what,
            if t.rollups { "on" } else { "off" },
            t.cold,
            median(&t.warm),
            t.bytes
        ));
    }
    for t in timed.iter().filter(|t| t.rollups) {
        let w = median(&t.warm);
        report.goal(
            &format!("{}-day {}", a.days, t.what),
            format!("<= {GOAL_SECS} s"),
            format!("warm {w:.3} s, cold {:.3} s", t.cold),
            Some(w <= GOAL_SECS && t.cold <= GOAL_SECS),
        );
    }
    report.set(
        "functions",
        json!({
            "days": a.days,
            "hosts": a.hosts,
            "endpoints": a.endpoints,
            "batches": batches,
            "sample_rows": rows,
            "bytes_on_disk": size,
            "write_secs": round(write_secs, 1),
            "queries": timed.iter().map(|t| json!({
                "what": t.what,
                "rollups": t.rollups,
                "cold_secs": round(t.cold, 4),
                "warm_median_secs": round(median(&t.warm), 4),
                "bytes": t.bytes,
            })).collect::<Vec<Value>>(),
        }),
    );
    setup.finish();
    Ok(())
}
