//! Where a query's rows come from: segments, frozen memtables and the active memtable.

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use profwatch_model::functions::FunctionQuery;
use profwatch_model::query::TimeRange;

use crate::embedded::function_rollup::FunctionRollup;
use crate::embedded::memtable::{MemTable, Rows, SampleRows, SeriesKey, Stacks};
use crate::embedded::profile_segment;
use crate::embedded::segment::{self, Projection, SegmentMeta, Skip};
use crate::StoreError;

/// A source of rows for one query. Memtables are read in place (the active one under its read
/// lock, briefly holding off the writer); rows that arrive after the query mapped its series
/// are skipped.
#[derive(Debug, Clone)]
pub enum Source {
    Active(Arc<RwLock<MemTable>>),
    Frozen(Arc<MemTable>),
    Segment(Arc<SegmentMeta>),
}

impl Source {
    /// The series dictionary (copied only for the active memtable, which may grow meanwhile).
    pub(super) fn keys(&self) -> Cow<'_, [Arc<SeriesKey>]> {
        match self {
            Source::Active(m) => Cow::Owned(
                m.read()
                    .unwrap_or_else(|e| e.into_inner())
                    .dict
                    .keys
                    .clone(),
            ),
            Source::Frozen(m) => Cow::Borrowed(&m.dict.keys),
            Source::Segment(s) => Cow::Borrowed(&s.series),
        }
    }

    pub(super) fn overlaps(&self, range: TimeRange) -> bool {
        match self {
            Source::Active(_) | Source::Frozen(_) => true,
            Source::Segment(s) => s.max_ts >= range.from && s.min_ts < range.to,
        }
    }

    pub(super) fn profile_keys(&self) -> Vec<Arc<SeriesKey>> {
        match self {
            Source::Segment(s) => s
                .profile
                .as_ref()
                .map(|p| p.series.clone())
                .unwrap_or_default(),
            other => other.keys().into_owned(),
        }
    }

    pub(super) fn profile_overlaps(&self, range: TimeRange) -> bool {
        match self {
            Source::Active(_) | Source::Frozen(_) => true,
            Source::Segment(s) => s
                .profile
                .as_ref()
                .is_some_and(|p| p.max_ts >= range.from && p.min_ts < range.to),
        }
    }

    /// The segment's function rollup, when `q` can use it (the segment's samples lie wholly
    /// inside the range; see `function_rollup.rs`) and it is worth keeping.
    pub(super) fn function_rollup(&self, q: &FunctionQuery) -> Option<Arc<FunctionRollup>> {
        match self {
            Source::Segment(s) => s
                .profile
                .as_ref()
                .filter(|p| FunctionRollup::covers(q, p.min_ts, p.max_ts))
                .and_then(|p| p.function_rollup()),
            _ => None,
        }
    }

    /// Calls `f` with the samples, and adds the frames of every stack seen to `frames`.
    pub(super) fn for_each_sample_chunk(
        &self,
        mut f: impl FnMut(&SampleRows),
        frames: &mut Stacks,
    ) -> Result<(), StoreError> {
        let mut from_mem = |m: &MemTable| {
            f(&m.samples);
            for h in &m.samples.stack {
                if !frames.contains_key(h) {
                    if let Some(fr) = m.stacks.get(h) {
                        frames.insert(*h, fr.clone());
                    }
                }
            }
        };
        match self {
            Source::Active(m) => {
                from_mem(&m.read().unwrap_or_else(|e| e.into_inner()));
                Ok(())
            }
            Source::Frozen(m) => {
                from_mem(m);
                Ok(())
            }
            Source::Segment(s) => match &s.profile {
                None => Ok(()),
                Some(p) => {
                    let all = |_: u128| true;
                    profile_segment::scan(p, f, Some((&all, frames)))
                }
            },
        }
    }

    /// How many parts a scan of this source can be split into.
    pub(super) fn parts(&self, threads: usize) -> usize {
        match self {
            Source::Segment(s) => segment::row_groups(s.rows).min(threads.max(1)),
            _ => 1,
        }
    }

    /// Part `part` of `parts` of the rows (see [`Source::parts`]; the parts in order hold the
    /// rows in source order), reading only the columns of `projection` from segments and
    /// leaving out the row groups `skip` rules out (memtables yield every column and row).
    pub(super) fn for_each_chunk_part(
        &self,
        part: usize,
        parts: usize,
        projection: Projection,
        skip: &Skip,
        mut f: impl FnMut(&Rows),
    ) -> Result<(), StoreError> {
        match self {
            Source::Segment(s) => segment::scan_part(s, projection, skip, part, parts, f),
            _ if part > 0 => Ok(()),
            Source::Active(m) => {
                f(&m.read().unwrap_or_else(|e| e.into_inner()).rows);
                Ok(())
            }
            Source::Frozen(m) => {
                f(&m.rows);
                Ok(())
            }
        }
    }
}

/// Work items that wrap a source.
pub(super) trait AsSource {
    fn source(&self) -> &Source;
}

impl AsSource for Source {
    fn source(&self) -> &Source {
        self
    }
}

/// A source with something the scan of it needs (the endpoint ids of its series, say).
impl<T: Sync> AsSource for (Source, T) {
    fn source(&self) -> &Source {
        &self.0
    }
}
