//! Numbered, idempotent schema migrations, with DDL that depends on the server version.
//!
//! Invariants:
//! - Every applied migration is recorded in `schema_migrations` (one row per version; a
//!   duplicate row from two collectors migrating at once is harmless because reads use
//!   `DISTINCT`). A recorded version is never run again.
//! - Every statement is itself idempotent (`CREATE ... IF NOT EXISTS`), so a migration that
//!   failed after some statements can simply be run again on the next connect.
//! - Migrations are append-only: a released migration is never edited, a change is a new
//!   version.
//! - The DDL flavour is chosen from `SELECT version()`: servers from [`MODERN_SINCE`] on get
//!   `LowCardinality`, column codecs and a `TTL`; older ones (Debian's 18.16 in CI) get plain
//!   types, and retention is enforced by dropping partitions from code.
//! - A migration describes tables ([`TableDdl`]), not SQL text, so the same migration renders
//!   for one server or for a cluster ([`Layout`]): on a cluster every table `t` becomes a local
//!   table `t_local` on every node plus a `Distributed` table `t` over them, sharded by the
//!   table's [`TableDdl::shard_key`]. The SQL for a single server is what it always was.
//!   `schema_migrations` is always local: each node records what was applied to it.

use ::clickhouse::sql::Identifier;
use ::clickhouse::Client;

use super::client::query_error;
use crate::StoreError;

/// The `Date` column that partitions the daily tables by day (UTC) and carries the TTL.
pub(super) const RETENTION_COLUMN: &str = "date";

/// The first version given the modern DDL (`LowCardinality`, `CODEC`, `TTL`).
pub const MODERN_SINCE: (u32, u32) = (20, 1);

/// The server's version, as reported by `SELECT version()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    /// The full string, e.g. `18.16.1` or `24.8.4.13`.
    pub raw: String,
}

impl ServerVersion {
    /// Reads `MAJOR.MINOR[.anything]`; `None` when the first two parts are not numbers.
    pub fn parse(raw: &str) -> Option<ServerVersion> {
        let mut parts = raw.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(ServerVersion {
            major,
            minor,
            raw: raw.trim().to_owned(),
        })
    }

    /// Whether the server gets the modern DDL (see [`MODERN_SINCE`]).
    pub fn is_modern(&self) -> bool {
        (self.major, self.minor) >= MODERN_SINCE
    }
}

/// Asks the server at `url` for its version.
pub(super) async fn server_version(
    client: &Client,
    url: &str,
) -> Result<ServerVersion, StoreError> {
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

/// What the DDL of a migration may depend on.
#[derive(Debug, Clone, Copy)]
pub struct DdlContext {
    /// Modern server (see [`ServerVersion::is_modern`]).
    pub modern: bool,
    /// Whole days rows are kept; used for the `TTL` clause on modern servers.
    pub retention_days: u32,
}

impl DdlContext {
    /// `LowCardinality(t)` on modern servers, `t` on old ones.
    pub(super) fn lc(&self, t: &str) -> String {
        if self.modern {
            format!("LowCardinality({t})")
        } else {
            t.to_owned()
        }
    }

    /// ` CODEC(c)` on modern servers, nothing on old ones.
    pub(super) fn codec(&self, c: &str) -> String {
        if self.modern {
            format!(" CODEC({c})")
        } else {
            String::new()
        }
    }

    /// The `TTL` clause on modern servers, nothing on old ones (retention from code there).
    pub(super) fn ttl(&self) -> String {
        if self.modern {
            format!(
                "\nTTL {RETENTION_COLUMN} + INTERVAL {} DAY",
                self.retention_days
            )
        } else {
            String::new()
        }
    }
}

/// One schema change: tables created in order, then materialized views over them (each
/// back-filled from the rows already there), then tables filled from others, then columns
/// added to existing tables, then columns given new codecs, then the version is recorded.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub tables: fn(&DdlContext) -> Vec<TableDdl>,
    pub views: fn(&DdlContext) -> Vec<ViewDdl>,
    pub fills: fn(&DdlContext) -> Vec<FillDdl>,
    pub columns: fn(&DdlContext) -> Vec<ColumnDdl>,
    pub codecs: fn(&DdlContext) -> Vec<CodecDdl>,
}

/// A column added to an existing table (on a cluster: to its local table on every node and to
/// its `Distributed` table). 18.16 knows no `ADD COLUMN IF NOT EXISTS`, so the migration asks
/// `system.columns` first: a column already there is left alone.
#[derive(Debug, Clone)]
pub struct ColumnDdl {
    pub table: &'static str,
    pub column: &'static str,
    /// The type and default, e.g. `UInt64 DEFAULT 0`.
    pub ty: String,
}

/// An existing column given another codec (modern servers only: older ones know none), on the
/// table that stores the rows (on a cluster: the local table on every node; a `Distributed`
/// table stores nothing). The type is unchanged, so the server rewrites no data: parts written
/// or merged from then on use the codec, older parts keep theirs until a merge rewrites them.
/// Running it again is harmless.
#[derive(Debug, Clone)]
pub struct CodecDdl {
    pub table: &'static str,
    pub column: &'static str,
    /// The column's type, unchanged, with its new codec: `UInt64 CODEC(T64, ZSTD(3))`.
    pub ty: String,
}

/// A table (re)built from the rows of others by one `INSERT ... SELECT`, for data that no
/// view can keep (the function rollup needs the frames of `stacks` for each row of
/// `samples`). The select names its sources `{samples}` and `{stacks}` and its join
/// `{join}`, which [`Layout::render_fill`] replaces.
#[derive(Debug, Clone)]
pub struct FillDdl {
    pub target: &'static str,
    pub select: String,
}

/// When a migration statement runs.
enum Guard {
    Always,
    /// Only when the table lacks the column (18.16 knows no `ADD COLUMN IF NOT EXISTS`).
    ColumnAbsent(String, &'static str),
    /// Only when the table (on this node) has rows: a fill reads them, and on a cluster
    /// migrated node by node, a fresh database's later nodes do not have the tables a fill
    /// joins yet (they have no rows either).
    RowsIn(String),
}

/// What a migration has none of (tables, views, columns or codecs).
fn none<T>(_ctx: &DdlContext) -> Vec<T> {
    Vec::new()
}

/// A materialized view that feeds `target` from every insert into `source`. On a cluster it
/// is one view per node, from the node's local `source` into its local `target`, so rollups
/// stay on the shard of their rows (both tables must share a shard key).
#[derive(Debug, Clone)]
pub struct ViewDdl {
    pub name: &'static str,
    pub source: &'static str,
    pub target: &'static str,
    /// `SELECT ... FROM {source} ...`: the rows the view inserts for a block of `source`;
    /// `{source}` is replaced by the table the view reads.
    pub select: String,
}

/// A table, as a migration declares it.
#[derive(Debug, Clone)]
pub struct TableDdl {
    pub name: &'static str,
    /// The parenthesised column list.
    pub columns: String,
    pub engine: Engine,
    /// Everything after the engine: `PARTITION BY`, `ORDER BY`, `TTL`.
    pub keys: String,
    /// The `Distributed` sharding expression on a cluster. Rows that are read together (one
    /// endpoint's, one record's versions, one lease's claims) share a shard.
    pub shard_key: &'static str,
}

/// The table engines profwatch uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    MergeTree,
    /// `ReplacingMergeTree(version column)`.
    Replacing(&'static str),
    /// `AggregatingMergeTree`: rows with equal sort keys merge their aggregate states.
    Aggregating,
    /// `SummingMergeTree((columns))`: rows with equal sort keys add up these columns.
    Summing(&'static str),
}

/// Where the DDL goes: one server, or every node of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Single,
    Cluster {
        /// The cluster's name in the servers' `remote_servers`.
        name: String,
        /// The database, named in the `Distributed` engine.
        database: String,
        /// Append `ON CLUSTER name` (the cluster has a DDL coordinator); otherwise the
        /// statements are run on each node in turn.
        on_cluster: bool,
        /// `Replicated*MergeTree` engines, with the `{shard}` and `{replica}` macros each
        /// node defines (production layout, docs/clickhouse-cluster.md).
        replicated: bool,
    },
}

impl Layout {
    /// The name of the table that holds the rows of `table` on a node.
    pub fn local_name(&self, table: &str) -> String {
        match self {
            Layout::Single => table.to_owned(),
            Layout::Cluster { .. } => format!("{table}{LOCAL_SUFFIX}"),
        }
    }

    /// ` ON CLUSTER name` when DDL goes through the coordinator, else nothing.
    fn on_cluster(&self) -> String {
        match self {
            Layout::Cluster {
                name,
                on_cluster: true,
                ..
            } => format!(" ON CLUSTER {name}"),
            _ => String::new(),
        }
    }

    /// The `CREATE TABLE` statements for one table.
    pub fn render(&self, t: &TableDdl) -> Vec<String> {
        let engine = |replicated: Option<&str>| match (t.engine, replicated) {
            (Engine::MergeTree, None) => "MergeTree".to_owned(),
            (Engine::Replacing(v), None) => format!("ReplacingMergeTree({v})"),
            (Engine::Aggregating, None) => "AggregatingMergeTree".to_owned(),
            (Engine::Summing(c), None) => format!("SummingMergeTree(({c}))"),
            (Engine::MergeTree, Some(path)) => {
                format!("ReplicatedMergeTree('{path}', '{{replica}}')")
            }
            (Engine::Replacing(v), Some(path)) => {
                format!("ReplicatedReplacingMergeTree('{path}', '{{replica}}', {v})")
            }
            (Engine::Aggregating, Some(path)) => {
                format!("ReplicatedAggregatingMergeTree('{path}', '{{replica}}')")
            }
            (Engine::Summing(c), Some(path)) => {
                format!("ReplicatedSummingMergeTree('{path}', '{{replica}}', ({c}))")
            }
        };
        let create = |name: &str, engine: String| {
            format!(
                "CREATE TABLE IF NOT EXISTS {name}{on} {columns} ENGINE = {engine}\n{keys}",
                on = self.on_cluster(),
                columns = t.columns,
                keys = t.keys,
            )
        };
        match self {
            Layout::Single => vec![create(t.name, engine(None))],
            Layout::Cluster {
                name: cluster,
                database,
                replicated,
                ..
            } => {
                let local = self.local_name(t.name);
                let path = format!("/clickhouse/tables/{{shard}}/{database}/{local}");
                vec![
                    create(&local, engine(replicated.then_some(path.as_str()))),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {name}{on} AS {local} \
                         ENGINE = Distributed({cluster}, {database}, {local}, {key})",
                        name = t.name,
                        on = self.on_cluster(),
                        key = t.shard_key,
                    ),
                ]
            }
        }
    }
}

impl Layout {
    /// The tables a column is added to, each with its `ALTER TABLE ... ADD COLUMN` statement:
    /// the local table first, then (on a cluster) the `Distributed` one over it.
    pub fn render_column(&self, c: &ColumnDdl) -> Vec<(String, String)> {
        let mut tables = vec![self.local_name(c.table)];
        if matches!(self, Layout::Cluster { .. }) {
            tables.push(c.table.to_owned());
        }
        tables
            .into_iter()
            .map(|t| {
                let sql = format!(
                    "ALTER TABLE {t}{on} ADD COLUMN {column} {ty}",
                    on = self.on_cluster(),
                    column = c.column,
                    ty = c.ty,
                );
                (t, sql)
            })
            .collect()
    }

    /// The `ALTER TABLE ... MODIFY COLUMN` statement that gives a column its codec, on the
    /// table that stores the rows.
    pub fn render_codec(&self, c: &CodecDdl) -> String {
        format!(
            "ALTER TABLE {t}{on} MODIFY COLUMN {column} {ty}",
            t = self.local_name(c.table),
            on = self.on_cluster(),
            column = c.column,
            ty = c.ty,
        )
    }

    /// The `CREATE MATERIALIZED VIEW` statement: on a cluster, over the local tables.
    pub fn render_view(&self, v: &ViewDdl) -> String {
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {name}{on} TO {target} AS {select}",
            name = self.local_name(v.name),
            on = self.on_cluster(),
            target = self.local_name(v.target),
            select = v.select.replace("{source}", &self.local_name(v.source)),
        )
    }

    /// The statements that (re)build `v.target` from the rows of `v.source`: empty it, then
    /// insert the aggregate of every row. Run right after the view is created, so running the
    /// migration again (it failed before it was recorded) does not count rows twice. On one
    /// server or each node (no coordinator) they act on its local tables; with a coordinator
    /// the `TRUNCATE` goes `ON CLUSTER` and the insert reads and writes the `Distributed`
    /// tables, which route each row to the shard its events are on.
    pub fn render_backfill(&self, v: &ViewDdl) -> Vec<String> {
        let (target, source) = match self {
            Layout::Cluster {
                on_cluster: true, ..
            } => (v.target.to_owned(), v.source.to_owned()),
            _ => (self.local_name(v.target), self.local_name(v.source)),
        };
        vec![
            format!(
                "TRUNCATE TABLE IF EXISTS {local}{on}",
                local = self.local_name(v.target),
                on = self.on_cluster()
            ),
            format!(
                "INSERT INTO {target} {select}",
                select = v.select.replace("{source}", &source)
            ),
        ]
    }
}

impl Layout {
    /// The statements that (re)build `f.target`: empty it, then insert the select. On one
    /// server, or on each node in turn (no coordinator), from the node's local `samples` (its
    /// rows' rollup stays on its shard) joined to `stacks` as the node sees them all (the
    /// `Distributed` table on a cluster: stacks are sharded by their id, not by endpoint).
    /// With a coordinator, run once: the `Distributed` tables, with a `GLOBAL` join, and the
    /// insert routes each row to its shard.
    pub fn render_fill(&self, f: &FillDdl) -> Vec<String> {
        let (target, samples, join) = match self {
            Layout::Cluster {
                on_cluster: true, ..
            } => (
                f.target.to_owned(),
                "samples".to_owned(),
                "GLOBAL ALL INNER JOIN",
            ),
            _ => (
                self.local_name(f.target),
                self.local_name("samples"),
                "ALL INNER JOIN",
            ),
        };
        vec![
            format!(
                "TRUNCATE TABLE IF EXISTS {local}{on}",
                local = self.local_name(f.target),
                on = self.on_cluster()
            ),
            format!(
                "INSERT INTO {target} {select}",
                select = f
                    .select
                    .replace("{samples}", &samples)
                    .replace("{stacks}", "stacks")
                    .replace("{join}", join)
            ),
        ]
    }
}

/// Appended to a table's name for its rows on each node of a cluster.
pub const LOCAL_SUFFIX: &str = "_local";

/// All migrations, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create events",
        tables: create_events,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 2,
        name: "create samples and stacks",
        tables: create_profiles,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 3,
        name: "create regressions",
        tables: create_regressions,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 4,
        name: "create batch_keys",
        tables: create_batch_keys,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 5,
        name: "create leases",
        tables: create_leases,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 6,
        name: "create batch_claims",
        tables: create_batch_claims,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 7,
        name: "create events_rollup, its view, back-fill",
        tables: super::rollups::create_tables,
        views: super::rollups::create_views,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 8,
        name: "keyed 128-bit stack ids: stack_key, samples.stack_hash_hi, stacks.hash_hi",
        tables: super::stack_key::create_tables,
        views: none,
        fills: none,
        columns: stack_id_high_halves,
        codecs: none,
    },
    Migration {
        version: 9,
        name: "create memory_samples",
        tables: super::memory::create_tables,
        views: none,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 10,
        name: "codecs per column for events and samples (modern servers)",
        tables: none,
        views: none,
        fills: none,
        columns: none,
        codecs: column_codecs,
    },
    Migration {
        version: 11,
        name: "create function_rollup, back-fill it from samples and stacks",
        tables: super::functions::create_tables,
        views: none,
        fills: super::functions::fills,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 12,
        name: "create events_rollup_endpoint (no dc, no host), its view, back-fill",
        tables: super::rollups::create_endpoint_tables,
        views: super::rollups::create_endpoint_views,
        fills: none,
        columns: none,
        codecs: none,
    },
    Migration {
        version: 13,
        name: "create events_rollup_endpoint_hour (per endpoint and build, per hour), its view, back-fill",
        tables: super::rollups::create_hour_tables,
        views: super::rollups::create_hour_views,
        fills: none,
        columns: none,
        codecs: none,
    },
];

/// Codecs chosen per column for the two big tables (migration 10), from each column's
/// compressed bytes per row on a current server (26.9, the bench's `ingest` data: 1M events,
/// 20 endpoints, 50 hosts, 5 builds, 3 DCs; bench/README.md has the table):
/// - Label strings: `LowCardinality` keeps a small index per row, which by default is LZ4'd;
///   `ZSTD(3)` takes host from 1.01 to 0.72 B, build and DC from 0.58/0.55 to 0.34/0.26 B.
/// - `ts`, sorted within an endpoint: `Delta, T64, ZSTD(3)` (4.66 B) beats `Delta, ZSTD`
///   (5.28 B) and `DoubleDelta, ZSTD` (5.73 B): the deltas of interleaved hosts' requests are
///   not regular, but T64 packs them to the bits they need.
/// - Costs (`cpu_ns`, `wall_ns`, `instructions`, `samples`): `T64, ZSTD(3)` (cpu 3.41 → 3.00 B,
///   wall 3.60 → 3.22 B, instructions 3.68 → 3.30 B; `ZSTD(1)` after T64 is 0.5% bigger). Their
///   low bits are noise, so no codec gets much nearer the entropy.
/// - Kept as created: `status` and the label arrays (`ZSTD(1)`: 0.07 and 0.14 B; T64 or
///   `ZSTD(3)` made them bigger, 0.12 and 0.19 B), the stack ids (random: nothing compresses
///   them), `weight` and `date` (a constant column costs nothing already).
fn column_codecs(ctx: &DdlContext) -> Vec<CodecDdl> {
    if !ctx.modern {
        return Vec::new();
    }
    let label = format!("{}{}", ctx.lc("String"), ctx.codec("ZSTD(3)"));
    let ts = format!("Int64{}", ctx.codec("Delta, T64, ZSTD(3)"));
    let cost = format!("UInt64{}", ctx.codec("T64, ZSTD(3)"));
    let mut out = Vec::new();
    for table in ["events", "samples"] {
        for column in ["tenant", "service", "endpoint", "build", "dc", "host"] {
            out.push((table, column, label.clone()));
        }
        out.push((table, "ts", ts.clone()));
    }
    out.extend([
        ("events", "cpu_ns", cost.clone()),
        ("events", "wall_ns", cost.clone()),
        (
            "events",
            "instructions",
            format!("Nullable(UInt64){}", ctx.codec("T64, ZSTD(3)")),
        ),
        ("samples", "samples", cost.clone()),
        ("samples", "cpu_ns", cost),
    ]);
    out.into_iter()
        .map(|(table, column, ty)| CodecDdl { table, column, ty })
        .collect()
}

/// Stack ids grow from 64 to 128 bits (`stack_ids.rs`): each table that holds one gains its
/// high half. Rows written before read as a high half of 0 under their old 64-bit hash, which
/// their own stacks rows share, so they stay readable until the retention drops them.
fn stack_id_high_halves(ctx: &DdlContext) -> Vec<ColumnDdl> {
    vec![
        ColumnDdl {
            table: "samples",
            column: "stack_hash_hi",
            ty: format!("UInt64 DEFAULT 0{}", ctx.codec("ZSTD")),
        },
        ColumnDdl {
            table: "stacks",
            column: "hash_hi",
            ty: "UInt64 DEFAULT 0".to_owned(),
        },
    ]
}

/// Claims on an idempotency key by a collector about to store its batch: the earliest live
/// claim stores it, concurrent retries of the same batch back off (see `write_once`).
fn create_batch_claims(_ctx: &DdlContext) -> Vec<TableDdl> {
    vec![TableDdl {
        name: "batch_claims",
        columns: format!(
            "(
    tenant String,
    key String,
    holder String,
    claimed Int64,
    {RETENTION_COLUMN} Date
)"
        ),
        engine: Engine::MergeTree,
        keys: format!("PARTITION BY {RETENTION_COLUMN}\nORDER BY (tenant, key, claimed)"),
        shard_key: "cityHash64(tenant, key)",
    }]
}

/// Leases for work that must run once across collectors (the analysis schedule): every claim is
/// a new row; the row with the highest `version` (then `holder`) is the lease.
fn create_leases(_ctx: &DdlContext) -> Vec<TableDdl> {
    vec![TableDdl {
        name: "leases",
        columns: "(
    name String,
    holder String,
    expires Int64,
    version Int64
)"
        .to_owned(),
        engine: Engine::Replacing("version"),
        keys: "ORDER BY name".to_owned(),
        shard_key: "cityHash64(name)",
    }]
}

/// Idempotency keys of stored batches, so a batch retried after a lost acknowledgement is
/// recognised (see `ClickHouseStore::write_once`).
fn create_batch_keys(_ctx: &DdlContext) -> Vec<TableDdl> {
    vec![TableDdl {
        name: "batch_keys",
        columns: format!(
            "(
    tenant String,
    key String,
    received Int64,
    {RETENTION_COLUMN} Date
)"
        ),
        engine: Engine::MergeTree,
        keys: format!("PARTITION BY {RETENTION_COLUMN}\nORDER BY (tenant, key)"),
        shard_key: "cityHash64(tenant, key)",
    }]
}

/// Regression records: every change inserts a new version of the record (`updated`, unix ns);
/// reads take the latest version per id (`argMax`), and `ReplacingMergeTree` folds the old
/// ones. The key columns are there for Grafana; `record` is the whole record as JSON.
fn create_regressions(_ctx: &DdlContext) -> Vec<TableDdl> {
    vec![TableDdl {
        name: "regressions",
        columns: "(
    tenant String,
    id String,
    updated Int64,
    service String,
    endpoint String,
    metric String,
    baseline String,
    candidate String,
    effect Float64,
    effect_low Float64,
    effect_high Float64,
    p_value Float64,
    state String,
    first_seen Int64,
    last_seen Int64,
    record String
)"
        .to_owned(),
        engine: Engine::Replacing("updated"),
        keys: "ORDER BY (tenant, id)".to_owned(),
        shard_key: "cityHash64(tenant, id)",
    }]
}

/// Stack samples refer to stacks by content hash; each stack is stored once per tenant (and
/// re-written at most once a day while in use, so retention by day never drops a stack that
/// recent samples still need; `ReplacingMergeTree` folds the copies).
fn create_profiles(ctx: &DdlContext) -> Vec<TableDdl> {
    let (lc, codec, ttl) = (|t: &str| ctx.lc(t), |c: &str| ctx.codec(c), ctx.ttl());
    let s = lc("String");
    vec![
        TableDdl {
            name: "samples",
            columns: format!(
                "(
    tenant {s},
    service {s},
    endpoint {s},
    build {s},
    dc {s},
    host {s},
    ts Int64{delta},
    {RETENTION_COLUMN} Date{delta},
    label_keys Array(String){zstd},
    label_values Array(String){zstd},
    stack_hash UInt64{zstd},
    samples UInt64{zstd},
    cpu_ns UInt64{zstd}
)",
                delta = codec("Delta, ZSTD"),
                zstd = codec("ZSTD"),
            ),
            engine: Engine::MergeTree,
            keys: per_endpoint_keys(&ttl),
            shard_key: PER_ENDPOINT_SHARD_KEY,
        },
        TableDdl {
            name: "stacks",
            columns: format!(
                "(
    tenant {s},
    hash UInt64,
    {RETENTION_COLUMN} Date,
    frames Array(String){zstd}
)",
                zstd = codec("ZSTD"),
            ),
            engine: Engine::Replacing(RETENTION_COLUMN),
            keys: format!("PARTITION BY {RETENTION_COLUMN}\nORDER BY (tenant, hash){ttl}"),
            shard_key: "cityHash64(tenant, hash)",
        },
    ]
}

/// Rows read per endpoint (events, samples) are sorted and sharded by it.
pub(super) const PER_ENDPOINT_SHARD_KEY: &str = "cityHash64(tenant, service, endpoint)";

/// Daily partitions, sorted by endpoint then time.
fn per_endpoint_keys(ttl: &str) -> String {
    format!("PARTITION BY {RETENTION_COLUMN}\nORDER BY (tenant, service, endpoint, ts){ttl}")
}

fn create_events(ctx: &DdlContext) -> Vec<TableDdl> {
    // `lc` wraps low-cardinality strings; `codec` appends a compression codec. Both expand
    // to nothing on old servers, which know neither.
    let (lc, codec, ttl) = (|t: &str| ctx.lc(t), |c: &str| ctx.codec(c), ctx.ttl());
    let s = lc("String");
    vec![TableDdl {
        name: "events",
        columns: format!(
            "(
    tenant {s},
    service {s},
    endpoint {s},
    build {s},
    dc {s},
    host {s},
    ts Int64{delta},
    {RETENTION_COLUMN} Date{delta},
    status UInt16{zstd},
    cpu_ns UInt64{zstd},
    instructions Nullable(UInt64){zstd},
    wall_ns UInt64{zstd},
    weight Float64{zstd},
    label_keys Array(String){zstd},
    label_values Array(String){zstd}
)",
            delta = codec("Delta, ZSTD"),
            zstd = codec("ZSTD"),
        ),
        engine: Engine::MergeTree,
        keys: per_endpoint_keys(&ttl),
        shard_key: PER_ENDPOINT_SHARD_KEY,
    }]
}

/// `schema_migrations` is a plain local table on every layout (see the module docs).
fn create_schema_migrations(layout: &Layout) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS schema_migrations{on} (
    version UInt32,
    name String,
    server_version String,
    applied_at DateTime
) ENGINE = MergeTree
ORDER BY version",
        on = layout.on_cluster()
    )
}

/// Creates `schema_migrations` if needed and applies the migrations not recorded there, on the
/// server `client` talks to (and, with `ON CLUSTER`, through it on every node). Returns the
/// versions applied now (empty when the schema was current).
pub async fn run(
    client: &Client,
    server: &ServerVersion,
    ctx: &DdlContext,
    layout: &Layout,
) -> Result<Vec<u32>, StoreError> {
    client
        .query(&create_schema_migrations(layout))
        .execute()
        .await
        .map_err(|e| query_error("creating table schema_migrations", e))?;
    let applied: Vec<u32> = client
        .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
        .fetch_all::<u32>()
        .await
        .map_err(|e| query_error("reading schema_migrations", e))?;

    let mut now_applied = Vec::new();
    for migration in MIGRATIONS {
        if applied.contains(&migration.version) {
            continue;
        }
        let views = (migration.views)(ctx);
        // Views start feeding their tables before the back-fill reads the source, so no
        // row is left out; a row inserted between the two is counted twice (see rollups.rs).
        // Each statement with what it needs to run (see `Guard`).
        let statements = (migration.tables)(ctx)
            .iter()
            .flat_map(|t| layout.render(t))
            .chain(views.iter().map(|v| layout.render_view(v)))
            .chain(views.iter().flat_map(|v| layout.render_backfill(v)))
            .map(|sql| (Guard::Always, sql))
            .chain((migration.fills)(ctx).iter().flat_map(|f| {
                // With a coordinator the fill reads every node's rows (the `Distributed` table).
                let samples = match layout {
                    Layout::Cluster {
                        on_cluster: true, ..
                    } => "samples".to_owned(),
                    _ => layout.local_name("samples"),
                };
                layout
                    .render_fill(f)
                    .into_iter()
                    .map(move |sql| (Guard::RowsIn(samples.clone()), sql))
            }))
            .chain((migration.columns)(ctx).iter().flat_map(|c| {
                layout
                    .render_column(c)
                    .into_iter()
                    .map(|(table, sql)| (Guard::ColumnAbsent(table, c.column), sql))
            }))
            .chain(
                (migration.codecs)(ctx)
                    .iter()
                    .map(|c| (Guard::Always, layout.render_codec(c))),
            )
            .collect::<Vec<_>>();
        let context = || {
            format!(
                "migration {} ({}) on ClickHouse {}",
                migration.version, migration.name, server.raw
            )
        };
        for (guard, statement) in statements {
            let skip = match &guard {
                Guard::Always => false,
                Guard::ColumnAbsent(table, column) => {
                    let present: u64 = client
                        .query(
                            "SELECT count() FROM system.columns \
                             WHERE database = currentDatabase() AND table = ? AND name = ?",
                        )
                        .bind(table.as_str())
                        .bind(*column)
                        .fetch_one()
                        .await
                        .map_err(|e| query_error(&context(), e))?;
                    present > 0
                }
                Guard::RowsIn(table) => {
                    let rows: u64 = client
                        .query("SELECT count() FROM ?")
                        .bind(Identifier(table))
                        .fetch_one()
                        .await
                        .map_err(|e| query_error(&context(), e))?;
                    rows == 0
                }
            };
            if skip {
                continue;
            }
            client
                .query(&statement)
                .execute()
                .await
                .map_err(|e| query_error(&context(), e))?;
        }
        client
            .query(
                "INSERT INTO schema_migrations (version, name, server_version, applied_at) \
                 VALUES (?, ?, ?, now())",
            )
            .bind(migration.version)
            .bind(migration.name)
            .bind(server.raw.as_str())
            .execute()
            .await
            .map_err(|e| {
                query_error(
                    &format!(
                        "recording migration {} in schema_migrations",
                        migration.version
                    ),
                    e,
                )
            })?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            server = %server.raw,
            "applied ClickHouse migration"
        );
        now_applied.push(migration.version);
    }
    Ok(now_applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fill reads the node's local samples and every node's stacks, or, through a
    /// coordinator, the `Distributed` tables with a `GLOBAL` join.
    #[test]
    fn fills_read_local_samples_and_all_stacks() {
        let fill = FillDdl {
            target: "t",
            select: "SELECT * FROM {samples} AS a {join} (SELECT * FROM {stacks}) AS b".into(),
        };
        assert_eq!(
            Layout::Single.render_fill(&fill),
            [
                "TRUNCATE TABLE IF EXISTS t",
                "INSERT INTO t SELECT * FROM samples AS a ALL INNER JOIN (SELECT * FROM stacks) AS b"
            ]
        );
        assert_eq!(
            cluster(false, false).render_fill(&fill)[1],
            "INSERT INTO t_local SELECT * FROM samples_local AS a ALL INNER JOIN (SELECT * FROM stacks) AS b"
        );
        assert_eq!(
            cluster(true, false).render_fill(&fill),
            [
                "TRUNCATE TABLE IF EXISTS t_local ON CLUSTER c1",
                "INSERT INTO t SELECT * FROM samples AS a GLOBAL ALL INNER JOIN (SELECT * FROM stacks) AS b"
            ]
        );
    }

    #[test]
    fn codecs_go_to_the_tables_that_store_rows_and_only_on_modern_servers() {
        let codecs = |modern| {
            let ten = MIGRATIONS.iter().find(|m| m.version == 10);
            (ten.expect("migration 10").codecs)(&DdlContext {
                modern,
                retention_days: 30,
            })
        };
        assert!(codecs(false).is_empty());
        let chosen = codecs(true);
        let cpu = chosen
            .iter()
            .find(|c| c.table == "events" && c.column == "cpu_ns")
            .expect("events.cpu_ns");
        assert_eq!(
            Layout::Single.render_codec(cpu),
            "ALTER TABLE events MODIFY COLUMN cpu_ns UInt64 CODEC(T64, ZSTD(3))"
        );
        assert_eq!(
            cluster(true, false).render_codec(cpu),
            "ALTER TABLE events_local ON CLUSTER c1 MODIFY COLUMN cpu_ns UInt64 CODEC(T64, ZSTD(3))"
        );
    }

    #[test]
    fn versions_parse_and_classify() {
        let old = ServerVersion::parse("18.16.1").expect("parses");
        assert_eq!((old.major, old.minor), (18, 16));
        assert!(!old.is_modern());
        assert!(ServerVersion::parse("24.8.4.13")
            .expect("parses")
            .is_modern());
        assert!(ServerVersion::parse("20.1").expect("parses").is_modern());
        assert!(ServerVersion::parse("junk").is_none());
    }

    #[test]
    fn ddl_depends_on_the_version() {
        let single = |t: Vec<TableDdl>| Layout::Single.render(&t[0]).join("\n");
        let modern = single(create_events(&DdlContext {
            modern: true,
            retention_days: 30,
        }));
        assert!(modern.contains("service LowCardinality(String)"));
        assert!(modern.contains("ts Int64 CODEC(Delta, ZSTD)"));
        assert!(modern.contains("TTL date + INTERVAL 30 DAY"));
        let old = single(create_events(&DdlContext {
            modern: false,
            retention_days: 30,
        }));
        for absent in ["LowCardinality", "CODEC", "TTL"] {
            assert!(!old.contains(absent), "{absent} in {old}");
        }
        assert!(old.contains("PARTITION BY date"));
        assert!(old.contains("ORDER BY (tenant, service, endpoint, ts)"));
        assert!(old.starts_with("CREATE TABLE IF NOT EXISTS events (\n    tenant String,"));
        assert!(old.contains(") ENGINE = MergeTree\nPARTITION BY date"));
    }

    fn cluster(on_cluster: bool, replicated: bool) -> Layout {
        Layout::Cluster {
            name: "c1".to_owned(),
            database: "pw".to_owned(),
            on_cluster,
            replicated,
        }
    }

    #[test]
    fn a_cluster_gets_local_tables_and_distributed_tables_over_them() {
        let ctx = DdlContext {
            modern: false,
            retention_days: 30,
        };
        let events = &create_events(&ctx)[0];
        let sql = cluster(false, false).render(events);
        assert_eq!(sql.len(), 2);
        assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS events_local ("));
        assert!(sql[0].contains(") ENGINE = MergeTree\nPARTITION BY date"));
        assert_eq!(
            sql[1],
            "CREATE TABLE IF NOT EXISTS events AS events_local ENGINE = \
             Distributed(c1, pw, events_local, cityHash64(tenant, service, endpoint))"
        );

        let with_coordinator = cluster(true, true).render(&create_leases(&ctx)[0]);
        assert!(with_coordinator[0]
            .starts_with("CREATE TABLE IF NOT EXISTS leases_local ON CLUSTER c1 ("));
        assert!(with_coordinator[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/pw/leases_local', \
             '{replica}', version)"
        ));
        assert!(
            with_coordinator[1].starts_with("CREATE TABLE IF NOT EXISTS leases ON CLUSTER c1 AS")
        );
        assert!(create_schema_migrations(&cluster(true, false))
            .contains("schema_migrations ON CLUSTER c1 ("));
    }

    #[test]
    fn every_table_has_a_shard_key_over_its_own_columns() {
        let ctx = DdlContext {
            modern: true,
            retention_days: 7,
        };
        for m in MIGRATIONS {
            for t in (m.tables)(&ctx) {
                let inner = t
                    .shard_key
                    .strip_prefix("cityHash64(")
                    .and_then(|k| k.strip_suffix(')'))
                    .expect("cityHash64 of columns");
                for column in inner.split(", ") {
                    assert!(
                        t.columns.contains(&format!("\n    {column} ")),
                        "{}: shard key column {column} is not a column",
                        t.name
                    );
                }
            }
        }
    }

    #[test]
    fn a_column_is_added_to_the_local_table_then_the_distributed_one() {
        let ctx = DdlContext {
            modern: false,
            retention_days: 30,
        };
        let samples = &stack_id_high_halves(&ctx)[0];
        assert_eq!(
            Layout::Single.render_column(samples),
            [(
                "samples".to_owned(),
                "ALTER TABLE samples ADD COLUMN stack_hash_hi UInt64 DEFAULT 0".to_owned()
            )]
        );
        let on_cluster = cluster(true, false).render_column(samples);
        assert_eq!(
            on_cluster
                .iter()
                .map(|(t, _)| t.as_str())
                .collect::<Vec<_>>(),
            ["samples_local", "samples"]
        );
        assert!(on_cluster[0]
            .1
            .starts_with("ALTER TABLE samples_local ON CLUSTER c1 ADD COLUMN stack_hash_hi"));
    }

    #[test]
    fn versions_are_increasing() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
