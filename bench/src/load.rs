//! `profwatch-bench load`: a sustained load test of the scale-out deployment on loopback.
//!
//! It starts a ClickHouse cluster of `--shards` servers (one shard each, no replication), then
//! `--collectors` `profwatch server --clickhouse-cluster` processes (collector i enters through
//! shard i mod shards), then `--hosts` simulated hosts: each is a `profwatch agent` sidecar
//! (alternating between the collectors) fed NDJSON events over its Unix socket by a thread of
//! this process at `--rate` events/s. After `--duration` the feeds stop; the bench waits until
//! the sidecars have shipped everything, then counts the rows in ClickHouse against what the
//! feeds wrote.
//!
//! Reported: events/s sent and stored, the p99 of the collectors' `ingest_request_seconds`
//! (the upper bound of the histogram bucket that holds it), the peak RSS (VmHWM) of every
//! process, the sidecars' drop counters, and events lost (sent minus stored; must be 0).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use profwatch_e2e::clickhouse_cluster::{LocalCluster, CLUSTER};
use serde_json::json;

use crate::server::{tail, Server, StoreArgs};
use crate::sys::round;
use crate::Report;

/// The database of the load test on the cluster.
const DATABASE: &str = "pw_load";
/// How long the sidecars get to ship what they hold once the feeds stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, clap::Args)]
pub struct LoadTestArgs {
    /// How long the load is held, e.g. 10m, 90s.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Simulated hosts, each with its own sidecar.
    #[arg(long, default_value_t = 8)]
    pub hosts: usize,
    /// Events per second each host sends.
    #[arg(long, default_value_t = 2_500)]
    pub rate: u64,
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

pub fn run(bin: &Path, args: &LoadTestArgs, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.hosts > 0 && args.collectors > 0 && args.shards > 0,
        "--hosts, --collectors and --shards must be at least 1"
    );
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
    eprintln!(
        "collectors: {}",
        collectors
            .iter()
            .map(|c| c.url.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut sidecars = Vec::new();
    for h in 0..args.hosts {
        let collector = &collectors[h % collectors.len()].url;
        sidecars.push(start_sidecar(bin, work.path(), h, collector)?);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    eprintln!(
        "holding {} events/s ({} hosts x {}) for {:?}...",
        args.rate * args.hosts as u64,
        args.hosts,
        args.rate,
        args.duration
    );
    let started = Instant::now();
    let feeds: Vec<_> = sidecars
        .iter()
        .enumerate()
        .map(|(h, s)| {
            let (socket, stop, sent, rate) =
                (s.socket.clone(), stop.clone(), sent.clone(), args.rate);
            std::thread::spawn(move || feed(h, &socket, rate, &stop, &sent))
        })
        .collect();
    let mut last_report = Instant::now();
    while started.elapsed() < args.duration {
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(30) {
            last_report = Instant::now();
            eprintln!(
                "  {:>4.0} s: {} events sent",
                started.elapsed().as_secs_f64(),
                sent.load(Ordering::Relaxed)
            );
        }
        for s in &mut sidecars {
            if let Some(status) = s.child.try_wait()? {
                bail!(
                    "a sidecar exited with {status} during the load; log {}:\n{}",
                    s.log.display(),
                    tail(&s.log)
                );
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut feed_errors = Vec::new();
    for f in feeds {
        match f.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => feed_errors.push(format!("{e:#}")),
            Err(_) => feed_errors.push("a feed thread panicked".to_owned()),
        }
    }
    let held = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    if !feed_errors.is_empty() {
        bail!("feeding the sidecars failed: {}", feed_errors.join("; "));
    }

    eprintln!("feeds stopped after {held:.0} s with {sent} events sent; draining the sidecars...");
    let count_sql = format!("SELECT count() FROM {DATABASE}.events");
    let drain_started = Instant::now();
    let stored = loop {
        let n: u64 = cluster
            .query(0, &count_sql)
            .map_err(anyhow::Error::msg)?
            .parse()
            .context("reading the event count")?;
        if n >= sent || drain_started.elapsed() > DRAIN_LIMIT {
            break n;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let drained = drain_started.elapsed().as_secs_f64();
    let per_shard: Vec<u64> = (0..args.shards)
        .map(|i| {
            cluster
                .query(i, &format!("SELECT count() FROM {DATABASE}.events_local"))
                .map_err(anyhow::Error::msg)
                .and_then(|s| s.parse().context("a count"))
        })
        .collect::<anyhow::Result<_>>()?;

    // Latency and peaks, read before anything is stopped.
    let http = crate::client::http_client()?;
    let mut buckets: BTreeMap<String, f64> = BTreeMap::new();
    for c in &collectors {
        let text = http
            .get(format!("{}/metrics", c.url))
            .send()
            .and_then(|r| r.text())
            .context("reading a collector's /metrics")?;
        for (le, n) in histogram(&text, "profwatch_ingest_request_seconds_bucket") {
            *buckets.entry(le).or_default() += n;
        }
    }
    let p99 = bucket_quantile(&buckets, 0.99);
    let p50 = bucket_quantile(&buckets, 0.50);
    let mut sidecar_drops = 0.0;
    for s in &sidecars {
        let text = http
            .get(format!("http://{}/metrics", s.metrics))
            .send()
            .and_then(|r| r.text())
            .context("reading a sidecar's /metrics")?;
        sidecar_drops += counter_sum(&text, "profwatch_agent_events_dropped");
    }
    let mut rss = Vec::new();
    for (i, c) in collectors.iter().enumerate() {
        rss.push((format!("collector {i}"), peak_rss_mib(c.pid())));
    }
    for (i, s) in sidecars.iter().enumerate() {
        rss.push((format!("sidecar {i}"), peak_rss_mib(s.child.id())));
    }
    for (i, pid) in cluster.server_pids().into_iter().enumerate() {
        rss.push((format!("clickhouse shard {}", i + 1), peak_rss_mib(pid)));
    }

    let lost = sent.saturating_sub(stored);
    let duplicated = stored.saturating_sub(sent);
    report.line(format!(
        "load: {} hosts (sidecars) -> {} collectors -> ClickHouse {version}, {} shards (Distributed tables), held {held:.0} s",
        args.hosts, args.collectors, args.shards
    ));
    report.line(format!(
        "  events sent {sent} ({:.0}/s), stored {stored} ({:.0}/s over the load), lost {lost}, duplicated {duplicated}; drained {drained:.1} s after the feeds stopped",
        sent as f64 / held,
        stored as f64 / held,
    ));
    report.line(format!("  rows per shard: {per_shard:?}"));
    report.line(format!(
        "  ingest request latency (collectors' histogram, bucket upper bounds): p50 <= {} ms, p99 <= {} ms",
        fmt_ms(p50),
        fmt_ms(p99)
    ));
    report.line(format!("  sidecar events dropped: {sidecar_drops}"));
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
    report.set(
        "load",
        json!({
            "hosts": args.hosts, "collectors": args.collectors, "shards": args.shards,
            "clickhouse_version": version,
            "rate_per_host": args.rate, "held_secs": round(held, 1),
            "events_sent": sent, "events_stored": stored, "events_lost": lost,
            "events_duplicated": duplicated,
            "sent_per_sec": round(sent as f64 / held, 0),
            "stored_per_sec": round(stored as f64 / held, 0),
            "drain_secs": round(drained, 1),
            "rows_per_shard": per_shard,
            "ingest_p50_ms_at_most": p50.map(|s| round(s * 1e3, 1)),
            "ingest_p99_ms_at_most": p99.map(|s| round(s * 1e3, 1)),
            "sidecar_events_dropped": sidecar_drops,
            "peak_rss_mib": rss.iter().map(|(n, m)| json!({"process": n, "mib": m.map(|m| round(m, 0))})).collect::<Vec<_>>(),
        }),
    );
    report.goal(
        "events lost",
        "0 (counted in ClickHouse against what the feeds sent)".to_owned(),
        lost.to_string(),
        Some(lost == 0 && duplicated == 0),
    );
    drop(sidecars);
    for c in collectors {
        c.terminate(Duration::from_secs(60))?;
    }
    drop(cluster);
    if lost > 0 {
        bail!("{lost} events were lost");
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

/// Writes `rate` events/s as NDJSON to the sidecar's socket until `stop`, paced in 10 ms
/// steps, counting every event written.
fn feed(
    host: usize,
    socket: &Path,
    rate: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> anyhow::Result<()> {
    let mut stream = std::io::BufWriter::with_capacity(
        1 << 16,
        UnixStream::connect(socket)
            .with_context(|| format!("connecting to {}", socket.display()))?,
    );
    let started = Instant::now();
    let mut written = 0u64;
    let mut seq = host as u64 * 1_000_003;
    let mut line = String::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
        while written < due {
            seq = seq
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let endpoint = (seq >> 33) % 50;
            let cpu = 200_000 + (seq >> 40) % 2_000_000;
            line.clear();
            use std::fmt::Write as _;
            let _ = writeln!(
                line,
                r#"{{"ts":{},"service":"load","endpoint":"GET /e{endpoint}","build":"100","status":200,"cpu_ns":{cpu},"wall_ns":{}}}"#,
                profwatch_model::timefmt::now_ns(),
                cpu * 3
            );
            stream
                .write_all(line.as_bytes())
                .with_context(|| format!("writing to {}", socket.display()))?;
            written += 1;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        stream.flush().context("flushing the socket")?;
        std::thread::sleep(Duration::from_millis(10));
    }
    stream.flush().context("flushing the socket")?;
    Ok(())
}

/// `(le, cumulative count)` of every bucket of a Prometheus histogram in `text`.
fn histogram(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let le = rest.split("le=\"").nth(1)?.split('"').next()?.to_owned();
            let n: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            Some((le, n))
        })
        .collect()
}

/// The upper bound (seconds) of the bucket holding quantile `q`, `None` without data or when
/// it is past the last finite bucket.
fn bucket_quantile(buckets: &BTreeMap<String, f64>, q: f64) -> Option<f64> {
    let mut bounds: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(le, n)| {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            (bound, *n)
        })
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = bounds.last()?.1;
    if total <= 0.0 {
        return None;
    }
    bounds
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(b, _)| *b)
        .filter(|b| b.is_finite())
}

fn counter_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn fmt_ms(s: Option<f64>) -> String {
    s.map_or_else(|| "?".to_owned(), |s| format!("{:.1}", s * 1e3))
}

/// Peak resident set (VmHWM) of a process, MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_cumulative_buckets() {
        let text = "# TYPE x histogram\n\
            x_bucket{le=\"0.001\"} 10\n\
            x_bucket{le=\"0.002\"} 90\n\
            x_bucket{le=\"0.004\"} 99\n\
            x_bucket{le=\"0.008\"} 100\n\
            x_bucket{le=\"+Inf\"} 100\n";
        let b: BTreeMap<String, f64> = histogram(text, "x_bucket").into_iter().collect();
        assert_eq!(bucket_quantile(&b, 0.5), Some(0.002));
        assert_eq!(bucket_quantile(&b, 0.99), Some(0.004));
        assert_eq!(bucket_quantile(&BTreeMap::new(), 0.99), None);
    }
}
