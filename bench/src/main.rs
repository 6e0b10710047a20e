//! `profwatch-bench`: runs the real `profwatch server` and measures it end to end.
//!
//! - `ingest`: events/s through `POST /api/v1/events` (protobuf + gzip, N client threads).
//! - `query`: latency of `/api/v1/endpoints` and `/api/v1/services` over a large data set, cold
//!   (server restarted, page cache dropped) and warm.
//! - `disk`: bytes on disk per stored event.
//! - `flame`: a flame graph of 100k stacks, the server's half (request to the last byte of the
//!   JSON tree) and, in headless Chromium, request to the rendered frame.
//! - `load`: the capacity of the scale-out layout (sidecars, collectors, ClickHouse shards),
//!   found by ramping the offered rate until a step breaks the SLO.
//!
//! See `bench/README.md`.

mod cache;
mod client;
mod flame;
mod functions;
mod gen;
mod load;
mod query;
mod server;
mod sys;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};

use crate::client::PostResult;
use crate::gen::{Profile, Workload};
use crate::server::{ClickHouse, Server, StoreArgs};
use crate::sys::{round, CpuMark, Machine};

/// The project's stated goals.
const GOAL_INGEST_EMBEDDED: f64 = 300_000.0;
const GOAL_INGEST_CLICKHOUSE: f64 = 200_000.0;
const GOAL_ENDPOINTS_SECS: f64 = 1.0;
const GOAL_ENDPOINTS_EVENTS: u64 = 10_000_000;
/// How long a graceful shutdown may take before the run fails.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Parser)]
#[command(
    name = "profwatch-bench",
    version,
    about = "End-to-end benchmarks of profwatch: ingest throughput, query latency, bytes per event"
)]
struct Cli {
    /// The `profwatch` binary [default: `profwatch` next to this executable].
    #[arg(long, global = true)]
    bin: Option<PathBuf>,
    /// Print the results as one JSON document on stdout (progress still goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Keep the scratch directory (data dir and server log) and the ClickHouse database
    /// instead of deleting them.
    #[arg(long, global = true)]
    keep: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Events/s through POST /api/v1/events, verified by counting what was stored.
    Ingest(IngestArgs),
    /// Latency of /api/v1/endpoints and /api/v1/services over a large data set, cold and warm;
    /// bytes/event.
    Query(query::QueryArgs),
    /// Bytes on disk per stored event, after a graceful shutdown (embedded) or OPTIMIZE (ClickHouse).
    Disk(LoadArgs),
    /// A flame graph of 100k distinct stacks, cold and warm: the server's half (request to the
    /// last byte of the JSON tree), then the dashboard's page in headless Chromium (request to
    /// the first frame after the draw).
    Flame(flame::FlameArgs),
    /// top, a function's series and a flame graph of a service over 30 days of stack samples,
    /// with the per-function rollups and without, cold and warm.
    Functions(functions::FunctionsArgs),
    /// Capacity: N hosts with sidecars -> M collectors -> a K-shard ClickHouse cluster started
    /// on loopback; the offered rate is ramped up until a step breaks the SLO (events lost or
    /// dropped, p99 ingest latency, backlog); the last rate held is the capacity.
    Load(load::LoadTestArgs),
}

#[derive(Debug, Clone, Args)]
struct StoreOpt {
    /// Benchmark the ClickHouse store at this HTTP URL (a scratch database pw_bench_<pid> is
    /// created and dropped); without it, the embedded store in a fresh temporary directory.
    #[arg(long)]
    clickhouse_url: Option<String>,
}

#[derive(Debug, Args)]
struct IngestArgs {
    /// Events to send.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Events per request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// `off` starts the server with `--no-rollups` (the embedded store then builds no rollups
    /// at flush and compaction): the ingest pace without their cost.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    rollups: OnOff,
    #[command(flatten)]
    store: StoreOpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// Events to load.
    #[arg(long, default_value_t = 2_000_000)]
    events: u64,
    /// Events per request.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Concurrent client threads.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[command(flatten)]
    store: StoreOpt,
}

/// The human summary and the JSON document, built side by side.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<String>,
    doc: Map<String, Value>,
    goals: Vec<Value>,
}

impl Report {
    fn line(&mut self, s: impl Into<String>) {
        self.lines.push(s.into());
    }
    fn set(&mut self, key: &str, v: Value) {
        self.doc.insert(key.to_owned(), v);
    }
    fn goal(&mut self, name: &str, target: String, measured: String, met: Option<bool>) {
        let verdict = match met {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "not measured at the goal's scale",
        };
        self.line(format!(
            "  goal {name}: {target}; measured {measured} -> {verdict}"
        ));
        self.goals.push(json!({
            "goal": name, "target": target, "measured": measured, "met": met,
        }));
    }
    fn print(mut self, as_json: bool) {
        if as_json {
            self.doc
                .insert("goals".to_owned(), Value::Array(self.goals));
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Object(self.doc)).unwrap_or_default()
            );
        } else {
            for l in &self.lines {
                println!("{l}");
            }
        }
    }
}

/// The `profwatch` binary (and when it was built), after reporting the machine.
fn profwatch_bin(cli: &Cli, report: &mut Report) -> anyhow::Result<(PathBuf, String)> {
    let bin = match &cli.bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .context("locating this executable")?
            .parent()
            .context("this executable has no directory")?
            .join("profwatch"),
    };
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p profwatch` or pass --bin",
            bin.display()
        );
    }
    let machine = Machine::probe();
    report.line(format!(
        "machine: {} cores (nproc), {}, {:.1} GiB RAM, Linux {}; load average {} at the start",
        machine.nproc,
        machine.cpu_model,
        machine.mem_total_gib,
        machine.kernel,
        sys::load_average()
    ));
    report.set("date", json!(sys::today_utc()));
    report.set("machine", machine.json());
    report.set("load_average_start", json!(sys::load_average()));
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| profwatch_model::timefmt::format_rfc3339(d.as_nanos() as i64))
        .unwrap_or_default();
    report.set(
        "bin",
        json!({"path": bin.display().to_string(), "modified": built}),
    );
    Ok((bin, built))
}

/// The store under test, the scratch directory and the binary. With `--keep`, the scratch
/// directory is kept however the run ends (a failed run is the one worth looking at).
#[derive(Debug)]
struct Setup {
    bin: PathBuf,
    store: StoreArgs,
    work: Option<tempfile::TempDir>,
    log: PathBuf,
    clickhouse: Option<ClickHouse>,
    keep: bool,
    /// Whether the server's summaries read rollups (`--no-rollups` when not).
    rollups: bool,
}

impl Setup {
    fn new(cli: &Cli, store: &StoreOpt, report: &mut Report) -> anyhow::Result<Setup> {
        let (bin, built) = profwatch_bin(cli, report)?;
        let work = tempfile::Builder::new()
            .prefix("profwatch-bench-")
            .tempdir()
            .context("creating a scratch directory")?;
        let log = work.path().join("server.log");
        let (store_args, clickhouse) = match &store.clickhouse_url {
            None => {
                let data_dir = work.path().join("data");
                report.line(format!("store: embedded, data dir {}", data_dir.display()));
                report.set(
                    "store",
                    json!({"kind": "embedded", "data_dir": data_dir.display().to_string()}),
                );
                (StoreArgs::Embedded { data_dir }, None)
            }
            Some(url) => {
                let mut ch = ClickHouse::new(url)?;
                ch.keep = cli.keep;
                let version = ch.version()?;
                report.line(format!(
                    "store: ClickHouse {version} at {url}, scratch database {}",
                    ch.database
                ));
                report.set(
                    "store",
                    json!({"kind": "clickhouse", "url": url, "version": version, "database": ch.database}),
                );
                (
                    StoreArgs::ClickHouse {
                        url: url.clone(),
                        database: ch.database.clone(),
                    },
                    Some(ch),
                )
            }
        };
        report.line(format!(
            "server binary: {} (modified {built})",
            bin.display()
        ));
        Ok(Setup {
            bin,
            store: store_args,
            work: Some(work),
            log,
            clickhouse,
            keep: cli.keep,
            rollups: true,
        })
    }

    fn start(&self) -> anyhow::Result<Server> {
        self.start_with(self.rollups)
    }

    /// A server on the same data whose summaries read rollups or, with `false`, raw rows.
    fn start_with(&self, rollups: bool) -> anyhow::Result<Server> {
        let flags: &[&str] = if rollups { &[] } else { &["--no-rollups"] };
        Server::start_with(&self.bin, &self.store, &self.log, flags)
    }

    fn is_embedded(&self) -> bool {
        matches!(self.store, StoreArgs::Embedded { .. })
    }

    fn finish(self) {}
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let (true, Some(work)) = (self.keep, self.work.take()) {
            eprintln!("kept {}", work.keep().display());
        }
    }
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn generate(
    profile: &Profile,
    events: u64,
    batch: usize,
    report: &mut Report,
) -> anyhow::Result<Workload> {
    anyhow::ensure!(events > 0, "--events must be at least 1");
    eprintln!("encoding {events} events in batches of {batch} (protobuf + gzip)...");
    let w = gen::generate(
        profile,
        events,
        batch,
        threads(),
        profwatch_model::timefmt::now_ns(),
    )?;
    let (busiest, busiest_n) = w.busiest();
    eprintln!(
        "  {} batches, {:.1} MB protobuf, {:.1} MB gzip, in {:.1} s",
        w.batches.len(),
        w.raw_bytes as f64 / 1e6,
        w.gzip_bytes as f64 / 1e6,
        w.encode_secs
    );
    report.line(format!(
        "workload: {events} events in {} batches of {batch}; {} services x {} endpoints, {} builds, {} dcs, {} hosts; \
         ts over the last {} h; busiest service {busiest} holds {busiest_n} events ({:.1}%)",
        w.batches.len(),
        profile.services,
        profile.endpoints_per_service,
        profile.builds,
        profile.dcs,
        profile.hosts,
        profile.span_secs / 3600,
        100.0 * busiest_n as f64 / events as f64
    ));
    report.line(format!(
        "  encoded before timing: {:.1} B/event protobuf, {:.1} B/event gzip",
        w.raw_bytes as f64 / events as f64,
        w.gzip_bytes as f64 / events as f64
    ));
    report.set(
        "workload",
        json!({
            "events": events,
            "batch": batch,
            "batches": w.batches.len(),
            "services": profile.services,
            "endpoints_per_service": profile.endpoints_per_service,
            "builds": profile.builds,
            "dcs": profile.dcs,
            "hosts": profile.hosts,
            "span_hours": profile.span_secs / 3600,
            "busiest_service": busiest,
            "busiest_service_events": busiest_n,
            "protobuf_bytes": w.raw_bytes,
            "gzip_bytes": w.gzip_bytes,
            "encode_secs": round(w.encode_secs, 2),
        }),
    );
    Ok(w)
}

/// Sends the workload, reports throughput and latency, and verifies the stored count.
fn load(
    setup: &Setup,
    server: &Server,
    work: &Workload,
    clients: usize,
    what: &str,
    report: &mut Report,
) -> anyhow::Result<PostResult> {
    eprintln!(
        "sending {} events with {clients} client threads...",
        work.events
    );
    let before = CpuMark::now(server.pid());
    let r = client::post_all(&server.url, work, clients, Some(what))?;
    let after = CpuMark::now(server.pid());
    let cores = before.cores_until(&after, r.elapsed.as_secs_f64());
    eprintln!("verifying the stored count through /api/v1/endpoints...");
    let verified = client::verify(&server.url, work, r.acked)?;
    let ms = |s: f64| s * 1e3;
    report.line(format!(
        "{what}: {} events acknowledged in {:.2} s = {:.0} events/s ({clients} clients, from first request to last 200)",
        r.acked,
        r.elapsed.as_secs_f64(),
        r.events_per_sec()
    ));
    report.line(format!(
        "  request latency (200s): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} requests",
        ms(client::percentile(&r.latencies, 50.0)),
        ms(client::percentile(&r.latencies, 99.0)),
        ms(client::percentile(&r.latencies, 100.0)),
        r.latencies.len()
    ));
    report.line(format!(
        "  backpressure: {} of {} batches retried; {} x 429, {} x 503",
        r.retried_batches, r.batches, r.status_429, r.status_503
    ));
    report.line(format!(
        "  CPU (average cores): profwatch server {}, bench client {}, whole machine {} (so {} for everything else); busiest other processes {}",
        cores["profwatch_server"], cores["bench_client"], cores["machine_busy"], cores["everything_else"], cores["top_other_processes"]
    ));
    report.line(format!(
        "  verified: /api/v1/endpoints counts exactly {verified} events (= acknowledged, per service)"
    ));
    let goal = if setup.is_embedded() {
        GOAL_INGEST_EMBEDDED
    } else {
        GOAL_INGEST_CLICKHOUSE
    };
    let doc = json!({
        "events_acknowledged": r.acked,
        "events_verified": verified,
        "clients": clients,
        "seconds": round(r.elapsed.as_secs_f64(), 3),
        "events_per_sec": round(r.events_per_sec(), 0),
        "batches": r.batches,
        "batches_retried": r.retried_batches,
        "responses_429": r.status_429,
        "responses_503": r.status_503,
        "latency_ms": {
            "p50": round(ms(client::percentile(&r.latencies, 50.0)), 2),
            "p99": round(ms(client::percentile(&r.latencies, 99.0)), 2),
            "max": round(ms(client::percentile(&r.latencies, 100.0)), 2),
        },
        "cpu_cores": cores,
        "goal_events_per_sec": goal,
    });
    report.set(what, doc);
    Ok(r)
}

/// Stops the server gracefully and reports bytes per event.
fn disk(setup: &Setup, server: Server, events: u64, report: &mut Report) -> anyhow::Result<()> {
    let took = server.terminate(SHUTDOWN_TIMEOUT)?;
    match (&setup.store, &setup.clickhouse) {
        (StoreArgs::Embedded { data_dir }, _) => {
            let (total, parts) = sys::dir_size(data_dir)?;
            let segments = sys::count_files(&data_dir.join("segments"), ".parquet");
            let breakdown: Vec<String> = parts
                .iter()
                .map(|(n, b)| format!("{n} {:.1} MB", *b as f64 / 1e6))
                .collect();
            report.line(format!(
                "disk (embedded, after SIGTERM; shutdown took {:.1} s): {total} bytes for {events} events = {:.2} bytes/event ({}; {segments} parquet segments)",
                took.as_secs_f64(),
                total as f64 / events as f64,
                breakdown.join(", ")
            ));
            // Event segments per column, from their footers.
            let (columns, other) = sys::parquet_columns(&data_dir.join("segments"), "seg-")?;
            for (name, bytes) in &columns {
                report.line(format!(
                    "  segments.{name}: {:.2} bytes/event",
                    *bytes as f64 / events as f64
                ));
            }
            report.line(format!(
                "  segments outside column data (footers, series dictionary): {:.2} bytes/event",
                other as f64 / events as f64
            ));
            report.set(
                "disk",
                json!({
                    "bytes": total,
                    "events": events,
                    "bytes_per_event": round(total as f64 / events as f64, 2),
                    "by_dir": parts.iter().map(|(n, b)| (n.clone(), json!(b))).collect::<Map<_, _>>(),
                    "parquet_segments": segments,
                    "shutdown_secs": round(took.as_secs_f64(), 2),
                    "segments_bytes_per_event_by_column": columns
                        .iter()
                        .map(|(n, b)| (n.clone(), json!(round(*b as f64 / events as f64, 3))))
                        .collect::<Map<_, _>>(),
                    "segments_bytes_per_event_outside_columns": round(other as f64 / events as f64, 3),
                }),
            );
        }
        (StoreArgs::ClickHouse { .. }, Some(ch)) => {
            let t0 = Instant::now();
            let (bytes, rows, parts) = ch.disk_usage()?;
            if rows != events {
                bail!("ClickHouse holds {rows} rows in events, {events} were acknowledged");
            }
            report.line(format!(
                "disk (ClickHouse, after OPTIMIZE TABLE FINAL in {:.1} s): {bytes} bytes (system.parts bytes_on_disk, {parts} active parts) for {events} events = {:.2} bytes/event",
                t0.elapsed().as_secs_f64(),
                bytes as f64 / events as f64
            ));
            let server::DiskBreakdown { tables, columns } = ch.disk_breakdown()?;
            let per_event = |b: u64| round(b as f64 / events as f64, 2);
            for (table, b) in &tables {
                report.line(format!("  table {table}: {:.2} bytes/event", per_event(*b)));
            }
            for (column, ty, b) in &columns {
                report.line(format!(
                    "  events.{column} ({ty}): {:.2} bytes/event",
                    per_event(*b)
                ));
            }
            report.set(
                "disk",
                json!({
                    "bytes": bytes,
                    "events": events,
                    "bytes_per_event": per_event(bytes),
                    "active_parts": parts,
                    "optimize_secs": round(t0.elapsed().as_secs_f64(), 2),
                    "bytes_per_event_by_table": tables.iter().map(|(t, b)| (t.clone(), json!(per_event(*b)))).collect::<Map<_, _>>(),
                    "events_bytes_per_event_by_column": columns.iter().map(|(c, ty, b)| (c.clone(), json!({"type": ty, "bytes_per_event": per_event(*b)}))).collect::<Map<_, _>>(),
                }),
            );
        }
        (StoreArgs::ClickHouse { .. }, None) => bail!("no ClickHouse connection"),
        (StoreArgs::ClickHouseCluster { .. }, _) => {
            bail!("disk usage is measured on one ClickHouse server, not a cluster")
        }
    }
    Ok(())
}

fn ingest(cli: &Cli, a: &IngestArgs, report: &mut Report) -> anyhow::Result<()> {
    report.set("command", json!("ingest"));
    let mut setup = Setup::new(cli, &a.store, report)?;
    setup.rollups = a.rollups == OnOff::On;
    report.line(format!("rollups: {:?}", a.rollups).to_lowercase());
    let work = generate(&Profile::mixed(), a.events, a.batch, report)?;
    let server = setup.start()?;
    let r = load(&setup, &server, &work, a.clients, "ingest", report)?;
    let (goal, name) = if setup.is_embedded() {
        (GOAL_INGEST_EMBEDDED, "ingest embedded")
    } else {
        (GOAL_INGEST_CLICKHOUSE, "ingest ClickHouse")
    };
    report.goal(
        name,
        format!(">= {goal:.0} events/s"),
        format!("{:.0} events/s", r.events_per_sec()),
        Some(r.events_per_sec() >= goal),
    );
    disk(&setup, server, r.acked, report)?;
    setup.finish();
    Ok(())
}

fn disk_cmd(cli: &Cli, a: &LoadArgs, report: &mut Report) -> anyhow::Result<()> {
    report.set("command", json!("disk"));
    let setup = Setup::new(cli, &a.store, report)?;
    let work = generate(&Profile::mixed(), a.events, a.batch, report)?;
    let server = setup.start()?;
    let r = load(&setup, &server, &work, a.clients, "load", report)?;
    disk(&setup, server, r.acked, report)?;
    setup.finish();
    Ok(())
}

fn load_cmd(cli: &Cli, a: &load::LoadTestArgs, report: &mut Report) -> anyhow::Result<()> {
    report.set("command", json!("load"));
    let (bin, built) = profwatch_bin(cli, report)?;
    report.line(format!(
        "profwatch binary: {} (modified {built})",
        bin.display()
    ));
    load::run(&bin, a, report)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut report = Report::default();
    let result = match &cli.command {
        Cmd::Ingest(a) => ingest(&cli, a, &mut report),
        Cmd::Query(a) => query::run(&cli, a, &mut report),
        Cmd::Disk(a) => disk_cmd(&cli, a, &mut report),
        Cmd::Flame(a) => flame::run(&cli, a, &mut report),
        Cmd::Functions(a) => functions::run(&cli, a, &mut report),
        Cmd::Load(a) => load_cmd(&cli, a, &mut report),
    };
    if let Err(e) = &result {
        report.set("error", json!(format!("{e:#}")));
    }
    report.line(format!("load average at the end: {}", sys::load_average()));
    report.set("load_average_end", json!(sys::load_average()));
    report.print(cli.json);
    result
}
