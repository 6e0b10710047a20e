//! Queries that answer cost distributions: per endpoint (and group), and per time bucket.

use std::collections::{BTreeMap, HashMap};

use profwatch_model::query::{
    CostAccumulator, EndpointSeries, EndpointStats, EndpointsQuery, GroupBy, SeriesQuery,
    TimeRange, TimeseriesPoint, TimeseriesQuery,
};
use profwatch_model::timefmt::NANOS_PER_SEC;

use super::scan::{group_maps, group_value, parallel, wanted, GroupMap, Groups, Work};
use super::source::Source;
use crate::embedded::segment::Projection;
use crate::StoreError;

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
