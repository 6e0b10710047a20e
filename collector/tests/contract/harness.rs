//! Stores for the contract suite, each in its own directory or database.

use std::sync::Arc;
use std::time::Duration;

use profwatch_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_collector::store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_collector::store::Store;

pub struct Harness {
    pub store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Database { url: String, name: String },
}

/// An embedded store that flushes and compacts often, so the suite crosses memtables,
/// segments and compacted segments.
pub async fn embedded() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = EmbeddedConfig::new(dir.path());
    cfg.flush_rows = 700;
    cfg.flush_interval = Duration::from_millis(50);
    cfg.compact_rows = 20_000;
    let store = EmbeddedStore::open(cfg).expect("open embedded store");
    Harness {
        store: Arc::new(store),
        cleanup: Cleanup::Dir(dir),
    }
}

/// The ClickHouse URL for tests, or `None` when told to skip.
pub fn clickhouse_url() -> Option<String> {
    match std::env::var("PROFWATCH_TEST_CLICKHOUSE_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("PROFWATCH_SKIP_CLICKHOUSE").as_deref() == Ok("1") => None,
        _ => panic!(
            "PROFWATCH_TEST_CLICKHOUSE_URL is not set: start ClickHouse with `scripts/clickhouse.sh start` \
             and export PROFWATCH_TEST_CLICKHOUSE_URL=http://127.0.0.1:8123 (or set PROFWATCH_SKIP_CLICKHOUSE=1)"
        ),
    }
}

pub async fn clickhouse(test: &str) -> Option<Harness> {
    let url = clickhouse_url()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("pw_contract_{test}_{}_{nanos}", std::process::id());
    let store = ClickHouseStore::connect(ClickHouseConfig {
        url: url.clone(),
        database: name.clone(),
        user: None,
        password: None,
        retention: Duration::from_secs(30 * 86_400),
    })
    .await
    .expect("connect to ClickHouse");
    Some(Harness {
        store: Arc::new(store),
        cleanup: Cleanup::Database { url, name },
    })
}

impl Harness {
    pub async fn finish(self) {
        self.store.shutdown().await.expect("shutdown");
        match self.cleanup {
            Cleanup::Dir(d) => drop(d),
            Cleanup::Database { url, name } => {
                let client = clickhouse::Client::default().with_url(url);
                client
                    .query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute()
                    .await
                    .expect("drop test database");
            }
        }
    }
}
