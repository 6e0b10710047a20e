//! Cost per function: each source's samples of the wanted series summed per (bucket, stack),
//! then each stack's functions added up; a segment that lies wholly inside the range gives its
//! function rollup's cells instead (`function_rollup.rs`).

use std::collections::HashMap;

use foldhash::fast::RandomState;
use profwatch_model::functions::{FunctionQuery, FunctionSums, FunctionTotals};
use rayon::prelude::*;

use super::source::Source;
use crate::embedded::memtable::Stacks;
use crate::StoreError;

pub fn function_costs(
    sources: &[Source],
    q: &FunctionQuery,
    rollups: bool,
) -> Result<Vec<FunctionTotals>, StoreError> {
    let work: Vec<&Source> = sources
        .iter()
        .filter(|s| s.profile_overlaps(q.range))
        .collect();
    let sums = work
        .par_iter()
        .map(|src| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| one(src, q, rollups)))
                .unwrap_or_else(|_| Err(StoreError::Query("a scan panicked".into())))
        })
        .try_reduce(FunctionSums::default, |mut a, b| {
            a.merge(b);
            Ok(a)
        })?;
    Ok(sums.into_rows())
}

/// One source's sums: from its rollup when it has a usable one, else from its samples.
fn one(src: &Source, q: &FunctionQuery, rollups: bool) -> Result<FunctionSums, StoreError> {
    let mut out = FunctionSums::default();
    let wanted: Vec<bool> = src
        .profile_keys()
        .iter()
        .map(|k| k.tenant == q.tenant.0 && k.service == q.service && q.wants(&k.endpoint, &k.build))
        .collect();
    if !wanted.contains(&true) {
        return Ok(out);
    }
    if rollups {
        if let Some(r) = src.function_rollup(q) {
            r.add_to(q, &mut out);
            return Ok(out);
        }
    }
    let mut per_stack: HashMap<(Option<i64>, u128), (u64, u64), RandomState> = HashMap::default();
    let mut frames: Stacks = HashMap::new();
    src.for_each_sample_chunk(
        |rows| {
            for i in 0..rows.len() {
                let ts = rows.ts[i];
                if ts < q.range.from
                    || ts >= q.range.to
                    || !wanted
                        .get(rows.series[i] as usize)
                        .copied()
                        .unwrap_or(false)
                {
                    continue;
                }
                let e = per_stack.entry((q.bucket(ts), rows.stack[i])).or_default();
                e.0 = e.0.saturating_add(rows.samples[i]);
                e.1 = e.1.saturating_add(rows.cpu_ns[i]);
            }
        },
        &mut frames,
    )?;
    for ((time, stack), (n, c)) in per_stack {
        if let Some(f) = frames.get(&stack) {
            out.add_stack(time, f, n, c, q.function.as_deref());
        }
    }
    Ok(out)
}
