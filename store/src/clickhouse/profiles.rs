//! Stack samples in ClickHouse: `stacks` holds each stack once per tenant under its 128-bit
//! id (`crate::stack_ids`, keyed by the database's `stack_key`; the low half in `hash`, the
//! high half in `hash_hi`), `samples` refers to it (`stack_hash`, `stack_hash_hi`). A write
//! inserts the stacks this process has not written today first, then the samples, and is
//! acknowledged only after both inserts; a failed samples insert leaves at most unreferenced
//! stacks. Reads aggregate per (label set, stack) in SQL and join the frames of just the stacks
//! in the answer, on both halves.
//!
//! Rows written before the ids were keyed hold a 64-bit FNV hash and a high half of 0 in both
//! tables, so they still join. What ClickHouse does not do is compare frames on insert, as the
//! embedded memtable does: two stacks of one tenant share an id with odds of one in 2^128, and
//! nobody without the key can choose such a pair. `stacks` is a `ReplacingMergeTree` sorted by
//! `(tenant, hash)` (the sort key of a table cannot gain a column on 18.16), so two stacks whose
//! low halves alone are equal (one in 2^64 per pair, again not choosable) could be folded into
//! one row by a merge.

use std::collections::HashSet;
use std::sync::Mutex;

use ::clickhouse::Client;
use profwatch_model::profile::{
    ProfileBatch, ProfileQuery, ProfileRow, SampleLabels, StackProfile,
};
use profwatch_model::query::TimeRange;
use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;
use serde::{Deserialize, Serialize};

use super::client::{day_of, query_error, start_insert, unavailable, unix_days};
use super::dedup::Dedup;
use crate::stack_ids::StackIds;
use crate::StoreError;

/// Bound on the remembered (tenant, stack, day) entries; past it the set starts over.
const KNOWN_STACKS_CAP: usize = 1 << 20;

/// How this process names stacks: the database's stack ids, and the (tenant, stack id, day)
/// triples it already inserted.
#[derive(Debug)]
pub struct KnownStacks {
    ids: StackIds,
    inserted: Mutex<HashSet<(String, u128, i64)>>,
}

/// The halves of an id as stored: (`hash`, `hash_hi`).
fn halves(id: u128) -> (u64, u64) {
    (id as u64, (id >> 64) as u64)
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct StackRow<'a> {
    tenant: &'a str,
    hash: u64,
    hash_hi: u64,
    date: u16,
    frames: &'a [String],
}

#[derive(::clickhouse::Row, Serialize)]
#[clickhouse(crate = "::clickhouse")]
struct SampleRow<'a> {
    tenant: &'a str,
    service: &'a str,
    endpoint: &'a str,
    build: &'a str,
    dc: &'a str,
    host: &'a str,
    ts: i64,
    date: u16,
    label_keys: Vec<&'a str>,
    label_values: Vec<&'a str>,
    stack_hash: u64,
    stack_hash_hi: u64,
    samples: u64,
    cpu_ns: u64,
}

impl KnownStacks {
    /// Stacks named under `ids` (the database's key, `stack_key.rs`), none inserted yet.
    pub fn new(ids: StackIds) -> KnownStacks {
        KnownStacks {
            ids,
            inserted: Mutex::default(),
        }
    }

    /// The stack id of every sample, in order, and the stacks among them not yet inserted
    /// for `tenant` on `today` (each once).
    fn split<'a>(
        &self,
        tenant: &Tenant,
        batches: &'a [ProfileBatch],
        today: i64,
    ) -> (Vec<u128>, Vec<(u128, &'a [String])>) {
        let mut hashes = Vec::new();
        let mut new_stacks: Vec<(u128, &[String])> = Vec::new();
        let set = self.inserted.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen_here = HashSet::new();
        for b in batches {
            for s in &b.samples {
                let h = self.ids.id(tenant.as_str(), &s.frames, 0);
                hashes.push(h);
                if !set.contains(&(tenant.0.clone(), h, today)) && seen_here.insert(h) {
                    new_stacks.push((h, &s.frames));
                }
            }
        }
        (hashes, new_stacks)
    }

    /// Remembers stacks inserted for `tenant` on `today`.
    fn remember(&self, tenant: &Tenant, stacks: &[(u128, &[String])], today: i64) {
        let mut set = self.inserted.lock().unwrap_or_else(|e| e.into_inner());
        if set.len() > KNOWN_STACKS_CAP {
            set.clear();
        }
        for (h, _) in stacks {
            set.insert((tenant.0.clone(), *h, today));
        }
    }
}

/// Inserts the stacks this process has not inserted today, then the function rollup's rows
/// (`functions.rs`), then the samples, each as one `INSERT`; returns once ClickHouse
/// acknowledged all three.
pub async fn insert(
    client: &Client,
    known: &KnownStacks,
    tenant: &Tenant,
    batches: &[ProfileBatch],
    dedup: &Dedup,
) -> Result<(), StoreError> {
    let count: usize = batches.iter().map(|b| b.samples.len()).sum();
    let context =
        |step: &str| format!("inserting {count} stack samples for tenant {tenant}: {step}");
    let today = unix_days(now_ns());
    let (hashes, new_stacks) = known.split(tenant, batches, today);
    if !new_stacks.is_empty() {
        insert_stacks(client, tenant, &new_stacks, today, &context).await?;
    }
    super::functions::insert(client, tenant, batches, dedup, &context).await?;
    insert_samples(client, tenant, batches, &hashes, dedup, &context).await?;
    known.remember(tenant, &new_stacks, today);
    Ok(())
}

async fn insert_stacks(
    client: &Client,
    tenant: &Tenant,
    stacks: &[(u128, &[String])],
    today: i64,
    context: &(dyn Fn(&str) -> String + Sync),
) -> Result<(), StoreError> {
    let mut ins = start_insert::<StackRow<'_>>(client, "stacks")
        .await
        .map_err(|e| unavailable(&context("starting the stacks insert"), e))?;
    let date = u16::try_from(today.max(0)).unwrap_or(u16::MAX);
    for (id, frames) in stacks {
        let (hash, hash_hi) = halves(*id);
        ins.write(&StackRow {
            tenant: tenant.as_str(),
            hash,
            hash_hi,
            date,
            frames,
        })
        .await
        .map_err(|e| unavailable(&context("sending stacks"), e))?;
    }
    ins.end()
        .await
        .map_err(|e| unavailable(&context("waiting for the stacks acknowledgement"), e))
}

/// Inserts every sample, referring to its stack by `hashes` (in sample order).
async fn insert_samples(
    client: &Client,
    tenant: &Tenant,
    batches: &[ProfileBatch],
    hashes: &[u128],
    dedup: &Dedup,
    context: &(dyn Fn(&str) -> String + Sync),
) -> Result<(), StoreError> {
    let mut ins = start_insert::<SampleRow<'_>>(client, "samples")
        .await
        .map(|ins| dedup.apply(ins))
        .map_err(|e| unavailable(&context("starting the samples insert"), e))?;
    let mut hash_iter = hashes.iter();
    for b in batches {
        let l = &b.labels;
        for s in &b.samples {
            let Some(id) = hash_iter.next() else { break };
            let (stack_hash, stack_hash_hi) = halves(*id);
            ins.write(&SampleRow {
                tenant: tenant.as_str(),
                service: &l.service,
                endpoint: &l.endpoint,
                build: &l.build,
                dc: &l.dc,
                host: &l.host,
                ts: b.ts,
                date: day_of(b.ts),
                label_keys: l.extra.keys().map(String::as_str).collect(),
                label_values: l.extra.values().map(String::as_str).collect(),
                stack_hash,
                stack_hash_hi,
                samples: s.samples,
                cpu_ns: s.cpu_ns,
            })
            .await
            .map_err(|e| unavailable(&context("sending samples"), e))?;
        }
    }
    ins.end()
        .await
        .map_err(|e| unavailable(&context("waiting for the samples acknowledgement"), e))
}

#[derive(::clickhouse::Row, Deserialize)]
#[clickhouse(crate = "::clickhouse")]
struct ProfileRowSql {
    service: String,
    endpoint: String,
    build: String,
    dc: String,
    host: String,
    label_keys: Vec<String>,
    label_values: Vec<String>,
    samples: u64,
    cpu_ns: u64,
    first_ts: i64,
    last_ts: i64,
    frames: Vec<String>,
}

/// The column a filter key names, or `None` for an extra label.
fn column(key: &str) -> Option<&'static str> {
    match key {
        "service" => Some("service"),
        "endpoint" => Some("endpoint"),
        "build" => Some("build"),
        "dc" => Some("dc"),
        "host" => Some("host"),
        _ => None,
    }
}

pub async fn query(client: &Client, q: &ProfileQuery) -> Result<StackProfile, StoreError> {
    // Filters: known columns compare directly, others look the key up in the label arrays.
    // Only column names from `column` and placeholders are spliced; values are bound.
    let mut where_sql = String::from("tenant = ? AND service = ? AND ts >= ? AND ts < ?");
    for f in &q.filters {
        match column(&f.key) {
            Some(c) => where_sql.push_str(&format!(" AND toString({c}) = ?")),
            None => where_sql
                .push_str(" AND has(label_keys, ?) AND label_values[indexOf(label_keys, ?)] = ?"),
        }
    }
    let sql = format!(
        "SELECT toString(service) AS service, toString(endpoint) AS endpoint, toString(build) AS build, \
                toString(dc) AS dc, toString(host) AS host, label_keys, label_values, \
                samples, cpu_ns, first_ts, last_ts, frames \
         FROM ( \
            SELECT service, endpoint, build, dc, host, label_keys, label_values, \
                   stack_hash, stack_hash_hi, \
                   sum(samples) AS samples, sum(cpu_ns) AS cpu_ns, \
                   min(ts) AS first_ts, max(ts) AS last_ts \
            FROM samples WHERE {where_sql} \
            GROUP BY service, endpoint, build, dc, host, label_keys, label_values, \
                     stack_hash, stack_hash_hi \
         ) AS per_stack ALL INNER JOIN ( \
            SELECT hash AS stack_hash, hash_hi AS stack_hash_hi, any(frames) AS frames \
            FROM stacks \
            WHERE tenant = ? AND (hash, hash_hi) IN \
                  (SELECT stack_hash, stack_hash_hi FROM samples WHERE {where_sql}) \
            GROUP BY hash, hash_hi \
         ) AS frames_of USING (stack_hash, stack_hash_hi)"
    );
    // Both sides of the join are named (current servers refuse unnamed joined subqueries) and
    // the join is `ALL` (the right side has one row per hash): since 20.x `ANY INNER JOIN` also
    // keeps one row per key of the left side, which dropped samples. Both found by the chDB
    // run of the contract suite.
    // The join's right side binds the tenant before its subquery's own filters.
    let rows: Vec<ProfileRowSql> = bind_for_join(client, &sql, q)
        .fetch_all()
        .await
        .map_err(|e| query_error(&format!("profile of service {:?}", q.service), e))?;
    let span = rows
        .iter()
        .map(|r| (r.first_ts, r.last_ts))
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
        .map(|(first, last)| TimeRange {
            from: first,
            to: last.saturating_add(1),
        });
    let mut out: Vec<ProfileRow> = rows
        .into_iter()
        .map(|r| ProfileRow {
            labels: SampleLabels {
                service: r.service,
                endpoint: r.endpoint,
                build: r.build,
                dc: r.dc,
                host: r.host,
                extra: r.label_keys.into_iter().zip(r.label_values).collect(),
            },
            frames: r.frames.into(),
            samples: r.samples,
            cpu_ns: r.cpu_ns,
        })
        .collect();
    StackProfile::sort_rows(&mut out);
    Ok(StackProfile { rows: out, span })
}

/// Binds the placeholders of the profile SQL in order: the samples filters, the tenant of the
/// stacks side, then the samples filters again for the `IN` subquery.
fn bind_for_join(client: &Client, sql: &str, q: &ProfileQuery) -> ::clickhouse::query::Query {
    let filters = |mut query: ::clickhouse::query::Query| {
        query = query
            .bind(q.tenant.as_str())
            .bind(q.service.as_str())
            .bind(q.range.from)
            .bind(q.range.to);
        for f in &q.filters {
            query = match column(&f.key) {
                Some(_) => query.bind(f.value.as_str()),
                None => query
                    .bind(f.key.as_str())
                    .bind(f.key.as_str())
                    .bind(f.value.as_str()),
            };
        }
        query
    };
    let query = filters(client.query(sql));
    let query = query.bind(q.tenant.as_str());
    filters(query)
}
