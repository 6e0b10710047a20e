//! Talking to ClickHouse: a client per node, the limits on an insert, how the client's errors
//! become [`StoreError`]s, and the day a time falls on (ClickHouse's `Date`).

use std::fmt;
use std::time::Duration;

use ::clickhouse::insert::Insert;
use ::clickhouse::{Client, Row, RowWrite};

use super::config::ClickHouseConfig;
use crate::StoreError;

/// Limit on sending one chunk of an insert to the socket.
const INSERT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// Limit on waiting for ClickHouse to acknowledge an insert once all rows are sent.
const INSERT_END_TIMEOUT: Duration = Duration::from_secs(60);

pub const NS_PER_SECOND: i64 = 1_000_000_000;
pub const NS_PER_DAY: i64 = 86_400 * NS_PER_SECOND;

/// A client for one node of the deployment.
#[derive(Clone)]
pub struct NodeClient {
    pub url: String,
    pub client: Client,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient")
            .field("url", &self.url)
            .finish()
    }
}

/// A client for `url` with the configured credentials and row validation off.
pub fn base_client(cfg: &ClickHouseConfig, url: &str) -> Client {
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

/// Days since 1970-01-01 (UTC) of a unix-ns time.
pub fn unix_days(ts_ns: i64) -> i64 {
    ts_ns.div_euclid(NS_PER_DAY)
}

/// The `Date` of a unix-ns time as RowBinary carries it: days since 1970-01-01 (UTC), clamped
/// to what a `u16` holds.
pub fn day_of(ts_ns: i64) -> u16 {
    u16::try_from(unix_days(ts_ns).max(0)).unwrap_or(u16::MAX)
}

/// A failed write: nothing was acknowledged.
pub fn unavailable(context: &str, e: ::clickhouse::error::Error) -> StoreError {
    StoreError::Unavailable(format!("{context}: {e}"))
}

/// A failed read or DDL: `Unavailable` when ClickHouse could not be reached, else `Query`.
pub fn query_error(context: &str, e: ::clickhouse::error::Error) -> StoreError {
    use ::clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => StoreError::Unavailable(format!("{context}: {e}")),
        _ => StoreError::Query(format!("{context}: {e}")),
    }
}

/// Starts an `INSERT` into `table`, with the limits on sending and on the acknowledgement.
pub async fn start_insert<T: Row>(
    client: &Client,
    table: &str,
) -> Result<Insert<T>, ::clickhouse::error::Error> {
    Ok(client
        .insert::<T>(table)
        .await?
        .with_timeouts(Some(INSERT_SEND_TIMEOUT), Some(INSERT_END_TIMEOUT)))
}

/// Inserts one row into `table` (one `INSERT`, acknowledged when this returns `Ok`).
pub async fn insert_one<T: RowWrite>(
    client: &Client,
    table: &str,
    row: &T::Value<'_>,
) -> Result<(), ::clickhouse::error::Error> {
    let mut ins = client.insert::<T>(table).await?;
    ins.write(row).await?;
    ins.end().await
}
