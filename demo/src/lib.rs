//! `profwatch demo`: everything needed to watch profwatch catch a regression, from one binary.
//!
//! It starts the server on an embedded store in a temporary directory, then the example shop
//! service (`service.rs`) as separate processes, one per simulated host, each instrumented with
//! the SDK and the stack sampler and reporting straight to the server. Build 1 runs on all
//! hosts (sixteen by default); then half of them are redeployed with build 2, a canary that keeps the number of busy
//! processes (and so the contention for the machine's cores) the same while both builds serve
//! side by side. In build 2 one function of one endpoint
//! (`shop::cart::price`, used by `GET /cart/{id}`) does more work. A load generator drives every
//! host; the server analyses every few seconds; the terminal shows the phases, the requests
//! served, the dashboard URL, and the regression when it is found. Build 2 also makes each
//! worker about 15% heavier in private memory; the demo reads every host's memory each second
//! (from `/proc/PID/smaps_rollup`, as the sidecar's memory watch does) and sends it to the
//! server, which flags that too.

pub mod service;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    /// Where the server (and dashboard) listens.
    pub listen: String,
    /// Stop after this long; run until Ctrl-C otherwise.
    pub duration: Option<Duration>,
    /// How long build 1 runs alone before build 2 rolls out.
    pub baseline_phase: Duration,
    /// Hosts per build.
    pub hosts: usize,
    /// The `profwatch` binary (this one), to start the service processes.
    pub exe: PathBuf,
}

/// What the demo found, for its summary line and its test.
#[derive(Debug, Clone, Default)]
pub struct DemoOutcome {
    pub flagged: Vec<(String, String, f64, Option<String>)>,
    pub requests: u64,
}

struct Host {
    child: Child,
    url: String,
    /// The labels of its memory samples.
    name: String,
    dc: String,
    build: String,
}

/// The service's name in the demo (as the SDK of each host reports it).
pub(crate) const SERVICE: &str = "demo-shop";

/// Each running host's memory now, read from `/proc/PID/smaps_rollup` as the sidecar's memory
/// watch reads it, labelled like the host's events. A host that cannot be read is left out.
fn memory_samples(hosts: &[Host]) -> Vec<profwatch_model::memory::MemorySample> {
    let now = profwatch_model::timefmt::now_ns();
    hosts
        .iter()
        .filter_map(|h| {
            let pid = h.child.id()?;
            let (bytes, _) =
                profwatch_sidecar::memory::smaps::read(std::path::Path::new("/proc"), pid).ok()?;
            Some(profwatch_model::memory::MemorySample {
                ts: now,
                service: SERVICE.to_owned(),
                build: h.build.clone(),
                dc: h.dc.clone(),
                host: h.name.clone(),
                pid,
                bytes,
            })
        })
        .collect()
}

async fn start_host(
    args: &DemoArgs,
    server: &str,
    build: &str,
    host: usize,
    rounds_per_us: u64,
) -> anyhow::Result<Host> {
    let name = format!("shop-{host:02}");
    let dc = if host.is_multiple_of(2) { "eu1" } else { "us1" };
    let mut child = Command::new(&args.exe)
        .args([
            "demo-service",
            "--collector",
            server,
            "--build",
            build,
            "--host",
            &name,
            "--dc",
            dc,
            "--rounds-per-us",
            &rounds_per_us.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting the example service")?;
    let stdout = child.stdout.take().context("service stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(u) = line.strip_prefix("listening on ") {
                return Ok::<_, std::io::Error>(u.trim().to_owned());
            }
        }
        Err(std::io::Error::other("the service exited before listening"))
    })
    .await
    .context("waiting for the example service")??;
    Ok(Host {
        child,
        url,
        name,
        dc: dc.to_owned(),
        build: build.to_owned(),
    })
}

/// Drives one host with requests until `stop`; returns how many it served.
async fn load(
    client: reqwest::Client,
    url: String,
    stop: tokio::sync::watch::Receiver<bool>,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut i: u64 = 0;
    while !*stop.borrow() {
        let (method, path) = match i % 4 {
            0 | 1 => ("GET", format!("/cart/{}", 1000 + i % 97)),
            2 => ("GET", format!("/search?q=item{}", i % 13)),
            _ => ("POST", "/checkout".to_owned()),
        };
        let req = if method == "GET" {
            client.get(format!("{url}{path}"))
        } else {
            client.post(format!("{url}{path}"))
        };
        if req.send().await.is_ok_and(|r| r.status().is_success()) {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        i += 1;
        // Leave CPU for the server and the analysis on small machines.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Prints regressions not printed yet, and culprits once the profiles name one. A memory
/// record is the service's: it is shown as "memory per worker of SERVICE".
fn report(base: &str, records: &[serde_json::Value], found: &mut DemoOutcome) {
    for rec in records {
        let memory = rec["kind"].as_str() == Some("memory");
        let what = if memory {
            format!(
                "memory per worker of {}",
                rec["service"].as_str().unwrap_or("?")
            )
        } else {
            rec["endpoint"].as_str().unwrap_or("?").to_owned()
        };
        let candidate = rec["candidate"].as_str().unwrap_or("?").to_owned();
        let effect = rec["effect"].as_f64().unwrap_or(1.0);
        let culprit = rec["culprits"][0]["function"].as_str().map(str::to_owned);
        match found
            .flagged
            .iter_mut()
            .find(|f| f.0 == what && f.1 == candidate)
        {
            Some(f) => {
                // Each pass re-attributes with more samples: say so when the answer changes.
                if culprit.is_some() && f.3 != culprit {
                    println!(
                        "  {what}: the function that got dearer{}: {} (self CPU per request {:+.0} µs)",
                        if f.3.is_some() { ", with more samples" } else { "" },
                        culprit.as_deref().unwrap_or(""),
                        rec["culprits"][0]["delta"].as_f64().unwrap_or(0.0) / 1000.0
                    );
                    f.3 = culprit;
                }
            }
            None => {
                let unit = if memory {
                    "private bytes per worker".to_owned()
                } else {
                    format!("{} per request", rec["metric"].as_str().unwrap_or("?"))
                };
                println!(
                    "REGRESSION: {what} is {:+.1}% ({unit}, 95% CI {:+.1}%..{:+.1}%) in build {candidate} vs {}",
                    (effect - 1.0) * 100.0,
                    (rec["effect_low"].as_f64().unwrap_or(f64::NAN) - 1.0) * 100.0,
                    (rec["effect_high"].as_f64().unwrap_or(f64::NAN) - 1.0) * 100.0,
                    rec["baseline"].as_str().unwrap_or("?"),
                );
                if memory {
                    println!("  {what}: see the Memory page for workers per host");
                } else if let Some(c) = &culprit {
                    println!("  {what}: the function that got dearer: {c}");
                } else {
                    println!("  {what}: waiting for enough stack samples to name the function");
                }
                println!(
                    "  details:     {base}/#/regression?id={}",
                    rec["id"].as_str().unwrap_or("")
                );
                found.flagged.push((what, candidate, effect, culprit));
            }
        }
    }
}

/// Runs the demo until `duration` or Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<DemoOutcome> {
    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
    let cfg = profwatch_collector::config::RawConfig {
        listen: Some(args.listen.clone()),
        data_dir: Some(dir.path().to_owned()),
        analysis: profwatch_collector::config::RawAnalysis {
            interval: Some("10s".into()),
            window: Some("1h".into()),
            // The demo reads every worker's memory each second: one unit per reading.
            memory_step: Some("1s".into()),
            ..Default::default()
        },
        ..Default::default()
    }
    .validate()
    .context("demo configuration")?;
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(profwatch_collector::server::run(
        cfg,
        async {
            let _ = stopped.await;
        },
        move |addr| {
            let _ = addr_tx.send(addr);
        },
    ));
    let addr = addr_rx.await.context("the server did not start")?;
    let base = format!("http://{addr}");
    println!("profwatch demo");
    println!("  dashboard:   {base}/");
    println!("  data:        {} (temporary)", dir.path().display());

    let rounds_per_us = tokio::task::spawn_blocking(service::calibrate)
        .await
        .unwrap_or(100);
    let started = Instant::now();
    profwatch_model::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut hosts = Vec::new();
    let mut loaders = Vec::new();
    println!("phase 1: build 1 on {} hosts", 2 * args.hosts);
    let mut stops = Vec::new();
    for h in 0..2 * args.hosts {
        let host = start_host(&args, &base, "1", h, rounds_per_us).await?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        loaders.push(tokio::spawn(load(
            client.clone(),
            host.url.clone(),
            rx,
            served.clone(),
        )));
        stops.push(tx);
        hosts.push(host);
    }
    let _ = stop_rx;
    let mut rolled = false;
    let mut found = DemoOutcome::default();
    let mut last_report = Instant::now();
    let mut last_memory = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => { println!("stopping"); break; }
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let elapsed = started.elapsed();
        if args.duration.is_some_and(|d| elapsed >= d) {
            break;
        }
        if !rolled && elapsed >= args.baseline_phase {
            println!(
                "phase 2: canary: build 2 replaces build 1 on {} of {} hosts (shop::cart::price does more work; each worker holds 15% more private memory)",
                args.hosts,
                2 * args.hosts
            );
            for h in args.hosts..2 * args.hosts {
                let _ = stops[h].send(true);
                let _ = hosts[h].child.start_kill();
                let _ = hosts[h].child.wait().await;
                let host = start_host(&args, &base, "2", h, rounds_per_us).await?;
                let (tx, rx) = tokio::sync::watch::channel(false);
                loaders.push(tokio::spawn(load(
                    client.clone(),
                    host.url.clone(),
                    rx,
                    served.clone(),
                )));
                stops[h] = tx;
                hosts[h] = host;
            }
            rolled = true;
        }
        if last_memory.elapsed() >= Duration::from_secs(1) {
            last_memory = Instant::now();
            let batch = profwatch_model::memory::MemoryBatch {
                samples: memory_samples(&hosts),
            };
            let post = client.post(format!("{base}/api/v1/memory")).json(&batch);
            tokio::spawn(async move {
                if let Err(e) = post.send().await.and_then(|r| r.error_for_status()) {
                    tracing::warn!(error = %e, "sending the demo's memory samples");
                }
            });
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  {:>4}s  {} requests served",
                elapsed.as_secs(),
                served.load(std::sync::atomic::Ordering::Relaxed)
            );
            if let Ok(r) = client
                .get(format!("{base}/api/v1/regressions"))
                .send()
                .await
            {
                if let Ok(list) = r.json::<serde_json::Value>().await {
                    report(
                        &base,
                        list.as_array().map(Vec::as_slice).unwrap_or(&[]),
                        &mut found,
                    );
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    for s in &stops {
        let _ = s.send(true);
    }
    for l in loaders {
        let _ = l.await;
    }
    for mut h in hosts {
        let _ = h.child.start_kill();
        let _ = h.child.wait().await;
    }
    found.requests = served.load(std::sync::atomic::Ordering::Relaxed);
    let _ = stop_server.send(());
    let _ = server.await;
    println!(
        "summary: {} requests served; flagged: {}",
        found.requests,
        if found.flagged.is_empty() {
            "nothing".to_owned()
        } else {
            found
                .flagged
                .iter()
                .map(|(e, b, x, c)| {
                    format!(
                        "{e} in build {b} ({:+.1}%, {})",
                        (x - 1.0) * 100.0,
                        c.as_deref().unwrap_or("-")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
    );
    Ok(found)
}
