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

/// A client for `url` with the configured credentials and row validation off; over https it
/// trusts the public roots and `cfg.ca_file`'s certificates.
pub fn base_client(cfg: &ClickHouseConfig, url: &str) -> Result<Client, StoreError> {
    let client = match &cfg.ca_file {
        None => Client::default(),
        Some(path) => client_trusting(path)?,
    };
    let mut client = client.with_url(url.to_owned()).with_validation(false);
    if let Some(user) = &cfg.user {
        client = client.with_user(user.clone());
    }
    if let Some(password) = &cfg.password {
        client = client.with_password(password.clone());
    }
    Ok(client)
}

/// A client over the HTTP client the `clickhouse` crate makes by default (keep-alive below
/// ClickHouse's 3 s), with the public roots and the certificates of `ca_file` trusted.
fn client_trusting(ca_file: &std::path::Path) -> Result<Client, StoreError> {
    let bad = |why: String| StoreError::Config(format!("--clickhouse-ca-file: {why}"));
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in profwatch_model::tls::certificates(ca_file).map_err(|e| bad(e.to_string()))? {
        roots.add(cert).map_err(|e| {
            bad(format!(
                "{}: a certificate rustls refuses: {e}",
                ca_file.display()
            ))
        })?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::with_http_client(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(2))
            .build(connector),
    ))
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
    StoreError::Unavailable(format!("{context}: {}", with_causes(&e)))
}

/// An error and its causes, `outer: inner: innermost`: a network error alone says only
/// "client error (Connect)", its causes say why (refused, a certificate no root vouches for).
fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// A failed read or DDL: `Unavailable` when ClickHouse could not be reached, else `Query`.
pub fn query_error(context: &str, e: ::clickhouse::error::Error) -> StoreError {
    use ::clickhouse::error::Error as E;
    match e {
        E::Network(_) | E::TimedOut => {
            StoreError::Unavailable(format!("{context}: {}", with_causes(&e)))
        }
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
