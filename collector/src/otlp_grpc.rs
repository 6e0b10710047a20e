//! OTLP/gRPC profiles: `opentelemetry.proto.collector.profiles.v1development.ProfilesService/
//! Export` on its own listener (`--otlp-grpc ADDR`, off by default; 4317 is the usual port).
//!
//! tonic provides the gRPC framing, status codes and the gzip/zstd message encodings
//! (`server::Grpc` with a codec that hands the message over as bytes, so the request is read
//! by the same bounded decoder as OTLP/HTTP, never decoded whole); hyper serves HTTP/2,
//! with the server's TLS certificate (the same one, reloaded with it on SIGHUP) when TLS is on.
//! No tonic transport, router or codegen.
//!
//! Each call: the path must be `Export` (else `UNIMPLEMENTED`); the bearer token in the
//! `authorization` metadata decides the tenant as for HTTP (`UNAUTHENTICATED`,
//! `PERMISSION_DENIED`), and those refusals count against the caller's address in the same
//! failed-authentication limiter as HTTP's (`http::auth_failures`: a blocked address gets
//! `RESOURCE_EXHAUSTED` on both listeners before its token is looked at); the call takes an ingest slot of the shared budget before its message
//! is read, and the message's bytes as they arrive (at most `max_body_bytes`, within
//! `body_timeout`) and again inflated (at most `max_decompressed_bytes`, tonic's cap) are
//! granted from the same reservation; then it is converted and stored like an OTLP/HTTP
//! request. Refusals carry the codes of `http::otlp::grpc_code`: `INVALID_ARGUMENT` for a
//! malformed request, `RESOURCE_EXHAUSTED` for one too large, `UNAVAILABLE` (retry) when the
//! server or the store is busy.
//!
//! Invariant, as for HTTP: on shutdown the listener closes first, every connection is told to
//! finish its calls in flight (HTTP/2 GOAWAY), and [`serve`] returns once all have.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{Request, Response};
use bytes::{Buf, Bytes};
use hyper::body::{Body as HttpBody, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use profwatch_model::Tenant;
use profwatch_profile::compress::{Allowance, Refusal};
use profwatch_profile::otlp::proto::ExportProfilesServiceResponse;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::http::budget::{refused, Reservation, ADMISSION_WAIT};
use crate::http::error::ApiError;
use crate::http::otlp::{convert, grpc_code, response, Encoding};
use crate::http::profiles::{blocking, counted, store_batches_once};
use crate::http::{auth, auth_failures, AppState};

/// The one method served.
pub const PATH: &str =
    "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export";

/// Serves OTLP/gRPC on `listener` (TLS when `tls` is set; its config must offer `h2`) until
/// `stop` turns true, then drains the connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
) {
    let handshake_timeout = state.cfg.header_timeout;
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an OTLP/gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let (state, tls, done) = (state.clone(), tls.clone(), done_rx.clone());
        let mut stop = stop.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, peer.ip(), state, &mut stop).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer.ip(), state, &mut stop).await;
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
    drop(done_rx);
    done_tx.closed().await;
}

/// Resolves once `stop` says true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Binds `addr`; the caller logs the bound address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn serve_connection<I>(
    io: I,
    peer: IpAddr,
    state: Arc<AppState>,
    stop: &mut watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(call(state, peer, req).await) }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "OTLP/gRPC connection ended with an error");
                }
                break;
            }
            () = stopped(stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a call was admitted with: its tenant and its share of the budget.
#[derive(Debug, Clone)]
struct Admitted {
    tenant: Tenant,
    res: Shared,
}

/// A reservation shared by the body as it arrives and the call after it.
#[derive(Debug, Clone)]
struct Shared(Arc<Mutex<Reservation>>);

impl Shared {
    /// Grants `bytes` or refuses at once: for async code, which must not wait.
    fn try_grant(&self, bytes: usize) -> Result<(), Refusal> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .grant(bytes)
    }
}

/// May wait for bytes (see `Reservation::grant_or_wait`): for blocking threads only.
impl Allowance for Shared {
    fn grant(&mut self, bytes: usize) -> Result<(), Refusal> {
        let mut res = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        Allowance::grant(&mut *res, bytes)
    }
}

/// A refusal as a gRPC status.
fn status(e: &ApiError) -> Status {
    Status::new(grpc_code(e), e.to_string())
}

/// One call: checks the caller's address and the path and the token, takes a slot, and hands
/// the call to tonic.
async fn call(
    state: Arc<AppState>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> Response<tonic::body::Body> {
    if let Some(left) = state.auth_failures.blocked(peer, Instant::now()) {
        return Status::resource_exhausted(format!(
            "{}; retry in {}s",
            auth_failures::blocked_message(),
            left.as_secs().max(1)
        ))
        .into_http();
    }
    if req.uri().path() != PATH {
        return Status::unimplemented(format!(
            "{} is not served here; this listener serves {PATH}",
            req.uri().path()
        ))
        .into_http();
    }
    let tenant = match auth::tenant(&state.cfg, req.headers()) {
        Ok(t) => t,
        Err(e) => {
            state.auth_failures.failed(peer, Instant::now());
            return status(&counted(&state, e)).into_http();
        }
    };
    let res = match state.budget.admit(ADMISSION_WAIT).await {
        Ok(r) => Shared(Arc::new(Mutex::new(r))),
        Err(e) => return status(&counted(&state, e)).into_http(),
    };
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(Admitted {
        tenant,
        res: res.clone(),
    });
    let body = BudgetedBody {
        inner: body,
        res,
        read: 0,
        max: state.cfg.max_body_bytes,
        deadline: Box::pin(tokio::time::sleep(state.cfg.body_timeout)),
        timeout: state.cfg.body_timeout,
    };
    let mut grpc = tonic::server::Grpc::new(RawCodec)
        .max_decoding_message_size(state.cfg.max_decompressed_bytes)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd);
    grpc.unary(Export { state }, Request::from_parts(parts, body))
        .await
}

/// The request body, its bytes granted from the call's reservation as they arrive, refused
/// past `max` bytes or after the body deadline.
struct BudgetedBody {
    inner: Incoming,
    res: Shared,
    read: usize,
    max: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
}

impl HttpBody for BudgetedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            let e = ApiError::RequestTimeout(format!(
                "the request did not arrive within {}s (limits.body_timeout)",
                self.timeout.as_secs()
            ));
            return Poll::Ready(Some(Err(status(&e))));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(e))) => {
                return Poll::Ready(Some(Err(Status::cancelled(format!(
                    "reading the request: {e}"
                )))))
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let n = data.len();
            self.read += n;
            if self.read > self.max {
                let e = ApiError::PayloadTooLarge(format!(
                    "the request is larger than {} bytes; send smaller batches",
                    self.max
                ));
                return Poll::Ready(Some(Err(status(&e))));
            }
            if let Err(why) = self.res.try_grant(n) {
                return Poll::Ready(Some(Err(status(&refused(why)))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

/// Hands the (inflated) message over as bytes and encodes the answer with prost.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportProfilesServiceResponse;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = ExportProfilesServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("encoding the answer: {e}")))
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `Export`: converts and stores the message as OTLP/HTTP does.
#[derive(Debug, Clone)]
struct Export {
    state: Arc<AppState>,
}

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = ExportProfilesServiceResponse;
    type Future =
        Pin<Box<dyn Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send>>;

    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move {
            let admitted = req
                .extensions()
                .get::<Admitted>()
                .cloned()
                .ok_or_else(|| Status::internal("the call was not admitted"))?;
            let bytes = req.into_inner();
            export(&state, admitted, bytes)
                .await
                .map(tonic::Response::new)
                .map_err(|e| status(&e))
        })
    }
}

async fn export(
    state: &Arc<AppState>,
    admitted: Admitted,
    bytes: Bytes,
) -> Result<ExportProfilesServiceResponse, ApiError> {
    let Admitted { tenant, mut res } = admitted;
    // The inflated message tonic holds (the bytes as sent were granted as they arrived).
    res.try_grant(bytes.len())
        .map_err(|why| counted(state, refused(why)))?;
    let st = state.clone();
    let (converted, _res) = blocking(move || {
        let converted = convert(&st, &bytes, Encoding::Protobuf, &mut res)?;
        Ok((converted, res))
    })
    .await
    .map_err(|e| counted(state, e))?;
    let answer = response(&converted);
    store_batches_once(state, &tenant, None, converted.batches).await?;
    Ok(answer)
}
