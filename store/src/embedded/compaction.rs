//! Retention and compaction, on a thread of their own so that a long merge never holds up
//! flushes (and through them the writer).
//!
//! - Retention drops whole segments whose newest row of either kind is past it; queries clamp
//!   their range to it, so rows past it in a kept segment are never answered.
//! - Compaction merges the oldest run of at least four small segments (each under a quarter of
//!   `compact_rows`, together at most `compact_rows` rows) into one, leaving out rows past
//!   retention and keys past the dedupe window. It only takes generations older than every
//!   unflushed one, so a segment range never covers a WAL generation whose rows it lacks. The
//!   merged files are written first (profiles, then events); the inputs are retired after, and
//!   deleted once no query reads them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use profwatch_model::timefmt::now_ns;

use super::keys;
use super::memtable::{self, Rows, SeriesDict};
use super::profile_segment::{self, ProfileMeta};
use super::segment::{self, SegmentMeta};
use super::shared::{lock, read, write, Shared};
use crate::StoreError;

/// The fewest segments a compaction merges.
const MIN_RUN: usize = 4;

/// Runs a pass every 10 s until the store is closed.
pub fn maintenance_loop(s: &Shared) {
    let mut last = Instant::now();
    while !s.closed.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(10) {
            if let Err(e) = maintain(s) {
                tracing::error!(error = %e, "compaction or retention failed");
            }
            last = Instant::now();
        }
    }
}

/// One pass of retention (drop segments wholly past it) and compaction (merge the oldest run
/// of small segments).
pub fn maintain(s: &Shared) -> Result<(), StoreError> {
    let _one_at_a_time = lock(&s.maintenance);
    let cutoff = now_ns().saturating_sub(s.cfg.retention.as_nanos() as i64);
    {
        let mut st = write(&s.state);
        st.segments.retain(|seg| {
            let keep = seg.newest_ts() >= cutoff;
            if !keep {
                tracing::info!(path = %seg.path.display(), "segment past retention");
                seg.mark_obsolete();
            }
            keep
        });
    }
    compact(s, cutoff)
}

fn compact(s: &Shared, cutoff: i64) -> Result<(), StoreError> {
    let Some(inputs) = pick_run(s) else {
        return Ok(());
    };
    let lo = inputs.iter().map(|x| x.lo).min().unwrap_or(0);
    let hi = inputs.iter().map(|x| x.hi).max().unwrap_or(0);
    let (dict, rows) = merge_events(&inputs, cutoff)?;
    let profile = merge_profiles(s, &inputs, lo, hi, cutoff)?;
    let (keys, sorted) = memtable::sort_rows(&dict.keys, &rows);
    let horizon = keys::horizon(now_ns());
    let attached = segment::Attached {
        profile,
        keys: inputs
            .iter()
            .flat_map(|i| i.keys.iter())
            .filter(|k| k.received >= horizon)
            .cloned()
            .collect(),
        rollup: s.cfg.rollups,
    };
    let merged = Arc::new(segment::write(
        &s.seg_dir, &s.tmp_dir, lo, hi, &keys, &sorted, attached,
    )?);
    let mut st = write(&s.state);
    st.segments.retain(|x| {
        let input = inputs.iter().any(|i| Arc::ptr_eq(i, x));
        if input {
            x.mark_obsolete();
        }
        !input
    });
    st.segments.push(merged);
    tracing::debug!(
        inputs = inputs.len(),
        rows = sorted.len(),
        lo,
        hi,
        "compacted"
    );
    Ok(())
}

/// The oldest run of small flushed segments worth merging, if there is one.
fn pick_run(s: &Shared) -> Option<Vec<Arc<SegmentMeta>>> {
    let st = read(&s.state);
    let oldest_unflushed = st
        .frozen
        .iter()
        .map(|f| f.gen)
        .chain(std::iter::once(read(&st.active).gen))
        .min()
        .unwrap_or(u64::MAX);
    let mut segs: Vec<Arc<SegmentMeta>> = st
        .segments
        .iter()
        .filter(|x| x.hi < oldest_unflushed)
        .cloned()
        .collect();
    segs.sort_by_key(|x| x.lo);
    let small = s.cfg.compact_rows as u64 / 4;
    let mut run: Vec<Arc<SegmentMeta>> = Vec::new();
    let mut rows = 0u64;
    for seg in segs {
        if seg.total_rows() >= small || rows + seg.total_rows() > s.cfg.compact_rows as u64 {
            if run.len() >= MIN_RUN {
                break;
            }
            run.clear();
            rows = 0;
            if seg.total_rows() >= small {
                continue;
            }
        }
        rows += seg.total_rows();
        run.push(seg);
    }
    (run.len() >= MIN_RUN).then_some(run)
}

/// The event rows of the inputs not past retention, over one dictionary of their series.
fn merge_events(
    inputs: &[Arc<SegmentMeta>],
    cutoff: i64,
) -> Result<(SeriesDict, Rows), StoreError> {
    let mut dict = SeriesDict::default();
    let mut rows = Rows::default();
    for seg in inputs {
        let map: Vec<u32> = seg.series.iter().map(|k| dict.intern_key(k)).collect();
        segment::scan(
            seg,
            segment::Projection {
                status: true,
                wall_ns: true,
                no_costs: false,
            },
            |chunk| {
                for i in 0..chunk.len() {
                    if chunk.ts[i] < cutoff {
                        continue;
                    }
                    if let Some(id) = map.get(chunk.series[i] as usize) {
                        rows.push_from(chunk, i, *id);
                    }
                }
            },
        )?;
    }
    Ok((dict, rows))
}

/// Merges the profile segments of a compaction run into one (written before the events file).
fn merge_profiles(
    s: &Shared,
    inputs: &[Arc<SegmentMeta>],
    lo: u64,
    hi: u64,
    cutoff: i64,
) -> Result<Option<ProfileMeta>, StoreError> {
    let mut dict = SeriesDict::default();
    let mut rows = memtable::SampleRows::default();
    let mut stacks = memtable::Stacks::new();
    for seg in inputs {
        let Some(p) = &seg.profile else { continue };
        let map: Vec<u32> = p.series.iter().map(|k| dict.intern_key(k)).collect();
        let all = |_: u128| true;
        profile_segment::scan(
            p,
            |chunk| {
                for i in 0..chunk.len() {
                    if chunk.ts[i] < cutoff {
                        continue;
                    }
                    if let Some(id) = map.get(chunk.series[i] as usize) {
                        rows.push(
                            chunk.ts[i],
                            *id,
                            chunk.stack[i],
                            chunk.samples[i],
                            chunk.cpu_ns[i],
                        );
                    }
                }
            },
            Some((&all, &mut stacks)),
        )?;
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let sorted = memtable::sort_samples(&rows);
    profile_segment::write(
        &s.seg_dir,
        &s.tmp_dir,
        lo,
        hi,
        &dict.keys,
        &sorted,
        &stacks,
        s.cfg.rollups,
    )
    .map(Some)
}
