//! Per-segment function rollups: for each (tenant, service, endpoint, build, hour, function)
//! of a profile segment, the function's self and total samples and CPU time
//! (`profwatch_model::functions`), so that `top` and a function's series over long ranges add
//! up cells instead of reading every sample.
//!
//! The unit is the hour, not ClickHouse's minute: a segment's rows already hold one row per
//! (host, batch, stack), and per-minute cells (one per function of every stack) outnumbered
//! them on `profwatch-bench functions` (4 hosts, a batch a minute: 43k minutes x 10 endpoints x
//! ~100 functions for 34.6M rows), so they were dropped as not worth keeping after costing
//! more to build than the scan they would save. Hourly cells are ~60x fewer; a series with a
//! step below an hour reads samples.
//!
//! Invariants:
//! - A profile segment's rows never change, so its rollup is computed once: when the segment is
//!   written (flush, compaction), from the rows and stacks in memory, or, for a segment opened
//!   from disk (after a restart, or a data directory of an older version), by the first query
//!   that can use it. It lives in memory beside the segment and goes when the segment goes
//!   (compaction, retention): retention applies to it and an upgraded directory is back-filled
//!   without a migration step.
//! - Adding a rollup's cells equals adding the samples' stacks one by one: the cells are sums
//!   per hour, and a query uses a segment's rollup only when the segment's samples lie wholly
//!   inside its range and its step (if any) is a whole number of hours. Partial segments and
//!   memtables are read sample by sample.
//! - Building costs one hash update per sample row (sums per (group, hour, stack)), then one
//!   per function of each distinct (group, hour, stack): about what a query reading the rows
//!   pays, so the first query after a restart is no slower than one without rollups.
//! - A rollup is kept only when it has no more cells than the segment has sample rows, so its
//!   memory is bounded by the rows'. Segments whose stacks are seen once or twice per hour
//!   (cells would outnumber the rows: one per frame) gain nothing from it and are read raw.
//! - The cells drop dc, host and extra labels: a query filtered on those reads samples.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use profwatch_model::functions::{add_to_sums, distinct_functions, FunctionQuery, FunctionSums};

use super::memtable::{SampleRows, SeriesKey, Stacks};

/// The rollup's time unit, in ns: an hour.
pub const UNIT_NS: i64 = 3_600_000_000_000;

/// (tenant, service, endpoint, build): what a cell is keyed by, besides hour and function.
type Group = (String, String, String, String);

/// (group, hour, stack) while building, and its (samples, CPU ns).
type StackKey = (u32, i64, u128);
type Sums = (u64, u64);

/// One (group, hour, function) of a segment.
#[derive(Debug, Clone)]
struct Cell {
    group: u32,
    /// Start of the hour, unix ns.
    hour: i64,
    function: u32,
    /// Self samples, self CPU ns, total samples, total CPU ns.
    sums: [u64; 4],
}

/// A segment's cells.
#[derive(Debug, Default)]
pub struct FunctionRollup {
    groups: Vec<Group>,
    functions: Vec<Arc<str>>,
    cells: Vec<Cell>,
}

impl FunctionRollup {
    /// Whether a query over `range` with this step can use the rollup of a segment whose
    /// samples span `min_ts..=max_ts`.
    pub fn covers(q: &FunctionQuery, min_ts: i64, max_ts: i64) -> bool {
        min_ts >= q.range.from
            && max_ts < q.range.to
            && q.step.is_none_or(|s| s > 0 && s % UNIT_NS == 0)
    }

    /// Adds the cells `q` wants to `out`.
    pub fn add_to(&self, q: &FunctionQuery, out: &mut FunctionSums) {
        let wanted: Vec<bool> = self
            .groups
            .iter()
            .map(|(tenant, service, endpoint, build)| {
                *tenant == q.tenant.0 && *service == q.service && q.wants(endpoint, build)
            })
            .collect();
        let only = match &q.function {
            Some(f) => match self.functions.iter().position(|g| **g == **f) {
                Some(i) => Some(i as u32),
                None => return,
            },
            None => None,
        };
        for c in &self.cells {
            if !wanted[c.group as usize] || only.is_some_and(|f| f != c.function) {
                continue;
            }
            out.add_sums(
                q.bucket(c.hour),
                &self.functions[c.function as usize],
                c.sums,
            );
        }
    }

    #[cfg(test)]
    pub fn cells(&self) -> usize {
        self.cells.len()
    }
}

/// Builds a rollup from a segment's samples, fed in chunks, then their stacks' frames.
#[derive(Debug, Default)]
pub struct Builder {
    groups: Vec<Group>,
    /// The group of each series of the segment's dictionary.
    series_group: Vec<u32>,
    /// Samples and CPU per (group, hour, stack).
    per_stack: HashMap<StackKey, Sums, RandomState>,
    /// The (group, hour, stack) of the last rows pushed and their sums, not yet in
    /// `per_stack`: segments are sorted by series, stack and time, so rows come in runs.
    run: Option<(StackKey, Sums)>,
    rows: u64,
}

impl Builder {
    pub fn new(series: &[Arc<SeriesKey>]) -> Builder {
        let mut index: HashMap<Group, u32> = HashMap::new();
        let mut b = Builder::default();
        for k in series {
            let g = (
                k.tenant.clone(),
                k.service.clone(),
                k.endpoint.clone(),
                k.build.clone(),
            );
            let next = index.len() as u32;
            let id = *index.entry(g.clone()).or_insert_with(|| {
                b.groups.push(g);
                next
            });
            b.series_group.push(id);
        }
        b
    }

    /// Adds a chunk of samples (rows of a series outside the dictionary are skipped).
    pub fn push(&mut self, rows: &SampleRows) {
        self.rows += rows.len() as u64;
        for i in 0..rows.len() {
            let Some(&group) = self.series_group.get(rows.series[i] as usize) else {
                continue;
            };
            let ts = rows.ts[i];
            let key = (group, ts - ts.rem_euclid(UNIT_NS), rows.stack[i]);
            let (n, c) = (rows.samples[i], rows.cpu_ns[i]);
            match &mut self.run {
                Some((k, sums)) if *k == key => {
                    sums.0 = sums.0.saturating_add(n);
                    sums.1 = sums.1.saturating_add(c);
                }
                run => {
                    if let Some((k, sums)) = run.replace((key, (n, c))) {
                        self.add_run(k, sums);
                    }
                }
            }
        }
    }

    fn add_run(&mut self, key: StackKey, (n, c): Sums) {
        let e = self.per_stack.entry(key).or_default();
        e.0 = e.0.saturating_add(n);
        e.1 = e.1.saturating_add(c);
    }

    /// The rollup, if worth keeping: no more cells than sample rows (see the module's
    /// invariants). Stacks without frames in `stacks` are left out.
    pub fn finish(mut self, stacks: &Stacks) -> Option<FunctionRollup> {
        if let Some((k, sums)) = self.run.take() {
            self.add_run(k, sums);
        }
        let mut names: HashMap<&str, u32> = HashMap::new();
        let mut functions: Vec<Arc<str>> = Vec::new();
        // Each stack's distinct functions as ids, with whether each is the leaf: named once
        // per stack, not once per (group, hour) it appears in.
        let mut ids_of: HashMap<u128, Vec<(u32, bool)>, RandomState> = HashMap::default();
        let mut cells: HashMap<(u32, i64, u32), [u64; 4], RandomState> = HashMap::default();
        for ((group, hour, stack), (n, c)) in &self.per_stack {
            let ids = match ids_of.get(stack) {
                Some(ids) => ids,
                None => {
                    let Some(frames) = stacks.get(stack) else {
                        continue;
                    };
                    let ids = distinct_functions(frames)
                        .map(|(f, is_self)| {
                            let next = names.len() as u32;
                            let id = *names.entry(f).or_insert_with(|| {
                                functions.push(Arc::from(f));
                                next
                            });
                            (id, is_self)
                        })
                        .collect();
                    ids_of.entry(*stack).or_insert(ids)
                }
            };
            for &(id, is_self) in ids {
                add_to_sums(
                    cells.entry((*group, *hour, id)).or_default(),
                    is_self,
                    *n,
                    *c,
                );
            }
            if cells.len() as u64 > self.rows {
                return None;
            }
        }
        let cells = cells
            .into_iter()
            .map(|((group, hour, function), sums)| Cell {
                group,
                hour,
                function,
                sums,
            })
            .collect();
        Some(FunctionRollup {
            groups: self.groups,
            functions,
            cells,
        })
    }
}

#[cfg(test)]
mod tests {
    use profwatch_model::query::TimeRange;
    use profwatch_model::Tenant;

    use super::*;

    fn key(endpoint: &str, host: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            tenant: "t".into(),
            service: "shop".into(),
            endpoint: endpoint.into(),
            build: "b1".into(),
            dc: "dc".into(),
            host: host.into(),
            labels: Vec::new(),
        })
    }

    fn frames(f: &[&str]) -> Arc<[String]> {
        f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>().into()
    }

    fn query(range: TimeRange, step: Option<i64>) -> FunctionQuery {
        FunctionQuery {
            tenant: Tenant("t".into()),
            service: "shop".into(),
            range,
            endpoint: Some("GET /a".into()),
            build: None,
            function: None,
            step,
        }
    }

    /// 100 rows of two stacks on two hosts of one endpoint (and one row of another endpoint)
    /// fold into a few cells that add up to the samples.
    #[test]
    fn cells_add_up_to_the_samples_and_hosts_fold_together() {
        let series = [
            key("GET /a", "h1"),
            key("GET /a", "h2"),
            key("GET /b", "h1"),
        ];
        let stacks: Stacks = [
            (1u128, frames(&["main", "price"])),
            (2u128, frames(&["main", "price", "round"])),
        ]
        .into_iter()
        .collect();
        let mut rows = SampleRows::default();
        for i in 0..101u64 {
            rows.ts.push(i as i64 * 60_000_000_000);
            rows.series.push(if i == 100 { 2 } else { (i % 2) as u32 });
            rows.stack.push(1 + u128::from(i % 2));
            rows.samples.push(1);
            rows.cpu_ns.push(10);
        }
        let mut b = Builder::new(&series);
        b.push(&rows);
        let r = b.finish(&stacks).expect("worth keeping");
        // Hours 0 and 1, functions main/price/round, endpoints a and b (b's hour 1 only).
        assert_eq!(r.cells(), 3 * 2 + 2);
        let q = query(
            TimeRange {
                from: 0,
                to: 200 * 1_000_000_000,
            },
            None,
        );
        assert!(FunctionRollup::covers(&q, 0, 100 * 1_000_000_000));
        let mut sums = FunctionSums::default();
        r.add_to(&q, &mut sums);
        let rows_out = sums.into_rows();
        let price = rows_out
            .iter()
            .find(|r| r.function == "price")
            .expect("price");
        assert_eq!((price.self_samples, price.total_samples), (50, 100));
        assert_eq!(price.total_cpu_ns, 1000);
        let stepped = query(q.range, Some(UNIT_NS));
        let mut sums = FunctionSums::default();
        r.add_to(&stepped, &mut sums);
        let main: Vec<_> = sums
            .into_rows()
            .into_iter()
            .filter(|r| r.function == "main")
            .collect();
        assert_eq!(main.len(), 2);
        assert_eq!(main[0].total_samples + main[1].total_samples, 100);
        assert_eq!(main[0].total_samples, 60, "the first hour's 60 samples");
    }

    #[test]
    fn a_rollup_with_more_cells_than_rows_is_not_kept_and_partial_ranges_do_not_use_one() {
        let series = [key("GET /a", "h1")];
        let stacks: Stacks = [(1u128, frames(&["a", "b", "c", "d"]))]
            .into_iter()
            .collect();
        let mut rows = SampleRows::default();
        rows.ts.push(0);
        rows.series.push(0);
        rows.stack.push(1);
        rows.samples.push(1);
        rows.cpu_ns.push(1);
        let mut b = Builder::new(&series);
        b.push(&rows);
        assert!(b.finish(&stacks).is_none());
        let q = query(TimeRange { from: 5, to: 100 }, Some(60_000_000_000));
        assert!(!FunctionRollup::covers(&q, 10, 20), "a step of a minute");
        let q = query(TimeRange { from: 5, to: 100 }, None);
        assert!(
            !FunctionRollup::covers(&q, 0, 20),
            "starts before the range"
        );
        assert!(
            !FunctionRollup::covers(&q, 10, 100),
            "ends at the range's end"
        );
        assert!(FunctionRollup::covers(&q, 10, 99));
    }
}
