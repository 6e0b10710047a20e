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

use profwatch_model::query::{CostAccumulator, CostSummary};
use profwatch_model::sketch::Sketch;

/// The rollup's time unit, in ns.
pub const MINUTE_NS: i64 = 60_000_000_000;
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

    pub fn push(&mut self, series: u32, ts: i64, cpu_ns: u64, instructions: Option<u64>, w: f64) {
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
