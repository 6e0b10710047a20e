//! Server-side deduplication of retried batches, on servers that have it.
//!
//! `keys::write_once` checks, claims, inserts, then records a batch's idempotency key. It
//! leaves one window open: a claimant that dies between its insert and the key's record, retried
//! after its claim expired, stores the batch twice. From [`DEDUP_TOKENS_SINCE`] on, ClickHouse
//! closes that window itself: an insert carrying `insert_deduplication_token` is dropped when a
//! block with the same token is among the table's last [`DEDUP_WINDOW`] blocks. A keyed batch's
//! inserts carry a token made of its tenant and key; inserts without a key are never
//! deduplicated (two equal batches sent without keys are two batches).
//!
//! Plain `MergeTree` tables deduplicate only with `non_replicated_deduplication_window` set,
//! which [`sync_window`] keeps on every table a keyed batch writes, and on the rollup its
//! view feeds (`deduplicate_blocks_in_dependent_materialized_views`, so a dropped retry is not
//! counted in the rollup either). `Replicated*` tables deduplicate by default.
//!
//! Newer servers (26.x) add `deduplicate_insert`, which supersedes `insert_deduplicate` and is
//! on by default: there, the server would drop two equal unkeyed batches as one unless told
//! `deduplicate_insert = 'disable'`. Which switch a server reads is found at connect
//! ([`Support::detect`]), not guessed from its version.

use ::clickhouse::insert::Insert;
use ::clickhouse::{Client, Row};
use profwatch_model::Tenant;

use super::client::{query_error, NodeClient};
use super::events::EVENTS_TABLE;
use super::migrations::{Layout, ServerVersion};
use crate::StoreError;

/// The first version with `insert_deduplication_token` for plain `MergeTree` tables.
pub const DEDUP_TOKENS_SINCE: (u32, u32) = (22, 2);

/// How many recent blocks a table remembers the tokens of.
pub const DEDUP_WINDOW: u32 = 1000;

/// The tables keyed batches are inserted into, and the rollups views feed from them.
const DEDUP_TABLES: &[&str] = &[
    EVENTS_TABLE,
    super::rollups::ROLLUP_TABLE,
    super::rollups::ENDPOINT_ROLLUP_TABLE,
    super::rollups::HOUR_ROLLUP_TABLE,
    "samples",
    super::functions::FUNCTION_TABLE,
    super::memory::MEMORY_TABLE,
];

/// What a server offers for deduplicating inserts, found once at connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// An old server: no tokens, no settings to send.
    None,
    /// Tokens; `switch` when the server reads `deduplicate_insert` before `insert_deduplicate`.
    Tokens { switch: bool },
}

impl Support {
    /// Asks `client`'s server: tokens by version, the switch by its list of settings.
    pub async fn detect(client: &Client, server: &ServerVersion) -> Result<Support, StoreError> {
        if (server.major, server.minor) < DEDUP_TOKENS_SINCE {
            return Ok(Support::None);
        }
        let switch: u64 = client
            .query("SELECT count() FROM system.settings WHERE name = 'deduplicate_insert'")
            .fetch_one()
            .await
            .map_err(|e| query_error("reading the server's deduplication settings", e))?;
        Ok(Support::Tokens { switch: switch > 0 })
    }

    /// Whether the server drops a repeated token by itself.
    pub fn has_tokens(self) -> bool {
        matches!(self, Support::Tokens { .. })
    }
}

/// How one insert is deduplicated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dedup {
    /// An old server: no settings sent (it knows none of them).
    Unsupported,
    /// A batch without an idempotency key: never dropped as a repeat.
    Off { switch: bool },
    /// A keyed batch: a repeat of this token is dropped by the server.
    Token { token: String, switch: bool },
}

impl Dedup {
    /// How the server can deduplicate a batch with `key` (or without one).
    pub fn for_batch(support: Support, tenant: &Tenant, key: Option<&str>) -> Dedup {
        let Support::Tokens { switch } = support else {
            return Dedup::Unsupported;
        };
        match key {
            // The tenant first: keys are per tenant. Both are printable and bounded (the
            // collector checks keys), and the client escapes the URL parameter.
            Some(key) => Dedup::Token {
                token: format!("profwatch/{}/{key}", tenant.as_str()),
                switch,
            },
            None => Dedup::Off { switch },
        }
    }

    /// `ins` with the settings this deduplication needs.
    pub fn apply<T: Row>(&self, ins: Insert<T>) -> Insert<T> {
        match self {
            Dedup::Unsupported => ins,
            Dedup::Off { switch: true } => ins.with_setting("deduplicate_insert", "disable"),
            Dedup::Off { switch: false } => ins.with_setting("insert_deduplicate", "0"),
            Dedup::Token { token, switch } => {
                let ins = if *switch {
                    ins.with_setting("deduplicate_insert", "enable")
                } else {
                    ins.with_setting("insert_deduplicate", "1")
                };
                ins.with_setting("insert_deduplication_token", token.as_str())
                    .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            }
        }
    }
}

/// On servers with tokens, gives every plain `MergeTree` table in [`DEDUP_TABLES`] a window of
/// [`DEDUP_WINDOW`] blocks, on each node (tables made before this existed get it on the next
/// start). Replicated tables are left alone: they deduplicate already.
pub async fn sync_window(
    nodes: &[NodeClient],
    layout: &Layout,
    database: &str,
    support: Support,
) -> Result<(), StoreError> {
    if !support.has_tokens()
        || matches!(
            layout,
            Layout::Cluster {
                replicated: true,
                ..
            }
        )
    {
        return Ok(());
    }
    let setting = format!("non_replicated_deduplication_window = {DEDUP_WINDOW}");
    for node in nodes {
        for name in DEDUP_TABLES {
            let table = layout.local_name(name);
            let create: String = node
                .client
                .query(
                    "SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?",
                )
                .bind(database)
                .bind(table.as_str())
                .fetch_one()
                .await
                .map_err(|e| query_error(&format!("reading the definition of table {table}"), e))?;
            if create.contains(&setting) {
                continue;
            }
            node.client
                .query(&format!("ALTER TABLE {table} MODIFY SETTING {setting}"))
                .execute()
                .await
                .map_err(|e| {
                    query_error(
                        &format!(
                            "setting the deduplication window of {table} on {}",
                            node.url
                        ),
                        e,
                    )
                })?;
            tracing::info!(table, node = %node.url, window = DEDUP_WINDOW, "set the deduplication window of a ClickHouse table");
        }
    }
    Ok(())
}
