//! Per-segment rollups: for each (series, minute) of a segment, the weighted request count,
//! the sums, and the sketch buckets of CPU time and of instructions with their weights.
//! A series is (tenant, service, endpoint, build, dc, host, labels), so a cell is the
//! ClickHouse rollup's row, finer by the labels.
//!
//! Invariants:
//! - A segment's rows never change, so its rollup is computed once: when the segment is
//!   written (flush, compaction) from the rows in memory, or, for a segment opened from disk
//!   (a data directory of an older version, or after a restart), by the first query that can
//!   use it. It lives in memory beside the segment and goes when the segment goes (compaction,
//!   retention), so retention applies to it and an upgraded directory is back-filled without a
//!   migration step.
//! - Adding a rollup's cells to a [`CostAccumulator`] equals adding the rows one by one, up to
//!   floating-point order: the cells hold the same sketch buckets the rows would fill.
//! - A rollup is kept only when it holds no more entries (cells plus bucket weights) than the
//!   segment has rows, so its memory is bounded by the rows' (at most 16 bytes per row plus
//!   one cell per (series, minute)); data whose cells hold a request or two each gains nothing
//!   from it, and its queries scan rows.
//! - A query uses a segment's rollup only when the segment lies wholly inside its range (and,
//!   for time buckets, when the step is a whole number of minutes); partial segments and
//!   memtables are scanned row by row.
//! - Beside it, a segment has a rollup per endpoint ([`EndpointRollup`]): per (tenant,
//!   service, endpoint, build, hour), built by the first query that can use it (its groups and
//!   filters give every series of an endpoint and build one group, and a step, if any, is of
//!   whole hours), kept under the same rule, and preferred by such queries. Where many hosts
//!   serve an endpoint, a (series, minute) holds a request or two and the series rollup is not
//!   kept, while an endpoint's hour holds them all (`profwatch-bench query --shape rollup`:
//!   1M events, 8 hosts, 10 minutes).

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;

use profwatch_model::query::{CostAccumulator, CostSummary};
use profwatch_model::sketch::Sketch;

use super::memtable::{Rows, SeriesKey};

/// The rollup's time unit, in ns.
pub const MINUTE_NS: i64 = 60_000_000_000;
/// The endpoint rollup's time unit, in ns.
pub const HOUR_NS: i64 = 3_600_000_000_000;
/// A rollup is kept when its entries are at most the rows over this.
pub const MAX_SHARE: u64 = 1;

/// One (series, minute) of a segment.
#[derive(Debug, Clone)]
pub struct Cell {
    pub series: u32,
    /// Start of the minute, unix ns.
    pub minute: i64,
    pub sum: CostSummary,
    /// This cell's CPU and instruction buckets in [`SegmentRollup::buckets`].
    cpu: (u32, u32),
    instructions: (u32, u32),
}

/// A segment's cells, in the order of its rows. A (series, minute) may have several cells (a
/// segment scanned in parts), which is harmless: queries add them all.
#[derive(Debug, Default)]
pub struct SegmentRollup {
    pub cells: Vec<Cell>,
    buckets: Vec<(Option<i32>, f64)>,
    /// The builder passed its limit and dropped what it had: never worth keeping.
    over: bool,
}

impl SegmentRollup {
    /// Adds cell `c` to `acc`.
    pub fn add_to(&self, c: &Cell, acc: &mut CostAccumulator) {
        let range = |(a, b): (u32, u32)| &self.buckets[a as usize..b as usize];
        acc.add_summary(
            &c.sum,
            range(c.cpu).iter().copied(),
            range(c.instructions).iter().copied(),
        );
    }

    /// Entries held: cells and bucket weights.
    pub fn entries(&self) -> u64 {
        (self.cells.len() + self.buckets.len()) as u64
    }

    /// Appends `other`'s cells.
    pub fn append(&mut self, other: SegmentRollup) {
        self.over |= other.over;
        if self.over {
            self.cells = Vec::new();
            self.buckets = Vec::new();
            return;
        }
        let shift = self.buckets.len() as u32;
        self.buckets.extend(other.buckets);
        self.cells.extend(other.cells.into_iter().map(|mut c| {
            c.cpu = (c.cpu.0 + shift, c.cpu.1 + shift);
            c.instructions = (c.instructions.0 + shift, c.instructions.1 + shift);
            c
        }));
    }

    /// `self` if it is small enough to be worth keeping for `rows` rows (see [`MAX_SHARE`]).
    pub fn worth_keeping(self, rows: u64) -> Option<SegmentRollup> {
        (!self.over && self.entries().saturating_mul(MAX_SHARE) <= rows).then_some(self)
    }
}

/// Where rows go to be rolled up: [`Builder`] and [`EndpointBuilder`].
pub trait RowSink {
    fn push(&mut self, series: u32, ts: i64, cpu_ns: u64, instructions: Option<u64>, w: f64);

    /// Pushes every row of `rows`.
    fn push_rows(&mut self, rows: &Rows) {
        for i in 0..rows.len() {
            self.push(
                rows.series[i],
                rows.ts[i],
                rows.cpu_ns[i],
                rows.instructions[i],
                rows.weight[i],
            );
        }
    }
}

/// Builds a rollup from rows, in any order (consecutive rows of one (series, minute) share a
/// cell; rows sorted by series and time, as in segments, give one cell per (series, minute)).
/// Past `limit` entries it stops and drops what it has, so building a rollup that will not be
/// kept costs at most that much memory.
#[derive(Debug)]
pub struct Builder {
    limit: u64,
    out: SegmentRollup,
    open: Option<(u32, i64)>,
    sum: CostSummary,
    cpu: Sketch,
    instructions: Sketch,
}

impl Builder {
    /// A builder that gives up past `limit` entries (cells plus bucket weights).
    pub fn with_limit(limit: u64) -> Builder {
        Builder {
            limit,
            out: SegmentRollup::default(),
            open: None,
            sum: CostSummary::default(),
            cpu: Sketch::default(),
            instructions: Sketch::default(),
        }
    }

    fn close(&mut self) {
        let Some((series, minute)) = self.open.take() else {
            return;
        };
        let take = |s: &mut Sketch, buckets: &mut Vec<(Option<i32>, f64)>| {
            let start = buckets.len() as u32;
            buckets.extend(s.buckets());
            *s = Sketch::default();
            (start, buckets.len() as u32)
        };
        let cpu = take(&mut self.cpu, &mut self.out.buckets);
        let instructions = take(&mut self.instructions, &mut self.out.buckets);
        self.out.cells.push(Cell {
            series,
            minute,
            sum: std::mem::take(&mut self.sum),
            cpu,
            instructions,
        });
    }

    pub fn finish(mut self) -> SegmentRollup {
        if !self.out.over {
            self.close();
        }
        self.out
    }
}

impl RowSink for Builder {
    fn push(&mut self, series: u32, ts: i64, cpu_ns: u64, instructions: Option<u64>, w: f64) {
        if self.out.over {
            return;
        }
        let key = (series, ts.div_euclid(MINUTE_NS) * MINUTE_NS);
        if self.open != Some(key) {
            self.close();
            if self.out.entries() > self.limit {
                self.out = SegmentRollup {
                    over: true,
                    ..SegmentRollup::default()
                };
                return;
            }
            self.open = Some(key);
        }
        self.sum.add(cpu_ns, instructions, w);
        self.cpu.add(cpu_ns as f64, w);
        if let Some(i) = instructions {
            self.instructions.add(i as f64, w);
        }
    }
}

/// A segment's rollup per endpoint: one cell per (tenant, service, endpoint, build, hour), the
/// ClickHouse hourly rollup's row. It serves queries whose groups and filters use no other
/// label (every series of one endpoint and build falls in the same group), where the series
/// rollup's cells, one per host and minute, may hold a request or two each and not be kept.
#[derive(Debug)]
pub struct EndpointRollup {
    /// The endpoint id (the index of its (tenant, service, endpoint, build)) of each series.
    pub of_series: Vec<u32>,
    /// Cells keyed by endpoint id (in [`Cell::series`]) and hour (in [`Cell::minute`]).
    pub cells: Arc<SegmentRollup>,
}

/// The endpoint id of each of a segment's series, in [`EndpointRollup::of_series`]'s terms.
pub fn endpoint_ids(series: &[Arc<SeriesKey>]) -> Vec<u32> {
    let mut ids: HashMap<(&str, &str, &str, &str), u32> = HashMap::new();
    series
        .iter()
        .map(|k| {
            let next = ids.len() as u32;
            *ids.entry((&k.tenant, &k.service, &k.endpoint, &k.build))
                .or_insert(next)
        })
        .collect()
}

/// A query's series map (group of each series, or none) as a map per endpoint id, when every
/// series of an endpoint id maps alike; `None` when the map tells series of one endpoint and
/// build apart (grouped or filtered by dc, host or labels).
pub fn per_endpoint(of_series: &[u32], map: &[Option<u32>]) -> Option<Vec<Option<u32>>> {
    let ids = of_series.iter().max().map_or(0, |m| *m as usize + 1);
    let mut out: Vec<Option<Option<u32>>> = vec![None; ids];
    for (id, group) in of_series.iter().zip(map) {
        match &mut out[*id as usize] {
            slot @ None => *slot = Some(*group),
            Some(seen) if seen == group => {}
            Some(_) => return None,
        }
    }
    (of_series.len() == map.len()).then(|| out.into_iter().map(Option::flatten).collect())
}

/// Builds an endpoint rollup's cells from rows in any order: one cell per (endpoint id, hour)
/// seen. Bucket weights are kept sparse, one entry per (cell, bucket) as the rollup keeps
/// them, and past `limit` entries (cells plus bucket weights) it stops and drops what it has,
/// like [`Builder`]: a rollup that will not be kept costs at most that much memory.
#[derive(Debug)]
pub struct EndpointBuilder<'a> {
    of_series: &'a [u32],
    limit: u64,
    over: bool,
    sums: HashMap<(u32, i64), CostSummary, RandomState>,
    /// Weight per (endpoint id, hour, 0 for CPU or 1 for instructions, bucket).
    weights: HashMap<(u32, i64, u8, Option<i32>), f64, RandomState>,
}

impl<'a> EndpointBuilder<'a> {
    pub fn new(of_series: &'a [u32], limit: u64) -> EndpointBuilder<'a> {
        EndpointBuilder {
            of_series,
            limit,
            over: false,
            sums: HashMap::default(),
            weights: HashMap::default(),
        }
    }

    fn entries(&self) -> u64 {
        (self.sums.len() + self.weights.len()) as u64
    }

    fn give_up(&mut self) {
        self.over = true;
        self.sums = HashMap::default();
        self.weights = HashMap::default();
    }

    /// Adds another builder's cells (of another part of the same segment).
    pub fn merge(&mut self, other: EndpointBuilder<'_>) {
        if other.over {
            self.give_up();
        }
        if self.over {
            return;
        }
        for (key, sum) in other.sums {
            self.sums.entry(key).or_default().merge(&sum);
        }
        for (key, w) in other.weights {
            *self.weights.entry(key).or_default() += w;
        }
        if self.entries() > self.limit {
            self.give_up();
        }
    }

    /// The cells, in key order (empty and never kept if it gave up).
    pub fn finish(self) -> SegmentRollup {
        if self.over {
            return SegmentRollup {
                over: true,
                ..SegmentRollup::default()
            };
        }
        let mut weights: Vec<_> = self.weights.into_iter().collect();
        weights.sort_by_key(|(key, _)| *key);
        let mut sums: Vec<_> = self.sums.into_iter().collect();
        sums.sort_by_key(|(key, _)| *key);
        let mut out = SegmentRollup::default();
        let mut next = weights.into_iter().peekable();
        for ((id, hour), sum) in sums {
            let mut take = |which: u8, buckets: &mut Vec<(Option<i32>, f64)>| {
                let start = buckets.len() as u32;
                while let Some(((_, _, _, bucket), w)) =
                    next.next_if(|((i, h, k, _), _)| (*i, *h, *k) == (id, hour, which))
                {
                    buckets.push((bucket, w));
                }
                (start, buckets.len() as u32)
            };
            let cpu = take(0, &mut out.buckets);
            let instructions = take(1, &mut out.buckets);
            out.cells.push(Cell {
                series: id,
                minute: hour,
                sum,
                cpu,
                instructions,
            });
        }
        out
    }
}

impl RowSink for EndpointBuilder<'_> {
    fn push(&mut self, series: u32, ts: i64, cpu_ns: u64, instructions: Option<u64>, w: f64) {
        if self.over {
            return;
        }
        let Some(&id) = self.of_series.get(series as usize) else {
            return;
        };
        let hour = ts.div_euclid(HOUR_NS).saturating_mul(HOUR_NS);
        self.sums
            .entry((id, hour))
            .or_default()
            .add(cpu_ns, instructions, w);
        let cpu = Sketch::bucket_of(cpu_ns as f64);
        *self.weights.entry((id, hour, 0, cpu)).or_default() += w;
        if let Some(i) = instructions {
            let bucket = Sketch::bucket_of(i as f64);
            *self.weights.entry((id, hour, 1, bucket)).or_default() += w;
        }
        if self.entries() > self.limit {
            self.give_up();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_add_up_to_the_rows() {
        let rows: Vec<(u32, i64, u64, Option<u64>, f64)> = (0..5000u64)
            .map(|i| {
                let series = (i / 1000) as u32;
                let ts = (i % 1000) as i64 * 400_000_000 - 30 * MINUTE_NS;
                let ins = (i % 3 != 0).then_some(i * 7919 % 100_000);
                (
                    series,
                    ts,
                    i * 104_729 % 1_000_000,
                    ins,
                    1.0 + (i % 4) as f64,
                )
            })
            .collect();
        let mut b = Builder::with_limit(u64::MAX);
        let mut direct = CostAccumulator::default();
        for &(s, ts, c, i, w) in &rows {
            b.push(s, ts, c, i, w);
            direct.add(c, i, w);
        }
        let rollup = b.finish();
        // 5 series × 7 minutes (400 s of rows from -30 min).
        assert_eq!(rollup.cells.len(), 35);
        let mut rolled = CostAccumulator::default();
        for c in &rollup.cells {
            rollup.add_to(c, &mut rolled);
        }
        let (a, b) = (direct.finish(), rolled.finish());
        assert!((a.requests - b.requests).abs() < 1e-9);
        assert!((a.cpu_ns.mean - b.cpu_ns.mean).abs() / a.cpu_ns.mean < 1e-12);
        assert_eq!(a.cpu_ns.p50, b.cpu_ns.p50);
        assert_eq!(a.cpu_ns.p99, b.cpu_ns.p99);
        let (ai, bi) = (a.instructions.expect("some"), b.instructions.expect("some"));
        assert!((ai.mean - bi.mean).abs() / ai.mean < 1e-12);
        assert_eq!((ai.p50, ai.p90, ai.p99), (bi.p50, bi.p90, bi.p99));
        let entries = rollup.entries();
        assert!(SegmentRollup::default().worth_keeping(0).is_some());
        assert!(rollup.worth_keeping(entries * MAX_SHARE - 1).is_none());
    }

    fn key(endpoint: &str, build: &str, host: &str) -> Arc<SeriesKey> {
        Arc::new(SeriesKey {
            tenant: "t".into(),
            service: "s".into(),
            endpoint: endpoint.into(),
            build: build.into(),
            dc: "dc".into(),
            host: host.into(),
            labels: Vec::new(),
        })
    }

    #[test]
    fn endpoint_cells_add_up_to_the_rows_of_each_endpoint() {
        // Series 0, 1: one endpoint and build on two hosts; 2: another build; 3: the first
        // endpoint and build again, on a third host.
        let series = [
            key("GET /a", "1", "h1"),
            key("GET /a", "1", "h2"),
            key("GET /a", "2", "h1"),
            key("GET /a", "1", "h3"),
        ];
        let ids = endpoint_ids(&series);
        assert_eq!(ids, [0, 0, 1, 0]);
        let rows: Vec<(u32, i64, u64, Option<u64>, f64)> = (0..4000u64)
            .map(|i| {
                let ts = (i as i64 - 1000) * 3_000_000_000;
                let ins = (i % 5 != 0).then_some(i * 7919 % 100_000);
                (
                    (i % 4) as u32,
                    ts,
                    i * 104_729 % 1_000_000 + 1,
                    ins,
                    1.0 + (i % 3) as f64,
                )
            })
            .collect();
        // Two parts built apart and merged, as a query builds a segment's parts.
        let (mut a, mut b) = (
            EndpointBuilder::new(&ids, u64::MAX),
            EndpointBuilder::new(&ids, u64::MAX),
        );
        let mut direct: HashMap<(u32, i64), CostAccumulator> = HashMap::new();
        for (n, &(s, ts, c, i, w)) in rows.iter().enumerate() {
            if n % 2 == 0 { &mut a } else { &mut b }.push(s, ts, c, i, w);
            let hour = ts.div_euclid(HOUR_NS) * HOUR_NS;
            direct
                .entry((ids[s as usize], hour))
                .or_default()
                .add(c, i, w);
        }
        a.merge(b);
        let rollup = a.finish();
        // 4000 rows over 3.3 hours from -50 min: hours -1, 0, 1, 2 for each of 2 endpoint ids.
        assert_eq!(rollup.cells.len(), 8);
        assert_eq!(rollup.cells.len(), direct.len());
        for cell in &rollup.cells {
            let mut rolled = CostAccumulator::default();
            rollup.add_to(cell, &mut rolled);
            let want = direct[&(cell.series, cell.minute)].clone().finish();
            let got = rolled.finish();
            assert!((want.requests - got.requests).abs() < 1e-9);
            assert!((want.cpu_ns.mean - got.cpu_ns.mean).abs() / want.cpu_ns.mean < 1e-12);
            assert_eq!(
                (want.cpu_ns.p50, want.cpu_ns.p90, want.cpu_ns.p99),
                (got.cpu_ns.p50, got.cpu_ns.p90, got.cpu_ns.p99)
            );
            let (wi, gi) = (
                want.instructions.expect("some"),
                got.instructions.expect("some"),
            );
            assert_eq!((wi.p50, wi.p99), (gi.p50, gi.p99));
        }
    }

    #[test]
    fn an_endpoint_builder_past_its_limit_keeps_nothing() {
        let series = [key("GET /a", "1", "h1")];
        let ids = endpoint_ids(&series);
        // One cell and two CPU buckets: 3 entries, within a limit of 3.
        let mut b = EndpointBuilder::new(&ids, 3);
        b.push(0, 0, 1000, None, 1.0);
        b.push(0, 1, 2000, None, 1.0);
        let r = b.finish();
        assert_eq!(r.entries(), 3);
        assert!(r.worth_keeping(3).is_some());
        // A third bucket passes it: everything dropped, never kept, also once merged.
        let mut b = EndpointBuilder::new(&ids, 3);
        for (i, c) in [1000, 2000, 4000].into_iter().enumerate() {
            b.push(0, i as i64, c, None, 1.0);
        }
        let mut whole = EndpointBuilder::new(&ids, 3);
        whole.merge(b);
        whole.push(0, 0, 1000, None, 1.0);
        let r = whole.finish();
        assert_eq!(r.entries(), 0);
        assert!(r.worth_keeping(u64::MAX).is_none());
    }

    #[test]
    fn a_map_serves_per_endpoint_only_when_it_groups_whole_endpoints() {
        let ids = [0, 0, 1, 0];
        // By endpoint and build, or a filter on the build: every series of an id alike.
        assert_eq!(
            per_endpoint(&ids, &[Some(7), Some(7), Some(3), Some(7)]),
            Some(vec![Some(7), Some(3)])
        );
        assert_eq!(
            per_endpoint(&ids, &[None, None, Some(3), None]),
            Some(vec![None, Some(3)])
        );
        // By host, or a filter on one host: series of one id apart.
        assert_eq!(
            per_endpoint(&ids, &[Some(1), Some(2), Some(3), Some(1)]),
            None
        );
        assert_eq!(per_endpoint(&ids, &[Some(1), None, None, None]), None);
    }

    #[test]
    fn a_rollup_is_kept_only_when_no_larger_than_the_rows() {
        let mut b = Builder::with_limit(u64::MAX);
        for i in 0..100u64 {
            b.push(0, i as i64, 1000 * (1 + i % 2), None, 1.0);
        }
        let r = b.finish();
        // One cell, two CPU buckets.
        assert_eq!(r.entries(), 3);
        assert!(r.worth_keeping(3).is_some());
        // Past its limit a builder drops everything: the rollup is never kept.
        let mut b = Builder::with_limit(2);
        for i in 0..100u64 {
            b.push(0, i as i64 * MINUTE_NS, 1000, None, 1.0);
        }
        let r = b.finish();
        assert_eq!(r.entries(), 0);
        assert!(r.worth_keeping(u64::MAX).is_none());
    }
}
