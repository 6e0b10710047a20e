//! Where the ClickHouse store connects and how long it keeps data.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::StoreError;

/// Where the ClickHouse store connects and how long it keeps data.
#[derive(Clone)]
pub struct ClickHouseConfig {
    /// HTTP endpoint, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// Database for profwatch's tables; created when missing.
    pub database: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// PEM CA certificates trusted for an `https://` URL besides the public roots (a private
    /// CA, or a self-signed server certificate).
    pub ca_file: Option<PathBuf>,
    /// How long events are kept, rounded up to whole days (at least one).
    pub retention: Duration,
    /// A cluster in the servers' `remote_servers`: shard every table across it (see
    /// [`clickhouse`](super)). `None` for one server.
    pub cluster: Option<String>,
    /// On a cluster, create `Replicated*MergeTree` tables (needs a coordinator and the
    /// `{shard}` and `{replica}` macros on every node).
    pub replicated: bool,
    /// Summaries read the per-minute rollups (the default); `false` reads raw rows, for
    /// comparing both (`profwatch server --rollups off`, `profwatch-bench query --rollups`).
    pub rollups: bool,
}

impl ClickHouseConfig {
    /// One server at `url`, database `database`, 30 days of retention, no credentials.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> ClickHouseConfig {
        ClickHouseConfig {
            url: url.into(),
            database: database.into(),
            user: None,
            password: None,
            ca_file: None,
            retention: Duration::from_secs(30 * 86_400),
            cluster: None,
            replicated: false,
            rollups: true,
        }
    }

    /// Refuses settings that cannot work whatever the servers say.
    pub(super) fn check(&self) -> Result<(), StoreError> {
        if self.database.is_empty() {
            return Err(StoreError::Config(
                "the ClickHouse database name is empty".to_owned(),
            ));
        }
        if self.replicated && self.cluster.is_none() {
            return Err(StoreError::Config(
                "replicated tables need a cluster (--clickhouse-cluster)".to_owned(),
            ));
        }
        Ok(())
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
            .field("rollups", &self.rollups)
            .finish()
    }
}
