//! Memory samples: one `INSERT` per write into `memory_samples` (daily partitions, sorted by
//! tenant, service and time; on a cluster sharded by tenant and service, so one service's
//! samples share a shard), and the per-process means of `Store::memory`, computed in SQL as
//! the embedded store computes them (`profwatch_model::memory::MemoryAccumulator`): each
//! process's (host, pid) mean over its samples, then the mean over the group's processes.

use ::clickhouse::Client;
use profwatch_model::memory::{
    MemoryGroupBy, MemoryPoint, MemoryQuery, MemoryRow, MemorySample, ProcessMemory,
};
use profwatch_model::query::TimeRange;
use profwatch_model::Tenant;
use serde::{Deserialize, Serialize};

use super::client::{day_of, query_error, start_insert, unavailable};
use super::dedup::Dedup;
use super::migrations::{DdlContext, Engine, TableDdl, RETENTION_COLUMN};
use crate::StoreError;

/// The table that holds memory samples.
pub const MEMORY_TABLE: &str = "memory_samples";

/// Migration 9: `memory_samples`, with the events' partitioning, codecs and `TTL`.
pub fn create_tables(ctx: &DdlContext) -> Vec<TableDdl> {
    let (lc, codec, ttl) = (|t: &str| ctx.lc(t), |c: &str| ctx.codec(c), ctx.ttl());
    let s = lc("String");
    vec![TableDdl {
        name: MEMORY_TABLE,
        columns: format!(
            "(
    tenant {s},
    service {s},
    build {s},
    dc {s},
    host {s},
    pid UInt32{zstd},
    ts Int64{delta},
    {RETENTION_COLUMN} Date{delta},
    rss UInt64{zstd},
    pss UInt64{zstd},
    shared_clean UInt64{zstd},
    shared_dirty UInt64{zstd},
    private_clean UInt64{zstd},
    private_dirty UInt64{zstd},
    swap UInt64{zstd}
)",
            delta = codec("Delta, ZSTD"),
            zstd = codec("ZSTD"),
        ),
        engine: Engine::MergeTree,
        keys: format!(
            "PARTITION BY {RETENTION_COLUMN}\nORDER BY (tenant, service, ts, host, pid){ttl}"
        ),
        shard_key: "cityHash64(tenant, service)",
    }]
}

/// One row of `memory_samples`, borrowed from the sample being written.
#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct SampleRow<'a> {
    tenant: &'a str,
    service: &'a str,
    build: &'a str,
    dc: &'a str,
    host: &'a str,
    pid: u32,
    ts: i64,
    date: u16,
    rss: u64,
    pss: u64,
    shared_clean: u64,
    shared_dirty: u64,
    private_clean: u64,
    private_dirty: u64,
    swap: u64,
}

/// Sends the samples as one `INSERT` and returns once ClickHouse acknowledged it.
pub async fn insert(
    client: &Client,
    tenant: &Tenant,
    samples: &[MemorySample],
    dedup: &Dedup,
) -> Result<(), StoreError> {
    let count = samples.len();
    let context =
        |step: &str| format!("inserting {count} memory samples for tenant {tenant}: {step}");
    let mut insert = start_insert::<SampleRow<'_>>(client, MEMORY_TABLE)
        .await
        .map(|ins| dedup.apply(ins))
        .map_err(|e| unavailable(&context("starting"), e))?;
    for s in samples {
        let b = &s.bytes;
        let row = SampleRow {
            tenant: tenant.as_str(),
            service: &s.service,
            build: &s.build,
            dc: &s.dc,
            host: &s.host,
            pid: s.pid,
            ts: s.ts,
            date: day_of(s.ts),
            rss: b.rss,
            pss: b.pss,
            shared_clean: b.shared_clean,
            shared_dirty: b.shared_dirty,
            private_clean: b.private_clean,
            private_dirty: b.private_dirty,
            swap: b.swap,
        };
        insert
            .write(&row)
            .await
            .map_err(|e| unavailable(&context("sending"), e))?;
    }
    insert
        .end()
        .await
        .map_err(|e| unavailable(&context("waiting for the acknowledgement"), e))
}

/// A bucket (0 without buckets), a group and its per-process means.
#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct MeansRow {
    bucket: i64,
    grp: String,
    processes: u64,
    rss: f64,
    pss: f64,
    private: f64,
    shared: f64,
    swap: f64,
}

impl MeansRow {
    fn row(self) -> MemoryRow {
        MemoryRow {
            group: self.grp,
            processes: self.processes,
            rss_bytes: self.rss,
            pss_bytes: self.pss,
            private_bytes: self.private,
            shared_bytes: self.shared,
            swap_bytes: self.swap,
        }
    }
}

/// Per (bucket, group), the mean over processes of each process's mean. Aliases differ from
/// the columns (18.16 reads `avg(rss) AS rss` as a cyclic alias). `step`: `None`, one bucket.
async fn means(
    client: &Client,
    q: &MemoryQuery,
    step: Option<i64>,
) -> Result<Vec<MeansRow>, StoreError> {
    let group = match q.group_by {
        MemoryGroupBy::None => "''",
        MemoryGroupBy::Build => "toString(build)",
        MemoryGroupBy::Host => "toString(host)",
    };
    let bucket = match step {
        Some(_) => "intDiv(ts, ?) * ?",
        None => "toInt64(0)",
    };
    let sql = format!(
        "SELECT b AS bucket, g AS grp, toUInt64(count()) AS processes, \
         avg(p_rss) AS rss, avg(p_pss) AS pss, avg(p_private) AS private, \
         avg(p_shared) AS shared, avg(p_swap) AS swap \
         FROM (SELECT {bucket} AS b, {group} AS g, host AS h, pid AS p, \
               avg(rss) AS p_rss, avg(pss) AS p_pss, \
               avg(private_clean + private_dirty) AS p_private, \
               avg(shared_clean + shared_dirty) AS p_shared, avg(swap) AS p_swap \
               FROM {MEMORY_TABLE} \
               WHERE tenant = ? AND service = ? AND ts >= ? AND ts < ? \
               GROUP BY b, g, h, p) \
         GROUP BY b, g ORDER BY b, g"
    );
    let mut query = client.query(&sql);
    if let Some(step) = step {
        query = query.bind(step).bind(step);
    }
    query
        .bind(q.tenant.as_str())
        .bind(q.service.as_str())
        .bind(q.range.from)
        .bind(q.range.to)
        .fetch_all::<MeansRow>()
        .await
        .map_err(|e| query_error("reading memory samples", e))
}

pub async fn rows(client: &Client, q: &MemoryQuery) -> Result<Vec<MemoryRow>, StoreError> {
    Ok(means(client, q, None)
        .await?
        .into_iter()
        .map(MeansRow::row)
        .collect())
}

pub async fn points(
    client: &Client,
    q: &MemoryQuery,
    step: i64,
) -> Result<Vec<MemoryPoint>, StoreError> {
    if step <= 0 {
        return Err(StoreError::Query(format!("step {step} must be > 0")));
    }
    Ok(means(client, q, Some(step))
        .await?
        .into_iter()
        .map(|r| MemoryPoint {
            time: r.bucket.div_euclid(1_000_000_000),
            row: r.row(),
        })
        .collect())
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct ProcessRow {
    bucket: i64,
    build: String,
    dc: String,
    host: String,
    pid: u32,
    samples: u64,
    private: f64,
    shared: f64,
}

/// Each process's means per bucket of `step`, sorted by bucket, build, host and pid.
pub async fn processes(
    client: &Client,
    q: &MemoryQuery,
    step: i64,
) -> Result<Vec<ProcessMemory>, StoreError> {
    if step <= 0 {
        return Err(StoreError::Query(format!("step {step} must be > 0")));
    }
    let sql = format!(
        "SELECT intDiv(ts, ?) * ? AS bucket, toString(build) AS build, toString(any(dc)) AS dc, \
         toString(host) AS host, pid, toUInt64(count()) AS samples, \
         avg(private_clean + private_dirty) AS private, avg(shared_clean + shared_dirty) AS shared \
         FROM {MEMORY_TABLE} \
         WHERE tenant = ? AND service = ? AND ts >= ? AND ts < ? \
         GROUP BY bucket, build, host, pid ORDER BY bucket, build, host, pid"
    );
    let rows = client
        .query(&sql)
        .bind(step)
        .bind(step)
        .bind(q.tenant.as_str())
        .bind(q.service.as_str())
        .bind(q.range.from)
        .bind(q.range.to)
        .fetch_all::<ProcessRow>()
        .await
        .map_err(|e| query_error("reading memory per process", e))?;
    Ok(rows
        .into_iter()
        .map(|r| ProcessMemory {
            ts: r.bucket,
            build: r.build,
            dc: r.dc,
            host: r.host,
            pid: r.pid,
            samples: r.samples,
            private_bytes: r.private,
            shared_bytes: r.shared,
        })
        .collect())
}

/// The services of `tenant` with samples in `range`, sorted.
pub async fn services(
    client: &Client,
    tenant: &Tenant,
    range: TimeRange,
) -> Result<Vec<String>, StoreError> {
    let sql = format!(
        "SELECT DISTINCT toString(service) AS s FROM {MEMORY_TABLE} \
         WHERE tenant = ? AND ts >= ? AND ts < ? ORDER BY s"
    );
    client
        .query(&sql)
        .bind(tenant.as_str())
        .bind(range.from)
        .bind(range.to)
        .fetch_all::<String>()
        .await
        .map_err(|e| query_error("listing the services with memory samples", e))
}
