//! Queries over memtables and segments: every source is scanned column-wise, each row's series
//! is mapped to an output group through a per-source lookup table, and the groups accumulate in
//! bounded-size [`CostAccumulator`]s. Sources are scanned in parallel and merged.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use profwatch_model::profile::{ProfileQuery, ProfileRow, SampleLabels, StackProfile};
use profwatch_model::query::{
    BuildSummary, BuildsQuery, CostAccumulator, CostRow, CostSamples, CostSamplesQuery,
    EndpointSeries, EndpointStats, EndpointsQuery, GroupBy, SeriesQuery, ServiceSummary,
    ServicesQuery, TimeRange, TimeseriesPoint, TimeseriesQuery,
};
use profwatch_model::timefmt::NANOS_PER_SEC;

use super::memtable::{MemTable, Rows, SampleRows, SeriesKey, Stacks};
use super::profile_segment;
use super::segment::{self, Projection, SegmentMeta, SeriesTotals, Skip};
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
    fn keys(&self) -> Cow<'_, [Arc<SeriesKey>]> {
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

    fn overlaps(&self, range: TimeRange) -> bool {
        match self {
            Source::Active(_) | Source::Frozen(_) => true,
            Source::Segment(s) => s.max_ts >= range.from && s.min_ts < range.to,
        }
    }

    fn profile_keys(&self) -> Vec<Arc<SeriesKey>> {
        match self {
            Source::Segment(s) => s
                .profile
                .as_ref()
                .map(|p| p.series.clone())
                .unwrap_or_default(),
            other => other.keys().into_owned(),
        }
    }

    fn profile_overlaps(&self, range: TimeRange) -> bool {
        match self {
            Source::Active(_) | Source::Frozen(_) => true,
            Source::Segment(s) => s
                .profile
                .as_ref()
                .is_some_and(|p| p.max_ts >= range.from && p.min_ts < range.to),
        }
    }

    /// Calls `f` with the samples, and adds the frames of every stack seen to `frames`.
    fn for_each_sample_chunk(
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
                    let all = |_: u64| true;
                    profile_segment::scan(p, f, Some((&all, frames)))
                }
            },
        }
    }

    /// How many parts a scan of this source can be split into.
    fn parts(&self, threads: usize) -> usize {
        match self {
            Source::Segment(s) => segment::row_groups(s.rows).min(threads.max(1)),
            _ => 1,
        }
    }

    /// Part `part` of `parts` of the rows (see [`Source::parts`]; the parts in order hold the
    /// rows in source order), reading only the columns of `projection` from segments and
    /// leaving out the row groups `skip` rules out (memtables yield every column and row).
    fn for_each_chunk_part(
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
trait AsSource {
    fn source(&self) -> &Source;
}

/// What a query groups rows by, per series: `None` means the series is filtered out.
type GroupMap = Vec<Option<u32>>;

/// For each source, each series' output group (`None`: filtered out), as `pick` decides once
/// per series.
fn group_maps(
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
struct Groups {
    ids: HashMap<(String, Option<String>), u32>,
    names: Vec<(String, Option<String>)>,
    /// The last id given: series come sorted by key, so neighbours mostly share their group.
    last: Option<u32>,
}

impl Groups {
    fn id(&mut self, first: &str, second: Option<&str>) -> u32 {
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

fn group_value(k: &SeriesKey, g: GroupBy) -> Option<&str> {
    match g {
        GroupBy::None => None,
        GroupBy::Build => Some(&k.build),
        GroupBy::Dc => Some(&k.dc),
        GroupBy::Host => Some(&k.host),
    }
}

/// Runs `per_part` over every part of every source (see [`Source::parts`]) on up to
/// `threads` threads, each taking the next part when it is done, and merges the partial maps.
fn parallel<T, K, F>(
    sources: &[T],
    threads: usize,
    per_part: F,
) -> Result<HashMap<K, CostAccumulator>, StoreError>
where
    T: Sync + AsSource,
    K: std::hash::Hash + Eq + Send,
    F: Fn(&T, usize, usize, &mut HashMap<K, CostAccumulator>) -> Result<(), StoreError> + Sync,
{
    let threads = threads.max(1);
    let work: Vec<(&T, usize, usize)> = sources
        .iter()
        .flat_map(|t| {
            let parts = t.source().parts(threads);
            (0..parts).map(move |p| (t, p, parts))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let partials: Vec<Result<HashMap<K, CostAccumulator>, StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(work.len().max(1)))
            .map(|_| {
                let (per_part, work, next) = (&per_part, &work, &next);
                s.spawn(move || {
                    let mut acc = HashMap::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((t, part, parts)) = work.get(i) else {
                            break;
                        };
                        per_part(t, *part, *parts, &mut acc)?;
                    }
                    Ok(acc)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Query("a scan thread panicked".into())))
            })
            .collect()
    });
    let mut out: HashMap<K, CostAccumulator> = HashMap::new();
    for p in partials {
        for (k, v) in p? {
            out.entry(k).or_default().merge(&v);
        }
    }
    Ok(out)
}

/// Runs `per_part` over every part of every source (see [`Source::parts`]) on up to `threads`
/// threads, each taking the next part when it is done, and returns the parts' results in
/// source and part order (so that merging them in order sees the rows in source order).
fn parallel_ordered<T, R, F>(
    sources: &[T],
    threads: usize,
    per_part: F,
) -> Result<Vec<R>, StoreError>
where
    T: Sync + AsSource,
    R: Send,
    F: Fn(&T, usize, usize) -> Result<R, StoreError> + Sync,
{
    let threads = threads.max(1);
    let work: Vec<(&T, usize, usize)> = sources
        .iter()
        .flat_map(|t| {
            let parts = t.source().parts(threads);
            (0..parts).map(move |p| (t, p, parts))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Done<R> = Result<Vec<(usize, R)>, StoreError>;
    let partials: Vec<Done<R>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(work.len().max(1)))
            .map(|_| {
                let (per_part, work, next) = (&per_part, &work, &next);
                s.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((t, part, parts)) = work.get(i) else {
                            break;
                        };
                        done.push((i, per_part(t, *part, *parts)?));
                    }
                    Ok(done)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Query("a scan thread panicked".into())))
            })
            .collect()
    });
    let mut all: Vec<(usize, R)> = Vec::with_capacity(work.len());
    for p in partials {
        all.extend(p?);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, r)| r).collect())
}

/// One source of a scan, its series map, and the row groups the map and range rule out.
struct Work<'a, M> {
    src: &'a Source,
    map: &'a [Option<M>],
    skip: Skip,
}

impl<M: Sync> AsSource for Work<'_, M> {
    fn source(&self) -> &Source {
        self.src
    }
}

/// Work items of a scan: the sources in range with at least one wanted series.
fn wanted<'a, M>(
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
const COUNT_ONLY: Projection = Projection {
    status: false,
    wall_ns: false,
    no_costs: true,
};

impl AsSource for Source {
    fn source(&self) -> &Source {
        self
    }
}

/// Scans the rows in `range` of the sources that per-series totals do not cover (`totals[i]`
/// is `None`), handing each row's time and weight to `visit` with the accumulator of its
/// group; one accumulator per group (`empty` at first) and per part of the work.
fn count_uncovered<A, T>(
    sources: &[Source],
    maps: &[GroupMap],
    totals: &[Option<T>],
    range: TimeRange,
    threads: usize,
    empty: A,
    visit: impl Fn(&mut A, i64, f64) + Sync,
) -> Result<Vec<Vec<A>>, StoreError>
where
    A: Clone + Send + Sync,
{
    let groups = maps
        .iter()
        .flat_map(|m| m.iter().flatten())
        .map(|g| *g as usize + 1)
        .max()
        .unwrap_or(0);
    let (to_scan, scan_maps): (Vec<Source>, Vec<GroupMap>) = sources
        .iter()
        .zip(maps)
        .zip(totals)
        .filter(|(_, t)| t.is_none())
        .map(|((s, m), _)| (s.clone(), m.clone()))
        .unzip();
    parallel_ordered(
        &wanted(&to_scan, &scan_maps, range),
        threads,
        |w: &Work<'_, _>, part, parts| {
            let mut acc = vec![empty.clone(); groups];
            let map = w.map;
            w.src
                .for_each_chunk_part(part, parts, COUNT_ONLY, &w.skip, |rows| {
                    for i in 0..rows.len() {
                        let ts = rows.ts[i];
                        if ts < range.from || ts >= range.to {
                            continue;
                        }
                        let Some(Some(g)) = map.get(rows.series[i] as usize) else {
                            continue;
                        };
                        if let Some(a) = acc.get_mut(*g as usize) {
                            visit(a, ts, rows.weight[i]);
                        }
                    }
                })?;
            Ok(acc)
        },
    )
}

/// Per-series totals of each source that is a segment lying wholly inside `range` (`None` for
/// the others): queries that count requests read these instead of the rows. Totals a segment
/// lacks (after a restart) are computed here once, on every core, and kept.
fn covered_totals(
    sources: &[Source],
    range: TimeRange,
    threads: usize,
) -> Result<Vec<Option<Arc<Vec<SeriesTotals>>>>, StoreError> {
    let covered = |s: &Source| match s {
        Source::Segment(seg) if range.from <= seg.min_ts && seg.max_ts < range.to => {
            Some(seg.clone())
        }
        _ => None,
    };
    let missing: Vec<Source> = sources
        .iter()
        .filter(|s| covered(s).is_some_and(|seg| seg.totals().is_none()))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let parts = parallel_ordered(&missing, threads, |src, part, parts| {
            let n = match src {
                Source::Segment(seg) => seg.series.len(),
                _ => 0,
            };
            let mut acc = vec![SeriesTotals::default(); n];
            src.for_each_chunk_part(part, parts, COUNT_ONLY, &Skip::default(), |rows| {
                for i in 0..rows.len() {
                    if let Some(t) = acc.get_mut(rows.series[i] as usize) {
                        t.add(rows.ts[i], rows.weight[i]);
                    }
                }
            })?;
            Ok(acc)
        })?;
        let mut parts = parts.into_iter();
        for src in &missing {
            let Source::Segment(seg) = src else {
                continue;
            };
            let mut total = vec![SeriesTotals::default(); seg.series.len()];
            for part in parts.by_ref().take(src.parts(threads)) {
                for (t, p) in total.iter_mut().zip(&part) {
                    t.merge(p);
                }
            }
            seg.keep_totals(total);
        }
    }
    Ok(sources
        .iter()
        .map(|s| covered(s).and_then(|seg| seg.totals()))
        .collect())
}

pub fn services(
    sources: &[Source],
    q: &ServicesQuery,
    threads: usize,
) -> Result<Vec<ServiceSummary>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0).then(|| groups.id(&k.service, None))
    });
    let range = q.range;
    let n = groups.names.len();
    let totals = covered_totals(sources, range, threads)?;
    // Per service: rows and weighted requests in range.
    let mut total = vec![(0u64, 0.0f64); n];
    for (t, map) in totals.iter().zip(&maps) {
        for (t, g) in t.iter().flat_map(|t| t.iter()).zip(map) {
            if let Some(a) = g.and_then(|g| total.get_mut(g as usize)) {
                a.0 += t.rows;
                a.1 += t.weight;
            }
        }
    }
    let parts = count_uncovered(
        sources,
        &maps,
        &totals,
        range,
        threads,
        (0u64, 0.0f64),
        |a, _ts, weight| {
            a.0 += 1;
            a.1 += weight;
        },
    )?;
    for p in parts {
        for (t, a) in total.iter_mut().zip(p) {
            t.0 += a.0;
            t.1 += a.1;
        }
    }
    let mut out: Vec<ServiceSummary> = total
        .into_iter()
        .enumerate()
        .filter(|(_, (rows, _))| *rows > 0)
        .map(|(g, (_, requests))| ServiceSummary {
            service: groups.names[g].0.clone(),
            requests,
        })
        .collect();
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}

pub fn endpoints(
    sources: &[Source],
    q: &EndpointsQuery,
    threads: usize,
) -> Result<Vec<EndpointStats>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service)
            .then(|| groups.id(&k.endpoint, group_value(k, q.group_by)))
    });
    let acc = scan_grouped(sources, &maps, q.range, threads)?;
    let mut out: Vec<EndpointStats> = acc
        .into_iter()
        .map(|(g, a)| {
            let (endpoint, group) = groups.names[g as usize].clone();
            EndpointStats {
                endpoint,
                group,
                stats: a.finish(),
            }
        })
        .collect();
    out.sort_by(|a, b| (&a.endpoint, &a.group).cmp(&(&b.endpoint, &b.group)));
    Ok(out)
}

fn scan_grouped(
    sources: &[Source],
    maps: &[GroupMap],
    range: TimeRange,
    threads: usize,
) -> Result<HashMap<u32, CostAccumulator>, StoreError> {
    parallel(
        &wanted(sources, maps, range),
        threads,
        |w: &Work<'_, u32>, part, parts, acc: &mut HashMap<u32, CostAccumulator>| {
            let map = w.map;
            let mut dense: Vec<CostAccumulator> = Vec::new();
            let mut used: Vec<u32> = Vec::new();
            w.src
                .for_each_chunk_part(part, parts, Projection::default(), &w.skip, |rows| {
                    for i in 0..rows.len() {
                        let ts = rows.ts[i];
                        if ts < range.from || ts >= range.to {
                            continue;
                        }
                        let Some(Some(g)) = map.get(rows.series[i] as usize) else {
                            continue;
                        };
                        let g = *g as usize;
                        if g >= dense.len() {
                            dense.resize_with(g + 1, CostAccumulator::default);
                        }
                        if dense[g].is_empty() {
                            used.push(g as u32);
                        }
                        dense[g].add(rows.cpu_ns[i], rows.instructions[i], rows.weight[i]);
                    }
                })?;
            for g in used {
                acc.entry(g).or_default().merge(&dense[g as usize]);
            }
            Ok(())
        },
    )
}

pub fn timeseries(
    sources: &[Source],
    q: &TimeseriesQuery,
    threads: usize,
) -> Result<Vec<TimeseriesPoint>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service && k.endpoint == q.endpoint)
            .then(|| groups.id(group_value(k, q.group_by).unwrap_or(""), None))
    });
    let acc = scan_bucketed(sources, &maps, q.range, q.step, threads)?;
    let sorted: BTreeMap<(i64, String), CostAccumulator> = acc
        .into_iter()
        .map(|((g, bucket), a)| ((bucket, groups.names[g as usize].0.clone()), a))
        .collect();
    Ok(sorted
        .into_iter()
        .map(|((bucket, group), a)| TimeseriesPoint {
            time: bucket.div_euclid(NANOS_PER_SEC),
            group: (q.group_by != GroupBy::None).then_some(group),
            stats: a.finish(),
        })
        .collect())
}

/// Accumulates rows per (group, time bucket of `step` ns), for the series each map keeps.
fn scan_bucketed(
    sources: &[Source],
    maps: &[GroupMap],
    range: TimeRange,
    step: i64,
    threads: usize,
) -> Result<HashMap<(u32, i64), CostAccumulator>, StoreError> {
    let step = step.max(1);
    // Accumulators are found through a dense (group, bucket) table when it is small enough,
    // else through the map itself.
    let groups = maps
        .iter()
        .flatten()
        .flatten()
        .max()
        .map_or(0, |g| *g as usize + 1);
    let first = range.from.div_euclid(step);
    let span = i128::from(range.to.saturating_sub(1).div_euclid(step)) - i128::from(first) + 1;
    let buckets = usize::try_from(span.max(0)).unwrap_or(usize::MAX);
    let dense = groups.saturating_mul(buckets) <= 1 << 22;
    parallel(
        &wanted(sources, maps, range),
        threads,
        |w: &Work<'_, u32>, part, parts, acc: &mut HashMap<(u32, i64), CostAccumulator>| {
            let map = w.map;
            let mut slots: Vec<u32> = if dense {
                vec![u32::MAX; groups * buckets]
            } else {
                Vec::new()
            };
            let mut local: Vec<((u32, i64), CostAccumulator)> = Vec::new();
            w.src
                .for_each_chunk_part(part, parts, Projection::default(), &w.skip, |rows| {
                    for i in 0..rows.len() {
                        let ts = rows.ts[i];
                        if ts < range.from || ts >= range.to {
                            continue;
                        }
                        let Some(Some(g)) = map.get(rows.series[i] as usize) else {
                            continue;
                        };
                        let b = ts.div_euclid(step);
                        let a = if dense {
                            let slot = &mut slots[*g as usize * buckets + (b - first) as usize];
                            if *slot == u32::MAX {
                                *slot = local.len() as u32;
                                local.push(((*g, b * step), CostAccumulator::default()));
                            }
                            &mut local[*slot as usize].1
                        } else {
                            acc.entry((*g, b * step)).or_default()
                        };
                        a.add(rows.cpu_ns[i], rows.instructions[i], rows.weight[i]);
                    }
                })?;
            for (key, a) in local {
                match acc.entry(key) {
                    std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().merge(&a),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(a);
                    }
                }
            }
            Ok(())
        },
    )
}

/// Whether a series passes a profile query's tenant, service and label filters.
fn profile_match(k: &SeriesKey, q: &ProfileQuery) -> bool {
    k.tenant == q.tenant.0
        && k.service == q.service
        && q.filters.iter().all(|f| {
            let v = match f.key.as_str() {
                "endpoint" => Some(k.endpoint.as_str()),
                "build" => Some(k.build.as_str()),
                "dc" => Some(k.dc.as_str()),
                "host" => Some(k.host.as_str()),
                "service" => Some(k.service.as_str()),
                other => k
                    .labels
                    .iter()
                    .find(|(lk, _)| lk == other)
                    .map(|(_, v)| v.as_str()),
            };
            v == Some(f.value.as_str())
        })
}

fn labels_of(k: &SeriesKey) -> SampleLabels {
    SampleLabels {
        service: k.service.clone(),
        endpoint: k.endpoint.clone(),
        build: k.build.clone(),
        dc: k.dc.clone(),
        host: k.host.clone(),
        extra: k.labels.iter().cloned().collect(),
    }
}

/// Sums samples per (label set, stack) over the range, then attaches each stack's frames.
pub fn profile(
    sources: &[Source],
    q: &ProfileQuery,
    threads: usize,
) -> Result<StackProfile, StoreError> {
    // Label sets are interned by their labels so that series from different sources merge.
    let mut sets: HashMap<SampleLabels, u32> = HashMap::new();
    let mut set_names: Vec<SampleLabels> = Vec::new();
    let mut work: Vec<(&Source, Vec<Option<u32>>)> = Vec::new();
    for src in sources {
        if !src.profile_overlaps(q.range) {
            continue;
        }
        let map: Vec<Option<u32>> = src
            .profile_keys()
            .iter()
            .map(|k| {
                profile_match(k, q).then(|| {
                    let l = labels_of(k);
                    *sets.entry(l.clone()).or_insert_with(|| {
                        set_names.push(l);
                        set_names.len() as u32 - 1
                    })
                })
            })
            .collect();
        if map.iter().any(Option::is_some) {
            work.push((src, map));
        }
    }
    let range = q.range;
    type Totals = HashMap<(u32, u64), (u64, u64)>;
    let threads = threads.clamp(1, work.len().max(1));
    let chunk = work.len().div_ceil(threads).max(1);
    let partials: Vec<Result<(Totals, Stacks), StoreError>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut totals: Totals = HashMap::new();
                    let mut frames: Stacks = HashMap::new();
                    for (src, map) in part {
                        src.for_each_sample_chunk(
                            |rows| {
                                for i in 0..rows.len() {
                                    let ts = rows.ts[i];
                                    if ts < range.from || ts >= range.to {
                                        continue;
                                    }
                                    let Some(Some(set)) = map.get(rows.series[i] as usize) else {
                                        continue;
                                    };
                                    let e = totals.entry((*set, rows.stack[i])).or_default();
                                    e.0 += rows.samples[i];
                                    e.1 += rows.cpu_ns[i];
                                }
                            },
                            &mut frames,
                        )?;
                    }
                    Ok((totals, frames))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(StoreError::Query("a scan thread panicked".into())))
            })
            .collect()
    });
    let mut totals: Totals = HashMap::new();
    let mut frames: Stacks = HashMap::new();
    for p in partials {
        let (t, f) = p?;
        for (k, v) in t {
            let e = totals.entry(k).or_default();
            e.0 += v.0;
            e.1 += v.1;
        }
        frames.extend(f);
    }
    let mut rows: Vec<ProfileRow> = totals
        .into_iter()
        .filter_map(|((set, stack), (samples, cpu_ns))| {
            let f = frames.get(&stack)?;
            Some(ProfileRow {
                labels: set_names[set as usize].clone(),
                frames: f.to_vec(),
                samples,
                cpu_ns,
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.labels, &a.frames).cmp(&(&b.labels, &b.frames)));
    Ok(StackProfile { rows })
}

/// Builds of a service: first and last request, weighted count.
pub fn builds(
    sources: &[Source],
    q: &BuildsQuery,
    threads: usize,
) -> Result<Vec<BuildSummary>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service).then(|| groups.id(&k.build, None))
    });
    let range = q.range;
    let n = groups.names.len();
    let totals = covered_totals(sources, range, threads)?;
    // Per build: (first seen, last seen, weighted requests), if any row is in range.
    type Seen = Option<(i64, i64, f64)>;
    let mut total: Vec<Seen> = vec![None; n];
    let add = |total: &mut Vec<Seen>, g: u32, (first, last, requests): (i64, i64, f64)| {
        if let Some(t) = total.get_mut(g as usize) {
            let e = t.get_or_insert((first, last, 0.0));
            e.0 = e.0.min(first);
            e.1 = e.1.max(last);
            e.2 += requests;
        }
    };
    for (t, map) in totals.iter().zip(&maps) {
        for (t, g) in t.iter().flat_map(|t| t.iter()).zip(map) {
            if let (Some(g), true) = (g, t.rows > 0) {
                add(&mut total, *g, (t.first, t.last, t.weight));
            }
        }
    }
    let parts = count_uncovered(
        sources,
        &maps,
        &totals,
        range,
        threads,
        None,
        |a: &mut Seen, ts, weight| {
            let e = a.get_or_insert((ts, ts, 0.0));
            e.0 = e.0.min(ts);
            e.1 = e.1.max(ts);
            e.2 += weight;
        },
    )?;
    for p in parts {
        for (g, a) in p.into_iter().enumerate() {
            if let Some(a) = a {
                add(&mut total, g as u32, a);
            }
        }
    }
    let mut out: Vec<BuildSummary> = total
        .into_iter()
        .enumerate()
        .filter_map(|(g, t)| {
            let (first_seen, last_seen, requests) = t?;
            Some(BuildSummary {
                build: groups.names[g].0.clone(),
                first_seen,
                last_seen,
                requests,
            })
        })
        .collect();
    out.sort_by(|a, b| a.build.cmp(&b.build));
    Ok(out)
}

/// Per-request costs per (endpoint, build), rows in source order.
pub fn cost_samples(
    sources: &[Source],
    q: &CostSamplesQuery,
    threads: usize,
) -> Result<Vec<CostSamples>, StoreError> {
    let keys: Vec<Cow<'_, [Arc<SeriesKey>]>> = sources.iter().map(Source::keys).collect();
    let mut out: Vec<CostSamples> = Vec::new();
    let mut group_ids: HashMap<(&str, &str), u32> = HashMap::new();
    // Host and dc indices within each group.
    let mut host_ids: HashMap<(u32, &str), u32> = HashMap::new();
    let mut dc_ids: HashMap<(u32, &str), u32> = HashMap::new();
    // Per source and series: (group, host index, dc index), or `None` when filtered out.
    let mut maps: Vec<Vec<Option<(u32, u32, u32)>>> = Vec::with_capacity(sources.len());
    for (src, keys) in sources.iter().zip(&keys) {
        if !src.overlaps(q.range) {
            maps.push(Vec::new());
            continue;
        }
        let map = keys
            .iter()
            .map(|k| {
                let wanted = k.tenant == q.tenant.0
                    && k.service == q.service
                    && (q.builds.is_empty() || q.builds.contains(&k.build))
                    && q.endpoint.as_ref().is_none_or(|e| *e == k.endpoint);
                if !wanted {
                    return None;
                }
                let g = *group_ids
                    .entry((k.endpoint.as_str(), k.build.as_str()))
                    .or_insert_with(|| {
                        out.push(CostSamples {
                            endpoint: k.endpoint.clone(),
                            build: k.build.clone(),
                            ..Default::default()
                        });
                        out.len() as u32 - 1
                    });
                let group = &mut out[g as usize];
                let host = *host_ids.entry((g, k.host.as_str())).or_insert_with(|| {
                    group.hosts.push(k.host.clone());
                    group.hosts.len() as u32 - 1
                });
                let dc = *dc_ids.entry((g, k.dc.as_str())).or_insert_with(|| {
                    group.dcs.push(k.dc.clone());
                    group.dcs.len() as u32 - 1
                });
                Some((g, host, dc))
            })
            .collect();
        maps.push(map);
    }
    let range = q.range;
    let n = out.len();
    let parts = parallel_ordered(
        &wanted(sources, &maps, range),
        threads,
        |w: &Work<'_, _>, part, parts| {
            let mut rows_of: Vec<Vec<CostRow>> = vec![Vec::new(); n];
            let map = w.map;
            w.src
                .for_each_chunk_part(part, parts, Projection::default(), &w.skip, |rows| {
                    for i in 0..rows.len() {
                        let ts = rows.ts[i];
                        if ts < range.from || ts >= range.to {
                            continue;
                        }
                        let Some(Some((g, host, dc))) = map.get(rows.series[i] as usize) else {
                            continue;
                        };
                        if let Some(v) = rows_of.get_mut(*g as usize) {
                            v.push(CostRow {
                                ts,
                                cpu_ns: rows.cpu_ns[i],
                                instructions: rows.instructions[i],
                                weight: rows.weight[i],
                                host: *host,
                                dc: *dc,
                            });
                        }
                    }
                })?;
            Ok(rows_of)
        },
    )?;
    let mut parts = parts;
    for (g, group) in out.iter_mut().enumerate() {
        // One endpoint's rows mostly come from one part (they sit together in a segment): that
        // part's vector is taken as it is.
        let mut from: Vec<&mut Vec<CostRow>> = parts
            .iter_mut()
            .filter_map(|p| p.get_mut(g).filter(|v| !v.is_empty()))
            .collect();
        if from.len() == 1 {
            group.rows = std::mem::take(from[0]);
            continue;
        }
        group.rows.reserve_exact(from.iter().map(|v| v.len()).sum());
        for v in from {
            group.rows.append(v);
        }
    }
    out.retain(|g| !g.rows.is_empty());
    out.sort_by(|a, b| (&a.endpoint, &a.build).cmp(&(&b.endpoint, &b.build)));
    Ok(out)
}

/// Every endpoint's series of a service.
pub fn endpoint_series(
    sources: &[Source],
    q: &SeriesQuery,
    threads: usize,
) -> Result<Vec<EndpointSeries>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service).then(|| groups.id(&k.endpoint, None))
    });
    let acc = scan_bucketed(sources, &maps, q.range, q.step, threads)?;
    let mut by_endpoint: BTreeMap<String, BTreeMap<i64, CostAccumulator>> = BTreeMap::new();
    for ((g, bucket), a) in acc {
        by_endpoint
            .entry(groups.names[g as usize].0.clone())
            .or_default()
            .insert(bucket, a);
    }
    Ok(by_endpoint
        .into_iter()
        .map(|(endpoint, points)| EndpointSeries {
            endpoint,
            points: points
                .into_iter()
                .map(|(bucket, a)| TimeseriesPoint {
                    time: bucket.div_euclid(NANOS_PER_SEC),
                    group: None,
                    stats: a.finish(),
                })
                .collect(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use profwatch_model::timefmt::{now_ns, NANOS_PER_SEC};
    use profwatch_model::{RequestEvent, Tenant};

    use crate::embedded::{EmbeddedConfig, EmbeddedStore};
    use crate::Store;

    use super::*;

    fn events(n: usize) -> Vec<RequestEvent> {
        let now = now_ns();
        (0..n)
            .map(|i| RequestEvent {
                ts: now - 600 * NANOS_PER_SEC + (i as i64) * 1_000_000,
                service: format!("svc{}", i % 3),
                endpoint: format!("GET /{}", i % 5),
                build: format!("b{}", i % 4),
                dc: "dc".into(),
                host: format!("h{}", i % 7),
                status: 200,
                cpu_ns: 1000 + i as u64,
                instructions: None,
                wall_ns: 1,
                weight: 0.5 + (i % 3) as f64,
                labels: Default::default(),
            })
            .collect()
    }

    async fn answers(store: &EmbeddedStore, range: TimeRange) -> String {
        let tenant = Tenant("t".into());
        let costs = store
            .cost_samples(&CostSamplesQuery {
                tenant: tenant.clone(),
                service: "svc1".into(),
                range,
                builds: vec!["b1".into(), "b3".into()],
                endpoint: Some("GET /2".into()),
            })
            .await
            .expect("cost samples");
        let series = store
            .timeseries(&TimeseriesQuery {
                tenant: tenant.clone(),
                service: "svc2".into(),
                endpoint: "GET /4".into(),
                range,
                step: 60 * NANOS_PER_SEC,
                group_by: GroupBy::Build,
            })
            .await
            .expect("timeseries");
        // Millisecond buckets over the range: too many for the dense table.
        let fine = store
            .timeseries(&TimeseriesQuery {
                tenant: tenant.clone(),
                service: "svc2".into(),
                endpoint: "GET /4".into(),
                range,
                step: 1_000_000,
                group_by: GroupBy::Build,
            })
            .await
            .expect("timeseries");
        let services = store
            .services(&ServicesQuery {
                tenant: tenant.clone(),
                range,
            })
            .await
            .expect("services");
        let builds = store
            .builds(&BuildsQuery {
                tenant,
                service: "svc1".into(),
                range,
            })
            .await
            .expect("builds");
        let rows: Vec<(&str, &str, usize)> = costs
            .iter()
            .map(|c| (c.endpoint.as_str(), c.build.as_str(), c.rows.len()))
            .collect();
        format!("{services:?} {builds:?} {rows:?} {series:?} {fine:?}")
    }

    /// Counting queries read a segment's per-series totals when their range covers it, and
    /// queries for a few series skip row groups; both answer exactly as a scan of every row
    /// does: after a flush (totals kept by the writer), after a restart (totals computed by
    /// the first query), and over a range that covers the segment only in part.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_from_segment_totals_equal_counts_from_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let all = TimeRange {
            from: now_ns() - 3_600 * NANOS_PER_SEC,
            to: now_ns() + 3_600 * NANOS_PER_SEC,
        };
        // Several row groups (4096 rows each in unit tests).
        let evs = events(30_000);
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
        store
            .write(&Tenant("t".into()), evs.clone())
            .await
            .expect("write");
        let from_memtable = answers(&store, all).await;
        store.flush().await.expect("flush");
        assert!(std::fs::read_dir(dir.path().join("segments"))
            .expect("segments dir")
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("seg-"))));
        assert_eq!(answers(&store, all).await, from_memtable);
        drop(store);
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("reopen");
        assert_eq!(answers(&store, all).await, from_memtable);
        assert_eq!(answers(&store, all).await, from_memtable);
        // A range that starts inside the segment: its rows are scanned.
        let part = TimeRange {
            from: evs[1_000].ts,
            ..all
        };
        let expected = {
            let dir = tempfile::tempdir().expect("tempdir");
            let reference = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).expect("open");
            reference
                .write(&Tenant("t".into()), evs[1_000..].to_vec())
                .await
                .expect("write");
            answers(&reference, all).await
        };
        assert_eq!(answers(&store, part).await, expected);
    }
}
