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
//!   only spliced pieces are constants of this module, the group-by column from the fixed set
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

mod analysis;
pub mod migrations;
mod profiles;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::clickhouse::sql::Identifier;
use ::clickhouse::Client;
use async_trait::async_trait;
use profwatch_model::query::{
    CostStats, Distribution, EndpointStats, EndpointsQuery, GroupBy, ServiceSummary, ServicesQuery,
    TimeseriesPoint, TimeseriesQuery,
};
use profwatch_model::sketch::SQL_BUCKET_EXPR;
use profwatch_model::timefmt::now_ns;
use profwatch_model::{RequestEvent, Tenant};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use self::migrations::{DdlContext, Layout, ServerVersion};
use super::{Store, StoreError};

/// Inserts allowed to run at once.
pub const INSERT_PERMITS: usize = 4;
/// How long a write waits for an insert slot before it is refused as overloaded.
pub const PERMIT_WAIT: Duration = Duration::from_secs(2);
/// What an overloaded write tells the client to wait.
const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Limit on sending one chunk of an insert to the socket.
const INSERT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit on waiting for ClickHouse to acknowledge an insert once all rows are sent.
const INSERT_END_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Store::shutdown`] waits for running inserts to finish.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(30);
/// The table that holds the events.
const EVENTS_TABLE: &str = "events";
/// Every table partitioned by day, which retention trims.
const DAILY_TABLES: &[&str] = &[
    EVENTS_TABLE,
    "samples",
    "stacks",
    "batch_keys",
    "batch_claims",
];

/// How long a claim on an idempotency key holds off other claims (a claimant that died frees
/// the key after it).
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// The pause between writing a claim and reading the claims back, so that claims written at
/// nearly the same moment are all seen by each claimant.
const CLAIM_SETTLE: Duration = Duration::from_millis(50);
/// The `Date` column that partitions `events` by day (UTC) and carries the TTL.
const RETENTION_COLUMN: &str = "date";

const NS_PER_SECOND: i64 = 1_000_000_000;
const NS_PER_DAY: i64 = 86_400 * NS_PER_SECOND;

/// Where the ClickHouse store connects and how long it keeps data.
#[derive(Clone)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database for profwatch's tables; created when missing.
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// How long events are kept, rounded up to whole days (at least one).
    pub retention: Duration,
    /// A cluster in the servers' `remote_servers`: shard every table across it (see the
    /// module docs). `None` for one server.
    pub cluster: Option<String>,
    /// On a cluster, create `Replicated*MergeTree` tables (needs a coordinator and the
    /// `{shard}` and `{replica}` macros on every node).
    pub replicated: bool,
}

impl ClickHouseConfig {
    /// One server at `url`, database `database`, 30 days of retention, no credentials.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> ClickHouseConfig {
        ClickHouseConfig {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            retention: Duration::from_secs(30 * 86_400),
            cluster: None,
            replicated: false,
        }
    }
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("retention", &self.retention)
            .field("cluster", &self.cluster)
            .field("replicated", &self.replicated)
            .finish()
    }
}

/// Request events in ClickHouse. See the module docs for the invariants.
#[derive(Debug)]
pub struct ClickHouseStore {
    /// A client bound to [`ClickHouseConfig::database`], with row validation off (old servers
    /// lack `RowBinaryWithNamesAndTypes`).
    client: Client,
    database: String,
    server: ServerVersion,
    layout: Layout,
    /// A client per node, bound to the database, for work on local tables (retention, TTL);
    /// on one server, that server.
    nodes: Vec<NodeClient>,
    retention_days: u32,
    inserts: Semaphore,
    closed: AtomicBool,
    /// Stacks written recently, so each is inserted at most once a day per process.
    known_stacks: profiles::KnownStacks,
}

impl ClickHouseStore {
    /// Connects, creates the database if missing, detects the server version, applies the
    /// pending migrations and drops partitions older than the retention.
    pub async fn connect(cfg: ClickHouseConfig) -> Result<ClickHouseStore, StoreError> {
        if cfg.database.is_empty() {
            return Err(StoreError::Query(
                "the ClickHouse database name is empty".to_owned(),
            ));
        }
        if cfg.replicated && cfg.cluster.is_none() {
            return Err(StoreError::Query(
                "replicated tables need a cluster (--clickhouse-cluster)".to_owned(),
            ));
        }
        let base = base_client(&cfg, &cfg.url);
        let server = server_version(&base, &cfg.url).await?;
        let layout = match &cfg.cluster {
            None => Layout::Single,
            Some(name) => Layout::Cluster {
                name: cluster_name(name)?.to_owned(),
                database: cluster_name(&cfg.database)?.to_owned(),
                on_cluster: has_coordinator(&base).await?,
                replicated: cfg.replicated,
            },
        };
        let nodes = match &cfg.cluster {
            None => vec![NodeClient {
                url: cfg.url.clone(),
                client: base.clone(),
            }],
            Some(name) => cluster_nodes(&cfg, &base, name).await?,
        };

        let retention_days = retention_days(cfg.retention);
        let ctx = DdlContext {
            modern: server.is_modern(),
            retention_days,
        };
        // With a coordinator, DDL goes once through the entry node; otherwise to every node.
        let ddl_nodes: Vec<&NodeClient> = match layout {
            Layout::Cluster {
                on_cluster: true, ..
            } => vec![&nodes[0]],
            _ => nodes.iter().collect(),
        };
        let mut applied = Vec::new();
        for node in ddl_nodes {
            let on = match &layout {
                Layout::Cluster {
                    name,
                    on_cluster: true,
                    ..
                } => format!(" ON CLUSTER {name}"),
                _ => String::new(),
            };
            node.client
                .query(&format!("CREATE DATABASE IF NOT EXISTS ?{on}"))
                .bind(Identifier(&cfg.database))
                .execute()
                .await
                .map_err(|e| {
                    query_error(
                        &format!("creating database {:?} on {}", cfg.database, node.url),
                        e,
                    )
                })?;
            let client = node.client.clone().with_database(cfg.database.clone());
            check_layout(&client, &layout, &cfg.database, &node.url).await?;
            applied = migrations::run(&client, &server, &ctx, &layout).await?;
        }

        let mut client = base.with_database(cfg.database.clone());
        if matches!(layout, Layout::Cluster { .. }) {
            client = client
                .with_setting("insert_distributed_sync", "1")
                .with_setting("distributed_product_mode", "global");
        }
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
            layout,
            nodes,
            retention_days,
            inserts: Semaphore::new(INSERT_PERMITS),
            closed: AtomicBool::new(false),
            known_stacks: profiles::KnownStacks::default(),
        };
        if store.server.is_modern() {
            store.sync_ttl().await?;
        }
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
        self.drop_partitions_before(cutoff).await
    }

    /// Drops the partitions of every daily-partitioned table whose `max_date` is before
    /// `cutoff_day` (days since 1970-01-01).
    async fn drop_partitions_before(&self, cutoff_day: i64) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for node in &self.nodes {
            dropped += self.drop_partitions_on(node, cutoff_day).await?;
        }
        Ok(dropped)
    }

    async fn drop_partitions_on(
        &self,
        node: &NodeClient,
        cutoff_day: i64,
    ) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for name in DAILY_TABLES {
            let table = self.layout.local_name(name);
            let partitions: Vec<String> = node
                .client
                .query(
                    "SELECT DISTINCT partition_id FROM system.parts \
                     WHERE database = ? AND table = ? AND active \
                     AND max_date < toDate('1970-01-01') + ? \
                     ORDER BY partition_id",
                )
                .bind(self.database.as_str())
                .bind(table.as_str())
                .bind(cutoff_day.max(0))
                .fetch_all()
                .await
                .map_err(|e| {
                    query_error(
                        &format!("listing expired partitions in system.parts on {}", node.url),
                        e,
                    )
                })?;
            for partition in &partitions {
                // `table` is one of this module's constants, never client input.
                node.client
                    .query(&format!("ALTER TABLE {table} DROP PARTITION ID ?"))
                    .bind(partition.as_str())
                    .execute()
                    .await
                    .map_err(|e| {
                        query_error(
                            &format!("dropping expired partition {partition} of {table}"),
                            e,
                        )
                    })?;
                tracing::info!(partition = %partition, table, node = %node.url, database = %self.database, "dropped expired ClickHouse partition");
            }
            dropped += partitions.len();
        }
        Ok(dropped)
    }

    /// On modern servers, makes each table's `TTL` match the configured retention (it was
    /// fixed when the table was created; the retention may have changed since).
    async fn sync_ttl(&self) -> Result<(), StoreError> {
        for node in &self.nodes {
            self.sync_ttl_on(node).await?;
        }
        Ok(())
    }

    async fn sync_ttl_on(&self, node: &NodeClient) -> Result<(), StoreError> {
        for name in DAILY_TABLES {
            let table = self.layout.local_name(name);
            let create: String = node
                .client
                .query(
                    "SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?",
                )
                .bind(self.database.as_str())
                .bind(table.as_str())
                .fetch_one()
                .await
                .map_err(|e| query_error(&format!("reading the definition of table {table}"), e))?;
            // ClickHouse normalises `INTERVAL n DAY` to `toIntervalDay(n)`.
            if create.contains(&format!("toIntervalDay({})", self.retention_days)) {
                continue;
            }
            let alter = format!(
                "ALTER TABLE {table} MODIFY TTL {RETENTION_COLUMN} + INTERVAL {} DAY",
                self.retention_days
            );
            node.client.query(&alter).execute().await.map_err(|e| {
                query_error(
                    &format!("updating the TTL of table {table} on {}", node.url),
                    e,
                )
            })?;
            tracing::info!(
                days = self.retention_days,
                table,
                node = %node.url,
                "updated the TTL of a ClickHouse table"
            );
        }
        Ok(())
    }

    /// Whether a batch with this idempotency key was stored for the tenant.
    async fn key_seen(&self, tenant: &Tenant, key: &str) -> Result<bool, StoreError> {
        let n: u64 = self
            .client
            .query("SELECT count() FROM batch_keys WHERE tenant = ? AND key = ?")
            .bind(tenant.as_str())
            .bind(key)
            .fetch_one()
            .await
            .map_err(|e| query_error("looking up a batch key", e))?;
        Ok(n > 0)
    }

    /// Claims `key` for this request. `None`: the claim is ours, store the batch. Otherwise an
    /// earlier live claim holds it: `Duplicate` if its batch is stored by now, else a 429 so the
    /// client retries once the other write is done.
    async fn claim(
        &self,
        tenant: &Tenant,
        key: &str,
    ) -> Result<Option<crate::Written>, StoreError> {
        #[derive(::clickhouse::Row, Serialize)]
        #[clickhouse(crate = "::clickhouse")]
        struct ClaimRow<'a> {
            tenant: &'a str,
            key: &'a str,
            holder: &'a str,
            claimed: i64,
            date: u16,
        }
        static CLAIMS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = now_ns();
        let holder = format!(
            "{}-{now}-{}",
            std::process::id(),
            CLAIMS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let row = ClaimRow {
            tenant: tenant.as_str(),
            key,
            holder: &holder,
            claimed: now,
            date: u16::try_from(unix_days(now).max(0)).unwrap_or(u16::MAX),
        };
        let claimed = async {
            let mut ins = self.client.insert::<ClaimRow<'_>>("batch_claims").await?;
            ins.write(&row).await?;
            ins.end().await
        }
        .await;
        claimed.map_err(|e| unavailable("claiming a batch key", e))?;
        tokio::time::sleep(CLAIM_SETTLE).await;
        let first: Vec<String> = self
            .client
            .query(
                "SELECT holder FROM batch_claims WHERE tenant = ? AND key = ? AND claimed >= ? \
                 ORDER BY claimed, holder LIMIT 1",
            )
            .bind(tenant.as_str())
            .bind(key)
            .bind(now - CLAIM_TTL.as_nanos() as i64)
            .fetch_all()
            .await
            .map_err(|e| query_error("reading the claims on a batch key", e))?;
        if first.first().is_none_or(|h| *h == holder) {
            return Ok(None);
        }
        if self.key_seen(tenant, key).await? {
            return Ok(Some(crate::Written::Duplicate));
        }
        Err(StoreError::Overloaded {
            what: "a retry of this batch is being stored",
            retry_after: Duration::from_secs(2),
        })
    }

    /// Records a stored batch's idempotency key. A failure is logged, not returned: the batch
    /// is stored; only a retry of it could be stored again.
    async fn record_key(&self, tenant: &Tenant, key: &str) {
        #[derive(::clickhouse::Row, Serialize)]
        #[clickhouse(crate = "::clickhouse")]
        struct KeyRow<'a> {
            tenant: &'a str,
            key: &'a str,
            received: i64,
            date: u16,
        }
        let now = now_ns();
        let row = KeyRow {
            tenant: tenant.as_str(),
            key,
            received: now,
            date: u16::try_from(unix_days(now).max(0)).unwrap_or(u16::MAX),
        };
        let recorded = async {
            let mut ins = self.client.insert::<KeyRow<'_>>("batch_keys").await?;
            ins.write(&row).await?;
            ins.end().await
        }
        .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "stored a batch but could not record its idempotency key");
        }
    }

    /// Stats per time bucket of `step` ns (the bucket's start in unix seconds is the row key)
    /// and per group, over one service (and endpoint).
    async fn bucketed(
        &self,
        b: &Bucketed<'_>,
        what: &str,
    ) -> Result<Vec<StatsRow<i64>>, StoreError> {
        let endpoint_filter = if b.endpoint.is_some() {
            " AND endpoint = ?"
        } else {
            ""
        };
        let sql = format!(
            "SELECT toInt64(intDiv(intDiv(ts, toInt64(?)) * toInt64(?), {NS_PER_SECOND})) AS row_key, \
             {group} AS grp, {stats} FROM events \
             WHERE tenant = ? AND service = ?{endpoint_filter} AND ts >= ? AND ts < ? \
             GROUP BY row_key{key} ORDER BY {order}",
            group = b.group_select,
            key = b.group_key,
            order = b.order,
            stats = stats_select(),
        );
        let mut query = self
            .client
            .query(&sql)
            .bind(b.step)
            .bind(b.step)
            .bind(b.tenant.as_str())
            .bind(b.service);
        if let Some(endpoint) = b.endpoint {
            query = query.bind(endpoint);
        }
        let query = query.bind(b.range.from).bind(b.range.to);
        self.fetch_stats(what, query).await
    }

    async fn fetch_stats<K>(
        &self,
        what: &str,
        query: ::clickhouse::query::Query,
    ) -> Result<Vec<StatsRow<K>>, StoreError>
    where
        K: for<'de> Deserialize<'de> + Send + 'static,
    {
        query
            .fetch_all::<StatsRow<K>>()
            .await
            .map_err(|e| query_error(what, e))
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
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if events.is_empty() {
            return Ok(());
        }
        let _permit = match tokio::time::timeout(PERMIT_WAIT, self.inserts.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(StoreError::Closed),
            Err(_elapsed) => {
                return Err(StoreError::Overloaded {
                    what: "clickhouse inserts",
                    retry_after: OVERLOADED_RETRY_AFTER,
                })
            }
        };
        let count = events.len();
        let context = |step: &str| format!("inserting {count} events for tenant {tenant}: {step}");
        let mut insert = self
            .client
            .insert::<EventRow<'_>>(EVENTS_TABLE)
            .await
            .map_err(|e| unavailable(&context("starting"), e))?
            .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT));
        for event in &events {
            insert
                .write(&EventRow::new(tenant, event))
                .await
                .map_err(|e| unavailable(&context("sending"), e))?;
        }
        insert
            .end()
            .await
            .map_err(|e| unavailable(&context("waiting for the acknowledgement"), e))
    }

    /// Checks the key, claims it, writes the batch, then records the key. Concurrent retries
    /// of one batch (two collectors, or a client that timed out and sent again) cannot both
    /// store it: only the earliest live claim writes; the others answer 429 and, retried, find
    /// the key. Never loses a batch: what remains possible is a duplicate when a claimant
    /// crashes between the insert and the key's record and a retry comes after its claim
    /// expired, or when two claims are written more than `CLAIM_SETTLE` apart in an order
    /// opposite to their clocks. (Servers with `insert_deduplication_token` for plain
    /// MergeTree could close those windows; 18.16 has none.)
    async fn write_once(
        &self,
        tenant: &Tenant,
        key: &str,
        events: Vec<RequestEvent>,
    ) -> Result<crate::Written, StoreError> {
        if self.key_seen(tenant, key).await? {
            return Ok(crate::Written::Duplicate);
        }
        if let Some(done) = self.claim(tenant, key).await? {
            return Ok(done);
        }
        self.write(tenant, events).await?;
        self.record_key(tenant, key).await;
        Ok(crate::Written::Stored)
    }

    /// As [`Self::write_once`], for profiles.
    async fn write_profiles_once(
        &self,
        tenant: &Tenant,
        key: &str,
        batches: Vec<profwatch_model::profile::ProfileBatch>,
    ) -> Result<crate::Written, StoreError> {
        if self.key_seen(tenant, key).await? {
            return Ok(crate::Written::Duplicate);
        }
        if let Some(done) = self.claim(tenant, key).await? {
            return Ok(done);
        }
        self.write_profiles(tenant, batches).await?;
        self.record_key(tenant, key).await;
        Ok(crate::Written::Stored)
    }

    /// A lease is the newest claim row. A collector claims when the lease is free, expired or
    /// its own, then reads again after a pause: if a rival claimed in the same moment, the
    /// newer claim wins and the other backs off. A holder that dies stops renewing; the lease
    /// expires after `ttl` and the next collector to try takes it (fail-over within one ttl).
    async fn try_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        #[derive(::clickhouse::Row, Serialize)]
        #[clickhouse(crate = "::clickhouse")]
        struct LeaseRow<'a> {
            name: &'a str,
            holder: &'a str,
            expires: i64,
            version: i64,
        }
        let current = || async {
            let rows: Vec<(String, i64)> = self
                .client
                .query(
                    "SELECT argMax(holder, (version, holder)), argMax(expires, (version, holder)) \
                     FROM leases WHERE name = ? GROUP BY name",
                )
                .bind(name)
                .fetch_all()
                .await
                .map_err(|e| query_error("reading a lease", e))?;
            Ok::<_, StoreError>(rows.into_iter().next())
        };
        let now = now_ns();
        if let Some((h, expires)) = current().await? {
            if h != holder && expires > now {
                return Ok(false);
            }
        }
        let row = LeaseRow {
            name,
            holder,
            expires: now + ttl.as_nanos().min(i64::MAX as u128) as i64,
            version: now,
        };
        let mut ins = self
            .client
            .insert::<LeaseRow<'_>>("leases")
            .await
            .map_err(|e| unavailable("claiming a lease", e))?;
        ins.write(&row)
            .await
            .map_err(|e| unavailable("claiming a lease", e))?;
        ins.end()
            .await
            .map_err(|e| unavailable("claiming a lease", e))?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(current().await?.is_some_and(|(h, _)| h == holder))
    }

    async fn services(&self, q: &ServicesQuery) -> Result<Vec<ServiceSummary>, StoreError> {
        let rows: Vec<(String, f64)> = self
            .client
            .query(
                "SELECT service, toFloat64(sum(weight)) AS requests FROM events \
                 WHERE tenant = ? AND ts >= ? AND ts < ? \
                 GROUP BY service ORDER BY service",
            )
            .bind(q.tenant.as_str())
            .bind(q.range.from)
            .bind(q.range.to)
            .fetch_all()
            .await
            .map_err(|e| query_error("listing services", e))?;
        Ok(rows
            .into_iter()
            .map(|(service, requests)| ServiceSummary { service, requests })
            .collect())
    }

    async fn endpoints(&self, q: &EndpointsQuery) -> Result<Vec<EndpointStats>, StoreError> {
        let (group_select, group_key) = group_sql(q.group_by);
        let sql = format!(
            "SELECT toString(endpoint) AS row_key, {group_select} AS grp, {stats} FROM events \
             WHERE tenant = ? AND service = ? AND ts >= ? AND ts < ? \
             GROUP BY endpoint{group_key} ORDER BY row_key, grp",
            stats = stats_select(),
        );
        let query = self
            .client
            .query(&sql)
            .bind(q.tenant.as_str())
            .bind(q.service.as_str())
            .bind(q.range.from)
            .bind(q.range.to);
        let rows: Vec<StatsRow<String>> = self
            .fetch_stats(&format!("endpoints of service {:?}", q.service), query)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| EndpointStats {
                group: group_value(q.group_by, &row.grp),
                stats: row.stats(),
                endpoint: row.key,
            })
            .collect())
    }

    async fn timeseries(&self, q: &TimeseriesQuery) -> Result<Vec<TimeseriesPoint>, StoreError> {
        if q.step <= 0 {
            return Err(StoreError::Query(format!(
                "the timeseries step must be a positive number of nanoseconds, not {}",
                q.step
            )));
        }
        let (group_select, group_key) = group_sql(q.group_by);
        let rows = self
            .bucketed(
                &Bucketed {
                    step: q.step,
                    tenant: &q.tenant,
                    service: &q.service,
                    endpoint: Some(&q.endpoint),
                    range: q.range,
                    group_select: &group_select,
                    group_key: &group_key,
                    order: "row_key, grp",
                },
                &format!("timeseries of {:?} in service {:?}", q.endpoint, q.service),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| TimeseriesPoint {
                time: row.key,
                group: group_value(q.group_by, &row.grp),
                stats: row.stats(),
            })
            .collect())
    }

    async fn endpoint_series(
        &self,
        q: &profwatch_model::query::SeriesQuery,
    ) -> Result<Vec<profwatch_model::query::EndpointSeries>, StoreError> {
        if q.step <= 0 {
            return Err(StoreError::Query(format!(
                "the series step must be positive, not {}",
                q.step
            )));
        }
        let rows = self
            .bucketed(
                &Bucketed {
                    step: q.step,
                    tenant: &q.tenant,
                    service: &q.service,
                    endpoint: None,
                    range: q.range,
                    group_select: "toString(endpoint)",
                    group_key: ", endpoint",
                    order: "grp, row_key",
                },
                &format!("endpoint series of service {:?}", q.service),
            )
            .await?;
        let mut out: Vec<profwatch_model::query::EndpointSeries> = Vec::new();
        for row in rows {
            let point = TimeseriesPoint {
                time: row.key,
                group: None,
                stats: row.stats(),
            };
            match out.last_mut() {
                Some(s) if s.endpoint == row.grp => s.points.push(point),
                _ => out.push(profwatch_model::query::EndpointSeries {
                    endpoint: row.grp.clone(),
                    points: vec![point],
                }),
            }
        }
        Ok(out)
    }

    async fn builds(
        &self,
        q: &profwatch_model::query::BuildsQuery,
    ) -> Result<Vec<profwatch_model::query::BuildSummary>, StoreError> {
        analysis::builds(&self.client, q).await
    }

    async fn cost_samples(
        &self,
        q: &profwatch_model::query::CostSamplesQuery,
    ) -> Result<Vec<profwatch_model::query::CostSamples>, StoreError> {
        analysis::cost_samples(&self.client, q).await
    }

    async fn put_regression(
        &self,
        r: &profwatch_model::regression::RegressionRecord,
    ) -> Result<(), StoreError> {
        analysis::put_regression(&self.client, r).await
    }

    async fn regressions(
        &self,
        tenant: &Tenant,
    ) -> Result<Vec<profwatch_model::regression::RegressionRecord>, StoreError> {
        analysis::regressions(&self.client, tenant).await
    }

    async fn write_profiles(
        &self,
        tenant: &Tenant,
        batches: Vec<profwatch_model::profile::ProfileBatch>,
    ) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if batches.iter().all(|b| b.samples.is_empty()) {
            return Ok(());
        }
        let _permit = match tokio::time::timeout(PERMIT_WAIT, self.inserts.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(StoreError::Closed),
            Err(_elapsed) => {
                return Err(StoreError::Overloaded {
                    what: "clickhouse inserts",
                    retry_after: OVERLOADED_RETRY_AFTER,
                })
            }
        };
        profiles::insert(&self.client, &self.known_stacks, tenant, &batches).await
    }

    async fn profile(
        &self,
        q: &profwatch_model::profile::ProfileQuery,
    ) -> Result<profwatch_model::profile::StackProfile, StoreError> {
        profiles::query(&self.client, q).await
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

/// What [`ClickHouseStore::bucketed`] selects. The group expression, key and order are
/// constants of this module (or from [`group_sql`]), never client input.
struct Bucketed<'a> {
    step: i64,
    tenant: &'a Tenant,
    service: &'a str,
    endpoint: Option<&'a str>,
    range: profwatch_model::query::TimeRange,
    group_select: &'a str,
    group_key: &'a str,
    order: &'a str,
}

/// A client for one node of the deployment.
#[derive(Clone)]
struct NodeClient {
    url: String,
    client: Client,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("url", &self.url)
            .finish()
    }
}

/// A client for `url` with the configured credentials and row validation off.
fn base_client(cfg: &ClickHouseConfig, url: &str) -> Client {
    let mut client = Client::default()
        .with_url(url.to_owned())
        .with_validation(false);
    if let Some(user) = &cfg.user {
        client = client.with_user(user.clone());
    }
    if let Some(password) = &cfg.password {
        client = client.with_password(password.clone());
    }
    client
}

async fn server_version(client: &Client, url: &str) -> Result<ServerVersion, StoreError> {
    let raw: String = client
        .query("SELECT version()")
        .fetch_one()
        .await
        .map_err(|e| query_error(&format!("connecting to ClickHouse at {url}"), e))?;
    ServerVersion::parse(&raw).ok_or_else(|| {
        StoreError::Query(format!(
            "ClickHouse at {url} reported an unreadable version {raw:?}"
        ))
    })
}

/// A cluster or database name, which is spliced into DDL: letters, digits and `_` only.
fn cluster_name(name: &str) -> Result<&str, StoreError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Query(format!(
            "{name:?} is not usable as a ClickHouse cluster or database name in cluster mode: \
             use letters, digits and _ only"
        )))
    }
}

/// Whether the server has a DDL coordinator (ZooKeeper or ClickHouse Keeper): then and only
/// then does it have a `system.zookeeper` table.
async fn has_coordinator(client: &Client) -> Result<bool, StoreError> {
    let n: u64 = client
        .query("SELECT count() FROM system.tables WHERE database = 'system' AND name = 'zookeeper'")
        .fetch_one()
        .await
        .map_err(|e| query_error("looking for a DDL coordinator (system.zookeeper)", e))?;
    Ok(n > 0)
}

/// Every node of `cluster` as `system.clusters` lists it on the entry node, reached over HTTP
/// at the port (and scheme) of the configured URL.
async fn cluster_nodes(
    cfg: &ClickHouseConfig,
    entry: &Client,
    cluster: &str,
) -> Result<Vec<NodeClient>, StoreError> {
    let hosts: Vec<(u32, u32, String)> = entry
        .query(
            "SELECT shard_num, replica_num, host_address FROM system.clusters \
             WHERE cluster = ? ORDER BY shard_num, replica_num",
        )
        .bind(cluster)
        .fetch_all()
        .await
        .map_err(|e| {
            query_error(
                &format!("reading cluster {cluster:?} in system.clusters"),
                e,
            )
        })?;
    if hosts.is_empty() {
        return Err(StoreError::Query(format!(
            "ClickHouse at {} has no cluster named {cluster:?} in its remote_servers \
             (SELECT DISTINCT cluster FROM system.clusters lists the ones it has)",
            cfg.url
        )));
    }
    let mut nodes = Vec::new();
    for (_, _, host) in hosts {
        let url = with_host(&cfg.url, &host).ok_or_else(|| {
            StoreError::Query(format!(
                "cannot read the ClickHouse URL {:?} as scheme://host:port",
                cfg.url
            ))
        })?;
        let client = base_client(cfg, &url);
        server_version(&client, &url).await?;
        nodes.push(NodeClient { url, client });
    }
    Ok(nodes)
}

/// `url` with its host replaced by `host` (an IPv6 address gets brackets).
fn with_host(url: &str, host: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority.rsplit('@').next()?;
    let port = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[i..],
        _ => "",
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(format!("{scheme}://{host}{port}{path}"))
}

/// Refuses to mix layouts in one database: a database created for one server holds plain
/// `events`; a cluster's holds a `Distributed` one.
async fn check_layout(
    client: &Client,
    layout: &Layout,
    database: &str,
    url: &str,
) -> Result<(), StoreError> {
    let engines: Vec<String> = client
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
        .bind(database)
        .bind(EVENTS_TABLE)
        .fetch_all()
        .await
        .map_err(|e| query_error("reading the engine of table events", e))?;
    let Some(engine) = engines.first() else {
        return Ok(());
    };
    let distributed = engine == "Distributed";
    let want = matches!(layout, Layout::Cluster { .. });
    if distributed == want {
        return Ok(());
    }
    Err(StoreError::Query(if want {
        format!(
            "database {database:?} on {url} holds single-server tables (events is {engine}); \
             a cluster needs a database of its own (--clickhouse-database)"
        )
    } else {
        format!(
            "database {database:?} on {url} holds cluster tables (events is Distributed); \
             pass --clickhouse-cluster, or use another database"
        )
    }))
}

/// One row of `events`, borrowed from the event being written.
#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct EventRow<'a> {
    tenant: &'a str,
    service: &'a str,
    endpoint: &'a str,
    build: &'a str,
    dc: &'a str,
    host: &'a str,
    ts: i64,
    /// Days since 1970-01-01 (UTC) of `ts`: ClickHouse's `Date` in RowBinary.
    date: u16,
    status: u16,
    cpu_ns: u64,
    instructions: Option<u64>,
    wall_ns: u64,
    weight: f64,
    label_keys: Vec<&'a str>,
    label_values: Vec<&'a str>,
}

impl<'a> EventRow<'a> {
    fn new(tenant: &'a Tenant, e: &'a RequestEvent) -> Self {
        EventRow {
            tenant: tenant.as_str(),
            service: &e.service,
            endpoint: &e.endpoint,
            build: &e.build,
            dc: &e.dc,
            host: &e.host,
            ts: e.ts,
            date: u16::try_from(unix_days(e.ts).max(0)).unwrap_or(u16::MAX),
            status: e.status,
            cpu_ns: e.cpu_ns,
            instructions: e.instructions,
            wall_ns: e.wall_ns,
            weight: e.weight,
            label_keys: e.labels.keys().map(String::as_str).collect(),
            label_values: e.labels.values().map(String::as_str).collect(),
        }
    }
}

/// A key (endpoint or bucket start), a group and the aggregate columns of [`stats_select`].
#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct StatsRow<K> {
    key: K,
    grp: String,
    requests: f64,
    cpu_sum: f64,
    cpu_q: Vec<f64>,
    instructions_requests: f64,
    instructions_sum: f64,
    instructions_q: Vec<f64>,
}

impl<K> StatsRow<K> {
    fn stats(&self) -> CostStats {
        let dist = |sum: f64, n: f64, q: &[f64]| Distribution {
            mean: if n > 0.0 { sum / n } else { 0.0 },
            p50: q.first().copied().unwrap_or(0.0),
            p90: q.get(1).copied().unwrap_or(0.0),
            p99: q.get(2).copied().unwrap_or(0.0),
        };
        CostStats {
            requests: self.requests,
            cpu_ns: dist(self.cpu_sum, self.requests, &self.cpu_q),
            instructions_requests: self.instructions_requests,
            instructions: (self.instructions_requests > 0.0).then(|| {
                dist(
                    self.instructions_sum,
                    self.instructions_requests,
                    &self.instructions_q,
                )
            }),
        }
    }
}

/// The aggregate part of the select list, in [`StatsRow`] order. Only module constants.
fn stats_select() -> String {
    let bucket = |x: &str| SQL_BUCKET_EXPR.replace("{x}", x);
    let weight = "toUInt64(round(weight * 1000))";
    let has_instructions = "isNotNull(instructions)";
    format!(
        "toFloat64(sum(weight)) AS requests, \
         toFloat64(sum(cpu_ns * weight)) AS cpu_sum, \
         quantilesExactWeighted(0.5, 0.9, 0.99)({cpu_bucket}, {weight}) AS cpu_q, \
         toFloat64(sumIf(weight, {has_instructions})) AS instructions_requests, \
         toFloat64(sumIf(toFloat64(ifNull(instructions, 0)) * weight, {has_instructions})) \
           AS instructions_sum, \
         quantilesExactWeightedIf(0.5, 0.9, 0.99)({instructions_bucket}, {weight}, \
           {has_instructions}) AS instructions_q",
        cpu_bucket = bucket("cpu_ns"),
        instructions_bucket = bucket("ifNull(instructions, 0)"),
    )
}

/// The select expression of the group column and the extra `GROUP BY` key. The column name
/// comes from the fixed set of [`GroupBy::column`].
fn group_sql(group_by: GroupBy) -> (String, String) {
    match group_by.column() {
        Some(column) => (format!("toString({column})"), format!(", {column}")),
        None => ("''".to_owned(), String::new()),
    }
}

fn group_value(group_by: GroupBy, grp: &str) -> Option<String> {
    group_by.column().map(|_| grp.to_owned())
}

/// Whole days of a retention, rounded up, at least one.
fn retention_days(retention: Duration) -> u32 {
    let days = retention.as_secs().div_ceil(86_400).max(1);
    u32::try_from(days).unwrap_or(u32::MAX)
}

/// Days since 1970-01-01 (UTC) of a unix-ns time.
fn unix_days(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NS_PER_DAY)
}

/// A failed write: nothing was acknowledged.
fn unavailable(context: &str, e: ::clickhouse::error::Error) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

/// A failed read or DDL: `Unavailable` when ClickHouse could not be reached, else `Query`.
fn query_error(context: &str, e: ::clickhouse::error::Error) -> StoreError {
    use ::clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => StoreError::Unavailable(format!("{context}: {e}")),
        _ => StoreError::Query(format!("{context}: {e}")),
    }
}

#[cfg(test)]
mod tests;
