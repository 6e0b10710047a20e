//! Queries over memtables and segments: every source is scanned column-wise, each row's series
//! is mapped to an output group through a per-source lookup table, and the groups accumulate in
//! bounded-size [`CostAccumulator`]s. Sources are scanned in parallel and merged.

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
use super::segment::{self, Projection, SegmentMeta};
use crate::store::StoreError;

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
    fn keys(&self) -> Vec<Arc<SeriesKey>> {
        match self {
            Source::Active(m) => m
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .dict
                .keys
                .clone(),
            Source::Frozen(m) => m.dict.keys.clone(),
            Source::Segment(s) => s.series.clone(),
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
            other => other.keys(),
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

    fn for_each_chunk(&self, f: impl FnMut(&Rows)) -> Result<(), StoreError> {
        self.for_each_chunk_part(0, 1, f)
    }

    /// Part `part` of `parts` of the rows (see [`Source::parts`]).
    fn for_each_chunk_part(
        &self,
        part: usize,
        parts: usize,
        mut f: impl FnMut(&Rows),
    ) -> Result<(), StoreError> {
        match self {
            Source::Segment(s) => segment::scan_part(s, Projection::default(), part, parts, f),
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

impl AsSource for (&Source, &GroupMap) {
    fn source(&self) -> &Source {
        self.0
    }
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
}

impl Groups {
    fn id(&mut self, first: &str, second: Option<&str>) -> u32 {
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

pub fn services(
    sources: &[Source],
    q: &ServicesQuery,
    threads: usize,
) -> Result<Vec<ServiceSummary>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0).then(|| groups.id(&k.service, None))
    });
    let acc = scan_grouped(sources, &maps, q.range, threads)?;
    let mut out: Vec<ServiceSummary> = acc
        .into_iter()
        .map(|(g, a)| ServiceSummary {
            service: groups.names[g as usize].0.clone(),
            requests: a.finish().requests,
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
    let work: Vec<(&Source, &GroupMap)> = sources
        .iter()
        .zip(maps)
        .filter(|(s, m)| s.overlaps(range) && m.iter().any(Option::is_some))
        .collect();
    parallel(
        &work,
        threads,
        |(src, map), part, parts, acc: &mut HashMap<u32, CostAccumulator>| {
            let mut dense: Vec<CostAccumulator> = Vec::new();
            let mut used: Vec<u32> = Vec::new();
            src.for_each_chunk_part(part, parts, |rows| {
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
    let work: Vec<(&Source, &GroupMap)> = sources
        .iter()
        .zip(maps)
        .filter(|(s, m)| s.overlaps(range) && m.iter().any(Option::is_some))
        .collect();
    parallel(
        &work,
        threads,
        |(src, map), part, parts, acc: &mut HashMap<(u32, i64), CostAccumulator>| {
            src.for_each_chunk_part(part, parts, |rows| {
                for i in 0..rows.len() {
                    let ts = rows.ts[i];
                    if ts < range.from || ts >= range.to {
                        continue;
                    }
                    let Some(Some(g)) = map.get(rows.series[i] as usize) else {
                        continue;
                    };
                    let bucket = ts.div_euclid(step) * step;
                    acc.entry((*g, bucket)).or_default().add(
                        rows.cpu_ns[i],
                        rows.instructions[i],
                        rows.weight[i],
                    );
                }
            })
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
pub fn builds(sources: &[Source], q: &BuildsQuery) -> Result<Vec<BuildSummary>, StoreError> {
    let mut by_build: BTreeMap<String, BuildSummary> = BTreeMap::new();
    for src in sources {
        if !src.overlaps(q.range) {
            continue;
        }
        let keys = src.keys();
        let map: Vec<Option<&str>> = keys
            .iter()
            .map(|k| (k.tenant == q.tenant.0 && k.service == q.service).then_some(k.build.as_str()))
            .collect();
        if map.iter().all(Option::is_none) {
            continue;
        }
        src.for_each_chunk(|rows| {
            for i in 0..rows.len() {
                let ts = rows.ts[i];
                if ts < q.range.from || ts >= q.range.to {
                    continue;
                }
                let Some(Some(build)) = map.get(rows.series[i] as usize) else {
                    continue;
                };
                let e = by_build
                    .entry((*build).to_owned())
                    .or_insert_with(|| BuildSummary {
                        build: (*build).to_owned(),
                        first_seen: ts,
                        last_seen: ts,
                        requests: 0.0,
                    });
                e.first_seen = e.first_seen.min(ts);
                e.last_seen = e.last_seen.max(ts);
                e.requests += rows.weight[i];
            }
        })?;
    }
    Ok(by_build.into_values().collect())
}

/// Per-request costs per (endpoint, build).
pub fn cost_samples(
    sources: &[Source],
    q: &CostSamplesQuery,
) -> Result<Vec<CostSamples>, StoreError> {
    let mut groups: BTreeMap<(String, String), CostSamples> = BTreeMap::new();
    let mut host_ids: HashMap<(String, String, String), u32> = HashMap::new();
    let mut dc_ids: HashMap<(String, String, String), u32> = HashMap::new();
    for src in sources {
        if !src.overlaps(q.range) {
            continue;
        }
        let keys = src.keys();
        // Per series: the group key and the host and dc indices within that group.
        // Per series: (group key, host index, dc index), or `None` when filtered out.
        type Target = ((String, String), u32, u32);
        let mut map: Vec<Option<Target>> = Vec::with_capacity(keys.len());
        for k in &keys {
            let wanted = k.tenant == q.tenant.0
                && k.service == q.service
                && (q.builds.is_empty() || q.builds.contains(&k.build))
                && q.endpoint.as_ref().is_none_or(|e| *e == k.endpoint);
            if !wanted {
                map.push(None);
                continue;
            }
            let gk = (k.endpoint.clone(), k.build.clone());
            let g = groups.entry(gk.clone()).or_insert_with(|| CostSamples {
                endpoint: k.endpoint.clone(),
                build: k.build.clone(),
                ..Default::default()
            });
            let host = *host_ids
                .entry((gk.0.clone(), gk.1.clone(), k.host.clone()))
                .or_insert_with(|| {
                    g.hosts.push(k.host.clone());
                    g.hosts.len() as u32 - 1
                });
            let dc = *dc_ids
                .entry((gk.0.clone(), gk.1.clone(), k.dc.clone()))
                .or_insert_with(|| {
                    g.dcs.push(k.dc.clone());
                    g.dcs.len() as u32 - 1
                });
            map.push(Some((gk, host, dc)));
        }
        if map.iter().all(Option::is_none) {
            continue;
        }
        src.for_each_chunk(|rows| {
            for i in 0..rows.len() {
                let ts = rows.ts[i];
                if ts < q.range.from || ts >= q.range.to {
                    continue;
                }
                let Some(Some((gk, host, dc))) = map.get(rows.series[i] as usize) else {
                    continue;
                };
                if let Some(g) = groups.get_mut(gk) {
                    g.rows.push(CostRow {
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
    }
    Ok(groups
        .into_values()
        .filter(|g| !g.rows.is_empty())
        .collect())
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
