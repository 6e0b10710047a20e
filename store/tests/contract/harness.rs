//! Stores for the contract suite, each in its own directory or database.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use profwatch_testkit::clickhouse_cluster::{LocalCluster, CLUSTER};

use profwatch_store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use profwatch_store::embedded::{EmbeddedConfig, EmbeddedStore};
use profwatch_store::Store;

pub struct Harness {
    pub store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Database {
        url: String,
        name: String,
    },
    /// A database on the shared test cluster: dropped on every node.
    ClusterDatabase {
        urls: Vec<String>,
        name: String,
    },
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

pub use profwatch_testkit::clickhouse_url;

/// A database name unique to this test and run.
fn database(prefix: &str, test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}_{test}_{}_{nanos}", std::process::id())
}

/// The 2-shard cluster every cluster test of this process shares, started on first use (two
/// `clickhouse-server` processes on loopback; they stop when this process ends). `None` (a
/// recorded skip) when ClickHouse is skipped; an explicit ClickHouse URL means it is not.
pub fn cluster() -> Option<&'static LocalCluster> {
    static CLUSTER: OnceLock<LocalCluster> = OnceLock::new();
    clickhouse_url()?;
    Some(CLUSTER.get_or_init(|| {
        LocalCluster::start(2)
            .unwrap_or_else(|e| panic!("starting a 2-shard ClickHouse cluster: {e}"))
    }))
}

/// A ClickHouse store in cluster mode over the shared 2-shard cluster, entering through the
/// second node (so nothing depends on the entry being the first shard).
pub async fn clickhouse_cluster(test: &str) -> Option<Harness> {
    let cluster = cluster()?;
    let urls = cluster.urls();
    let name = database("pw_cluster", test);
    let mut cfg = ClickHouseConfig::new(urls[1].clone(), name.clone());
    cfg.cluster = Some(CLUSTER.to_owned());
    let store = ClickHouseStore::connect(cfg)
        .await
        .expect("connect to the ClickHouse cluster");
    Some(Harness {
        store: Arc::new(store),
        cleanup: Cleanup::ClusterDatabase { urls, name },
    })
}

pub async fn clickhouse(test: &str) -> Option<Harness> {
    let url = clickhouse_url()?;
    let name = database("pw_contract", test);
    let store = ClickHouseStore::connect(ClickHouseConfig::new(url.clone(), name.clone()))
        .await
        .expect("connect to ClickHouse");
    Some(Harness {
        store: Arc::new(store),
        cleanup: Cleanup::Database { url, name },
    })
}

impl Harness {
    /// The test's database (ClickHouse stores only).
    pub fn database(&self) -> &str {
        match &self.cleanup {
            Cleanup::Dir(_) => "",
            Cleanup::Database { name, .. } | Cleanup::ClusterDatabase { name, .. } => name,
        }
    }

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
            Cleanup::ClusterDatabase { urls, name } => {
                for url in urls {
                    let client = clickhouse::Client::default().with_url(url);
                    client
                        .query(&format!("DROP DATABASE IF EXISTS {name}"))
                        .execute()
                        .await
                        .expect("drop test database on a cluster node");
                }
            }
        }
    }
}
