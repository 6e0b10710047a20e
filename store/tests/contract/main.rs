//! The `Store` contract: one suite, run against the embedded store and against a real
//! ClickHouse server. Both must give the same answers for the same writes.
//!
//! ClickHouse tests need `PROFWATCH_TEST_CLICKHOUSE_URL` (the test command starts a server
//! with `scripts/clickhouse.sh start`); each test gets its own database. Without the variable
//! they fail, unless `PROFWATCH_SKIP_CLICKHOUSE=1` says to skip them.
//!
//! The suite also runs in cluster mode (`clickhouse_cluster`): the tests start a 2-shard
//! cluster of their own (two `clickhouse-server` processes on loopback, see
//! `profwatch_testkit::clickhouse_cluster`). `cluster.rs` checks what only a cluster has: rows on
//! both shards, and the same aggregates as one server.

mod cluster;
mod functions;
mod harness;
mod memory;
mod rollups;
mod stack_ids;
mod suite;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let h = crate::harness::embedded().await;
                    crate::suite::$name(h.store.clone()).await;
                    h.finish().await;
                }
            )*
        }
        mod clickhouse {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = crate::harness::clickhouse(stringify!($name)).await else { return };
                    crate::suite::$name(h.store.clone()).await;
                    h.finish().await;
                }
            )*
        }
        mod clickhouse_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(h) = crate::harness::clickhouse_cluster(stringify!($name)).await else { return };
                    crate::suite::$name(h.store.clone()).await;
                    h.finish().await;
                }
            )*
        }
    };
}

contract!(
    endpoints_match_the_truth,
    group_by_each_column,
    timeseries_buckets,
    services_in_range,
    tenants_are_isolated,
    range_is_half_open,
    weights_count,
    instructions_absent_is_null,
    large_and_concurrent_batches,
    profiles_sum_per_stack_and_filter_by_label,
    many_profile_batches_survive_flushes,
    function_costs_match_the_samples,
    builds_and_cost_samples,
    regression_records_are_replaced_by_id,
    regression_records_keep_their_incident,
    idempotency_keys_drop_duplicates,
    profile_idempotency_keys_drop_duplicates,
    concurrent_retries_of_one_batch_store_it_once,
    endpoint_series_buckets_every_endpoint,
    leases_are_held_by_one_holder,
    memory_means_per_process_by_group,
    memory_timeseries_buckets,
    memory_processes_per_bucket,
    memory_services_are_listed_per_tenant,
    memory_idempotency_keys_drop_duplicates,
);
