//! `profwatch-bench load`: the capacity of the scale-out deployment on loopback.
//!
//! It starts a ClickHouse cluster of `--shards` servers (one shard each, no replication), then
//! `--collectors` `profwatch server --clickhouse-cluster` processes (collector i enters through
//! shard i mod shards), then `--hosts` simulated hosts: each is a `profwatch agent` sidecar
//! (alternating between the collectors) fed NDJSON events over its Unix socket by a thread of
//! this process.
//!
//! The offered rate is then ramped: `--rate` events/s per host for `--step`, then `--factor`
//! times that, and so on, until a step breaks the SLO (see `step`: no event lost, duplicated
//! or dropped, p99 ingest request latency, lag and share stored at the end of the step, the
//! rate actually offered) or `--max-steps` steps have run. The capacity is the last rate held;
//! when the first broken step overloaded the pipeline, what it stored then is an upper bound. A
//! rate the sidecars' spools only buffered is not held: the lag and share bounds catch it. With `--soak D`, one
//! step holds `--rate` for `D` instead (that shows a rate was held, not the capacity).
//!
//! Also reported: rows per shard and the peak RSS (VmHWM) of every process.

mod feed;
mod prom;
mod step;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use profwatch_testkit::clickhouse_cluster::{LocalCluster, CLUSTER};
use serde_json::json;

use crate::server::{tail, Server, StoreArgs};
use crate::sys::round;
use crate::Report;
use step::{Slo, Step};

/// The database of the load test on the cluster.
const DATABASE: &str = "pw_load";

#[derive(Debug, Clone, clap::Args)]
pub struct LoadTestArgs {
    /// Events per second each host sends in the first step (or throughout, with --soak).
    #[arg(long, default_value_t = 2_500)]
    pub rate: u64,
    /// How long each step of the ramp holds its rate.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub step: Duration,
    /// Each step offers this many times the rate of the step before.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// Steps at most (bounds the run to about steps x (step + a few seconds of drain)).
    #[arg(long, default_value_t = 8)]
    pub max_steps: usize,
    /// Hold --rate for this long instead of ramping: a soak test, which shows that the
    /// offered rate was held, not what the capacity is.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// SLO: p99 of the collectors' ingest request latency (the bound of its histogram bucket).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub slo_p99: Duration,
    /// SLO: when a step's feeds stop, the events sent but not yet in ClickHouse amount to at
    /// most this many seconds of the offered rate.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub slo_lag: Duration,
    /// Simulated hosts, each with its own sidecar.
    #[arg(long, default_value_t = 8)]
    pub hosts: usize,
    /// Collectors (`profwatch server` processes).
    #[arg(long, default_value_t = 2)]
    pub collectors: usize,
    /// ClickHouse shards (one `clickhouse-server` each).
    #[arg(long, default_value_t = 2)]
    pub shards: usize,
}

/// A running sidecar, killed when dropped.
struct Sidecar {
    child: Child,
    socket: PathBuf,
    metrics: String,
    log: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything under load: the cluster, the collectors and the sidecars.
pub struct Rig {
    cluster: LocalCluster,
    version: String,
    collectors: Vec<Server>,
    sidecars: Vec<Sidecar>,
    http: reqwest::blocking::Client,
    /// Events written by the feeds since the start.
    sent: Arc<AtomicU64>,
    /// The scratch directory (sockets, spools, logs); kept when the run fails.
    work: Option<tempfile::TempDir>,
}

impl Rig {
    fn start(bin: &Path, args: &LoadTestArgs) -> anyhow::Result<Rig> {
        let work = tempfile::Builder::new()
            .prefix("profwatch-load-")
            .tempdir()
            .context("creating a scratch directory")?;
        eprintln!("starting a {}-shard ClickHouse cluster...", args.shards);
        let cluster = LocalCluster::start(args.shards).map_err(anyhow::Error::msg)?;
        let urls = cluster.urls();
        let version = cluster
            .query(0, "SELECT version()")
            .map_err(anyhow::Error::msg)?;
        let mut collectors = Vec::new();
        for i in 0..args.collectors {
            let store = StoreArgs::ClickHouseCluster {
                url: urls[i % urls.len()].clone(),
                database: DATABASE.to_owned(),
                cluster: CLUSTER.to_owned(),
            };
            let log = work.path().join(format!("collector-{i}.log"));
            collectors.push(Server::start(bin, &store, &log)?);
        }
        let mut sidecars = Vec::new();
        for h in 0..args.hosts {
            let collector = &collectors[h % collectors.len()].url;
            sidecars.push(start_sidecar(bin, work.path(), h, collector)?);
        }
        Ok(Rig {
            cluster,
            version,
            collectors,
            sidecars,
            http: crate::client::http_client()?,
            sent: Arc::new(AtomicU64::new(0)),
            work: Some(work),
        })
    }

    /// Keeps the scratch directory for a post-mortem; says where, how much disk is free there,
    /// and how the first sidecar's log ends.
    fn keep_for_post_mortem(&mut self) -> String {
        let Some(work) = self.work.take() else {
            return String::new();
        };
        let dir = work.keep();
        format!(
            "kept {} ({} free there); sidecar 0's log ends:\n{}",
            dir.display(),
            crate::sys::free_disk(&dir).unwrap_or_else(|| "? bytes".to_owned()),
            self.sidecars
                .first()
                .map_or(String::new(), |s| tail(&s.log))
        )
    }

    fn sockets(&self) -> Vec<PathBuf> {
        self.sidecars.iter().map(|s| s.socket.clone()).collect()
    }

    /// Rows in ClickHouse, through the Distributed table.
    fn stored(&self) -> anyhow::Result<u64> {
        self.cluster
            .query(0, &format!("SELECT count() FROM {DATABASE}.events"))
            .map_err(anyhow::Error::msg)?
            .trim()
            .parse()
            .context("reading the event count")
    }

    /// Fails when the scratch disk is nearly full (the machine is shared: a full disk would
    /// fail other people's work too).
    fn check_disk(&self) -> anyhow::Result<()> {
        let free = crate::sys::free_disk_bytes(&std::env::temp_dir());
        if let Some(b) = free.filter(|b| *b < MIN_FREE_BYTES / 2) {
            bail!(
                "stopped during the step: {:.1} GB of disk left for the spools and ClickHouse",
                b as f64 / 1e9
            );
        }
        Ok(())
    }

    /// Fails when a sidecar has exited.
    fn check_sidecars(&mut self) -> anyhow::Result<()> {
        for s in &mut self.sidecars {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "a sidecar exited with {status} during the load; log {}:\n{}",
                    s.log.display(),
                    tail(&s.log)
                );
            }
        }
        Ok(())
    }

    /// The collectors' ingest latency histogram, summed over collectors (cumulative buckets).
    fn latency_buckets(&self) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        let mut buckets = std::collections::BTreeMap::new();
        for c in &self.collectors {
            let text = self
                .http
                .get(format!("{}/metrics", c.url))
                .send()
                .and_then(|r| r.text())
                .context("reading a collector's /metrics")?;
            for (le, n) in prom::histogram(&text, "profwatch_ingest_request_seconds_bucket") {
                *buckets.entry(le).or_default() += n;
            }
        }
        Ok(buckets)
    }

    /// Events the sidecars dropped since they started.
    fn sidecar_drops(&self) -> anyhow::Result<f64> {
        let mut drops = 0.0;
        for s in &self.sidecars {
            let text = self
                .http
                .get(format!("http://{}/metrics", s.metrics))
                .send()
                .and_then(|r| r.text())
                .context("reading a sidecar's /metrics")?;
            drops += prom::counter_sum(&text, "profwatch_agent_events_dropped");
        }
        Ok(drops)
    }

    /// Empties every shard's events once a step is counted, so that the disk holds one step's
    /// events at most (before merges ClickHouse 18.16 takes ~300 B per event here).
    fn truncate(&self) -> anyhow::Result<()> {
        for i in 0..self.cluster.urls().len() {
            self.cluster
                .query(i, &format!("TRUNCATE TABLE {DATABASE}.events_local"))
                .map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    fn rows_per_shard(&self) -> anyhow::Result<Vec<u64>> {
        (0..self.cluster.urls().len())
            .map(|i| {
                self.cluster
                    .query(i, &format!("SELECT count() FROM {DATABASE}.events_local"))
                    .map_err(anyhow::Error::msg)
                    .and_then(|s| s.trim().parse().context("a count"))
            })
            .collect()
    }

    fn peak_rss(&self) -> Vec<(String, Option<f64>)> {
        let mut rss = Vec::new();
        for (i, c) in self.collectors.iter().enumerate() {
            rss.push((format!("collector {i}"), prom::peak_rss_mib(c.pid())));
        }
        for (i, s) in self.sidecars.iter().enumerate() {
            rss.push((format!("sidecar {i}"), prom::peak_rss_mib(s.child.id())));
        }
        for (i, pid) in self.cluster.server_pids().into_iter().enumerate() {
            rss.push((
                format!("clickhouse shard {}", i + 1),
                prom::peak_rss_mib(pid),
            ));
        }
        rss
    }

    fn stop(self) -> anyhow::Result<()> {
        drop(self.sidecars);
        for c in self.collectors {
            c.terminate(Duration::from_secs(60))?;
        }
        drop(self.cluster);
        Ok(())
    }
}

/// The rates of the run: the ramp, or the one soak rate.
fn plan(args: &LoadTestArgs) -> Vec<(u64, Duration)> {
    match args.soak {
        Some(d) => vec![(args.rate, d)],
        None => (0..args.max_steps)
            .map(|i| {
                let r = args.rate as f64 * args.factor.powi(i as i32);
                (r.round() as u64, args.step)
            })
            .collect(),
    }
}

pub fn run(bin: &Path, args: &LoadTestArgs, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.hosts > 0 && args.collectors > 0 && args.shards > 0 && args.max_steps > 0,
        "--hosts, --collectors, --shards and --max-steps must be at least 1"
    );
    anyhow::ensure!(args.factor > 1.0, "--factor must be above 1");
    anyhow::ensure!(
        args.soak.is_some() || args.step >= Duration::from_secs(15),
        "--step must be at least 15s: the pipeline holds about a second of events, so a \
         shorter step cannot tell a held rate from a buffered one"
    );
    let slo = Slo {
        p99: args.slo_p99,
        lag: args.slo_lag,
    };
    let tmp = std::env::temp_dir();
    report.line(format!(
        "scratch space (sidecar spools, ClickHouse data): {} free in {} at the start",
        crate::sys::free_disk(&tmp).unwrap_or_else(|| "?".to_owned()),
        tmp.display()
    ));
    let mut rig = Rig::start(bin, args)?;
    let started = Instant::now();
    let mut steps: Vec<Step> = Vec::new();
    let ramped = ramp(&mut rig, args, &slo, &mut steps);
    let total = started.elapsed().as_secs_f64();
    write_report(&rig, args, &slo, &steps, total, report)?;
    if let Err(e) = ramped {
        let kept = rig.keep_for_post_mortem();
        report.line(format!(
            "  the run failed after {} steps: {e:#}",
            steps.len()
        ));
        return Err(e.context(kept));
    }
    // Events a sidecar dropped were counted (the spool was full); any other loss is a bug.
    let unaccounted: f64 = steps.iter().map(|s| s.lost as f64 - s.dropped).sum();
    rig.stop()?;
    if unaccounted > 0.0 {
        bail!("{unaccounted} events were lost without a sidecar counting them as dropped");
    }
    Ok(())
}

/// Free disk below which no further step starts (the spools and ClickHouse share it); a step
/// running stops at half of it.
pub const MIN_FREE_BYTES: u64 = 1 << 30;

/// Runs the steps of the plan until one breaks the SLO, pushing each onto `steps`; stops
/// early, and says so, when the scratch disk runs low.
fn ramp(
    rig: &mut Rig,
    args: &LoadTestArgs,
    slo: &Slo,
    steps: &mut Vec<Step>,
) -> anyhow::Result<()> {
    for (i, (rate, duration)) in plan(args).into_iter().enumerate() {
        let free = crate::sys::free_disk_bytes(&std::env::temp_dir());
        if let Some(b) = free.filter(|b| *b < MIN_FREE_BYTES) {
            bail!(
                "stopped before step {}: {:.1} GB of disk left for the spools and ClickHouse",
                i + 1,
                b as f64 / 1e9
            );
        }
        let s = step::hold(rig, i as u64, rate, duration, slo)?;
        eprintln!("  {}", s.summary());
        let broken = !s.broken.is_empty();
        steps.push(s);
        if broken {
            break;
        }
        rig.truncate()?;
    }
    Ok(())
}

fn start_sidecar(bin: &Path, dir: &Path, host: usize, collector: &str) -> anyhow::Result<Sidecar> {
    let socket = dir.join(format!("host-{host}.sock"));
    let spool = dir.join(format!("spool-{host}"));
    let log = dir.join(format!("sidecar-{host}.log"));
    let metrics = free_local_port()?;
    let child = Command::new(bin)
        .args(["agent", "--collector", collector])
        .arg("--socket")
        .arg(&socket)
        .arg("--spool-dir")
        .arg(&spool)
        .args(["--dc", if host.is_multiple_of(2) { "eu1" } else { "us2" }])
        .args(["--host", &format!("host-{host}")])
        .args(["--metrics", &metrics])
        .env("PROFWATCH_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?)
        .spawn()
        .with_context(|| format!("starting {} agent", bin.display()))?;
    let started = Instant::now();
    while !socket.exists() {
        if started.elapsed() > Duration::from_secs(60) {
            bail!(
                "sidecar {host} did not create {} within 60 s; log:\n{}",
                socket.display(),
                tail(&log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Sidecar {
        child,
        socket,
        metrics,
        log,
    })
}

fn free_local_port() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.to_string())
}

/// The capacity line: the last rate held, and how sure that is.
fn capacity(args: &LoadTestArgs, steps: &[Step]) -> (String, Option<f64>) {
    let held = steps.iter().rev().find(|s| s.broken.is_empty());
    let any_broken = steps.iter().any(|s| !s.broken.is_empty());
    match (args.soak, held, any_broken) {
        (Some(d), Some(s), _) => (
            format!(
                "soak: {:.0} events/s offered and held for {d:?} (a rate held, not the capacity: run without --soak to ramp)",
                s.offered()
            ),
            None,
        ),
        (Some(d), None, _) => (format!("soak: {}/s NOT held for {d:?}", args.rate * args.hosts as u64), None),
        (None, Some(s), true) => {
            let over = steps.iter().find(|s| !s.broken.is_empty());
            let bound = over.map_or(String::new(), |o| {
                // Only a step the pipeline could not keep up with bounds the capacity.
                let bounded = o.stored_rate() < step::STORED_SHARE * o.offered();
                format!(
                    " ({}); while it was offered {:.0}/s the pipeline stored {:.0}/s{}",
                    o.broken.join("; "),
                    o.offered(),
                    o.stored_rate(),
                    if bounded { ", an upper bound" } else { "" }
                )
            });
            (
                format!(
                    "capacity (last rate held): {:.0} events/s offered ({} hosts x {}/s); the next step, x{}, broke the SLO{bound}",
                    s.offered(),
                    args.hosts,
                    s.rate_per_host,
                    args.factor
                ),
                Some(s.offered()),
            )
        }
        (None, Some(s), false) => (
            format!(
                "capacity: at least {:.0} events/s (no step broke the SLO within --max-steps {}; raise it)",
                s.offered(),
                args.max_steps
            ),
            Some(s.offered()),
        ),
        (None, None, _) => (
            format!(
                "capacity: below the first step's {} events/s (lower --rate)",
                args.rate * args.hosts as u64
            ),
            None,
        ),
    }
}

fn write_report(
    rig: &Rig,
    args: &LoadTestArgs,
    slo: &Slo,
    steps: &[Step],
    total_secs: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let shape = match args.soak {
        Some(d) => format!("soak at {}/s per host for {d:?}", args.rate),
        None => format!(
            "ramp from {}/s per host, x{} every {:?}, at most {} steps",
            args.rate, args.factor, args.step, args.max_steps
        ),
    };
    report.line(format!(
        "load: {} hosts (sidecars) -> {} collectors -> ClickHouse {}, {} shards (Distributed tables), all on loopback; {shape}; {total_secs:.0} s in all",
        args.hosts, args.collectors, rig.version, args.shards
    ));
    report.line(format!(
        "  SLO of a step: 0 events lost, duplicated or dropped by a sidecar; p99 ingest request latency <= {:?} (collectors' histogram, interpolated within its bucket); lag <= {:?} when the feeds stop (events sent but not yet in ClickHouse, in seconds of the offered rate) and >= 90% of the step's events stored while it ran; >= 95% of the target actually offered",
        slo.p99, slo.lag
    ));
    for (i, s) in steps.iter().enumerate() {
        report.line(format!("  step {}: {}", i + 1, s.summary()));
    }
    let (line, cap) = capacity(args, steps);
    report.line(format!("  {line}"));
    let per_shard = rig.rows_per_shard()?;
    report.line(format!(
        "  rows per shard, last step (each step's events are deleted once counted, to bound the disk): {per_shard:?}"
    ));
    let rss = rig.peak_rss();
    report.line(format!(
        "  peak RSS (VmHWM): {}",
        rss.iter()
            .map(|(n, m)| format!(
                "{n} {}",
                m.map_or("?".to_owned(), |m| format!("{m:.0} MiB"))
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let lost: u64 = steps.iter().map(|s| s.lost + s.duplicated).sum();
    report.set(
        "load",
        json!({
            "hosts": args.hosts, "collectors": args.collectors, "shards": args.shards,
            "clickhouse_version": rig.version,
            "mode": if args.soak.is_some() { "soak" } else { "ramp" },
            "step_secs": args.soak.unwrap_or(args.step).as_secs_f64(),
            "factor": args.factor,
            "slo": {"p99_secs": slo.p99.as_secs_f64(), "lag_secs": slo.lag.as_secs_f64(), "stored_share": step::STORED_SHARE, "offered_share": 0.95},
            "steps": steps.iter().map(Step::json).collect::<Vec<_>>(),
            "capacity_per_sec": cap.map(|c| round(c, 0)),
            "capacity": line,
            "rows_per_shard": per_shard,
            "peak_rss_mib": rss.iter().map(|(n, m)| json!({"process": n, "mib": m.map(|m| round(m, 0))})).collect::<Vec<_>>(),
        }),
    );
    report.goal(
        "events lost",
        "0 (counted in ClickHouse against what the feeds sent)".to_owned(),
        lost.to_string(),
        Some(lost == 0),
    );
    Ok(())
}
