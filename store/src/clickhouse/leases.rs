//! Leases: collectors sharing one store use them so that scheduled work runs once per interval
//! across the fleet.

use std::time::Duration;

use ::clickhouse::Client;
use profwatch_model::timefmt::now_ns;
use serde::Serialize;

use super::client::{insert_one, query_error, unavailable};
use crate::StoreError;

/// Takes or renews the lease `name` for `holder` until `ttl` from now; `true` when `holder`
/// has it. A lease is the newest claim row. A collector claims when the lease is free, expired or
/// its own, then reads again after a pause: if a rival claimed in the same moment, the
/// newer claim wins and the other backs off. A holder that dies stops renewing; the lease
/// expires after `ttl` and the next collector to try takes it (fail-over within one ttl).
pub async fn try_lease(
    client: &Client,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, StoreError> {
    #[derive(::clickhouse::Row, Serialize)]
    #[clickhouse(crate = "::clickhouse")]
    struct LeaseRow<'a> {
        name: &'a str,
        holder: &'a str,
        expires: i64,
        version: i64,
    }
    let current = || async {
        let rows: Vec<(String, i64)> = client
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
    insert_one::<LeaseRow<'_>>(client, "leases", &row)
        .await
        .map_err(|e| unavailable("claiming a lease", e))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(current().await?.is_some_and(|(h, _)| h == holder))
}
