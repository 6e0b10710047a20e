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
//!   the rollup rows and the raw partials, so each stored state is merged once). A range
//!   shorter than a minute, a range before 1970, and a time-series step that is not a whole
//!   number of minutes read raw rows only.
//! - Queries the per-endpoint rollup serves (no step, or a step of whole hours) read the hourly
//!   rollup (`events_rollup_endpoint_hour`, migration 13) for the whole hours of their range,
//!   minutes and raw rows for the rest ([`Pieces::hourly`]). A partial hour at either end is
//!   read whole from the hourly rollup when all its stored events lie inside the range (its
//!   first and last `ts`, checked before the query and again after it; [`Partials::fetch`]):
//!   the common case at the end of a range that runs to now, and wherever data starts or stops
//!   inside the range.
//! - Retention: every rollup is partitioned by day like `events` and trimmed with it (TTL on
//!   modern servers, dropped partitions on every version).
//! - Two rollups of the same states: `events_rollup` per (..., dc, host, minute) for queries
//!   grouped or filtered by dc or host (the analysis pass's per-host summaries), and
//!   `events_rollup_endpoint` per (tenant, service, endpoint, build, minute) for the others
//!   (migration 12): on `profwatch-bench query --shape rollup` (8 hosts) its rows are 8 times
//!   fewer and hold 8 times the requests, so its quantile states merge far fewer entries.
//!   [`Partials::sql`] picks the coarsest one whose keys serve the query.
//! - Upgrade (migration 7; 12 for the per-endpoint one, 13 for the hourly one): the table, then the view, then the back-fill (empty the table,
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

use ::clickhouse::Client;
use profwatch_model::query::TimeRange;
use profwatch_model::sketch::SQL_BUCKET_EXPR;

use super::client::query_error;
use crate::StoreError;

use super::migrations::{
    DdlContext, Engine, TableDdl, ViewDdl, PER_ENDPOINT_SHARD_KEY, RETENTION_COLUMN,
};

/// The table of rollups per host.
pub const ROLLUP_TABLE: &str = "events_rollup";
/// The table of rollups per endpoint and build (no dc, no host).
pub const ENDPOINT_ROLLUP_TABLE: &str = "events_rollup_endpoint";
/// The per-endpoint rollup per hour (migration 13), for the whole hours of a range.
pub const HOUR_ROLLUP_TABLE: &str = "events_rollup_endpoint_hour";
/// The rollup's time unit, in ns.
pub const MINUTE_NS: i64 = 60_000_000_000;
/// The hourly rollup's time unit, in ns.
pub const HOUR_NS: i64 = 3_600_000_000_000;

/// The quantile levels of every answer, in the order of [`super::events`]' rows.
const LEVELS: &str = "0.5, 0.9, 0.99";

/// Start of the unit (`unit` ns) holding `ts` (floor, also before 1970), as SQL.
fn unit_start_sql(unit: i64) -> String {
    format!("(intDiv(ts, {unit}) * {unit} - if(ts % {unit} < 0, {unit}, 0))")
}

fn weight_sql() -> &'static str {
    "toUInt64(round(weight * 1000))"
}

fn bucket_sql(x: &str) -> String {
    format!("toFloat64({})", SQL_BUCKET_EXPR.replace("{x}", x))
}

pub fn create_tables(ctx: &DdlContext) -> Vec<TableDdl> {
    vec![rollup_table(ctx, ROLLUP_TABLE, &["dc", "host"], "minute")]
}

/// Migration 12: the per-endpoint rollup.
pub fn create_endpoint_tables(ctx: &DdlContext) -> Vec<TableDdl> {
    vec![rollup_table(ctx, ENDPOINT_ROLLUP_TABLE, &[], "minute")]
}

/// Migration 13: the per-endpoint rollup per hour.
pub fn create_hour_tables(ctx: &DdlContext) -> Vec<TableDdl> {
    vec![rollup_table(ctx, HOUR_ROLLUP_TABLE, &[], "hour")]
}

/// A rollup table keyed by tenant, service, endpoint, build, `extra` keys and the start of its
/// time unit, in the column `unit` (ns).
fn rollup_table(ctx: &DdlContext, name: &'static str, extra: &[&str], unit: &str) -> TableDdl {
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
    {unit} Int64{delta},
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
             ORDER BY (tenant, service, endpoint, build{extra_keys}, {unit}){ttl}",
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
        ("minute", MINUTE_NS),
    )]
}

/// Migration 12: the view feeding the per-endpoint rollup.
pub fn create_endpoint_views(_ctx: &DdlContext) -> Vec<ViewDdl> {
    vec![rollup_view(
        "events_rollup_endpoint_mv",
        ENDPOINT_ROLLUP_TABLE,
        &[],
        ("minute", MINUTE_NS),
    )]
}

/// Migration 13: the view feeding the per-endpoint rollup per hour.
pub fn create_hour_views(_ctx: &DdlContext) -> Vec<ViewDdl> {
    vec![rollup_view(
        "events_rollup_endpoint_hour_mv",
        HOUR_ROLLUP_TABLE,
        &[],
        ("hour", HOUR_NS),
    )]
}

fn rollup_view(
    name: &'static str,
    target: &'static str,
    extra: &[&str],
    (unit, unit_ns): (&str, i64),
) -> ViewDdl {
    let extra_keys: String = extra.iter().map(|c| format!(", {c}")).collect();
    ViewDdl {
        name,
        source: super::events::EVENTS_TABLE,
        target,
        select: format!(
            "SELECT tenant, service, endpoint, build{extra_keys}, {start} AS {unit}, \
             {RETENTION_COLUMN}, {states}, minState(ts) AS first_ts, maxState(ts) AS last_ts \
             FROM {{source}} \
             GROUP BY tenant, service, endpoint, build{extra_keys}, {unit}, {RETENTION_COLUMN}",
            start = unit_start_sql(unit_ns),
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

    /// The range split.
    pub fn range(&self) -> TimeRange {
        TimeRange {
            from: self.before.0,
            to: self.after.1,
        }
    }

    /// Whether the range is all whole minutes (no raw rows to read).
    pub fn aligned(&self) -> bool {
        self.before.0 == self.before.1 && self.after.0 == self.after.1
    }
}

/// What one query reads, disjoint: hour cells of the hourly rollup, minute cells of a minute
/// rollup, and raw rows (`[from, to)` of `ts`); together exactly its range, plus the rest of
/// an edge hour read whole ([`Pieces::hourly`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pieces {
    /// Starts of the hour cells read, `[from, to)`.
    pub hours: Option<TimeRange>,
    /// Starts of the minute cells read, each `[from, to)`.
    pub minutes: Vec<TimeRange>,
    /// Raw rows, each `[from, to)` of `ts`.
    pub raw: Vec<(i64, i64)>,
}

/// The partial hours at the ends of a range, whose cells a query may read whole when every
/// stored event in them lies inside the range ([`Pieces::hourly`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeHours {
    /// Start of the hour holding `from`, when `from` is not on the hour.
    pub start: Option<i64>,
    /// Start of the hour holding `to`, when `to` is not on the hour.
    pub end: Option<i64>,
}

impl EdgeHours {
    pub fn of(range: TimeRange) -> EdgeHours {
        let partial = |t: i64| (t.rem_euclid(HOUR_NS) != 0).then(|| t - t.rem_euclid(HOUR_NS));
        EdgeHours {
            start: partial(range.from),
            end: partial(range.to),
        }
    }

    /// The distinct cell starts, for the check.
    pub fn cells(&self) -> Vec<i64> {
        let mut cells: Vec<i64> = self.start.into_iter().chain(self.end).collect();
        cells.dedup();
        cells
    }
}

/// Whether an edge hour's cell may be read whole for `range`: it holds no event, or its first
/// and last events both lie inside the range. `span` is the cell's (first, last) `ts`.
pub fn takeable(span: Option<(i64, i64)>, range: TimeRange) -> bool {
    span.is_none_or(|(first, last)| first >= range.from && last < range.to)
}

impl Pieces {
    /// The minute rollup's whole minutes and raw rows at the ends, as [`Split`] has them.
    pub fn of_split(split: &Split) -> Pieces {
        let raw = [split.before, split.after]
            .into_iter()
            .filter(|(a, b)| a < b)
            .collect();
        Pieces {
            hours: None,
            minutes: vec![split.minutes],
            raw,
        }
    }

    /// Adds `part` as whole minutes and raw rows at its ends (all raw when it holds no whole
    /// minute).
    fn cover(&mut self, part: TimeRange, step: Option<i64>) {
        if part.from >= part.to {
            return;
        }
        match Split::of(part, step) {
            Some(split) => {
                let p = Pieces::of_split(&split);
                self.minutes.extend(p.minutes);
                self.raw.extend(p.raw);
            }
            None => self.raw.push((part.from, part.to)),
        }
    }

    /// The hourly rollup's whole hours, plus an edge hour's cell when `take` says it may be
    /// read whole (see [`takeable`]); the rest of the range as minutes and raw rows. `range`
    /// must start at or after 1970 and end an hour before `i64::MAX`, and `step`, if any, be a
    /// whole number of hours.
    pub fn hourly(range: TimeRange, step: Option<i64>, take: (bool, bool)) -> Pieces {
        let edges = EdgeHours::of(range);
        let take_start = take.0 && edges.start.is_some();
        let take_end = take.1 && edges.end.is_some();
        let mut pieces = Pieces::default();
        if edges.start.is_some() && edges.start == edges.end && !(take_start && take_end) {
            // The range lies inside one hour whose cell is not read whole: minutes and raw
            // rows (the ends below would overlap).
            pieces.cover(range, step);
            return pieces;
        }
        let hours_from = match edges.start {
            Some(start) if take_start => start,
            Some(start) => start + HOUR_NS,
            None => range.from,
        };
        let hours_to = match edges.end {
            Some(end) if take_end => end + HOUR_NS,
            Some(end) => end,
            None => range.to,
        };
        if hours_from < hours_to {
            pieces.hours = Some(TimeRange {
                from: hours_from,
                to: hours_to,
            });
        }
        if !take_start {
            let to = hours_from.min(range.to);
            pieces.cover(
                TimeRange {
                    from: range.from,
                    to,
                },
                step,
            );
        }
        if !take_end {
            let from = hours_to.max(range.from);
            pieces.cover(TimeRange { from, to: range.to }, step);
        }
        pieces
    }
}

/// The SQL of one query over partial aggregates, with its binds in text order.
pub struct Partials<'a> {
    /// Key columns of the partials, as `expr AS name` pairs: (rollup expression, raw
    /// expression, name). Rollup expressions name the cell's start `{t}`. Expressions are
    /// module constants or take `?` binds listed in `key_binds` (bound once per `?`, for each
    /// part).
    pub keys: &'a [(&'a str, &'a str, &'a str)],
    pub key_binds: &'a [i64],
    /// Extra `AND column = ?` filters after tenant and service (column names are constants).
    pub filters: &'a [&'a str],
    /// Whether a partial hour at an end may be read whole ([`Partials::fetch`]).
    pub edge_hours: bool,
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

    /// `AND column = ?` for each filter.
    fn filter_sql(&self) -> String {
        self.filters
            .iter()
            .map(|c| format!(" AND {c} = ?"))
            .collect()
    }

    /// Whether the hourly rollup can serve this query (per endpoint, a step of whole hours).
    pub fn hourly(&self, step: Option<i64>) -> bool {
        self.table() == ENDPOINT_ROLLUP_TABLE && step.is_none_or(|s| s > 0 && s % HOUR_NS == 0)
    }

    /// `(SELECT ... FROM events_rollup_endpoint_hour ... UNION ALL SELECT ... FROM
    /// events_rollup ... UNION ALL SELECT ... FROM events ...)` and the values to bind, in
    /// order: the partials of `pieces` for the tenant, service and filter values given (rollup
    /// rows as they are, raw rows grouped by the keys), for the caller to group by the keys.
    pub fn sql<'v>(&self, pieces: &Pieces, filter_values: &[Bind<'v>]) -> (String, Vec<Bind<'v>>) {
        let names: Vec<&str> = self.keys.iter().map(|k| k.2).collect();
        let group = names.join(", ");
        let select = |time: Option<&str>| {
            self.keys
                .iter()
                .map(|k| match time {
                    Some(t) => format!("{} AS {}", k.0.replace("{t}", t), k.2),
                    None => format!("{} AS {}", k.1, k.2),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let filters = self.filter_sql();
        let ranges = |column: &str, n: usize| {
            vec![format!("({column} >= ? AND {column} < ?)"); n].join(" OR ")
        };
        let mut binds = Vec::new();
        let mut parts = Vec::new();
        let common = |binds: &mut Vec<Bind<'v>>| {
            binds.extend(self.key_binds.iter().map(|v| Bind::Int(*v)));
            binds.extend_from_slice(filter_values);
        };
        let mut cells = |table: &str, unit: &str, ranges_of: &[TimeRange], binds: &mut Vec<_>| {
            common(binds);
            binds.extend(
                ranges_of
                    .iter()
                    .flat_map(|r| [Bind::Int(r.from), Bind::Int(r.to)]),
            );
            parts.push(format!(
                "SELECT {keys}, {rows} FROM {table} \
                 WHERE tenant = ? AND service = ?{filters} AND ({ranges})",
                keys = select(Some(unit)),
                rows = rollup_rows(),
                ranges = ranges(unit, ranges_of.len()),
            ));
        };
        if let Some(hours) = pieces.hours {
            cells(HOUR_ROLLUP_TABLE, "hour", &[hours], &mut binds);
        }
        if !pieces.minutes.is_empty() || (pieces.hours.is_none() && pieces.raw.is_empty()) {
            let minutes = if pieces.minutes.is_empty() {
                vec![TimeRange { from: 0, to: 0 }]
            } else {
                pieces.minutes.clone()
            };
            cells(self.table(), "minute", &minutes, &mut binds);
        }
        if !pieces.raw.is_empty() {
            common(&mut binds);
            binds.extend(
                pieces
                    .raw
                    .iter()
                    .flat_map(|r| [Bind::Int(r.0), Bind::Int(r.1)]),
            );
            parts.push(format!(
                "SELECT {keys}, {partial} FROM events \
                 WHERE tenant = ? AND service = ?{filters} AND ({ranges}) \
                 GROUP BY {group}",
                keys = select(None),
                partial = raw_partial(),
                ranges = ranges("ts", pieces.raw.len()),
            ));
        }
        (format!("({})", parts.join(" UNION ALL ")), binds)
    }

    /// The (first, last) `ts` of the hourly cells starting at `cells`, for the tenant, service
    /// and filter values given; absent cells hold no event.
    async fn spans(
        &self,
        client: &Client,
        cells: &[i64],
        filter_values: &[Bind<'_>],
    ) -> Result<Vec<(i64, i64, i64)>, ::clickhouse::error::Error> {
        let filters = self.filter_sql();
        let sql = format!(
            "SELECT hour, minMerge(first_ts), maxMerge(last_ts) FROM {HOUR_ROLLUP_TABLE} \
             WHERE tenant = ? AND service = ?{filters} AND hour IN ({cells}) GROUP BY hour",
            cells = vec!["?"; cells.len()].join(", "),
        );
        let mut binds = filter_values.to_vec();
        binds.extend(cells.iter().map(|c| Bind::Int(*c)));
        bind_all(client.query(&sql), &binds).fetch_all().await
    }

    /// Which edge hours may be read whole, as [`Pieces::hourly`] takes them.
    async fn takeable_edges(
        &self,
        client: &Client,
        range: TimeRange,
        filter_values: &[Bind<'_>],
    ) -> Result<(bool, bool), ::clickhouse::error::Error> {
        let edges = EdgeHours::of(range);
        let cells = edges.cells();
        if cells.is_empty() {
            return Ok((false, false));
        }
        let spans = self.spans(client, &cells, filter_values).await?;
        let take = |cell: Option<i64>| {
            cell.is_some_and(|c| {
                let span = spans.iter().find(|s| s.0 == c).map(|s| (s.1, s.2));
                takeable(span, range)
            })
        };
        Ok((take(edges.start), take(edges.end)))
    }

    /// Runs `outer(partials)` over the pieces of `split`'s range: with the hourly rollup where
    /// it serves ([`Partials::hourly`]), else `split`'s minutes and raw rows.
    ///
    /// An edge hour's cell is read whole only when, checked before the query, all its events
    /// lie inside the range. An event of that hour but outside the range written between the
    /// check and the query would be counted, so the check is repeated after the query: cells
    /// only gain events (inserts; merges keep first and last), so if they still qualify, the
    /// query read none outside the range; if not, the query runs again without edge cells.
    /// Limits of that argument: on replicated tables the three statements may read different
    /// replicas, one behind another, so edge cells are not read there (`edge_hours` false);
    /// and retention removes events, so a late event before `from`, in an edge cell of the day
    /// retention drops between the query and the re-check, would be counted.
    pub async fn fetch<R>(
        &self,
        client: &Client,
        split: &Split,
        step: Option<i64>,
        filter_values: &[Bind<'_>],
        outer: &(dyn Fn(&str) -> String + Sync),
        what: &str,
    ) -> Result<Vec<R>, StoreError>
    where
        R: ::clickhouse::RowOwned + ::clickhouse::RowRead,
    {
        let run = |pieces: Pieces| async move {
            let (from, binds) = self.sql(&pieces, filter_values);
            bind_all(client.query(&outer(&from)), &binds)
                .fetch_all::<R>()
                .await
        };
        let fail = |e| query_error(what, e);
        let range = split.range();
        if !self.hourly(step) || range.from < 0 || range.to > i64::MAX - HOUR_NS {
            return run(Pieces::of_split(split)).await.map_err(fail);
        }
        let take = if self.edge_hours {
            self.takeable_edges(client, range, filter_values)
                .await
                .map_err(fail)?
        } else {
            (false, false)
        };
        let rows = run(Pieces::hourly(range, step, take)).await.map_err(fail)?;
        if take == (false, false) {
            return Ok(rows);
        }
        let now = self
            .takeable_edges(client, range, filter_values)
            .await
            .map_err(fail)?;
        if (take.0 && !now.0) || (take.1 && !now.1) {
            return run(Pieces::hourly(range, step, (false, false)))
                .await
                .map_err(fail);
        }
        Ok(rows)
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
    use proptest::prelude::*;

    /// The intervals of time `pieces` reads, sorted.
    fn intervals(p: &Pieces) -> Vec<(i64, i64)> {
        let mut all: Vec<(i64, i64)> = p.hours.iter().map(|r| (r.from, r.to)).collect();
        all.extend(p.minutes.iter().map(|r| (r.from, r.to)));
        all.extend(p.raw.iter().copied());
        all.retain(|(a, b)| a < b);
        all.sort();
        all
    }

    proptest! {
        /// The pieces are disjoint, cells lie on their units, and together they read exactly
        /// the range, plus, for an edge hour taken whole, the rest of that hour only.
        #[test]
        fn hourly_pieces_cover_the_range_exactly(
            from in 0i64..10 * HOUR_NS,
            len in 1i64..4 * HOUR_NS,
            round in 0u8..4,
            take in any::<(bool, bool)>(),
        ) {
            let unit = [1, 1_000_000_000, MINUTE_NS, HOUR_NS][round as usize];
            let r = TimeRange { from: from / unit * unit, to: (from + len) / unit * unit };
            prop_assume!(r.from < r.to);
            let p = Pieces::hourly(r, None, take);
            for h in p.hours.iter() {
                prop_assert!(h.from % HOUR_NS == 0 && h.to % HOUR_NS == 0);
            }
            for m in &p.minutes {
                prop_assert!(m.from % MINUTE_NS == 0 && m.to % MINUTE_NS == 0);
            }
            let got = intervals(&p);
            for w in got.windows(2) {
                prop_assert!(w[0].1 <= w[1].0, "overlap: {got:?}");
            }
            let edges = EdgeHours::of(r);
            let allowed_from = match edges.start {
                Some(s) if take.0 => s.min(r.from),
                _ => r.from,
            };
            let allowed_to = match edges.end {
                Some(e) if take.1 => (e + HOUR_NS).max(r.to),
                _ => r.to,
            };
            let single = edges.start.is_some() && edges.start == edges.end;
            let (allowed_from, allowed_to) = if single && !(take.0 && take.1) {
                (r.from, r.to)
            } else {
                (allowed_from, allowed_to)
            };
            // Contiguous, from the allowed start to the allowed end, covering the range.
            prop_assert_eq!(got.first().map(|g| g.0), Some(allowed_from), "{:?}", p);
            prop_assert_eq!(got.last().map(|g| g.1), Some(allowed_to), "{:?}", p);
            for w in got.windows(2) {
                prop_assert_eq!(w[0].1, w[1].0, "gap: {:?}", got);
            }
        }
    }

    #[test]
    fn an_edge_hour_is_read_whole_only_when_its_events_lie_inside() {
        let h = HOUR_NS;
        let r = TimeRange {
            from: 7 * h + 5,
            to: 9 * h + 7,
        };
        assert!(takeable(None, r));
        assert!(takeable(Some((7 * h + 5, 7 * h + 9)), r));
        assert!(!takeable(Some((7 * h + 4, 7 * h + 9)), r));
        assert!(!takeable(Some((9 * h + 5, 9 * h + 7)), r));
        assert_eq!(
            EdgeHours::of(r),
            EdgeHours {
                start: Some(7 * h),
                end: Some(9 * h)
            }
        );
        assert_eq!(
            EdgeHours::of(TimeRange {
                from: 7 * h,
                to: 9 * h
            })
            .cells(),
            Vec::<i64>::new()
        );
        assert_eq!(
            EdgeHours::of(TimeRange {
                from: 7 * h + 1,
                to: 7 * h + 2
            })
            .cells(),
            vec![7 * h]
        );
        // Both edges taken: whole hours 7 and 8 and the cell of 9, nothing else.
        let p = Pieces::hourly(r, None, (true, true));
        assert_eq!(
            p,
            Pieces {
                hours: Some(TimeRange {
                    from: 7 * h,
                    to: 10 * h
                }),
                ..Pieces::default()
            }
        );
        // Neither: hour 8 whole, minutes and raw rows around it.
        let p = Pieces::hourly(r, None, (false, false));
        assert_eq!(
            p.hours,
            Some(TimeRange {
                from: 8 * h,
                to: 9 * h
            })
        );
        assert_eq!(
            p.raw,
            vec![(7 * h + 5, 7 * h + MINUTE_NS), (9 * h, 9 * h + 7)]
        );
    }

    #[test]
    fn a_range_splits_into_whole_minutes_and_raw_ends() {
        let m = MINUTE_NS;
        let r = |from, to| TimeRange { from, to };
        assert_eq!(Split::of(r(10, m - 1), None), None);
        assert_eq!(Split::of(r(-m, m), None), None);
        let s = Split::of(r(10, 3 * m + 5), None).expect("two whole minutes");
        assert_eq!(s.minutes, r(m, 3 * m));
        assert_eq!((s.before, s.after), ((10, m), (3 * m, 3 * m + 5)));
        assert_eq!(s.range(), r(10, 3 * m + 5));
        assert!(!s.aligned());
        assert!(Split::of(r(0, 2 * m), None).expect("aligned").aligned());
        assert_eq!(Split::of(r(0, 2 * m), Some(30_000_000_000)), None);
        assert!(Split::of(r(0, 2 * m), Some(5 * m)).is_some());
        assert_eq!(Split::of(r(i64::MAX - 5, i64::MAX), None), None);
    }
}
