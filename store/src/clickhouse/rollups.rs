//! Rollups of request events: per (tenant, service, endpoint, build, dc, host, minute), the
//! weighted request count, sums, first and last time, and mergeable quantile states, kept by
//! a materialized view in an `AggregatingMergeTree` (`events_rollup`), so that summaries read
//! pre-aggregated rows instead of every event.
//!
//! Invariants:
//! - Every insert into `events` reaches `events_rollup` through the view `events_rollup_mv`
//!   (on a cluster: `events_local` → `events_rollup_local` on each node, so rollups live on the
//!   shard of their events; both tables are sharded by `(tenant, service, endpoint)`).
//! - The quantile states are `quantilesExactWeighted` over the sketch's bucket values
//!   ([`SQL_BUCKET_EXPR`]) with weights in thousandths, exactly what the raw query aggregates,
//!   so a state holds at most one entry per bucket and an answer from rollups equals the answer
//!   from raw rows (sums up to floating-point order). Both are within the sketch's
//!   [`RELATIVE_ACCURACY`] of the exact quantile.
//! - A query reads the rollup for the whole minutes of its range and the raw rows of the partial
//!   minutes at either end ([`Split`]), merged as states in one statement (one `GROUP BY` over
//!   the rollup rows and the raw partials, so each stored state is merged once). A range shorter than
//!   a minute, a range before 1970, and a time-series step that is not a whole number of
//!   minutes read raw rows only.
//! - Retention: `events_rollup` is partitioned by day like `events` and trimmed with it (TTL on
//!   modern servers, dropped partitions on every version).
//! - Two rollups of the same states: `events_rollup` per (..., dc, host, minute) for queries
//!   grouped or filtered by dc or host (the analysis pass's per-host summaries), and
//!   `events_rollup_endpoint` per (tenant, service, endpoint, build, minute) for the others
//!   (migration 12): on `profwatch-bench query --shape rollup` (8 hosts) its rows are 8 times
//!   fewer and hold 8 times the requests, so its quantile states merge far fewer entries.
//!   [`Partials::sql`] picks the coarsest one whose keys serve the query.
//! - Upgrade (migration 7, and 12 for the per-endpoint one): the table, then the view, then the back-fill (empty the table,
//!   aggregate every stored event into it). A batch whose insert completes between the view's
//!   creation and the back-fill's read is counted twice in the rollup (never in raw rows); the
//!   collector migrates at connect, before it serves, so this needs another collector writing
//!   during the upgrade.
//! - Still read from raw rows: per-request costs for the analyzer's build comparison (its
//!   clustered bootstrap, rank test and Hodges-Lehmann effect need every request's value, and
//!   its clusters are hosts and time blocks finer than any rollup key), stack profiles, and the
//!   partial minutes above.
//!
//! [`SQL_BUCKET_EXPR`]: profwatch_model::sketch::SQL_BUCKET_EXPR
//! [`RELATIVE_ACCURACY`]: profwatch_model::sketch::RELATIVE_ACCURACY

use profwatch_model::query::TimeRange;
use profwatch_model::sketch::SQL_BUCKET_EXPR;

use super::migrations::{
    DdlContext, Engine, TableDdl, ViewDdl, PER_ENDPOINT_SHARD_KEY, RETENTION_COLUMN,
};

/// The table of rollups per host.
pub const ROLLUP_TABLE: &str = "events_rollup";
/// The table of rollups per endpoint and build (no dc, no host).
pub const ENDPOINT_ROLLUP_TABLE: &str = "events_rollup_endpoint";
/// The rollup's time unit, in ns.
pub const MINUTE_NS: i64 = 60_000_000_000;

/// The quantile levels of every answer, in the order of [`super::events`]' rows.
const LEVELS: &str = "0.5, 0.9, 0.99";

/// Start of the minute of `ts` (floor, also before 1970), as SQL.
fn minute_sql() -> String {
    format!("(intDiv(ts, {MINUTE_NS}) * {MINUTE_NS} - if(ts % {MINUTE_NS} < 0, {MINUTE_NS}, 0))")
}

fn weight_sql() -> &'static str {
    "toUInt64(round(weight * 1000))"
}

fn bucket_sql(x: &str) -> String {
    format!("toFloat64({})", SQL_BUCKET_EXPR.replace("{x}", x))
}

pub fn create_tables(ctx: &DdlContext) -> Vec<TableDdl> {
    vec![rollup_table(ctx, ROLLUP_TABLE, &["dc", "host"])]
}

/// Migration 12: the per-endpoint rollup.
pub fn create_endpoint_tables(ctx: &DdlContext) -> Vec<TableDdl> {
    vec![rollup_table(ctx, ENDPOINT_ROLLUP_TABLE, &[])]
}

/// A rollup table keyed by tenant, service, endpoint, build, `extra` keys and minute.
fn rollup_table(ctx: &DdlContext, name: &'static str, extra: &[&str]) -> TableDdl {
    let s = ctx.lc("String");
    let q = format!("AggregateFunction(quantilesExactWeighted({LEVELS}), Float64, UInt64)");
    let sum = "AggregateFunction(sum, Float64)";
    let zstd = ctx.codec("ZSTD");
    let extra_columns: String = extra.iter().map(|c| format!("\n    {c} {s},")).collect();
    let extra_keys: String = extra.iter().map(|c| format!(", {c}")).collect();
    TableDdl {
        name,
        columns: format!(
            "(
    tenant {s},
    service {s},
    endpoint {s},
    build {s},{extra_columns}
    minute Int64{delta},
    {RETENTION_COLUMN} Date{delta},
    requests {sum}{zstd},
    cpu_sum {sum}{zstd},
    cpu_q {q}{zstd},
    instructions_requests {sum}{zstd},
    instructions_sum {sum}{zstd},
    instructions_q {q}{zstd},
    first_ts AggregateFunction(min, Int64){zstd},
    last_ts AggregateFunction(max, Int64){zstd}
)",
            delta = ctx.codec("Delta, ZSTD"),
        ),
        engine: Engine::Aggregating,
        keys: format!(
            "PARTITION BY {RETENTION_COLUMN}\n\
             ORDER BY (tenant, service, endpoint, build{extra_keys}, minute){ttl}",
            ttl = ctx.ttl()
        ),
        shard_key: PER_ENDPOINT_SHARD_KEY,
    }
}

pub fn create_views(_ctx: &DdlContext) -> Vec<ViewDdl> {
    vec![rollup_view(
        "events_rollup_mv",
        ROLLUP_TABLE,
        &["dc", "host"],
    )]
}

/// Migration 12: the view feeding the per-endpoint rollup.
pub fn create_endpoint_views(_ctx: &DdlContext) -> Vec<ViewDdl> {
    vec![rollup_view(
        "events_rollup_endpoint_mv",
        ENDPOINT_ROLLUP_TABLE,
        &[],
    )]
}

fn rollup_view(name: &'static str, target: &'static str, extra: &[&str]) -> ViewDdl {
    let extra_keys: String = extra.iter().map(|c| format!(", {c}")).collect();
    ViewDdl {
        name,
        source: super::events::EVENTS_TABLE,
        target,
        select: format!(
            "SELECT tenant, service, endpoint, build{extra_keys}, {minute} AS minute, \
             {RETENTION_COLUMN}, {states}, minState(ts) AS first_ts, maxState(ts) AS last_ts \
             FROM {{source}} \
             GROUP BY tenant, service, endpoint, build{extra_keys}, minute, {RETENTION_COLUMN}",
            minute = minute_sql(),
            states = raw_states(),
        ),
    }
}

/// The stats columns as aggregate states of raw rows: `sumState` and the quantile states.
/// Used by the view (sums as states) and, with [`raw_partial`], by queries.
fn raw_states() -> String {
    let has = "isNotNull(instructions)";
    let w = weight_sql();
    format!(
        "sumState(weight) AS requests, \
         sumState(cpu_ns * weight) AS cpu_sum, \
         quantilesExactWeightedState({LEVELS})({cpu}, {w}) AS cpu_q, \
         sumStateIf(weight, {has}) AS instructions_requests, \
         sumStateIf(toFloat64(ifNull(instructions, 0)) * weight, {has}) AS instructions_sum, \
         quantilesExactWeightedStateIf({LEVELS})({ins}, {w}, {has}) AS instructions_q",
        cpu = bucket_sql("cpu_ns"),
        ins = bucket_sql("ifNull(instructions, 0)"),
    )
}

/// Partial aggregates of raw rows, in the columns of [`rollup_partial`]: sums as numbers,
/// quantiles as states.
fn raw_partial() -> String {
    let has = "isNotNull(instructions)";
    let w = weight_sql();
    format!(
        "toFloat64(sum(weight)) AS requests, \
         toFloat64(sum(cpu_ns * weight)) AS cpu_sum, \
         quantilesExactWeightedState({LEVELS})({cpu}, {w}) AS cpu_q, \
         toFloat64(sumIf(weight, {has})) AS instructions_requests, \
         toFloat64(sumIf(toFloat64(ifNull(instructions, 0)) * weight, {has})) \
           AS instructions_sum, \
         quantilesExactWeightedStateIf({LEVELS})({ins}, {w}, {has}) AS instructions_q, \
         min(ts) AS first_ts, max(ts) AS last_ts",
        cpu = bucket_sql("cpu_ns"),
        ins = bucket_sql("ifNull(instructions, 0)"),
    )
}

/// Rollup rows, one by one, in the columns of [`raw_partial`]: sums and times finalized per
/// row, quantile states as stored. Not grouped: the query's outer `GROUP BY` merges every
/// state once (grouping here as well merged each twice, ~20% of the answer's time on
/// `profwatch-bench query --shape rollup`).
fn rollup_rows() -> &'static str {
    "toFloat64(finalizeAggregation(requests)) AS requests, \
     toFloat64(finalizeAggregation(cpu_sum)) AS cpu_sum, \
     cpu_q, \
     toFloat64(finalizeAggregation(instructions_requests)) AS instructions_requests, \
     toFloat64(finalizeAggregation(instructions_sum)) AS instructions_sum, \
     instructions_q, \
     finalizeAggregation(first_ts) AS first_ts, finalizeAggregation(last_ts) AS last_ts"
}

/// The final stats columns over partial aggregates, as `events`' `StatsRow` reads them.
pub fn merged_stats() -> String {
    format!(
        "toFloat64(sum(requests)) AS requests, \
         toFloat64(sum(cpu_sum)) AS cpu_sum, \
         quantilesExactWeightedMerge({LEVELS})(cpu_q) AS cpu_q, \
         toFloat64(sum(instructions_requests)) AS instructions_requests, \
         toFloat64(sum(instructions_sum)) AS instructions_sum, \
         quantilesExactWeightedMerge({LEVELS})(instructions_q) AS instructions_q"
    )
}

/// How a range splits into whole minutes, read from the rollup, and the raw rows around them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// Whole minutes `[from, to)`, minute starts in ns.
    pub minutes: TimeRange,
    /// The partial minutes before and after, each possibly empty.
    pub before: (i64, i64),
    pub after: (i64, i64),
}

impl Split {
    /// `None` when the range holds no whole minute or starts before 1970 (read raw rows).
    /// With a `step` (time series), also `None` unless it is a whole number of minutes, so
    /// that every minute falls into one bucket.
    pub fn of(range: TimeRange, step: Option<i64>) -> Option<Split> {
        Split::in_units(range, step, MINUTE_NS)
    }

    /// [`Split::of`] for a rollup whose time unit is `unit` ns (the function rollup's hour).
    pub fn in_units(range: TimeRange, step: Option<i64>, unit: i64) -> Option<Split> {
        if range.from < 0 || step.is_some_and(|s| s <= 0 || s % unit != 0) {
            return None;
        }
        let lo = range.from.checked_add(unit - 1)? / unit * unit;
        let hi = range.to / unit * unit;
        (lo < hi).then_some(Split {
            minutes: TimeRange { from: lo, to: hi },
            before: (range.from, lo),
            after: (hi, range.to),
        })
    }

    /// Whether the range is all whole minutes (no raw rows to read).
    pub fn aligned(&self) -> bool {
        self.before.0 == self.before.1 && self.after.0 == self.after.1
    }
}

/// The SQL of one query over partial aggregates, with its binds in text order.
pub struct Partials<'a> {
    /// Key columns of the partials, as `expr AS name` pairs: (rollup expression, raw
    /// expression, name). Expressions are module constants or take `?` binds listed in
    /// `key_binds` (bound once per `?`, for each part).
    pub keys: &'a [(&'a str, &'a str, &'a str)],
    pub key_binds: &'a [i64],
    /// Extra `AND column = ?` filters after tenant and service (column names are constants).
    pub filters: &'a [&'a str],
}

/// One bindable value of a rollup query.
#[derive(Debug, Clone, Copy)]
pub enum Bind<'a> {
    Str(&'a str),
    Int(i64),
}

impl Partials<'_> {
    /// The coarsest rollup that has every key and filter column: the per-endpoint one unless
    /// the query groups or filters by dc or host.
    pub fn table(&self) -> &'static str {
        let per_host = |c: &str| matches!(c, "dc" | "host");
        if self.keys.iter().any(|k| per_host(k.2)) || self.filters.iter().any(|f| per_host(f)) {
            ROLLUP_TABLE
        } else {
            ENDPOINT_ROLLUP_TABLE
        }
    }

    /// `(SELECT ... FROM events_rollup ... UNION ALL SELECT ... FROM events ...)` and the
    /// values to bind, in order: the partials of `split` for the tenant, service and filter
    /// values given (rollup rows as they are, raw rows grouped by the keys), for the caller to
    /// group by the keys.
    pub fn sql<'v>(&self, split: &Split, filter_values: &[Bind<'v>]) -> (String, Vec<Bind<'v>>) {
        let names: Vec<&str> = self.keys.iter().map(|k| k.2).collect();
        let group = names.join(", ");
        let select = |rollup: bool| {
            self.keys
                .iter()
                .map(|k| format!("{} AS {}", if rollup { k.0 } else { k.1 }, k.2))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let filters: String = self
            .filters
            .iter()
            .map(|c| format!(" AND {c} = ?"))
            .collect();
        let mut binds = Vec::new();
        let common = |binds: &mut Vec<Bind<'v>>| {
            binds.extend(self.key_binds.iter().map(|v| Bind::Int(*v)));
            binds.extend_from_slice(filter_values);
        };
        common(&mut binds);
        binds.push(Bind::Int(split.minutes.from));
        binds.push(Bind::Int(split.minutes.to));
        let mut sql = format!(
            "SELECT {keys}, {rows} FROM {table} \
             WHERE tenant = ? AND service = ?{filters} AND minute >= ? AND minute < ?",
            keys = select(true),
            rows = rollup_rows(),
            table = self.table(),
        );
        if !split.aligned() {
            common(&mut binds);
            binds.extend(
                [split.before.0, split.before.1, split.after.0, split.after.1].map(Bind::Int),
            );
            sql.push_str(&format!(
                " UNION ALL SELECT {keys}, {partial} FROM events \
                 WHERE tenant = ? AND service = ?{filters} \
                 AND ((ts >= ? AND ts < ?) OR (ts >= ? AND ts < ?)) \
                 GROUP BY {group}",
                keys = select(false),
                partial = raw_partial(),
            ));
        }
        (format!("({sql})"), binds)
    }
}

/// Binds `values` in order.
pub fn bind_all(
    mut query: ::clickhouse::query::Query,
    values: &[Bind<'_>],
) -> ::clickhouse::query::Query {
    for v in values {
        query = match *v {
            Bind::Str(s) => query.bind(s),
            Bind::Int(i) => query.bind(i),
        };
    }
    query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_splits_into_whole_minutes_and_raw_ends() {
        let m = MINUTE_NS;
        let r = |from, to| TimeRange { from, to };
        assert_eq!(Split::of(r(10, m - 1), None), None);
        assert_eq!(Split::of(r(-m, m), None), None);
        let s = Split::of(r(10, 3 * m + 5), None).expect("two whole minutes");
        assert_eq!(s.minutes, r(m, 3 * m));
        assert_eq!((s.before, s.after), ((10, m), (3 * m, 3 * m + 5)));
        assert!(!s.aligned());
        assert!(Split::of(r(0, 2 * m), None).expect("aligned").aligned());
        assert_eq!(Split::of(r(0, 2 * m), Some(30_000_000_000)), None);
        assert!(Split::of(r(0, 2 * m), Some(5 * m)).is_some());
        assert_eq!(Split::of(r(i64::MAX - 5, i64::MAX), None), None);
    }
}
