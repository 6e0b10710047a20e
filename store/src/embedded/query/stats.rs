//! Queries that answer cost distributions: per endpoint (and group), and per time bucket.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use profwatch_model::query::{
    CostAccumulator, EndpointSeries, EndpointStats, EndpointsQuery, GroupBy, SeriesQuery,
    TimeRange, TimeseriesPoint, TimeseriesQuery,
};
use profwatch_model::timefmt::NANOS_PER_SEC;

use rayon::prelude::*;

use super::scan::{
    group_maps, group_value, parallel, parallel_ordered, wanted, GroupMap, Groups, Work,
};
use super::source::Source;
use crate::embedded::rollup::{
    endpoint_ids, per_endpoint, Builder, EndpointBuilder, RowSink, SegmentRollup, HOUR_NS,
    MAX_SHARE, MINUTE_NS,
};
use crate::embedded::segment::{Projection, Skip};
use crate::StoreError;

pub fn endpoints(
    sources: &[Source],
    q: &EndpointsQuery,
    threads: usize,
    rollups: bool,
) -> Result<Vec<EndpointStats>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service)
            .then(|| groups.id(&k.endpoint, group_value(k, q.group_by)))
    });
    let rolls = usable_rollups(sources, &maps, q.range, None, rollups, threads)?;
    let mut acc = scan_grouped(sources, &unrolled(&maps, &rolls), q.range, threads)?;
    add_rolled(&mut acc, &rolls, |g, _| g);
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
    rollups: bool,
) -> Result<Vec<TimeseriesPoint>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service && k.endpoint == q.endpoint)
            .then(|| groups.id(group_value(k, q.group_by).unwrap_or(""), None))
    });
    let acc = bucketed(sources, &maps, q.range, q.step, threads, rollups)?;
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

/// Accumulates per (group, time bucket of `step` ns), for the series each map keeps: from
/// the rollups of the segments that can use them, else from rows.
fn bucketed(
    sources: &[Source],
    maps: &[GroupMap],
    range: TimeRange,
    step: i64,
    threads: usize,
    rollups: bool,
) -> Result<HashMap<(u32, i64), CostAccumulator>, StoreError> {
    let step = step.max(1);
    let rolls = usable_rollups(sources, maps, range, Some(step), rollups, threads)?;
    let mut acc = scan_bucketed(sources, &unrolled(maps, &rolls), range, step, threads)?;
    add_rolled(&mut acc, &rolls, |g, start| {
        (g, start.div_euclid(step) * step)
    });
    Ok(acc)
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

/// Every endpoint's series of a service.
pub fn endpoint_series(
    sources: &[Source],
    q: &SeriesQuery,
    threads: usize,
    rollups: bool,
) -> Result<Vec<EndpointSeries>, StoreError> {
    let mut groups = Groups::default();
    let maps = group_maps(sources, |k| {
        (k.tenant == q.tenant.0 && k.service == q.service).then(|| groups.id(&k.endpoint, None))
    });
    let acc = bucketed(sources, &maps, q.range, q.step, threads, rollups)?;
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

/// A rollup a query reads instead of a segment's rows, with the map from its cells' keys to
/// the query's groups (the query's own series map for the series rollup).
type Rolled<'m> = Option<(Arc<SegmentRollup>, Cow<'m, [Option<u32>]>)>;

/// Each source's rollup when the query reads it instead of the rows: a segment lying wholly
/// inside `range`, holding a wanted series, whose rollup is worth keeping, and (for time
/// buckets) a `step` of whole minutes. The rollup per endpoint and hour is preferred where the
/// query's map gives all series of an endpoint and build one group (and a step, if any, is of
/// whole hours); else the rollup per series and minute. Rollups a segment lacks (opened from
/// disk, or per endpoint) are built here once, on every core, and kept.
fn usable_rollups<'m>(
    sources: &[Source],
    maps: &'m [GroupMap],
    range: TimeRange,
    step: Option<i64>,
    rollups: bool,
    threads: usize,
) -> Result<Vec<Rolled<'m>>, StoreError> {
    let usable = rollups && step.is_none_or(|s| s > 0 && s % MINUTE_NS == 0);
    let hourly = usable && step.is_none_or(|s| s % HOUR_NS == 0);
    let covered = |(s, m): (&Source, &GroupMap)| match s {
        Source::Segment(seg)
            if usable
                && range.from <= seg.min_ts
                && seg.max_ts < range.to
                && m.iter().any(Option::is_some) =>
        {
            Some(seg.clone())
        }
        _ => None,
    };
    let mut out: Vec<Rolled<'m>> = vec![None; sources.len()];
    if hourly {
        // The endpoint id of each covered segment's series, and the query's map per endpoint id.
        let mut per_endpoint_maps: Vec<Option<(Vec<u32>, GroupMap)>> = sources
            .iter()
            .zip(maps)
            .map(|pair| {
                let seg = covered(pair)?;
                match seg.endpoint_rollup() {
                    Some(Some(r)) => {
                        return Some((Vec::new(), per_endpoint(&r.of_series, pair.1)?))
                    }
                    Some(None) => return None,
                    None => {}
                }
                let ids = endpoint_ids(&seg.series);
                let m = per_endpoint(&ids, pair.1)?;
                Some((ids, m))
            })
            .collect();
        let missing: Vec<(Source, &[u32])> = sources
            .iter()
            .zip(&per_endpoint_maps)
            .filter_map(|(src, p)| match (src, p) {
                (Source::Segment(seg), Some((ids, _))) if seg.endpoint_rollup().is_none() => {
                    Some((Source::Segment(seg.clone()), ids.as_slice()))
                }
                _ => None,
            })
            .collect();
        if !missing.is_empty() {
            let parts = parallel_ordered(&missing, threads, |(src, ids), part, parts| {
                let mut b = EndpointBuilder::new(ids, segment_rows(src) / MAX_SHARE);
                roll_part(src, part, parts, &mut b)?;
                Ok(b)
            })?;
            let mut parts = parts.into_iter();
            for (src, ids) in &missing {
                let Source::Segment(seg) = src else {
                    continue;
                };
                let mut whole = EndpointBuilder::new(ids, seg.rows / MAX_SHARE);
                for part in parts.by_ref().take(src.parts(threads)) {
                    whole.merge(part);
                }
                seg.keep_endpoint_rollup(ids.to_vec(), whole.finish());
            }
        }
        for ((src, slot), p) in sources.iter().zip(&mut out).zip(&mut per_endpoint_maps) {
            let (Source::Segment(seg), Some((_, m))) = (src, p) else {
                continue;
            };
            if let Some(Some(r)) = seg.endpoint_rollup() {
                *slot = Some((r.cells.clone(), Cow::Owned(std::mem::take(m))));
            }
        }
    }
    let missing: Vec<Source> = sources
        .iter()
        .zip(maps)
        .zip(&out)
        .filter(|(_, rolled)| rolled.is_none())
        .filter_map(|(pair, _)| covered(pair))
        .filter(|seg| seg.rollup().is_none())
        .map(Source::Segment)
        .collect();
    if !missing.is_empty() {
        let parts = parallel_ordered(&missing, threads, |src, part, parts| {
            let mut b = Builder::with_limit(segment_rows(src) / MAX_SHARE);
            roll_part(src, part, parts, &mut b)?;
            Ok(b.finish())
        })?;
        let mut parts = parts.into_iter();
        for src in &missing {
            let Source::Segment(seg) = src else {
                continue;
            };
            let mut whole = SegmentRollup::default();
            for part in parts.by_ref().take(src.parts(threads)) {
                whole.append(part);
            }
            seg.keep_rollup(whole);
        }
    }
    for (pair, slot) in sources.iter().zip(maps).zip(&mut out) {
        if slot.is_none() {
            *slot = covered(pair)
                .and_then(|seg| seg.rollup().flatten())
                .map(|r| (r, Cow::Borrowed(pair.1.as_slice())));
        }
    }
    Ok(out)
}

/// The rows of a segment (0 for a memtable).
fn segment_rows(src: &Source) -> u64 {
    match src {
        Source::Segment(seg) => seg.rows,
        _ => 0,
    }
}

/// Pushes every row of part `part` of `parts` of `src` into `b`.
fn roll_part(
    src: &Source,
    part: usize,
    parts: usize,
    b: &mut impl RowSink,
) -> Result<(), StoreError> {
    src.for_each_chunk_part(
        part,
        parts,
        Projection::default(),
        &Skip::default(),
        |rows| b.push_rows(rows),
    )
}

/// The maps of the sources that are scanned row by row (empty for those read from rollups).
fn unrolled(maps: &[GroupMap], rolls: &[Rolled<'_>]) -> Vec<GroupMap> {
    maps.iter()
        .zip(rolls)
        .map(|(m, r)| if r.is_some() { Vec::new() } else { m.clone() })
        .collect()
}

/// Adds the cells of every rollup to `acc`, under the key `key(group, start)` of each cell
/// whose series (or endpoint) the rollup's map keeps, `start` being the start of the cell's
/// minute or hour; segments on rayon's pool, merged once.
fn add_rolled<K>(
    acc: &mut HashMap<K, CostAccumulator>,
    rolls: &[Rolled<'_>],
    key: impl Fn(u32, i64) -> K + Sync,
) where
    K: std::hash::Hash + Eq + Send,
{
    let partials: Vec<HashMap<K, CostAccumulator>> = rolls
        .iter()
        .flatten()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|(roll, map)| {
            let mut out: HashMap<K, CostAccumulator> = HashMap::new();
            for cell in &roll.cells {
                if let Some(Some(g)) = map.get(cell.series as usize) {
                    roll.add_to(cell, out.entry(key(*g, cell.minute)).or_default());
                }
            }
            out
        })
        .collect();
    for p in partials {
        for (k, v) in p {
            acc.entry(k).or_default().merge(&v);
        }
    }
}
