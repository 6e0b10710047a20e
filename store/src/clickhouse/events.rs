//! Request events: one `INSERT` per batch, and the queries over them (services, endpoints,
//! timeseries, every endpoint's series), aggregated in ClickHouse with the same percentile
//! buckets as the embedded store.

use ::clickhouse::Client;
use profwatch_model::query::{
    CostStats, Distribution, EndpointSeries, EndpointStats, EndpointsQuery, GroupBy, SeriesQuery,
    ServiceSummary, ServicesQuery, TimeRange, TimeseriesPoint, TimeseriesQuery,
};
use profwatch_model::sketch::SQL_BUCKET_EXPR;
use profwatch_model::{RequestEvent, Tenant};
use serde::{Deserialize, Serialize};

use super::client::{day_of, query_error, start_insert, unavailable, NS_PER_SECOND};
use super::dedup::Dedup;
use super::rollups::{bind_all, merged_stats, Bind, Partials, Split, ENDPOINT_ROLLUP_TABLE};
use crate::StoreError;

/// Where summaries are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The rollups for whole hours and minutes, raw rows for the rest (see `rollups.rs`);
    /// with `edge_hours`, also a partial hour at an end whose events all lie inside the range
    /// (off on replicated tables: the check and the query may read different replicas).
    Rollups { edge_hours: bool },
    /// Raw rows only.
    Raw,
}

impl Read {
    /// Whether a query may read a partial hour at an end whole (see [`Partials::fetch`]).
    pub(super) fn edge_hours(self) -> bool {
        matches!(self, Read::Rollups { edge_hours: true })
    }

    pub(super) fn split(self, range: TimeRange, step: Option<i64>) -> Option<Split> {
        match self {
            Read::Rollups { .. } => Split::of(range, step),
            Read::Raw => None,
        }
    }
}

/// The table that holds the events.
pub const EVENTS_TABLE: &str = "events";

/// Sends a batch as one `INSERT` and returns once ClickHouse acknowledged it.
pub async fn insert(
    client: &Client,
    tenant: &Tenant,
    events: &[RequestEvent],
    dedup: &Dedup,
) -> Result<(), StoreError> {
    let count = events.len();
    let context = |step: &str| format!("inserting {count} events for tenant {tenant}: {step}");
    let mut insert = start_insert::<EventRow<'_>>(client, EVENTS_TABLE)
        .await
        .map(|ins| dedup.apply(ins))
        .map_err(|e| unavailable(&context("starting"), e))?;
    for event in events {
        insert
            .write(&EventRow::new(tenant, event))
            .await
            .map_err(|e| unavailable(&context("sending"), e))?;
    }
    insert
        .end()
        .await
        .map_err(|e| unavailable(&context("waiting for the acknowledgement"), e))
}

pub async fn services(
    client: &Client,
    q: &ServicesQuery,
    read: Read,
) -> Result<Vec<ServiceSummary>, StoreError> {
    let query = match read.split(q.range, None) {
        None => client
            .query(
                "SELECT toString(service) AS s, toFloat64(sum(weight)) AS requests FROM events \
                 WHERE tenant = ? AND ts >= ? AND ts < ? \
                 GROUP BY s ORDER BY s",
            )
            .bind(q.tenant.as_str())
            .bind(q.range.from)
            .bind(q.range.to),
        Some(split) => {
            let mut sql = format!(
                "SELECT toString(service) AS s, toFloat64(sum(r)) AS requests FROM (\
                 SELECT service, sumMerge(requests) AS r FROM {ENDPOINT_ROLLUP_TABLE} \
                 WHERE tenant = ? AND minute >= ? AND minute < ? GROUP BY service"
            );
            let mut binds = vec![
                Bind::Str(q.tenant.as_str()),
                Bind::Int(split.minutes.from),
                Bind::Int(split.minutes.to),
            ];
            if !split.aligned() {
                sql.push_str(
                    " UNION ALL SELECT service, toFloat64(sum(weight)) AS r FROM events \
                     WHERE tenant = ? AND ((ts >= ? AND ts < ?) OR (ts >= ? AND ts < ?)) \
                     GROUP BY service",
                );
                binds.push(Bind::Str(q.tenant.as_str()));
                binds.extend(
                    [split.before.0, split.before.1, split.after.0, split.after.1].map(Bind::Int),
                );
            }
            sql.push_str(") GROUP BY s ORDER BY s");
            bind_all(client.query(&sql), &binds)
        }
    };
    let rows: Vec<(String, f64)> = query
        .fetch_all()
        .await
        .map_err(|e| query_error("listing services", e))?;
    Ok(rows
        .into_iter()
        .map(|(service, requests)| ServiceSummary { service, requests })
        .collect())
}

pub async fn endpoints(
    client: &Client,
    q: &EndpointsQuery,
    read: Read,
) -> Result<Vec<EndpointStats>, StoreError> {
    let (group_select, group_key) = group_sql(q.group_by);
    let what = format!("endpoints of service {:?}", q.service);
    if let Some(split) = read.split(q.range, None) {
        let group_column = q.group_by.column();
        let mut keys = vec![("endpoint", "endpoint", "endpoint")];
        keys.extend(group_column.map(|c| (c, c, c)));
        let outer = |from: &str| {
            format!(
                "SELECT toString(endpoint) AS row_key, {group_select} AS grp, {stats} \
                 FROM {from} GROUP BY endpoint{group_key} ORDER BY row_key, grp",
                stats = merged_stats(),
            )
        };
        let rows: Vec<StatsRow<String>> = Partials {
            keys: &keys,
            key_binds: &[],
            filters: &[],
            edge_hours: read.edge_hours(),
        }
        .fetch(
            client,
            &split,
            None,
            &[Bind::Str(q.tenant.as_str()), Bind::Str(q.service.as_str())],
            &outer,
            &what,
        )
        .await?;
        return Ok(endpoint_rows(q.group_by, rows));
    }
    let sql = format!(
        "SELECT toString(endpoint) AS row_key, {group_select} AS grp, {stats} FROM events \
         WHERE tenant = ? AND service = ? AND ts >= ? AND ts < ? \
         GROUP BY endpoint{group_key} ORDER BY row_key, grp",
        stats = stats_select(),
    );
    let query = client
        .query(&sql)
        .bind(q.tenant.as_str())
        .bind(q.service.as_str())
        .bind(q.range.from)
        .bind(q.range.to);
    let rows: Vec<StatsRow<String>> = fetch_stats(&what, query).await?;
    Ok(endpoint_rows(q.group_by, rows))
}

fn endpoint_rows(group_by: GroupBy, rows: Vec<StatsRow<String>>) -> Vec<EndpointStats> {
    rows.into_iter()
        .map(|row| EndpointStats {
            group: group_value(group_by, &row.grp),
            stats: row.stats(),
            endpoint: row.key,
        })
        .collect()
}

pub async fn timeseries(
    client: &Client,
    q: &TimeseriesQuery,
    read: Read,
) -> Result<Vec<TimeseriesPoint>, StoreError> {
    if q.step <= 0 {
        return Err(StoreError::Query(format!(
            "the timeseries step must be a positive number of nanoseconds, not {}",
            q.step
        )));
    }
    let (group_select, group_key) = group_sql(q.group_by);
    let rows = bucketed(
        client,
        &Bucketed {
            step: q.step,
            tenant: &q.tenant,
            service: &q.service,
            endpoint: Some(&q.endpoint),
            range: q.range,
            group_select: &group_select,
            group_key: &group_key,
            group_column: q.group_by.column(),
            order: "row_key, grp",
            read,
        },
        &format!("timeseries of {:?} in service {:?}", q.endpoint, q.service),
    )
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| TimeseriesPoint {
            time: row.key,
            group: group_value(q.group_by, &row.grp),
            stats: row.stats(),
        })
        .collect())
}

pub async fn endpoint_series(
    client: &Client,
    q: &SeriesQuery,
    read: Read,
) -> Result<Vec<EndpointSeries>, StoreError> {
    if q.step <= 0 {
        return Err(StoreError::Query(format!(
            "the series step must be positive, not {}",
            q.step
        )));
    }
    let rows = bucketed(
        client,
        &Bucketed {
            step: q.step,
            tenant: &q.tenant,
            service: &q.service,
            endpoint: None,
            range: q.range,
            group_select: "toString(endpoint)",
            group_key: ", endpoint",
            group_column: Some("endpoint"),
            order: "grp, row_key",
            read,
        },
        &format!("endpoint series of service {:?}", q.service),
    )
    .await?;
    let mut out: Vec<EndpointSeries> = Vec::new();
    for row in rows {
        let point = TimeseriesPoint {
            time: row.key,
            group: None,
            stats: row.stats(),
        };
        match out.last_mut() {
            Some(s) if s.endpoint == row.grp => s.points.push(point),
            _ => out.push(EndpointSeries {
                endpoint: row.grp.clone(),
                points: vec![point],
            }),
        }
    }
    Ok(out)
}

/// Stats per time bucket of `step` ns (the bucket's start in unix seconds is the row key)
/// and per group, over one service (and endpoint).
async fn bucketed(
    client: &Client,
    b: &Bucketed<'_>,
    what: &str,
) -> Result<Vec<StatsRow<i64>>, StoreError> {
    if let Some(split) = b.read.split(b.range, Some(b.step)) {
        return bucketed_rollup(client, b, &split, what).await;
    }
    let endpoint_filter = if b.endpoint.is_some() {
        " AND endpoint = ?"
    } else {
        ""
    };
    let sql = format!(
        "SELECT toInt64(intDiv(intDiv(ts, toInt64(?)) * toInt64(?), {NS_PER_SECOND})) AS row_key, \
         {group} AS grp, {stats} FROM events \
         WHERE tenant = ? AND service = ?{endpoint_filter} AND ts >= ? AND ts < ? \
         GROUP BY row_key{key} ORDER BY {order}",
        group = b.group_select,
        key = b.group_key,
        order = b.order,
        stats = stats_select(),
    );
    let mut query = client
        .query(&sql)
        .bind(b.step)
        .bind(b.step)
        .bind(b.tenant.as_str())
        .bind(b.service);
    if let Some(endpoint) = b.endpoint {
        query = query.bind(endpoint);
    }
    let query = query.bind(b.range.from).bind(b.range.to);
    fetch_stats(what, query).await
}

/// [`bucketed`] over the rollups' whole hours and minutes (and raw rows at the ends).
async fn bucketed_rollup(
    client: &Client,
    b: &Bucketed<'_>,
    split: &Split,
    what: &str,
) -> Result<Vec<StatsRow<i64>>, StoreError> {
    let mut keys = vec![(
        "intDiv({t}, toInt64(?)) * toInt64(?)",
        "intDiv(ts, toInt64(?)) * toInt64(?)",
        "bucket",
    )];
    keys.extend(b.group_column.map(|c| (c, c, c)));
    let mut values = vec![Bind::Str(b.tenant.as_str()), Bind::Str(b.service)];
    values.extend(b.endpoint.map(Bind::Str));
    let filters: &[&str] = if b.endpoint.is_some() {
        &["endpoint"]
    } else {
        &[]
    };
    let outer = |from: &str| {
        format!(
            "SELECT toInt64(intDiv(bucket, {NS_PER_SECOND})) AS row_key, {group} AS grp, \
             {stats} FROM {from} GROUP BY bucket{key} ORDER BY {order}",
            group = b.group_select,
            key = b.group_key,
            order = b.order,
            stats = merged_stats(),
        )
    };
    Partials {
        keys: &keys,
        key_binds: &[b.step, b.step],
        filters,
        edge_hours: b.read.edge_hours(),
    }
    .fetch(client, split, Some(b.step), &values, &outer, what)
    .await
}

async fn fetch_stats<K>(
    what: &str,
    query: ::clickhouse::query::Query,
) -> Result<Vec<StatsRow<K>>, StoreError>
where
    K: for<'de> Deserialize<'de> + Send + 'static,
{
    query
        .fetch_all::<StatsRow<K>>()
        .await
        .map_err(|e| query_error(what, e))
}

/// What [`bucketed`] selects. The group expression, key and order are
/// constants of this module (or from [`group_sql`]), never client input.
struct Bucketed<'a> {
    step: i64,
    tenant: &'a Tenant,
    service: &'a str,
    endpoint: Option<&'a str>,
    range: TimeRange,
    group_select: &'a str,
    group_key: &'a str,
    /// The column grouped by besides time, if any.
    group_column: Option<&'static str>,
    order: &'a str,
    read: Read,
}

/// One row of `events`, borrowed from the event being written.
#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct EventRow<'a> {
    tenant: &'a str,
    service: &'a str,
    endpoint: &'a str,
    build: &'a str,
    dc: &'a str,
    host: &'a str,
    ts: i64,
    /// Days since 1970-01-01 (UTC) of `ts`: ClickHouse's `Date` in RowBinary.
    date: u16,
    status: u16,
    cpu_ns: u64,
    instructions: Option<u64>,
    wall_ns: u64,
    weight: f64,
    label_keys: Vec<&'a str>,
    label_values: Vec<&'a str>,
}

impl<'a> EventRow<'a> {
    fn new(tenant: &'a Tenant, e: &'a RequestEvent) -> Self {
        EventRow {
            tenant: tenant.as_str(),
            service: &e.service,
            endpoint: &e.endpoint,
            build: &e.build,
            dc: &e.dc,
            host: &e.host,
            ts: e.ts,
            date: day_of(e.ts),
            status: e.status,
            cpu_ns: e.cpu_ns,
            instructions: e.instructions,
            wall_ns: e.wall_ns,
            weight: e.weight,
            label_keys: e.labels.keys().map(String::as_str).collect(),
            label_values: e.labels.values().map(String::as_str).collect(),
        }
    }
}

/// A key (endpoint or bucket start), a group and the aggregate columns of [`stats_select`].
#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct StatsRow<K> {
    key: K,
    grp: String,
    requests: f64,
    cpu_sum: f64,
    cpu_q: Vec<f64>,
    instructions_requests: f64,
    instructions_sum: f64,
    instructions_q: Vec<f64>,
}

impl<K> StatsRow<K> {
    fn stats(&self) -> CostStats {
        let dist = |sum: f64, n: f64, q: &[f64]| Distribution {
            mean: if n > 0.0 { sum / n } else { 0.0 },
            p50: q.first().copied().unwrap_or(0.0),
            p90: q.get(1).copied().unwrap_or(0.0),
            p99: q.get(2).copied().unwrap_or(0.0),
        };
        CostStats {
            requests: self.requests,
            cpu_ns: dist(self.cpu_sum, self.requests, &self.cpu_q),
            instructions_requests: self.instructions_requests,
            instructions: (self.instructions_requests > 0.0).then(|| {
                dist(
                    self.instructions_sum,
                    self.instructions_requests,
                    &self.instructions_q,
                )
            }),
        }
    }
}

/// The aggregate part of the select list, in [`StatsRow`] order. Only module constants.
fn stats_select() -> String {
    let bucket = |x: &str| SQL_BUCKET_EXPR.replace("{x}", x);
    let weight = "toUInt64(round(weight * 1000))";
    let has_instructions = "isNotNull(instructions)";
    format!(
        "toFloat64(sum(weight)) AS requests, \
         toFloat64(sum(cpu_ns * weight)) AS cpu_sum, \
         quantilesExactWeighted(0.5, 0.9, 0.99)({cpu_bucket}, {weight}) AS cpu_q, \
         toFloat64(sumIf(weight, {has_instructions})) AS instructions_requests, \
         toFloat64(sumIf(toFloat64(ifNull(instructions, 0)) * weight, {has_instructions})) \
           AS instructions_sum, \
         quantilesExactWeightedIf(0.5, 0.9, 0.99)({instructions_bucket}, {weight}, \
           {has_instructions}) AS instructions_q",
        cpu_bucket = bucket("cpu_ns"),
        instructions_bucket = bucket("ifNull(instructions, 0)"),
    )
}

/// The select expression of the group column and the extra `GROUP BY` key. The column name
/// comes from the fixed set of [`GroupBy::column`].
fn group_sql(group_by: GroupBy) -> (String, String) {
    match group_by.column() {
        Some(column) => (format!("toString({column})"), format!(", {column}")),
        None => ("''".to_owned(), String::new()),
    }
}

fn group_value(group_by: GroupBy, grp: &str) -> Option<String> {
    group_by.column().map(|_| grp.to_owned())
}
