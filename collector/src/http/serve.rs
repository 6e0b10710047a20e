//! Serving the router over HTTP/1.1, as `axum::serve` does, plus what it leaves out: a timer, so
//! that a client must send its request headers within `header_timeout` (hyper then closes the
//! connection). Without it a client could hold a connection open forever by sending its headers
//! a byte at a time. The body has its own deadline (`limits.body_timeout`, see `body`).
//!
//! With TLS the listener speaks only TLS: the handshake must finish within `header_timeout` too,
//! and a client that fails it (plain HTTP, an untrusted or missing client certificate) is
//! dropped before hyper sees a byte.
//!
//! Writes have a deadline too (`limits.write_timeout`): an answer that makes no progress for
//! that long, its client no longer reading, fails its connection, which frees the connection's
//! task and buffers (tokio-io-timeout under TLS and hyper, so it holds for both).
//!
//! Invariant: on shutdown the listener closes first, then every connection is told to finish its
//! request in flight and close, and `serve` returns once all have.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to send its request headers (`header`; also the TLS handshake
/// and an idle keep-alive), and to read any of an answer (`write`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub write: Duration,
}

/// `stream` whose writes fail once one makes no progress for `write`.
fn with_write_deadline(stream: TcpStream, write: Duration) -> Pin<Box<TimeoutStream<TcpStream>>> {
    let mut s = TimeoutStream::new(stream);
    s.set_write_timeout(Some(write));
    Box::pin(s)
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `shutdown` resolves, then
/// drains the connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let header_timeout = timeouts.header;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Handlers and middleware see the peer as axum's `ConnectInfo`.
        let service = TowerToHyperService::new(
            app.clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        );
        let mut stop = stop_rx.clone();
        let done = done_rx.clone();
        let tls = tls.clone();
        let stream = with_write_deadline(stream, timeouts.write);
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, service, header_timeout, &mut stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, header_timeout, &mut stop).await
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
}

/// Serves one connection until it ends, or finishes its request in flight once `stop` says so.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    header_timeout: Duration,
    stop: &mut watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
