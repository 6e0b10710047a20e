//! Sidecar ingest as apps do it: N clients, each on its own connection (a Unix stream socket,
//! or its own UDP socket), each writing **one NDJSON line per request**: one `write(2)` per
//! event on the socket, one datagram per event over UDP. The sidecar runs in this process on
//! the runtime `profwatch agent` uses (two tokio workers), reads, parses, enriches, validates,
//! batches (5000 events or 1 s), compresses and fsyncs into its spool.
//!
//! Each measurement runs the clients flat out; after a warm-up, a window is timed and the
//! events that reached the spool during it are counted (`spooled_events`; the spool lags the
//! listener by at most one open batch at both ends of the window, so over a 5 s window the
//! error is a few percent). Also reported: the sidecar threads' CPU (every runtime thread is
//! named `pw-sidecar`), events per sidecar CPU-second (what a core buys, independent of the
//! other load on a shared machine), and over UDP the share of datagrams the kernel dropped
//! before the sidecar read them. The clients share the machine with the sidecar, as apps do.
//!
//! A stream pushes back, so flat-out clients measure the sidecar's rate. UDP does not: flat-out
//! senders take the CPU from the sidecar and the kernel drops what it cannot queue. So UDP is
//! also measured with paced clients, the total rate raised x1.5 per step from `UDP_START` until
//! more than 1% of the datagrams are lost; the last rate held is the UDP figure.
//!
//! `cargo bench -p profwatch-sidecar --bench sidecar`; environment: `CLIENTS` (default
//! `1,8,32`), `TRANSPORTS` (`uds,udp`), `ROUNDS` (3), `WARMUP_MS` (1000), `WINDOW_MS` (5000),
//! `UDP_START` (10000 events/s).

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use profwatch_model::{ndjson, RequestEvent};
use profwatch_sidecar::{Metrics, Sidecar, SidecarConfig};
use profwatch_testkit::bench::{env_u64, median, thread_cpu_by_name};

/// The name of every thread of the sidecar's runtime.
const THREAD: &str = "pw-sidecar";
/// Distinct lines each client cycles through.
const LINES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Uds,
    Udp,
}

/// A sidecar on its own runtime, stopped when dropped.
struct Running {
    metrics: Arc<Metrics>,
    socket: PathBuf,
    udp: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_sidecar() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = SidecarConfig::new(
        "http://127.0.0.1:9",
        dir.path().join("agent.sock"),
        dir.path().join("spool"),
    )
    .expect("config");
    cfg.udp = Some("127.0.0.1:0".parse().expect("address"));
    cfg.spool_max_bytes = 8 << 30;
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(THREAD.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(THREAD)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let sidecar = Sidecar::start(cfg).await.expect("sidecar");
                let udp = sidecar.udp_addr().expect("udp address");
                let _ = ready_tx.send((
                    sidecar.metrics().clone(),
                    sidecar.socket_path().to_owned(),
                    udp,
                ));
                let _ = stop_rx.await;
            });
            rt.shutdown_timeout(Duration::from_secs(1));
        })
        .expect("sidecar thread");
    let (metrics, socket, udp) = ready_rx.recv().expect("sidecar started");
    Running {
        metrics,
        socket,
        udp,
        stop: Some(stop_tx),
        thread: Some(thread),
        _dir: dir,
    }
}

/// `LINES` NDJSON lines of client `c`, each with its newline.
fn lines(c: usize) -> Vec<Vec<u8>> {
    let now = profwatch_model::timefmt::now_ns();
    (0..LINES)
        .map(|i| {
            let e = RequestEvent {
                ts: now - i as i64 * 1000,
                service: "checkout".into(),
                endpoint: ["GET /cart/{id}", "POST /orders", "GET /users/{id}"][i % 3].into(),
                build: format!("build-{}", (c + i) % 4),
                dc: String::new(),
                host: String::new(),
                status: 200,
                cpu_ns: 1_000_000 + i as u64 % 977,
                instructions: None,
                wall_ns: 2_000_000,
                weight: 1.0,
                labels: [("new_ranker".to_owned(), "on".to_owned())].into(),
            };
            ndjson::to_line(&e, false).into_bytes()
        })
        .collect()
}

/// A client's connection: its own Unix stream, or its own UDP socket.
enum Conn {
    Uds(UnixStream),
    Udp(UdpSocket),
}

impl Conn {
    fn open(transport: Transport, sidecar: &Running) -> Conn {
        match transport {
            Transport::Uds => Conn::Uds(UnixStream::connect(&sidecar.socket).expect("connect")),
            Transport::Udp => {
                let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
                s.connect(sidecar.udp).expect("connect");
                Conn::Udp(s)
            }
        }
    }

    /// One event: one `write(2)` or one datagram. A send the kernel refuses is not counted.
    fn send(&mut self, line: &[u8]) -> bool {
        match self {
            Conn::Uds(s) => s.write_all(line).is_ok(),
            Conn::Udp(s) => s.send(line).is_ok(),
        }
    }
}

/// Writes one line per request until `stop`, flat out or at `rate` events/s (paced every
/// millisecond), adding to `sent` every event written.
fn client(
    mut conn: Conn,
    lines: &[Vec<u8>],
    rate: Option<f64>,
    go: &Barrier,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    go.wait();
    let started = Instant::now();
    let mut total = 0u64;
    let mut next = lines.iter().cycle();
    while !stop.load(Ordering::Relaxed) {
        let due = rate.map_or(total + 64, |r| (started.elapsed().as_secs_f64() * r) as u64);
        let mut n = 0u64;
        while total + n < due {
            if let Some(line) = next.next() {
                n += u64::from(conn.send(line));
            }
            if n.is_multiple_of(64) && stop.load(Ordering::Relaxed) {
                break;
            }
        }
        total += n;
        sent.fetch_add(n, Ordering::Relaxed);
        if rate.is_some() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    spooled: u64,
    received: u64,
    sent: u64,
    cpu_ns: u64,
}

impl Mark {
    fn now(metrics: &Metrics, sent: &AtomicU64) -> Mark {
        let s = metrics.snapshot("", "");
        Mark {
            at: Instant::now(),
            spooled: s.spooled_events,
            received: s.received,
            sent: sent.load(Ordering::Relaxed),
            cpu_ns: thread_cpu_by_name(THREAD),
        }
    }
}

/// One timed window.
#[derive(Debug, Clone, Copy)]
struct Round {
    /// Events the clients sent per second.
    offered: f64,
    /// Events into the spool per second.
    rate: f64,
    /// Sidecar CPU, cores.
    cores: f64,
    /// Events into the spool per sidecar CPU-second.
    per_cpu_sec: f64,
    /// Share of the events sent that the sidecar never received.
    lost: f64,
}

/// `clients` clients, flat out or at `rate` events/s in all; one window timed after a warm-up.
fn round(transport: Transport, sidecar: &Running, clients: usize, rate: Option<f64>) -> Round {
    let (warmup, window) = (
        Duration::from_millis(env_u64("WARMUP_MS", 1000)),
        Duration::from_millis(env_u64("WINDOW_MS", 5000)),
    );
    let stop = AtomicBool::new(false);
    let sent = AtomicU64::new(0);
    let go = Barrier::new(clients + 1);
    let per_client: Vec<Vec<Vec<u8>>> = (0..clients).map(lines).collect();
    let (a, b) = std::thread::scope(|s| {
        let each = rate.map(|r| r / clients as f64);
        for l in &per_client {
            let (stop, sent, go) = (&stop, &sent, &go);
            let conn = Conn::open(transport, sidecar);
            s.spawn(move || client(conn, l, each, go, stop, sent));
        }
        go.wait();
        std::thread::sleep(warmup);
        let a = Mark::now(&sidecar.metrics, &sent);
        std::thread::sleep(window);
        let b = Mark::now(&sidecar.metrics, &sent);
        stop.store(true, Ordering::Relaxed);
        (a, b)
    });
    settle(&sidecar.metrics);
    let secs = (b.at - a.at).as_secs_f64();
    let spooled = (b.spooled - a.spooled) as f64;
    let cpu = (b.cpu_ns.saturating_sub(a.cpu_ns)) as f64 / 1e9;
    let sent = (b.sent - a.sent) as f64;
    Round {
        offered: sent / secs,
        rate: spooled / secs,
        cores: cpu / secs,
        per_cpu_sec: spooled / cpu.max(1e-9),
        lost: (1.0 - (b.received - a.received) as f64 / sent.max(1.0)).max(0.0),
    }
}

/// Waits until everything received is spooled (the open batch closes after 1 s), so that the
/// next round starts from an idle sidecar; warns if it does not within 10 s.
fn settle(metrics: &Metrics) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = metrics.snapshot("", "");
        let dropped: u64 = s.dropped.iter().map(|(_, n)| n).sum();
        if s.spooled_events + dropped >= s.received {
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "warning: {} events received, {} spooled, {dropped} dropped",
                s.received, s.spooled_events
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Flat-out clients: `rounds` windows on a fresh sidecar, one table row.
fn flat_out(t: Transport, clients: usize, rounds: u64) {
    let sidecar = start_sidecar();
    let rs: Vec<Round> = (0..rounds)
        .map(|_| round(t, &sidecar, clients, None))
        .collect();
    let rates: Vec<f64> = rs.iter().map(|r| r.rate).collect();
    let (lo, hi) = rates.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
        (lo.min(*r), hi.max(*r))
    });
    // A stream pushes back instead of losing: what is in flight is not lost.
    let lost = match t {
        Transport::Uds => "-".to_owned(),
        Transport::Udp => format!(
            "{:.1}%",
            100.0 * median(rs.iter().map(|r| r.lost).collect())
        ),
    };
    println!(
        "{:<4} flat out {clients:>3} | {:>7.0} ({lo:.0}-{hi:.0}) | {:.2} | {:.0} | {lost}",
        format!("{t:?}").to_lowercase(),
        median(rates.clone()),
        median(rs.iter().map(|r| r.cores).collect()),
        median(rs.iter().map(|r| r.per_cpu_sec).collect()),
    );
}

/// UDP clients paced at a total rate raised x1.5 per step from `UDP_START` (10000/s) until more
/// than 1% of the datagrams are lost or the clients cannot offer the rate; one table row with
/// the last rate held.
fn udp_ramp(clients: usize) {
    let sidecar = start_sidecar();
    let mut rate = env_u64("UDP_START", 10_000) as f64;
    let mut held: Option<(f64, Round)> = None;
    let mut broke = String::from("no step broke within 12 steps");
    for _ in 0..12 {
        let r = round(Transport::Udp, &sidecar, clients, Some(rate));
        if r.offered < 0.95 * rate {
            broke = format!("the clients offered only {:.0}/s of {rate:.0}/s", r.offered);
            break;
        }
        if r.lost > 0.01 {
            broke = format!("{rate:.0}/s lost {:.1}%", 100.0 * r.lost);
            break;
        }
        held = Some((rate, r));
        rate *= 1.5;
    }
    match held {
        Some((rate, r)) => println!(
            "udp  paced    {clients:>3} | {:>7.0} held at {rate:.0}/s offered, {:.2}% lost; next: {broke} | {:.2} | {:.0} | {:.2}%",
            r.rate,
            100.0 * r.lost,
            r.cores,
            r.per_cpu_sec,
            100.0 * r.lost,
        ),
        None => println!("udp  paced    {clients:>3} | none held: {broke} | - | - | -"),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rounds = env_u64("ROUNDS", 3).max(1);
    let clients: Vec<usize> = list("CLIENTS", "1,8,32")
        .iter()
        .filter_map(|c| c.parse::<usize>().ok())
        .map(|c| c.max(1))
        .collect();
    let transports = list("TRANSPORTS", "uds,udp");
    println!(
        "sidecar ingest, one NDJSON line per request, each client on its own connection; \
         {} cores, load average {} at the start; {rounds} rounds of {} ms after {} ms of warm-up",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average(),
        env_u64("WINDOW_MS", 5000),
        env_u64("WARMUP_MS", 1000),
    );
    println!("transport clients | events/s into the spool, median (min-max) | sidecar CPU, cores | events per sidecar CPU-second | events lost before the sidecar");
    for t in &transports {
        for &n in &clients {
            match t.as_str() {
                "uds" => flat_out(Transport::Uds, n, rounds),
                "udp" => flat_out(Transport::Udp, n, rounds),
                _ => {}
            }
        }
        if t == "udp" {
            for &n in &clients {
                udp_ramp(n);
            }
        }
    }
    println!("load average at the end: {}", load_average());
}
