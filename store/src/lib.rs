//! The `Store` trait and its two backends: [`embedded`] (one node, its own files) and
//! [`clickhouse`] (one server or a sharded cluster; the default-on `clickhouse` feature).
//!
//! Invariant shared by both: [`Store::write`] returns `Ok` only once every event of the batch is
//! durable (fsynced to the embedded WAL, or acknowledged by ClickHouse), and a batch is written
//! whole or not at all as far as a later successful retry can tell. Queries never see another
//! tenant's rows. The contract suite in `store/tests/contract/` runs against both.

#[cfg(feature = "clickhouse")]
pub mod clickhouse;
pub mod embedded;
pub(crate) mod stack_ids;

use std::time::Duration;

use async_trait::async_trait;
use profwatch_model::functions::{FunctionQuery, FunctionTotals};
use profwatch_model::memory::{MemoryPoint, MemoryQuery, MemoryRow, MemorySample, ProcessMemory};
use profwatch_model::profile::{ProfileBatch, ProfileQuery, StackProfile};
use profwatch_model::query::{
    BuildSummary, BuildsQuery, CostSamples, CostSamplesQuery, EndpointSeries, EndpointStats,
    EndpointsQuery, SeriesQuery, ServiceSummary, ServicesQuery, TimeRange, TimeseriesPoint,
    TimeseriesQuery,
};
use profwatch_model::regression::RegressionRecord;
use profwatch_model::{RequestEvent, Tenant};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Too much is queued; the caller should retry after the given time. Nothing was written.
    #[error("the store is behind ({what}); retry in {retry_after:?}")]
    Overloaded {
        what: &'static str,
        retry_after: Duration,
    },
    /// The backend cannot be reached or refused the write; nothing was acknowledged.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// A local file could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// Stored data failed a checksum or could not be decoded.
    #[error("corrupt data in {path}: {detail}")]
    Corrupt { path: String, detail: String },
    /// A query the backend rejected.
    #[error("query failed: {0}")]
    Query(String),
    /// The store's configuration cannot work: a name it refuses, a cluster the server does not
    /// have, a database laid out for the other mode. Retrying cannot help; the operator must
    /// change the configuration.
    #[error("the store's configuration is unusable: {0}")]
    Config(String),
    /// The store has been shut down.
    #[error("the store is shutting down")]
    Closed,
    /// A batch larger than the store can hold in one durable record; retrying cannot help.
    #[error("the batch is {size} bytes once encoded; the store takes at most {limit} per batch")]
    TooLarge { size: usize, limit: usize },
    /// A write-ahead log file failed in a way that forbids further writes to it (a failed
    /// fsync, or a torn append that could not be cut off). Writes are refused until restart.
    #[error("the write-ahead log {path} failed ({detail}); writes are refused until the server restarts")]
    WalFailed { path: String, detail: String },
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        StoreError::Io {
            op,
            path: path.display().to_string(),
            source,
        }
    }
}

/// What a write with an idempotency key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The batch is now durable.
    Stored,
    /// A batch with this key was stored before (within the dedupe window); nothing was written.
    Duplicate,
}

/// Where request events live. Both backends implement it; the server holds an `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// A short name for logs and `/metrics` (`embedded`, `clickhouse`).
    fn kind(&self) -> &'static str;

    /// Stores a validated batch for `tenant`; returns once it is durable.
    async fn write(&self, tenant: &Tenant, events: Vec<RequestEvent>) -> Result<(), StoreError>;

    /// Like [`Store::write`], but a batch whose `key` was already stored for this tenant (within
    /// the store's dedupe window) is not stored again. Senders that retry (the sidecar) set a
    /// key per batch so that a retry after a lost acknowledgement does not count twice.
    async fn write_once(
        &self,
        tenant: &Tenant,
        key: &str,
        events: Vec<RequestEvent>,
    ) -> Result<Written, StoreError>;

    /// Services with requests in the range, by name.
    async fn services(&self, q: &ServicesQuery) -> Result<Vec<ServiceSummary>, StoreError>;

    /// Per endpoint (and group), the weighted request count and cost distributions.
    async fn endpoints(&self, q: &EndpointsQuery) -> Result<Vec<EndpointStats>, StoreError>;

    /// The same figures per time bucket for one endpoint.
    async fn timeseries(&self, q: &TimeseriesQuery) -> Result<Vec<TimeseriesPoint>, StoreError>;

    /// Every endpoint's timeseries (no grouping) of a service, in one pass over the data; sorted
    /// by endpoint, points by time.
    async fn endpoint_series(&self, q: &SeriesQuery) -> Result<Vec<EndpointSeries>, StoreError>;

    /// The builds of a service in the range, with first and last request and weighted count.
    async fn builds(&self, q: &BuildsQuery) -> Result<Vec<BuildSummary>, StoreError>;

    /// Every request's cost for the analyzer, grouped per (endpoint, build), sorted by both.
    async fn cost_samples(&self, q: &CostSamplesQuery) -> Result<Vec<CostSamples>, StoreError>;

    /// Inserts a regression record, or replaces the one with the same tenant and id.
    async fn put_regression(&self, r: &RegressionRecord) -> Result<(), StoreError>;

    /// A tenant's regression records, newest `last_seen` first.
    async fn regressions(&self, tenant: &Tenant) -> Result<Vec<RegressionRecord>, StoreError>;

    /// Stores stack-sample batches for `tenant`; returns once they are durable. Each distinct
    /// stack is kept once under its content hash; samples refer to the hash.
    async fn write_profiles(
        &self,
        tenant: &Tenant,
        batches: Vec<ProfileBatch>,
    ) -> Result<(), StoreError>;

    /// Like [`Store::write_profiles`], but batches whose `key` was already stored for this
    /// tenant are not stored again (as [`Store::write_once`]; the keys of events and profiles
    /// share one namespace per tenant, so callers keep them apart).
    async fn write_profiles_once(
        &self,
        tenant: &Tenant,
        key: &str,
        batches: Vec<ProfileBatch>,
    ) -> Result<Written, StoreError>;

    /// Samples matching the query, summed per (label set, stack) over the range.
    async fn profile(&self, q: &ProfileQuery) -> Result<StackProfile, StoreError>;

    /// Per (bucket, function), the self and total samples and CPU time of the stack samples
    /// `q` selects, sorted by bucket, then function (`profwatch_model::functions`). Both stores
    /// read their per-function rollups where the range allows and samples elsewhere; the
    /// answer is the same either way.
    async fn function_costs(&self, q: &FunctionQuery) -> Result<Vec<FunctionTotals>, StoreError>;

    /// Stores validated memory samples for `tenant`; returns once they are durable. With a
    /// `key`, a write whose key was already stored for this tenant (within the dedupe window)
    /// is answered `Duplicate` and not stored again (as [`Store::write_once`]; the embedded
    /// store keeps memory keys apart from the others, ClickHouse in the one namespace).
    async fn write_memory(
        &self,
        tenant: &Tenant,
        key: Option<&str>,
        samples: Vec<MemorySample>,
    ) -> Result<Written, StoreError>;

    /// One service's memory per process in the range, one row per group, sorted by group.
    async fn memory(&self, q: &MemoryQuery) -> Result<Vec<MemoryRow>, StoreError>;

    /// The same per bucket of `step` ns (buckets start at its multiples), sorted by bucket,
    /// then group; buckets without samples are left out.
    async fn memory_timeseries(
        &self,
        q: &MemoryQuery,
        step: i64,
    ) -> Result<Vec<MemoryPoint>, StoreError>;

    /// The services of `tenant` with memory samples in `range`, sorted (a service the sidecar
    /// watches may send no requests).
    async fn memory_services(
        &self,
        tenant: &Tenant,
        range: TimeRange,
    ) -> Result<Vec<String>, StoreError>;

    /// Each process's means per bucket of `step` ns (`q.group_by` is not used), sorted by
    /// bucket, build, host and pid: the units the analysis compares builds on.
    async fn memory_processes(
        &self,
        q: &MemoryQuery,
        step: i64,
    ) -> Result<Vec<ProcessMemory>, StoreError>;

    /// What every answer should carry as a warning: data the store knows it cannot show (for
    /// example a segment that failed its checksum). Empty when all is well.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Takes or renews the lease `name` for `holder` until `ttl` from now, if it is free,
    /// expired, or already `holder`'s; `true` when `holder` has it. Collectors sharing one store
    /// use it so that scheduled work runs once per interval across the fleet. The embedded store
    /// has one process by construction and always grants it.
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let _ = (name, holder, ttl);
        Ok(true)
    }

    /// `Ok` when the store can serve reads and writes now.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Batches accepted but not yet written (the embedded writer's queue; 0 where none).
    fn queue_depth(&self) -> usize {
        0
    }

    /// Stacks that met another stack's id since the store opened and took the next one (the
    /// embedded store compares frames on insert; ClickHouse does not, and says 0). Anything
    /// but 0 is worth a look: with a keyed 128-bit id it should never happen.
    fn stack_collisions(&self) -> u64 {
        0
    }

    /// Housekeeping the server runs periodically (hourly): retention where the backend does not
    /// enforce it by itself. The embedded store does its own in the background.
    async fn maintain(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Flushes everything and stops background work. Writes after this fail with `Closed`.
    async fn shutdown(&self) -> Result<(), StoreError>;
}
