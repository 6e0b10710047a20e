//! Cluster mode: every table is a `Distributed` table over a local table on each node of a
//! cluster in the servers' `remote_servers` ([`Layout::Cluster`]).
//!
//! The nodes are those `system.clusters` lists on the entry node, reached over HTTP at the
//! scheme and port of the configured URL. DDL goes `ON CLUSTER` through the entry node when the
//! servers have a coordinator (ZooKeeper or ClickHouse Keeper), else to every node. Names
//! spliced into that DDL are plain identifiers. One database holds one layout: a database made
//! for one server is refused in cluster mode, and the other way round.

use ::clickhouse::sql::Identifier;
use ::clickhouse::Client;

use super::client::{base_client, query_error, NodeClient};
use super::config::ClickHouseConfig;
use super::events::EVENTS_TABLE;
use super::migrations::{self, server_version, DdlContext, Layout, ServerVersion};
use crate::StoreError;

/// How the configuration lays tables out: on one server, or over a cluster (whose name and the
/// database's are checked, and whose coordinator is looked for, on the entry node).
pub async fn layout(cfg: &ClickHouseConfig, entry: &Client) -> Result<Layout, StoreError> {
    Ok(match &cfg.cluster {
        None => Layout::Single,
        Some(name) => Layout::Cluster {
            name: cluster_name(name)?.to_owned(),
            database: cluster_name(&cfg.database)?.to_owned(),
            on_cluster: has_coordinator(entry).await?,
            replicated: cfg.replicated,
        },
    })
}

/// The nodes the store works with: every node of the cluster, or the one server.
pub async fn nodes(cfg: &ClickHouseConfig, entry: &Client) -> Result<Vec<NodeClient>, StoreError> {
    match &cfg.cluster {
        None => Ok(vec![NodeClient {
            url: cfg.url.clone(),
            client: entry.clone(),
        }]),
        Some(name) => cluster_nodes(cfg, entry, name).await,
    }
}

/// Creates the database and applies the pending migrations: once through the entry node when
/// DDL goes `ON CLUSTER`, else on every node. Returns the versions applied (on the last node).
pub async fn create_schema(
    nodes: &[NodeClient],
    layout: &Layout,
    database: &str,
    server: &ServerVersion,
    ctx: &DdlContext,
) -> Result<Vec<u32>, StoreError> {
    let ddl_nodes: &[NodeClient] = match layout {
        Layout::Cluster {
            on_cluster: true, ..
        } => &nodes[..1],
        _ => nodes,
    };
    let on = match layout {
        Layout::Cluster {
            name,
            on_cluster: true,
            ..
        } => format!(" ON CLUSTER {name}"),
        _ => String::new(),
    };
    let mut applied = Vec::new();
    for node in ddl_nodes {
        node.client
            .query(&format!("CREATE DATABASE IF NOT EXISTS ?{on}"))
            .bind(Identifier(database))
            .execute()
            .await
            .map_err(|e| {
                query_error(
                    &format!("creating database {database:?} on {}", node.url),
                    e,
                )
            })?;
        let client = node.client.clone().with_database(database.to_owned());
        check_layout(&client, layout, database, &node.url).await?;
        applied = migrations::run(&client, server, ctx, layout).await?;
    }
    Ok(applied)
}

/// On a cluster, an insert is acknowledged only once every shard has stored its rows
/// (`insert_distributed_sync`), and subqueries over distributed tables run once
/// (`distributed_product_mode = 'global'`).
pub fn session(client: Client, layout: &Layout) -> Client {
    match layout {
        Layout::Cluster { .. } => client
            .with_setting("insert_distributed_sync", "1")
            .with_setting("distributed_product_mode", "global"),
        Layout::Single => client,
    }
}

/// A cluster or database name, which is spliced into DDL: letters, digits and `_` only.
pub fn cluster_name(name: &str) -> Result<&str, StoreError> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Config(format!(
            "{name:?} is not usable as a ClickHouse cluster or database name in cluster mode: \
             use letters, digits and _ only"
        )))
    }
}

/// Whether the server has a DDL coordinator (ZooKeeper or ClickHouse Keeper): then and only
/// then does it have a `system.zookeeper` table.
pub async fn has_coordinator(client: &Client) -> Result<bool, StoreError> {
    let n: u64 = client
        .query("SELECT count() FROM system.tables WHERE database = 'system' AND name = 'zookeeper'")
        .fetch_one()
        .await
        .map_err(|e| query_error("looking for a DDL coordinator (system.zookeeper)", e))?;
    Ok(n > 0)
}

/// Every node of `cluster` as `system.clusters` lists it on the entry node, reached over HTTP
/// at the port (and scheme) of the configured URL.
pub async fn cluster_nodes(
    cfg: &ClickHouseConfig,
    entry: &Client,
    cluster: &str,
) -> Result<Vec<NodeClient>, StoreError> {
    let hosts: Vec<(u32, u32, String)> = entry
        .query(
            "SELECT shard_num, replica_num, host_address FROM system.clusters \
             WHERE cluster = ? ORDER BY shard_num, replica_num",
        )
        .bind(cluster)
        .fetch_all()
        .await
        .map_err(|e| {
            query_error(
                &format!("reading cluster {cluster:?} in system.clusters"),
                e,
            )
        })?;
    if hosts.is_empty() {
        return Err(StoreError::Config(format!(
            "ClickHouse at {} has no cluster named {cluster:?} in its remote_servers \
             (SELECT DISTINCT cluster FROM system.clusters lists the ones it has)",
            cfg.url
        )));
    }
    let mut nodes = Vec::new();
    for (_, _, host) in hosts {
        let url = with_host(&cfg.url, &host).ok_or_else(|| {
            StoreError::Config(format!(
                "cannot read the ClickHouse URL {:?} as scheme://host:port",
                cfg.url
            ))
        })?;
        let client = base_client(cfg, &url)?;
        server_version(&client, &url).await?;
        nodes.push(NodeClient { url, client });
    }
    Ok(nodes)
}

/// `url` with its host replaced by `host` (an IPv6 address gets brackets).
pub fn with_host(url: &str, host: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = authority.rsplit('@').next()?;
    let port = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[i..],
        _ => "",
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Some(format!("{scheme}://{host}{port}{path}"))
}

/// Refuses to mix layouts in one database: a database created for one server holds plain
/// `events`; a cluster's holds a `Distributed` one.
pub async fn check_layout(
    client: &Client,
    layout: &Layout,
    database: &str,
    url: &str,
) -> Result<(), StoreError> {
    let engines: Vec<String> = client
        .query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
        .bind(database)
        .bind(EVENTS_TABLE)
        .fetch_all()
        .await
        .map_err(|e| query_error("reading the engine of table events", e))?;
    let Some(engine) = engines.first() else {
        return Ok(());
    };
    let distributed = engine == "Distributed";
    let want = matches!(layout, Layout::Cluster { .. });
    if distributed == want {
        return Ok(());
    }
    Err(StoreError::Config(if want {
        format!(
            "database {database:?} on {url} holds single-server tables (events is {engine}); \
             a cluster needs a database of its own (--clickhouse-database)"
        )
    } else {
        format!(
            "database {database:?} on {url} holds cluster tables (events is Distributed); \
             pass --clickhouse-cluster, or use another database"
        )
    }))
}
