//! The data model shared by every profwatch component.
//!
//! - [`event`]: the request event, its limits and their validation.
//! - [`wire`]: the protobuf mirror of `proto/profwatch/v1/events.proto`.
//! - [`ndjson`]: the NDJSON form of the same event.
//! - [`timefmt`]: unix-or-RFC 3339 timestamps as the APIs accept them.
//! - [`query`]: the shapes of the query API's requests and answers.
//! - [`scan`]: protobuf messages read field by field, to count before decoding.
//! - [`hello`]: the hello frame an SDK registers its process with at the sidecar.
//! - [`memory`]: a process's memory sample (rss, pss, shared and private pages, swap).
//! - [`sketch`]: the weighted quantile sketch both stores use for p50/p90/p99.

// The property tests hold the decoders to a peak heap use (`profwatch_testkit::alloc`).
#[cfg(test)]
#[global_allocator]
static ALLOC: profwatch_testkit::alloc::PeakAlloc = profwatch_testkit::alloc::PeakAlloc;

pub mod event;
pub mod faults;
pub mod functions;
pub mod hello;
pub mod memory;
pub mod ndjson;
pub mod percent;
pub mod profile;
pub mod query;
pub mod regression;
pub mod rng;
pub mod scan;
pub mod secret;
pub mod sketch;
pub mod timefmt;
#[cfg(feature = "tls")]
pub mod tls;
pub mod wire;

pub use event::{Labels, Limits, RequestEvent, Tenant, ValidationError};
