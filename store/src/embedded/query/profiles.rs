//! Stack profiles: samples summed per (label set, stack) over a range, with each stack's
//! frames.

use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Arc;

use profwatch_model::profile::{ProfileQuery, ProfileRow, SampleLabels, StackProfile};
use profwatch_model::query::TimeRange;

use super::source::Source;
use crate::embedded::memtable::{SeriesKey, Stacks};
use crate::StoreError;

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
pub fn profile(sources: &[Source], q: &ProfileQuery) -> Result<StackProfile, StoreError> {
    let (set_names, work) = label_sets(sources, q);
    let (totals, frames, span) = sum_samples(&work, q.range)?;
    let mut rows: Vec<ProfileRow> = totals
        .into_iter()
        .filter_map(|((set, stack), (samples, cpu_ns))| {
            let f = frames.get(&stack)?;
            Some(ProfileRow {
                labels: set_names[set as usize].clone(),
                frames: Arc::clone(f),
                samples,
                cpu_ns,
            })
        })
        .collect();
    StackProfile::sort_rows(&mut rows);
    Ok(StackProfile {
        rows,
        span: span.map(|(first, last)| TimeRange {
            from: first,
            to: last.saturating_add(1),
        }),
    })
}

/// A source to read and, per series, its label set (`None`: filtered out).
type Work<'a> = (&'a Source, Vec<Option<u32>>);

/// Samples and CPU time per (label set, stack).
type Totals = HashMap<(u32, u128), (u64, u64)>;

/// The first and last time of the samples summed.
type Span = Option<(i64, i64)>;

fn widen(span: Span, other: Span) -> Span {
    match (span, other) {
        (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
        (a, b) => a.or(b),
    }
}

/// The label sets of the series the query wants, and the sources holding any of them in range.
/// Label sets are interned by their labels so that series from different sources merge.
fn label_sets<'a>(sources: &'a [Source], q: &ProfileQuery) -> (Vec<SampleLabels>, Vec<Work<'a>>) {
    let mut sets: HashMap<SampleLabels, u32> = HashMap::new();
    let mut set_names: Vec<SampleLabels> = Vec::new();
    let mut work: Vec<Work<'a>> = Vec::new();
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
    (set_names, work)
}

/// Sums the samples in `range` of every source, on rayon's pool, and collects the frames of
/// every stack seen.
fn sum_samples(work: &[Work<'_>], range: TimeRange) -> Result<(Totals, Stacks, Span), StoreError> {
    work.par_iter()
        .map(|w| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                sum_part(std::slice::from_ref(w), range)
            }))
            .unwrap_or_else(|_| Err(StoreError::Query("a scan panicked".into())))
        })
        .try_reduce(
            || (HashMap::new(), HashMap::new(), None),
            |(mut totals, mut frames, span), (t, f, s)| {
                for (k, v) in t {
                    let e = totals.entry(k).or_default();
                    e.0 += v.0;
                    e.1 += v.1;
                }
                frames.extend(f);
                Ok((totals, frames, widen(span, s)))
            },
        )
}

/// A share of [`sum_samples`]: some sources' samples.
fn sum_part(part: &[Work<'_>], range: TimeRange) -> Result<(Totals, Stacks, Span), StoreError> {
    let mut totals: Totals = HashMap::new();
    let mut frames: Stacks = HashMap::new();
    let mut span: Span = None;
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
                    span = widen(span, Some((ts, ts)));
                }
            },
            &mut frames,
        )?;
    }
    Ok((totals, frames, span))
}
