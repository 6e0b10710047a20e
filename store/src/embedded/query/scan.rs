//! The machinery every scan shares: mapping each series of each source to an output group
//! once, choosing the sources (and row groups) worth reading, and running the parts of the work
//! on several threads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::prelude::*;

use profwatch_model::query::{CostAccumulator, GroupBy, TimeRange};

use super::source::{AsSource, Source};
use crate::embedded::memtable::SeriesKey;
use crate::embedded::segment::{Projection, Skip};
use crate::StoreError;

/// What a query groups rows by, per series: `None` means the series is filtered out.
pub(super) type GroupMap = Vec<Option<u32>>;

/// For each source, each series' output group (`None`: filtered out), as `pick` decides once
/// per series.
pub(super) fn group_maps(
    sources: &[Source],
    mut pick: impl FnMut(&SeriesKey) -> Option<u32>,
) -> Vec<GroupMap> {
    sources
        .iter()
        .map(|s| s.keys().iter().map(|k| pick(k)).collect())
        .collect()
}

/// Interns output group names across sources.
#[derive(Default)]
pub(super) struct Groups {
    ids: HashMap<(String, Option<String>), u32>,
    pub(super) names: Vec<(String, Option<String>)>,
    /// The last id given: series come sorted by key, so neighbours mostly share their group.
    last: Option<u32>,
}

impl Groups {
    pub(super) fn id(&mut self, first: &str, second: Option<&str>) -> u32 {
        if let Some(last) = self.last {
            let (f, s) = &self.names[last as usize];
            if f == first && s.as_deref() == second {
                return last;
            }
        }
        let id = self.lookup(first, second);
        self.last = Some(id);
        id
    }

    fn lookup(&mut self, first: &str, second: Option<&str>) -> u32 {
        if let Some(id) = self.ids.get(&(first.to_owned(), second.map(str::to_owned))) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name = (first.to_owned(), second.map(str::to_owned));
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }
}

pub(super) fn group_value(k: &SeriesKey, g: GroupBy) -> Option<&str> {
    match g {
        GroupBy::None => None,
        GroupBy::Build => Some(&k.build),
        GroupBy::Dc => Some(&k.dc),
        GroupBy::Host => Some(&k.host),
    }
}

/// The parts of every source (see [`Source::parts`]): each source is cut into up to `parts`.
fn parts_of<T: AsSource>(sources: &[T], parts: usize) -> Vec<(&T, usize, usize)> {
    let parts = parts.max(1);
    sources
        .iter()
        .flat_map(|t| {
            let n = t.source().parts(parts);
            (0..n).map(move |p| (t, p, n))
        })
        .collect()
}

/// Runs `f` on one part; a panic in it is an error of the scan, not of the process.
fn guarded<R>(f: impl FnOnce() -> Result<R, StoreError>) -> Result<R, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err(StoreError::Query("a scan panicked".into())))
}

/// Runs `per_part` over every part of every source (each source cut into up to `parts`), on
/// rayon's pool (the one parallel executor), and merges the partial maps.
pub(super) fn parallel<T, K, F>(
    sources: &[T],
    parts: usize,
    per_part: F,
) -> Result<HashMap<K, CostAccumulator>, StoreError>
where
    T: Sync + AsSource,
    K: std::hash::Hash + Eq + Send,
    F: Fn(&T, usize, usize, &mut HashMap<K, CostAccumulator>) -> Result<(), StoreError> + Sync,
{
    // One map per worker, each taking the next part when done (parts differ in size by orders
    // of magnitude), then one merge: a map per rayon split would cost more merging than it saves.
    let work = parts_of(sources, parts);
    let next = AtomicUsize::new(0);
    let workers = rayon::current_num_threads().min(work.len()).max(1);
    let partials: Vec<Result<HashMap<K, CostAccumulator>, StoreError>> = (0..workers)
        .into_par_iter()
        .map(|_| {
            let mut acc = HashMap::new();
            while let Some((t, part, n)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                guarded(|| per_part(t, *part, *n, &mut acc))?;
            }
            Ok(acc)
        })
        .collect();
    let mut out: HashMap<K, CostAccumulator> = HashMap::new();
    for p in partials {
        for (k, v) in p? {
            out.entry(k).or_default().merge(&v);
        }
    }
    Ok(out)
}

/// Runs `per_part` over every part of every source (each source cut into up to `parts`) on
/// rayon's pool, and returns the parts' results in source and part order (so that merging them
/// in order sees the rows in source order).
pub(super) fn parallel_ordered<T, R, F>(
    sources: &[T],
    parts: usize,
    per_part: F,
) -> Result<Vec<R>, StoreError>
where
    T: Sync + AsSource,
    R: Send,
    F: Fn(&T, usize, usize) -> Result<R, StoreError> + Sync,
{
    parts_of(sources, parts)
        .into_par_iter()
        .map(|(t, part, n)| guarded(|| per_part(t, part, n)))
        .collect()
}

/// One source of a scan, its series map, and the row groups the map and range rule out.
pub(super) struct Work<'a, M> {
    pub(super) src: &'a Source,
    pub(super) map: &'a [Option<M>],
    pub(super) skip: Skip,
}

impl<M: Sync> AsSource for Work<'_, M> {
    fn source(&self) -> &Source {
        self.src
    }
}

/// Work items of a scan: the sources in range with at least one wanted series.
pub(super) fn wanted<'a, M>(
    sources: &'a [Source],
    maps: &'a [Vec<Option<M>>],
    range: TimeRange,
) -> Vec<Work<'a, M>> {
    sources
        .iter()
        .zip(maps)
        .filter(|(s, m)| s.overlaps(range) && m.iter().any(Option::is_some))
        .map(|(src, map)| Work {
            src,
            map,
            skip: match src {
                Source::Segment(_) => {
                    Skip::new(map.iter().map(Option::is_some), range.from, range.to)
                }
                _ => Skip::default(),
            },
        })
        .collect()
}

/// Only the time, series and weight columns: for queries that count requests.
pub(super) const COUNT_ONLY: Projection = Projection {
    status: false,
    wall_ns: false,
    no_costs: true,
};
