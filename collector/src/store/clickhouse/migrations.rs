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

use ::clickhouse::Client;

use super::{query_error, RETENTION_COLUMN};
use crate::store::StoreError;

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
    fn lc(&self, t: &str) -> String {
        if self.modern {
            format!("LowCardinality({t})")
        } else {
            t.to_owned()
        }
    }

    /// ` CODEC(c)` on modern servers, nothing on old ones.
    fn codec(&self, c: &str) -> String {
        if self.modern {
            format!(" CODEC({c})")
        } else {
            String::new()
        }
    }

    /// The `TTL` clause on modern servers, nothing on old ones (retention from code there).
    fn ttl(&self) -> String {
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

/// One schema change. `statements` are run in order, then the version is recorded.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub statements: fn(&DdlContext) -> Vec<String>,
}

/// All migrations, in version order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "create events",
        statements: create_events,
    },
    Migration {
        version: 2,
        name: "create samples and stacks",
        statements: create_profiles,
    },
    Migration {
        version: 3,
        name: "create regressions",
        statements: create_regressions,
    },
    Migration {
        version: 4,
        name: "create batch_keys",
        statements: create_batch_keys,
    },
    Migration {
        version: 5,
        name: "create leases",
        statements: create_leases,
    },
];

/// Leases for work that must run once across collectors (the analysis schedule): every claim is
/// a new row; the row with the highest `version` (then `holder`) is the lease.
fn create_leases(_ctx: &DdlContext) -> Vec<String> {
    vec!["CREATE TABLE IF NOT EXISTS leases (
    name String,
    holder String,
    expires Int64,
    version Int64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name"
        .to_owned()]
}

/// Idempotency keys of stored batches, so a batch retried after a lost acknowledgement is
/// recognised (see `ClickHouseStore::write_once`).
fn create_batch_keys(_ctx: &DdlContext) -> Vec<String> {
    vec![format!(
        "CREATE TABLE IF NOT EXISTS batch_keys (
    tenant String,
    key String,
    received Int64,
    {RETENTION_COLUMN} Date
) ENGINE = MergeTree
PARTITION BY {RETENTION_COLUMN}
ORDER BY (tenant, key)"
    )]
}

/// Regression records: every change inserts a new version of the record (`updated`, unix ns);
/// reads take the latest version per id (`argMax`), and `ReplacingMergeTree` folds the old
/// ones. The key columns are there for Grafana; `record` is the whole record as JSON.
fn create_regressions(_ctx: &DdlContext) -> Vec<String> {
    vec!["CREATE TABLE IF NOT EXISTS regressions (
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
) ENGINE = ReplacingMergeTree(updated)
ORDER BY (tenant, id)"
        .to_owned()]
}

/// Stack samples refer to stacks by content hash; each stack is stored once per tenant (and
/// re-written at most once a day while in use, so retention by day never drops a stack that
/// recent samples still need; `ReplacingMergeTree` folds the copies).
fn create_profiles(ctx: &DdlContext) -> Vec<String> {
    let (lc, codec, ttl) = (|t: &str| ctx.lc(t), |c: &str| ctx.codec(c), ctx.ttl());
    let s = lc("String");
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS samples (
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
) ENGINE = MergeTree
PARTITION BY {RETENTION_COLUMN}
ORDER BY (tenant, service, endpoint, ts){ttl}",
            delta = codec("Delta, ZSTD"),
            zstd = codec("ZSTD"),
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS stacks (
    tenant {s},
    hash UInt64,
    {RETENTION_COLUMN} Date,
    frames Array(String){zstd}
) ENGINE = ReplacingMergeTree({RETENTION_COLUMN})
PARTITION BY {RETENTION_COLUMN}
ORDER BY (tenant, hash){ttl}",
            zstd = codec("ZSTD"),
        ),
    ]
}

fn create_events(ctx: &DdlContext) -> Vec<String> {
    // `lc` wraps low-cardinality strings; `codec` appends a compression codec. Both expand
    // to nothing on old servers, which know neither.
    let (lc, codec, ttl) = (|t: &str| ctx.lc(t), |c: &str| ctx.codec(c), ctx.ttl());
    let s = lc("String");
    vec![format!(
        "CREATE TABLE IF NOT EXISTS events (
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
) ENGINE = MergeTree
PARTITION BY {RETENTION_COLUMN}
ORDER BY (tenant, service, endpoint, ts){ttl}",
        delta = codec("Delta, ZSTD"),
        zstd = codec("ZSTD"),
    )]
}

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version UInt32,
    name String,
    server_version String,
    applied_at DateTime
) ENGINE = MergeTree
ORDER BY version";

/// Creates `schema_migrations` if needed and applies the migrations not recorded there.
/// Returns the versions applied now (empty when the schema was current).
pub async fn run(
    client: &Client,
    server: &ServerVersion,
    ctx: &DdlContext,
) -> Result<Vec<u32>, StoreError> {
    client
        .query(CREATE_SCHEMA_MIGRATIONS)
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
        for statement in (migration.statements)(ctx) {
            client.query(&statement).execute().await.map_err(|e| {
                query_error(
                    &format!(
                        "migration {} ({}) on ClickHouse {}",
                        migration.version, migration.name, server.raw
                    ),
                    e,
                )
            })?;
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
        let modern = create_events(&DdlContext {
            modern: true,
            retention_days: 30,
        })
        .join("\n");
        assert!(modern.contains("service LowCardinality(String)"));
        assert!(modern.contains("ts Int64 CODEC(Delta, ZSTD)"));
        assert!(modern.contains("TTL date + INTERVAL 30 DAY"));
        let old = create_events(&DdlContext {
            modern: false,
            retention_days: 30,
        })
        .join("\n");
        for absent in ["LowCardinality", "CODEC", "TTL"] {
            assert!(!old.contains(absent), "{absent} in {old}");
        }
        assert!(old.contains("PARTITION BY date"));
        assert!(old.contains("ORDER BY (tenant, service, endpoint, ts)"));
    }

    #[test]
    fn versions_are_increasing() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
    }
}
