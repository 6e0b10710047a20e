//! The key of the database's stack ids (`crate::stack_ids`): 16 random bytes in `stack_key`,
//! made by the first collector that finds none and read by every collector at connect, so
//! all of them give a stack the same id.
//!
//! Two collectors connecting to an empty table at once each write a key; each then waits
//! [`SETTLE`] and takes the earliest written (ties by key), so both take the same one as long
//! as a written key is visible to the other within the wait (inserts on a cluster are
//! synchronous, `insert_distributed_sync`). The key is a secret like a password: whoever can
//! read it can make stacks whose ids collide. The read-only dashboard user of
//! `dashboards/README.md` is granted only `events` and `regressions`.

use std::time::Duration;

use ::clickhouse::Client;
use profwatch_model::timefmt::now_ns;
use serde::{Deserialize, Serialize};

use super::client::{insert_one, query_error, unavailable};
use super::migrations::{DdlContext, Engine, TableDdl};
use crate::stack_ids::StackIds;
use crate::StoreError;

/// How long a collector that wrote a key waits before reading back which key won.
const SETTLE: Duration = Duration::from_millis(200);

/// `stack_key`: one row per key written; the earliest is the key.
pub(super) fn create_tables(_ctx: &DdlContext) -> Vec<TableDdl> {
    vec![TableDdl {
        name: "stack_key",
        columns: "(
    key String,
    written Int64
)"
        .to_owned(),
        engine: Engine::MergeTree,
        keys: "ORDER BY (written, key)".to_owned(),
        shard_key: "cityHash64(key)",
    }]
}

#[derive(::clickhouse::Row, Serialize, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct KeyRow {
    /// 32 hex digits.
    key: String,
    written: i64,
}

/// The earliest key written, if any.
async fn earliest(client: &Client) -> Result<Option<StackIds>, StoreError> {
    let rows: Vec<KeyRow> = client
        .query("SELECT key, written FROM stack_key ORDER BY written, key LIMIT 1")
        .fetch_all()
        .await
        .map_err(|e| query_error("reading the stack key", e))?;
    match rows.first() {
        None => Ok(None),
        Some(row) => {
            let bytes = from_hex(&row.key).ok_or_else(|| {
                StoreError::Query(
                    "table stack_key holds a key that is not 32 hex digits; \
                     restore it or drop the row (profiles then get new ids)"
                        .into(),
                )
            })?;
            Ok(StackIds::from_bytes(&bytes))
        }
    }
}

/// The database's stack key: read, or made and written when there is none.
pub(super) async fn load(client: &Client) -> Result<StackIds, StoreError> {
    if let Some(ids) = earliest(client).await? {
        return Ok(ids);
    }
    let key =
        StackIds::new_key().map_err(|e| StoreError::Query(format!("drawing a stack key: {e}")))?;
    let row = KeyRow {
        key: key.iter().map(|b| format!("{b:02x}")).collect(),
        written: now_ns(),
    };
    insert_one::<KeyRow>(client, "stack_key", &row)
        .await
        .map_err(|e| unavailable("writing the stack key", e))?;
    tokio::time::sleep(SETTLE).await;
    earliest(client).await?.ok_or_else(|| {
        StoreError::Query("the stack key written a moment ago cannot be read back".into())
    })
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    (0..16)
        .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_hex_and_bad_text_is_refused() {
        let key: Vec<u8> = (0u8..16).map(|i| i * 17).collect();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(from_hex(&hex), Some(key));
        assert_eq!(from_hex("00"), None);
        assert_eq!(from_hex(&"zz".repeat(16)), None);
        assert_eq!(from_hex(&"é".repeat(16)), None);
    }
}
