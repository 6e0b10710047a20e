//! Running the collector: open the configured store, serve the API, and on shutdown stop
//! accepting, finish in-flight requests, and flush the store.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use profwatch_analyzer::alert::{DeliveryConfig, Dispatcher};

use crate::analysis::{AnalysisConfig, RegressionTracker};
use crate::cache::QueryCache;
use crate::config::{Config, StoreConfig};
use crate::http::{self, AppState};
use crate::metrics::{AnalysisPasses, Metrics};
use profwatch_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_store::{Store, StoreError};

/// Why the server could not run. Each message holds its cause (none is also a `source`, so a
/// chain printed with `{:#}` says each thing once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error("opening the store: {0}")]
    Store(StoreError),
    #[error("listening on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error("TLS: {0}")]
    Tls(crate::tls::TlsError),
    #[error(transparent)]
    Alerts(#[from] profwatch_analyzer::alert::AlertError),
    #[error("reading the alert sinks' CA file {path}: {error}")]
    AlertCa {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

impl From<StoreError> for ServerError {
    fn from(e: StoreError) -> Self {
        ServerError::Store(e)
    }
}

impl From<crate::tls::TlsError> for ServerError {
    fn from(e: crate::tls::TlsError) -> Self {
        ServerError::Tls(e)
    }
}

/// Opens the store the configuration names.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match &cfg.store {
        StoreConfig::Embedded { dir } => {
            let mut ec = EmbeddedConfig::new(dir.clone());
            ec.retention = cfg.retention;
            ec.repair = cfg.repair;
            ec.rollups = cfg.rollups;
            let dir = dir.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(ec))
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("opening {}: {e}", dir.display()))
                })??;
            Arc::new(store)
        }
        StoreConfig::ClickHouse {
            url,
            database,
            user,
            password,
            ca_file,
            cluster,
            replicated,
        } => Arc::new(
            ClickHouseStore::connect(ClickHouseConfig {
                url: url.clone(),
                database: database.clone(),
                user: user.clone(),
                password: password.0.clone(),
                ca_file: ca_file.clone(),
                retention: cfg.retention,
                cluster: cluster.clone(),
                replicated: *replicated,
                rollups: cfg.rollups,
            })
            .await?,
        ),
    })
}

/// Serves until `shutdown` resolves, then drains and flushes. `on_listening` gets the bound
/// address (useful with port 0).
pub async fn run(
    cfg: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<(), ServerError> {
    let tls = cfg.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let store = open_store(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|error| ServerError::Bind {
            addr: cfg.listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let grpc_listener = match cfg.otlp_grpc {
        Some(addr) => {
            let listener = crate::otlp_grpc::bind(addr)
                .await
                .map_err(|error| ServerError::Bind { addr, error })?;
            let bound = listener.local_addr().map_err(ServerError::Serve)?;
            tracing::info!(addr = %bound, tls = cfg.tls.is_some(), "OTLP/gRPC listening");
            Some(listener)
        }
        None => None,
    };
    let grpc_tls = match (&cfg.tls, &tls) {
        (Some(settings), Some((_, cert))) if grpc_listener.is_some() => {
            Some(crate::tls::acceptor_with(settings, cert.clone(), &[b"h2"])?)
        }
        _ => None,
    };
    let shutdown_timeout = cfg.shutdown_timeout;
    let cfg_tls = cfg.tls.is_some();
    let header_timeout = cfg.header_timeout;
    let write_timeout = cfg.write_timeout;
    let alerts = if cfg.analysis.alerts.is_empty() {
        None
    } else {
        Some(
            Dispatcher::start(
                cfg.analysis.alerts.clone(),
                DeliveryConfig {
                    base_url: cfg.analysis.public_url(cfg.tls.is_some(), addr),
                    extra_roots_pem: match &cfg.analysis.alert_ca_file {
                        None => Vec::new(),
                        Some(path) => {
                            std::fs::read(path).map_err(|error| ServerError::AlertCa {
                                path: path.clone(),
                                error,
                            })?
                        }
                    },
                    ..Default::default()
                },
            )
            .map_err(ServerError::Alerts)?,
        )
    };
    let analyzer = RegressionTracker::new(
        store.clone(),
        AnalysisConfig {
            window: cfg.analysis.window,
            compare: cfg.analysis.compare.clone(),
            memory_step: cfg.analysis.memory_step,
            ..Default::default()
        },
        alerts,
    );
    let cache = Arc::new(QueryCache::new(cfg.query_cache_bytes, cfg.query_cache_ttl));
    let mut metrics = Metrics::new();
    metrics.register_cache(&cache.stats);
    let schedule = spawn_schedule(&cfg, analyzer.clone(), metrics.analysis_passes());
    let budget = http::budget::Budget::new(cfg.max_inflight_bytes, cfg.max_concurrent_ingest);
    let state = Arc::new(AppState {
        budget,
        cfg: Arc::new(cfg),
        store: store.clone(),
        metrics: Arc::new(metrics),
        analyzer,
        cache,
        auth_failures: Default::default(),
    });
    tracing::info!(%addr, store = store.kind(), tls = cfg_tls, "profwatch server listening");
    let housekeeping = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                every.tick().await;
                if let Err(e) = store.maintain().await {
                    tracing::warn!(error = %e, "store housekeeping failed; will retry");
                }
            }
        })
    };
    let (stop_grpc, stopped) = tokio::sync::watch::channel(false);
    let grpc = grpc_listener.map(|listener| {
        tokio::spawn(crate::otlp_grpc::serve(
            listener,
            grpc_tls,
            state.clone(),
            stopped,
        ))
    });
    let (acceptor, reloader) = match tls {
        Some((acceptor, cert)) => (Some(acceptor), crate::tls::reload_on_sighup(cert)),
        None => (None, None),
    };
    on_listening(addr);
    let shutdown = async move {
        shutdown.await;
        let _ = stop_grpc.send(true);
    };
    http::serve::serve(
        listener,
        acceptor,
        http::router(state),
        http::serve::Timeouts {
            header: header_timeout,
            write: write_timeout,
        },
        shutdown,
    )
    .await;
    if let Some(grpc) = grpc {
        let _ = grpc.await;
    }
    housekeeping.abort();
    if let Some(r) = reloader {
        r.abort();
    }
    if let Some(s) = schedule {
        s.abort();
    }
    tracing::info!("shutting down: flushing the store");
    match tokio::time::timeout(shutdown_timeout, store.shutdown()).await {
        Ok(Ok(())) => tracing::info!("store flushed"),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "store shutdown failed; the WAL keeps what was acknowledged")
        }
        Err(_) => tracing::error!("store shutdown timed out; the WAL keeps what was acknowledged"),
    }
    Ok(())
}

/// Runs an analysis pass every `analysis.interval` (none when it is zero).
/// `passes` counts the passes this process ran, by outcome.
fn spawn_schedule(
    cfg: &Config,
    analyzer: RegressionTracker,
    passes: AnalysisPasses,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = cfg.analysis.interval;
    if every.is_zero() {
        return None;
    }
    let tenants = cfg.tenants();
    // Who this process is, for the lease that makes a pass run once per interval across
    // collectors sharing a store.
    let holder = format!(
        "{}:{}:{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        std::process::id(),
        profwatch_model::timefmt::now_ns()
    );
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match analyzer.lease("analysis", &holder, every * 2).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!("another collector holds the analysis lease");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not take the analysis lease; skipping this interval");
                    continue;
                }
            }
            match analyzer.run_pass(&tenants).await {
                Ok(r) => {
                    passes.done(true);
                    tracing::info!(
                        services = r.services.len(),
                        new = r.new_regressions,
                        incidents = r.new_incidents,
                        resolved = r.resolved_regressions,
                        "analysis pass done"
                    )
                }
                Err(e) => {
                    passes.done(false);
                    tracing::warn!(error = %e, "analysis pass failed; will retry at the next interval")
                }
            }
        }
    }))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
