//! Retention, on each node's local tables. Modern servers expire rows by `TTL`, which is kept
//! in step with the configured retention; on every version whole daily partitions past it are
//! dropped from code, which on old servers (no `TTL`) is the only retention.

use std::time::Duration;

use super::client::{query_error, NodeClient};
use super::events::EVENTS_TABLE;
use super::migrations::{Layout, RETENTION_COLUMN};
use crate::StoreError;

/// Every table partitioned by day, which retention trims.
const DAILY_TABLES: &[&str] = &[
    EVENTS_TABLE,
    super::rollups::ROLLUP_TABLE,
    super::rollups::ENDPOINT_ROLLUP_TABLE,
    super::rollups::HOUR_ROLLUP_TABLE,
    "samples",
    super::functions::FUNCTION_TABLE,
    super::memory::MEMORY_TABLE,
    "stacks",
    "batch_keys",
    "batch_claims",
];

/// Whole days of a retention, rounded up, at least one.
pub fn retention_days(retention: Duration) -> u32 {
    let days = retention.as_secs().div_ceil(86_400).max(1);
    u32::try_from(days).unwrap_or(u32::MAX)
}

/// The daily tables of one database on every node (on a cluster, the local tables under the
/// `Distributed` ones).
pub struct LocalTables<'a> {
    pub nodes: &'a [NodeClient],
    pub layout: &'a Layout,
    pub database: &'a str,
}

impl LocalTables<'_> {
    /// Drops the partitions of every daily-partitioned table whose `max_date` is before
    /// `cutoff_day` (days since 1970-01-01).
    pub async fn drop_partitions_before(&self, cutoff_day: i64) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for node in self.nodes {
            dropped += self.drop_partitions_on(node, cutoff_day).await?;
        }
        Ok(dropped)
    }

    async fn drop_partitions_on(
        &self,
        node: &NodeClient,
        cutoff_day: i64,
    ) -> Result<usize, StoreError> {
        let mut dropped = 0;
        for name in DAILY_TABLES {
            let table = self.layout.local_name(name);
            let partitions: Vec<String> = node
                .client
                .query(
                    "SELECT DISTINCT partition_id FROM system.parts \
                     WHERE database = ? AND table = ? AND active \
                     AND max_date < toDate('1970-01-01') + ? \
                     ORDER BY partition_id",
                )
                .bind(self.database)
                .bind(table.as_str())
                .bind(cutoff_day.max(0))
                .fetch_all()
                .await
                .map_err(|e| {
                    query_error(
                        &format!("listing expired partitions in system.parts on {}", node.url),
                        e,
                    )
                })?;
            for partition in &partitions {
                // `table` is one of this module's constants, never client input.
                node.client
                    .query(&format!("ALTER TABLE {table} DROP PARTITION ID ?"))
                    .bind(partition.as_str())
                    .execute()
                    .await
                    .map_err(|e| {
                        query_error(
                            &format!("dropping expired partition {partition} of {table}"),
                            e,
                        )
                    })?;
                tracing::info!(partition = %partition, table, node = %node.url, database = %self.database, "dropped expired ClickHouse partition");
            }
            dropped += partitions.len();
        }
        Ok(dropped)
    }

    /// On modern servers, makes each table's `TTL` match the configured retention (it was
    /// fixed when the table was created; the retention may have changed since).
    pub async fn sync_ttl(&self, days: u32) -> Result<(), StoreError> {
        for node in self.nodes {
            self.sync_ttl_on(node, days).await?;
        }
        Ok(())
    }

    async fn sync_ttl_on(&self, node: &NodeClient, days: u32) -> Result<(), StoreError> {
        for name in DAILY_TABLES {
            let table = self.layout.local_name(name);
            let create: String = node
                .client
                .query(
                    "SELECT create_table_query FROM system.tables WHERE database = ? AND name = ?",
                )
                .bind(self.database)
                .bind(table.as_str())
                .fetch_one()
                .await
                .map_err(|e| query_error(&format!("reading the definition of table {table}"), e))?;
            // ClickHouse normalises `INTERVAL n DAY` to `toIntervalDay(n)`.
            if create.contains(&format!("toIntervalDay({})", days)) {
                continue;
            }
            let alter = format!(
                "ALTER TABLE {table} MODIFY TTL {RETENTION_COLUMN} + INTERVAL {} DAY",
                days
            );
            node.client.query(&alter).execute().await.map_err(|e| {
                query_error(
                    &format!("updating the TTL of table {table} on {}", node.url),
                    e,
                )
            })?;
            tracing::info!(
                days,
                table,
                node = %node.url,
                "updated the TTL of a ClickHouse table"
            );
        }
        Ok(())
    }
}
