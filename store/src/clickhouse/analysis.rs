//! What the analyzer reads and writes in ClickHouse: build summaries, per-request costs, and
//! regression records (a new row per version; the latest `updated` wins).

use std::collections::HashMap;

use ::clickhouse::Client;
use profwatch_model::query::{BuildSummary, BuildsQuery, CostSamples, CostSamplesQuery};
use profwatch_model::regression::RegressionRecord;
use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;
use serde::{Deserialize, Serialize};

use super::client::{insert_one, query_error, unavailable};
use super::events::Read;
use super::rollups::{Bind, Partials};
use crate::StoreError;

pub async fn builds(
    client: &Client,
    q: &BuildsQuery,
    read: Read,
) -> Result<Vec<BuildSummary>, StoreError> {
    let what = format!("builds of service {:?}", q.service);
    let rows: Vec<(String, i64, i64, f64)> = match read.split(q.range, None) {
        None => client
            .query(
                "SELECT toString(build) AS b, min(ts), max(ts), toFloat64(sum(weight)) \
                 FROM events WHERE tenant = ? AND service = ? AND ts >= ? AND ts < ? \
                 GROUP BY b ORDER BY b",
            )
            .bind(q.tenant.as_str())
            .bind(q.service.as_str())
            .bind(q.range.from)
            .bind(q.range.to)
            .fetch_all()
            .await
            .map_err(|e| query_error(&what, e))?,
        Some(split) => {
            let outer = |from: &str| {
                format!(
                    "SELECT toString(build) AS b, min(first_ts), max(last_ts), \
                     toFloat64(sum(requests)) FROM {from} GROUP BY b ORDER BY b"
                )
            };
            Partials {
                keys: &[("build", "build", "build")],
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
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(build, first_seen, last_seen, requests)| BuildSummary {
            build,
            first_seen,
            last_seen,
            requests,
        })
        .collect())
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct CostRowSql {
    endpoint: String,
    build: String,
    host: String,
    dc: String,
    ts: i64,
    cpu_ns: u64,
    instructions: Option<u64>,
    weight: f64,
}

pub async fn cost_samples(
    client: &Client,
    q: &CostSamplesQuery,
) -> Result<Vec<CostSamples>, StoreError> {
    let mut sql = String::from(
        "SELECT toString(endpoint) AS endpoint, toString(build) AS build, toString(host) AS host, \
                toString(dc) AS dc, ts, cpu_ns, instructions, weight \
         FROM events WHERE tenant = ? AND service = ? AND ts >= ? AND ts < ?",
    );
    if !q.builds.is_empty() {
        sql.push_str(" AND has(?, toString(build))");
    }
    if q.endpoint.is_some() {
        sql.push_str(" AND endpoint = ?");
    }
    // No `ORDER BY`: sorting every request of a busy service by strings exceeded 18.16's
    // memory limit per query (10M events: 1.86 GiB); the rows are grouped here instead.
    let mut query = client
        .query(&sql)
        .bind(q.tenant.as_str())
        .bind(q.service.as_str())
        .bind(q.range.from)
        .bind(q.range.to);
    if !q.builds.is_empty() {
        query = query.bind(&q.builds);
    }
    if let Some(e) = &q.endpoint {
        query = query.bind(e.as_str());
    }
    let mut cursor = query
        .fetch::<CostRowSql>()
        .map_err(|e| query_error(&format!("request costs of service {:?}", q.service), e))?;
    let mut groups: HashMap<(String, String), CostSamples> = HashMap::new();
    while let Some(r) = cursor
        .next()
        .await
        .map_err(|e| query_error(&format!("request costs of service {:?}", q.service), e))?
    {
        groups
            .entry((r.endpoint, r.build))
            .or_insert_with_key(|(endpoint, build)| CostSamples {
                endpoint: endpoint.clone(),
                build: build.clone(),
                ..Default::default()
            })
            .push(r.ts, r.cpu_ns, r.instructions, r.weight, &r.host, &r.dc);
    }
    let mut out: Vec<CostSamples> = groups.into_values().collect();
    out.sort_by(|a, b| (&a.endpoint, &a.build).cmp(&(&b.endpoint, &b.build)));
    Ok(out)
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct RegressionRow<'a> {
    tenant: &'a str,
    id: &'a str,
    updated: i64,
    service: &'a str,
    endpoint: &'a str,
    metric: &'a str,
    baseline: &'a str,
    candidate: &'a str,
    effect: f64,
    effect_low: f64,
    effect_high: f64,
    p_value: f64,
    state: &'a str,
    first_seen: i64,
    last_seen: i64,
    record: String,
}

pub async fn put_regression(client: &Client, r: &RegressionRecord) -> Result<(), StoreError> {
    let record = serde_json::to_string(r)
        .map_err(|e| StoreError::Query(format!("encoding a regression record: {e}")))?;
    // A version must grow with every write of the same id, even within one nanosecond.
    let updated = r.updated.max(now_ns());
    let row = RegressionRow {
        tenant: &r.tenant,
        id: &r.id,
        updated,
        service: &r.service,
        endpoint: &r.endpoint,
        metric: &r.metric,
        baseline: &r.baseline,
        candidate: &r.candidate,
        effect: r.effect,
        // The columns stay Float64 (18.16 has no Nullable in ORDER BY-free tables worth the
        // migration); an absent interval end is NaN there, and the JSON record is the truth.
        effect_low: r.effect_low.unwrap_or(f64::NAN),
        effect_high: r.effect_high.unwrap_or(f64::NAN),
        p_value: r.p_value,
        state: r.state.as_str(),
        first_seen: r.first_seen,
        last_seen: r.last_seen,
        record,
    };
    insert_one::<RegressionRow<'_>>(client, "regressions", &row)
        .await
        .map_err(|e| unavailable("storing a regression record", e))
}

pub async fn regressions(
    client: &Client,
    tenant: &Tenant,
) -> Result<Vec<RegressionRecord>, StoreError> {
    let rows: Vec<String> = client
        .query(
            "SELECT argMax(record, updated) FROM regressions WHERE tenant = ? \
             GROUP BY id ORDER BY max(last_seen) DESC, id",
        )
        .bind(tenant.as_str())
        .fetch_all()
        .await
        .map_err(|e| query_error("listing regression records", e))?;
    rows.iter()
        .map(|json| {
            serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
                path: "regressions".into(),
                detail: e.to_string(),
            })
        })
        .collect()
}
