//! The analyzer's read: every request's cost per (endpoint, build), in source order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use profwatch_model::query::{CostRow, CostSamples, CostSamplesQuery};

use super::scan::{parallel_ordered, wanted, Work};
use super::source::Source;
use crate::embedded::memtable::SeriesKey;
use crate::embedded::segment::Projection;
use crate::StoreError;

/// Per-request costs per (endpoint, build), rows in source order.
pub fn cost_samples(
    sources: &[Source],
    q: &CostSamplesQuery,
    threads: usize,
) -> Result<Vec<CostSamples>, StoreError> {
    let (mut out, maps) = cost_groups(sources, q);
    let range = q.range;
    let n = out.len();
    let mut parts = parallel_ordered(
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

/// Per series of a source: its group, and its host and dc indices within the group; `None`
/// when the query leaves the series out.
type CostMap = Vec<Option<(u32, u32, u32)>>;

/// The (endpoint, build) groups the query wants, without rows yet, and each source's map of its
/// series into them (empty for a source out of range).
fn cost_groups(sources: &[Source], q: &CostSamplesQuery) -> (Vec<CostSamples>, Vec<CostMap>) {
    let keys: Vec<Cow<'_, [Arc<SeriesKey>]>> = sources.iter().map(Source::keys).collect();
    let mut out: Vec<CostSamples> = Vec::new();
    let mut group_ids: HashMap<(&str, &str), u32> = HashMap::new();
    // Host and dc indices within each group.
    let mut host_ids: HashMap<(u32, &str), u32> = HashMap::new();
    let mut dc_ids: HashMap<(u32, &str), u32> = HashMap::new();
    // Per source and series: (group, host index, dc index), or `None` when filtered out.
    let mut maps: Vec<CostMap> = Vec::with_capacity(sources.len());
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
    (out, maps)
}
