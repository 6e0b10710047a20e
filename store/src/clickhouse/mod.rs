//! The ClickHouse backend of [`Store`].
//!
//! Invariants:
//! - [`Store::write`] sends one batch as ONE `INSERT` (RowBinary over HTTP) and returns `Ok`
//!   only after ClickHouse acknowledged it (`Insert::end` succeeded); any failure before that
//!   is [`StoreError::Unavailable`]. An insert of at most `max_insert_block_size` rows (about a
//!   million) becomes one part per daily partition it touches, each visible whole or not at
//!   all; a batch whose events span two UTC days lands as two parts. Nothing deduplicates a
//!   retried batch whose acknowledgement was lost (non-replicated MergeTree).
//!   At most [`INSERT_PERMITS`] inserts run at once; a
//!   batch that cannot start within [`PERMIT_WAIT`] is refused with
//!   [`StoreError::Overloaded`] and nothing is written.
//! - Every query filters on `tenant = ?` first (the leading column of the sort key), and on the
//!   half-open range `ts >= from AND ts < to` (unix ns). All aggregation happens in ClickHouse.
//! - No client-supplied value is ever spliced into SQL: everything goes through `bind()`. The
//!   only spliced pieces are constants of these modules, the group-by column from the fixed set
//!   of [`GroupBy::column`], and the retention in whole days from the configuration.
//! - Percentiles use the same logarithmic buckets as the embedded store
//!   ([`SQL_BUCKET_EXPR`]) and `quantilesExactWeighted` with weights in thousandths, so both
//!   stores answer within the sketch's relative accuracy of each other.
//! - The schema is created and upgraded by numbered, idempotent migrations
//!   ([`migrations`]) at [`ClickHouseStore::connect`]. The DDL depends on the server version:
//!   old servers (18.16 in CI) have no `TTL`, so retention is also enforced from code by
//!   dropping whole daily partitions ([`ClickHouseStore::enforce_retention`]), which is
//!   called at connect and is safe to call periodically on any version.
//! - On a cluster ([`ClickHouseConfig::cluster`]) every table is a `Distributed` table over a
//!   local table on each node ([`migrations::Layout`]). Reads and writes use the same SQL as on
//!   one server, through the `Distributed` tables, with two session settings:
//!   `insert_distributed_sync = 1`, so an insert is acknowledged only once every shard has
//!   stored its rows, and `distributed_product_mode = 'global'`, so subqueries over
//!   distributed tables run once. DDL goes `ON CLUSTER` when the cluster has a coordinator
//!   (ZooKeeper or ClickHouse Keeper), else to every node found in `system.clusters`, at the
//!   HTTP port of the configured URL. Retention and TTL changes act on each node's local
//!   tables. A batch whose insert fails midway may have reached some shards; nothing was
//!   acknowledged, and its retry may store those shards' rows twice (replicated tables drop
//!   such repeated blocks; plain `MergeTree` cannot).
//! - Summaries (services, endpoints, time series, every endpoint's series, builds) read the
//!   rollups that a materialized view keeps per endpoint, build, dc, host and minute
//!   (`rollups.rs`), and raw rows only for the partial minutes at the ends of a range; the
//!   answers equal the raw-row answers. `ClickHouseConfig::rollups = false` reads raw rows.
//! - Configuration that cannot work (an empty or unusable name, replication without a
//!   cluster, a cluster the server does not have, a database laid out for the other mode) is
//!   [`StoreError::Config`], found at connect.
//!
//! [`GroupBy::column`]: profwatch_model::query::GroupBy::column
//! [`SQL_BUCKET_EXPR`]: profwatch_model::sketch::SQL_BUCKET_EXPR
//!
//! Files: `config.rs`, `client.rs` (a client per node, error mapping, the `Date` of a time),
//! `migrations.rs` (the schema), `cluster.rs` (nodes, layout and DDL in cluster mode),
//! `retention.rs` (TTL and dropped partitions), `events.rs` (the events insert and queries),
//! `rollups.rs` (the per-minute rollup: its table, view and the queries' SQL over it),
//! `keys.rs` (idempotency keys), `leases.rs`, `profiles.rs` (stacks and samples),
//! `stack_key.rs` (the key of the stack ids) and `analysis.rs` (the analyzer's reads and
//! regression records).

mod analysis;
mod client;
mod cluster;
mod config;
mod dedup;
mod events;
mod functions;
mod keys;
mod leases;
mod memory;
pub mod migrations;
mod profiles;
mod retention;
mod rollups;
mod stack_key;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::clickhouse::Client;
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
use profwatch_model::timefmt::now_ns;
use profwatch_model::{RequestEvent, Tenant};
use tokio::sync::{Semaphore, SemaphorePermit};

use self::client::{base_client, query_error, unix_days, NodeClient};
pub use self::config::ClickHouseConfig;
use self::dedup::Dedup;
use self::migrations::{server_version, DdlContext, Layout, ServerVersion};
use self::retention::LocalTables;
use crate::{Store, StoreError, Written};

/// Inserts allowed to run at once.
pub const INSERT_PERMITS: usize = 4;
/// How long a write waits for an insert slot before it is refused as overloaded.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);
/// What an overloaded write tells the client to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long [`Store::shutdown`] waits for running inserts to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);

/// Request events in ClickHouse. See the module docs for the invariants.
#[derive(Debug)]
pub struct ClickHouseStore {
    /// A client bound to [`ClickHouseConfig::database`], with row validation off (old servers
    /// lack `RowBinaryWithNamesAndTypes`).
    client: Client,
    database: String,
    server: ServerVersion,
    /// What the server offers for dropping retried batches (`dedup.rs`).
    dedup: dedup::Support,
    layout: Layout,
    /// A client per node, bound to the database, for work on local tables (retention, TTL);
    /// on one server, that server.
    nodes: Vec<NodeClient>,
    retention_days: u32,
    inserts: Semaphore,
    closed: AtomicBool,
    /// Stack ids under the database's key (`stack_key.rs`), and the stacks written recently,
    /// so each is inserted at most once a day per process.
    known_stacks: profiles::KnownStacks,
    /// Whether summaries read the rollups ([`ClickHouseConfig::rollups`]).
    read: events::Read,
}

impl ClickHouseStore {
    /// Connects, creates the database if missing, detects the server version, applies the
    /// pending migrations and drops partitions older than the retention.
    pub async fn connect(cfg: ClickHouseConfig) -> Result<ClickHouseStore, StoreError> {
        cfg.check()?;
        let base = base_client(&cfg, &cfg.url)?;
        let server = server_version(&base, &cfg.url).await?;
        let layout = cluster::layout(&cfg, &base).await?;
        let nodes = cluster::nodes(&cfg, &base).await?;
        let retention_days = retention::retention_days(cfg.retention);
        let ctx = DdlContext {
            modern: server.is_modern(),
            retention_days,
        };
        let applied = cluster::create_schema(&nodes, &layout, &cfg.database, &server, &ctx).await?;
        let client = cluster::session(base.with_database(cfg.database.clone()), &layout);
        let dedup = dedup::Support::detect(&client, &server).await?;
        let stack_ids = stack_key::load(&client).await?;
        let nodes = nodes
            .into_iter()
            .map(|n| NodeClient {
                client: n.client.with_database(cfg.database.clone()),
                url: n.url,
            })
            .collect();
        let store = ClickHouseStore {
            client,
            database: cfg.database,
            server,
            dedup,
            layout,
            nodes,
            retention_days,
            inserts: Semaphore::new(INSERT_PERMITS),
            closed: AtomicBool::new(false),
            known_stacks: profiles::KnownStacks::new(stack_ids),
            read: if cfg.rollups {
                events::Read::Rollups {
                    edge_hours: !cfg.replicated,
                }
            } else {
                events::Read::Raw
            },
        };
        if store.server.is_modern() {
            store.local_tables().sync_ttl(retention_days).await?;
        }
        dedup::sync_window(&store.nodes, &store.layout, &store.database, store.dedup).await?;
        let dropped = store.enforce_retention().await?;
        tracing::info!(
            server = %store.server.raw,
            database = %store.database,
            modern_ddl = store.server.is_modern(),
            layout = ?store.layout,
            nodes = store.nodes.len(),
            migrations_applied = ?applied,
            partitions_dropped = dropped,
            "connected to ClickHouse"
        );
        Ok(store)
    }

    /// The HTTP URL of every node the store works with: the shards (and replicas) of the
    /// cluster, or the one server.
    pub fn node_urls(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.url.as_str()).collect()
    }

    /// The server's version string, e.g. `18.16.1`.
    pub fn server_version(&self) -> &str {
        &self.server.raw
    }

    /// The database holding profwatch's tables.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// Retention in whole days.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    /// Drops every daily partition of `events` whose newest day is older than the retention
    /// (UTC days). Returns how many partitions were dropped. Works on every server version;
    /// on old servers it is the only retention, so call it periodically (e.g. hourly).
    pub async fn enforce_retention(&self) -> Result<usize, StoreError> {
        let today = unix_days(now_ns());
        let cutoff = today - i64::from(self.retention_days);
        self.local_tables().drop_partitions_before(cutoff).await
    }

    /// The daily tables of the store's database on every node.
    fn local_tables(&self) -> LocalTables<'_> {
        LocalTables {
            nodes: &self.nodes,
            layout: &self.layout,
            database: &self.database,
        }
    }

    /// Inserts a batch of events, with its idempotency key (if any) as the server's
    /// deduplication token where the server has them (`dedup.rs`).
    async fn insert_events(
        &self,
        tenant: &Tenant,
        events: Vec<RequestEvent>,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if events.is_empty() {
            return Ok(());
        }
        let _permit = self.insert_permit().await?;
        let dedup = Dedup::for_batch(self.dedup, tenant, key);
        events::insert(&self.client, tenant, &events, &dedup).await
    }

    /// As [`Self::insert_events`], for profiles.
    async fn insert_profiles(
        &self,
        tenant: &Tenant,
        batches: Vec<ProfileBatch>,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if batches.iter().all(|b| b.samples.is_empty()) {
            return Ok(());
        }
        let _permit = self.insert_permit().await?;
        let dedup = Dedup::for_batch(self.dedup, tenant, key);
        profiles::insert(&self.client, &self.known_stacks, tenant, &batches, &dedup).await
    }

    /// As [`Self::insert_events`], for memory samples.
    async fn insert_memory(
        &self,
        tenant: &Tenant,
        samples: Vec<MemorySample>,
        key: Option<&str>,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if samples.is_empty() {
            return Ok(());
        }
        let _permit = self.insert_permit().await?;
        let dedup = Dedup::for_batch(self.dedup, tenant, key);
        memory::insert(&self.client, tenant, &samples, &dedup).await
    }

    /// Whether the server drops a retried keyed batch by itself (`dedup.rs`).
    pub fn deduplicates_by_token(&self) -> bool {
        self.dedup.has_tokens()
    }

    /// An insert slot, or `Overloaded` when none frees up within [`PERMIT_WAIT`].
    async fn insert_permit(&self) -> Result<SemaphorePermit<'_>, StoreError> {
        match tokio::time::timeout(PERMIT_WAIT, self.inserts.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(StoreError::Closed),
            Err(_elapsed) => Err(StoreError::Overloaded {
                what: "clickhouse inserts",
                retry_after: OVERLOADED_RETRY_AFTER,
            }),
        }
    }
}

#[async_trait]
impl Store for ClickHouseStore {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    async fn maintain(&self) -> Result<(), StoreError> {
        let dropped = self.enforce_retention().await?;
        if dropped > 0 {
            tracing::info!(partitions = dropped, "dropped partitions past retention");
        }
        Ok(())
    }

    async fn write(&self, tenant: &Tenant, events: Vec<RequestEvent>) -> Result<(), StoreError> {
        self.insert_events(tenant, events, None).await
    }

    /// See `keys::write_once`: check the key, claim it, write, record the key.
    async fn write_once(
        &self,
        tenant: &Tenant,
        key: &str,
        events: Vec<RequestEvent>,
    ) -> Result<Written, StoreError> {
        let write = self.insert_events(tenant, events, Some(key));
        keys::write_once(&self.client, tenant, key, write).await
    }

    /// As [`Self::write_once`], for profiles.
    async fn write_profiles_once(
        &self,
        tenant: &Tenant,
        key: &str,
        batches: Vec<ProfileBatch>,
    ) -> Result<Written, StoreError> {
        let write = self.insert_profiles(tenant, batches, Some(key));
        keys::write_once(&self.client, tenant, key, write).await
    }

    /// Keyed: as [`Self::write_once`].
    async fn write_memory(
        &self,
        tenant: &Tenant,
        key: Option<&str>,
        samples: Vec<MemorySample>,
    ) -> Result<Written, StoreError> {
        match key {
            None => self
                .insert_memory(tenant, samples, None)
                .await
                .map(|()| Written::Stored),
            Some(key) => {
                let write = self.insert_memory(tenant, samples, Some(key));
                keys::write_once(&self.client, tenant, key, write).await
            }
        }
    }

    async fn memory(&self, q: &MemoryQuery) -> Result<Vec<MemoryRow>, StoreError> {
        memory::rows(&self.client, q).await
    }

    async fn memory_timeseries(
        &self,
        q: &MemoryQuery,
        step: i64,
    ) -> Result<Vec<MemoryPoint>, StoreError> {
        memory::points(&self.client, q, step).await
    }

    async fn memory_services(
        &self,
        tenant: &Tenant,
        range: TimeRange,
    ) -> Result<Vec<String>, StoreError> {
        memory::services(&self.client, tenant, range).await
    }

    async fn memory_processes(
        &self,
        q: &MemoryQuery,
        step: i64,
    ) -> Result<Vec<ProcessMemory>, StoreError> {
        memory::processes(&self.client, q, step).await
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        leases::try_lease(&self.client, name, holder, ttl).await
    }

    async fn services(&self, q: &ServicesQuery) -> Result<Vec<ServiceSummary>, StoreError> {
        events::services(&self.client, q, self.read).await
    }

    async fn endpoints(&self, q: &EndpointsQuery) -> Result<Vec<EndpointStats>, StoreError> {
        events::endpoints(&self.client, q, self.read).await
    }

    async fn timeseries(&self, q: &TimeseriesQuery) -> Result<Vec<TimeseriesPoint>, StoreError> {
        events::timeseries(&self.client, q, self.read).await
    }

    async fn endpoint_series(&self, q: &SeriesQuery) -> Result<Vec<EndpointSeries>, StoreError> {
        events::endpoint_series(&self.client, q, self.read).await
    }

    async fn builds(&self, q: &BuildsQuery) -> Result<Vec<BuildSummary>, StoreError> {
        analysis::builds(&self.client, q, self.read).await
    }

    async fn cost_samples(&self, q: &CostSamplesQuery) -> Result<Vec<CostSamples>, StoreError> {
        analysis::cost_samples(&self.client, q).await
    }

    async fn put_regression(&self, r: &RegressionRecord) -> Result<(), StoreError> {
        analysis::put_regression(&self.client, r).await
    }

    async fn regressions(&self, tenant: &Tenant) -> Result<Vec<RegressionRecord>, StoreError> {
        analysis::regressions(&self.client, tenant).await
    }

    async fn write_profiles(
        &self,
        tenant: &Tenant,
        batches: Vec<ProfileBatch>,
    ) -> Result<(), StoreError> {
        self.insert_profiles(tenant, batches, None).await
    }

    async fn profile(&self, q: &ProfileQuery) -> Result<StackProfile, StoreError> {
        profiles::query(&self.client, q).await
    }

    async fn function_costs(&self, q: &FunctionQuery) -> Result<Vec<FunctionTotals>, StoreError> {
        functions::query(&self.client, q, self.read != events::Read::Raw).await
    }

    async fn ready(&self) -> Result<(), StoreError> {
        let one: u8 = self
            .client
            .query("SELECT 1")
            .fetch_one()
            .await
            .map_err(|e| query_error("readiness check SELECT 1", e))?;
        if one == 1 {
            Ok(())
        } else {
            Err(StoreError::Unavailable(format!(
                "readiness check SELECT 1 returned {one}"
            )))
        }
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        // New writes fail from now on; wait (bounded) for the running inserts, which hold
        // permits, then close the semaphore. There is no buffer of our own to flush.
        self.closed.store(true, Ordering::Release);
        let all = u32::try_from(INSERT_PERMITS).unwrap_or(u32::MAX);
        if tokio::time::timeout(SHUTDOWN_WAIT, self.inserts.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!("ClickHouse inserts still running at shutdown");
        }
        self.inserts.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests;
