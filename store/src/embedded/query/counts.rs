//! Queries that count requests (services, builds). Where a query's range covers a segment
//! whole, they read its per-series totals instead of its rows.

use std::sync::Arc;

use profwatch_model::query::{BuildSummary, BuildsQuery, ServiceSummary, ServicesQuery, TimeRange};

use super::scan::{group_maps, parallel_ordered, wanted, GroupMap, Groups, Work, COUNT_ONLY};
use super::source::Source;
use crate::embedded::segment::{SeriesTotals, Skip};
use crate::StoreError;

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
