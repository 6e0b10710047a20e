//! The sidecar, `profwatch agent`: one per host. Apps write events (and the SDK's profiles) to
//! a local Unix socket or UDP port; the sidecar validates and enriches them, samples the stacks
//! of the local processes it is told to profile, batches everything into a disk spool, and
//! ships the spool to the collector.
//!
//! ```text
//!  app ─ UDS / UDP ─► listener ─► enrich + validate ─┐
//!                     (bad input counted, dropped alone)
//!  other processes ─ perf ─► profiler (per label set, every interval)
//!  other processes, and apps that said hello ─ /proc/PID/smaps_rollup ─► memory watch
//!                                                    ▼
//!                                                 batcher ─► spool (fsync) ─► shipper ─► collector
//!                                                            (deleted only after a 2xx,
//!                                                             or 400/413/422 ─► dead-letter/)
//! ```
//!
//! - [`config`]: flags and the validated [`SidecarConfig`].
//! - [`listener`]: the local protocol (JSON lines, `0x00`-framed protobuf batches,
//!   `0x01`-framed profiles parsed by [`relay`], `0x02`-framed hellos that register the sending
//!   process with the memory watch).
//! - [`enrich`]: host, dc, `kernel` and `cpu_model`.
//! - `profiler`: `--profile-pid` / `--profile-name`, the sampling of other processes.
//! - [`memory`]: memory readings of local processes (`smaps_rollup`, else `smaps`); its watch
//!   thread always runs, so hellos register processes without any flag.
//! - [`batcher`]: batches by size or time, compressed; one record per profile.
//! - [`spool`]: the bounded, checksummed disk spool.
//! - [`shipper`]: delivery with retries, backoff, `Retry-After`, `Idempotency-Key`, and
//!   setting aside a batch that keeps failing.
//! - [`dead_letter`]: the bounded folder of batches the collector refused for good.
//! - [`metrics`] and [`status`]: `/metrics`, `/status`, `profwatch agent status`.
//!
//! Invariants of the whole: the sidecar never exits or panics on local input; an event or
//! profile that reached the spool is delivered, or kept in the dead-letter folder, or dropped
//! and counted under a reason, even across a collector outage, a refusing collector or proxy
//! (401, 403, 404, ...) or a sidecar crash; only the open batch (at most `batch_max_wait`
//! of events) and the profiler's current interval are lost if the sidecar is killed.

pub mod batcher;
pub mod config;
pub mod dead_letter;
pub mod enrich;
mod error;
pub mod listener;
pub mod memory;
pub mod metrics;
mod procs;
mod profiler;
pub mod relay;
pub mod shipper;
pub mod spool;
pub mod status;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use profwatch_model::Limits;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use config::{
    AgentArgs, AgentCommand, MemoryConfig, ProfileConfig, RetryPolicy, RunArgs, SidecarConfig,
    StatusArgs,
};
pub use error::SidecarError;
pub use metrics::{DropReason, Metrics, Refusal, RejectReason, StatusSnapshot};

/// Chunks of events buffered between the listeners and the batcher.
const CHANNEL_CHUNKS: usize = 256;

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    metrics: Arc<Metrics>,
    spool: Arc<spool::Spool>,
    socket: PathBuf,
    udp_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stop_input: watch::Sender<bool>,
    stop_output: watch::Sender<bool>,
    listeners: Vec<JoinHandle<()>>,
    profiler: Option<profiler::Profiler>,
    memory: memory::Watcher,
    batcher: JoinHandle<()>,
    shipper: JoinHandle<()>,
    http: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct HttpState {
    metrics: Arc<Metrics>,
    host: String,
    collector: String,
}

impl Sidecar {
    /// Opens the spool, binds every listener and starts the tasks on the current runtime.
    pub async fn start(cfg: SidecarConfig) -> Result<Sidecar, SidecarError> {
        let metrics = Arc::new(Metrics::new());
        let (spool, dead_letters) = open_storage(&cfg, metrics.clone()).await?;
        let enricher = enrich::Enricher::new(&cfg.host, cfg.dc.as_deref(), cfg.system_labels);
        let (tx, rx) = mpsc::channel::<batcher::Input>(CHANNEL_CHUNKS);
        let profiler = start_profiler(&cfg, &enricher, &tx, &metrics).await?;
        let memory = start_memory(&cfg, &tx, &metrics).await?;
        let ingest = Arc::new(listener::Ingest {
            enricher,
            limits: Limits::default(),
            metrics: metrics.clone(),
            max_line_bytes: cfg.max_line_bytes,
            max_frame_bytes: cfg.max_frame_bytes,
        });
        let unix = listener::bind_unix(&cfg.socket, cfg.socket_mode, cfg.socket_group)?;
        let udp = match cfg.udp {
            Some(addr) => Some(listener::bind_udp(addr).await?),
            None => None,
        };
        let udp_addr = udp
            .as_ref()
            .map(|s| local_addr(s.local_addr(), "udp", &cfg.udp))
            .transpose()?;
        let http_listener =
            match cfg.metrics {
                Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(
                    |source| SidecarError::Listen {
                        what: "metrics port",
                        addr: addr.to_string(),
                        source,
                    },
                )?),
                None => None,
            };
        let metrics_addr = http_listener
            .as_ref()
            .map(|l| local_addr(l.local_addr(), "metrics port", &cfg.metrics))
            .transpose()?;
        let shipper = shipper::Shipper::new(&cfg, spool.clone(), dead_letters, metrics.clone())
            .map_err(|e| SidecarError::Task {
                task: "http client",
                message: e.to_string(),
            })?;

        let (stop_input, stop_in_rx) = watch::channel(false);
        let (stop_output, stop_out_rx) = watch::channel(false);
        let mut listeners = vec![tokio::spawn(listener::serve_unix(
            unix,
            ingest.clone(),
            tx.clone(),
            memory.registrar(),
            stop_in_rx.clone(),
        ))];
        if let Some(udp) = udp {
            listeners.push(tokio::spawn(listener::serve_udp(
                udp,
                ingest.clone(),
                tx.clone(),
                stop_in_rx.clone(),
            )));
        }
        drop(tx);
        let batcher = tokio::spawn(
            batcher::Batcher {
                max_events: cfg.batch_max_events,
                max_wait: cfg.batch_max_wait,
                spool: spool.clone(),
                metrics: metrics.clone(),
            }
            .run(rx),
        );
        let shipper = tokio::spawn(shipper.run(stop_out_rx.clone()));
        let http = http_listener.map(|listener| {
            let state = Arc::new(HttpState {
                metrics: metrics.clone(),
                host: cfg.host.clone(),
                collector: cfg.events_url.clone(),
            });
            tokio::spawn(serve_status(listener, state, stop_out_rx))
        });
        Ok(Sidecar {
            metrics,
            spool,
            socket: cfg.socket,
            udp_addr,
            metrics_addr,
            stop_input,
            stop_output,
            listeners,
            profiler,
            memory,
            batcher,
            shipper,
            http,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn spool(&self) -> &Arc<spool::Spool> {
        &self.spool
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The bound UDP address (when `--udp` was given).
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// The bound metrics address (when the port is on).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops reading input, spools everything received, then stops shipping. What is spooled
    /// and not yet acknowledged ships on the next start.
    pub async fn shutdown(self) -> Result<(), SidecarError> {
        let _ = self.stop_input.send(true);
        for l in self.listeners {
            join("listener", l).await?;
        }
        if let Some(profiler) = self.profiler {
            tokio::task::spawn_blocking(move || profiler.stop())
                .await
                .map_err(|e| SidecarError::Task {
                    task: "profiler",
                    message: e.to_string(),
                })??;
        }
        let memory = self.memory;
        tokio::task::spawn_blocking(move || memory.stop())
            .await
            .map_err(|e| SidecarError::Task {
                task: "memory watch",
                message: e.to_string(),
            })??;
        join("batcher", self.batcher).await?;
        let _ = self.stop_output.send(true);
        join("shipper", self.shipper).await?;
        if let Some(http) = self.http {
            join("metrics port", http).await?;
        }
        let _ = std::fs::remove_file(&self.socket);
        Ok(())
    }
}

/// Opens the spool, then its dead-letter folder.
async fn open_storage(
    cfg: &SidecarConfig,
    metrics: Arc<Metrics>,
) -> Result<(Arc<spool::Spool>, Arc<dead_letter::DeadLetters>), SidecarError> {
    let dir = cfg.spool_dir.clone();
    let (max, dl_max, dl_files) = (
        cfg.spool_max_bytes,
        cfg.dead_letter_max_bytes,
        cfg.dead_letter_max_files,
    );
    let opened = tokio::task::spawn_blocking(move || {
        let spool = spool::Spool::open(&dir, max, metrics.clone())?;
        let letters = dead_letter::DeadLetters::open(&dir, dl_max, dl_files, metrics)?;
        Ok::<_, SidecarError>((Arc::new(spool), Arc::new(letters)))
    })
    .await
    .map_err(|e| SidecarError::Task {
        task: "spool open",
        message: e.to_string(),
    })??;
    Ok(opened)
}

async fn join(task: &'static str, handle: JoinHandle<()>) -> Result<(), SidecarError> {
    handle.await.map_err(|e| SidecarError::Task {
        task,
        message: e.to_string(),
    })
}

/// The profiler of other processes, when any is configured (it opens perf events, so it starts
/// on a blocking thread).
async fn start_profiler(
    cfg: &SidecarConfig,
    enricher: &enrich::Enricher,
    tx: &mpsc::Sender<batcher::Input>,
    metrics: &Arc<Metrics>,
) -> Result<Option<profiler::Profiler>, SidecarError> {
    if !cfg.profile.is_enabled() {
        return Ok(None);
    }
    let (profile, enricher, tx, m) = (
        cfg.profile.clone(),
        enricher.clone(),
        tx.clone(),
        metrics.clone(),
    );
    let started =
        tokio::task::spawn_blocking(move || profiler::Profiler::start(profile, &enricher, tx, m))
            .await
            .map_err(|e| SidecarError::Task {
                task: "profiler start",
                message: e.to_string(),
            })??;
    Ok(Some(started))
}

/// The memory watch, always: apps register with it by hello even when no flag names a
/// process (it reads `/proc`, so it starts on a blocking thread).
async fn start_memory(
    cfg: &SidecarConfig,
    tx: &mpsc::Sender<batcher::Input>,
    metrics: &Arc<Metrics>,
) -> Result<memory::Watcher, SidecarError> {
    let (memory, host, dc, tx, m) = (
        cfg.memory.clone(),
        cfg.host.clone(),
        cfg.dc.clone().unwrap_or_default(),
        tx.clone(),
        metrics.clone(),
    );
    let started =
        tokio::task::spawn_blocking(move || memory::Watcher::start(memory, host, dc, tx, m))
            .await
            .map_err(|e| SidecarError::Task {
                task: "memory watch start",
                message: e.to_string(),
            })??;
    Ok(started)
}

/// The address a listener got, or why it could not be read.
fn local_addr(
    got: std::io::Result<SocketAddr>,
    what: &'static str,
    asked: &Option<SocketAddr>,
) -> Result<SocketAddr, SidecarError> {
    got.map_err(|source| SidecarError::Listen {
        what,
        addr: format!("{asked:?}"),
        source,
    })
}

/// Serves `/metrics` and `/status` until `stop` changes.
async fn serve_status(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    mut stop: watch::Receiver<bool>,
) {
    let app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/status", get(status_page))
        .with_state(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
    if let Err(e) = served {
        tracing::error!("metrics port stopped: {e}");
    }
}

async fn metrics_page(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

async fn status_page(State(state): State<Arc<HttpState>>) -> axum::Json<StatusSnapshot> {
    axum::Json(state.metrics.snapshot(&state.host, &state.collector))
}

/// Runs a sidecar until `shutdown` resolves; prints where it listens on stderr once ready.
pub async fn run(
    cfg: SidecarConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SidecarError> {
    let sidecar = Sidecar::start(cfg).await?;
    eprintln!("profwatch agent socket {}", sidecar.socket_path().display());
    if let Some(addr) = sidecar.udp_addr() {
        eprintln!("profwatch agent udp {addr}");
    }
    if let Some(addr) = sidecar.metrics_addr() {
        eprintln!("profwatch agent metrics on http://{addr}");
    }
    eprintln!("profwatch agent ready");
    shutdown.await;
    tracing::info!("profwatch agent stopping: spooling what it holds");
    sidecar.shutdown().await
}

/// `profwatch agent [status]`: the whole command, for the binary.
pub fn main(args: AgentArgs) -> Result<(), SidecarError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(SidecarError::Runtime)?;
    match args.command {
        Some(AgentCommand::Status(s)) => rt.block_on(async {
            let snapshot = status::fetch(&s.metrics).await?;
            if s.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&snapshot).unwrap_or_default()
                );
            } else {
                print!("{}", status::render(&snapshot));
            }
            Ok(())
        }),
        None => {
            let cfg = args.run.validate()?;
            rt.block_on(run(cfg, shutdown_signal()))
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
