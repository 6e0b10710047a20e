//! The profwatch collector: ingest and query over HTTP, in front of a [`store::Store`].
//!
//! - [`analysis`]: the analysis pass (compare builds, record regressions, alert) and compares.
//! - [`config`]: the server's configuration, raw (TOML/env/flags) and validated.
//! - [`http`]: the axum router, auth, body decoding, ingest and query handlers, one error type.
//! - [`store`]: the `Store` trait, the embedded backend and the ClickHouse backend.
//! - [`metrics`]: the Prometheus registry served at `/metrics`.
//! - [`server`]: wiring it together, serving, and graceful shutdown.
//! - [`otlp_grpc`]: OTLP/gRPC profiles on their own listener.

pub mod analysis;
pub mod cache;
pub mod config;
pub mod http;
pub mod metrics;
pub mod otlp_grpc;
pub mod server;
pub mod tls;
