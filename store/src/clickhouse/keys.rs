//! Idempotency keys: a batch is checked against `batch_keys`, then claimed in `batch_claims`
//! (the earliest live claim stores it; concurrent retries get 429 and, retried, find the key),
//! then inserted, and its key recorded.

use std::future::Future;
use std::time::Duration;

use ::clickhouse::Client;
use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;
use serde::Serialize;

use super::client::{day_of, insert_one, query_error, unavailable};
use crate::{StoreError, Written};

/// How long a claim on an idempotency key holds off other claims (a claimant that died frees
/// the key after it).
const CLAIM_TTL: Duration = Duration::from_secs(60);
/// The pause between writing a claim and reading the claims back, so that claims written at
/// nearly the same moment are all seen by each claimant.
const CLAIM_SETTLE: Duration = Duration::from_millis(50);

/// Checks the key, claims it, runs `write`, then records the key. Concurrent retries of one
/// batch (two collectors, or a client that timed out and sent again) cannot both store it: only
/// the earliest live claim writes; the others answer 429 and, retried, find the key. Never loses
/// a batch: what remains possible is a duplicate when a claimant crashes between the insert and
/// the key's record and a retry comes after its claim expired, or when two claims are written
/// more than [`CLAIM_SETTLE`] apart in an order opposite to their clocks. Servers from 22.2 close
/// both: the write carries the key as `insert_deduplication_token` (`dedup.rs`); 18.16 has none.
pub async fn write_once(
    client: &Client,
    tenant: &Tenant,
    key: &str,
    write: impl Future<Output = Result<(), StoreError>>,
) -> Result<Written, StoreError> {
    if key_seen(client, tenant, key).await? {
        return Ok(Written::Duplicate);
    }
    if let Some(done) = claim(client, tenant, key).await? {
        return Ok(done);
    }
    write.await?;
    record_key(client, tenant, key).await;
    Ok(Written::Stored)
}

/// Whether a batch with this idempotency key was stored for the tenant.
async fn key_seen(client: &Client, tenant: &Tenant, key: &str) -> Result<bool, StoreError> {
    let n: u64 = client
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
async fn claim(client: &Client, tenant: &Tenant, key: &str) -> Result<Option<Written>, StoreError> {
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
        date: day_of(now),
    };
    insert_one::<ClaimRow<'_>>(client, "batch_claims", &row)
        .await
        .map_err(|e| unavailable("claiming a batch key", e))?;
    tokio::time::sleep(CLAIM_SETTLE).await;
    let first: Vec<String> = client
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
    if key_seen(client, tenant, key).await? {
        return Ok(Some(Written::Duplicate));
    }
    Err(StoreError::Overloaded {
        what: "a retry of this batch is being stored",
        retry_after: Duration::from_secs(2),
    })
}

/// Records a stored batch's idempotency key. A failure is logged, not returned: the batch
/// is stored; only a retry of it could be stored again.
async fn record_key(client: &Client, tenant: &Tenant, key: &str) {
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
        date: day_of(now),
    };
    if let Err(e) = insert_one::<KeyRow<'_>>(client, "batch_keys", &row).await {
        tracing::warn!(error = %e, "stored a batch but could not record its idempotency key");
    }
}
