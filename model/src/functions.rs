//! Cost per function over stack samples, per time bucket: what `top`, `function_series` and
//! the per-function rollups of both stores answer with.
//!
//! A function's *self* cost is that of the samples whose leaf it is; its *total* cost is that
//! of the samples with it anywhere on the stack, counted once per sample even when the stack
//! recurses. Both are sums, so per-minute rows add up to any range of whole minutes, which is
//! what lets a rollup of them stand in for the samples. A stack without frames holds no
//! function and counts in no row.

use std::collections::{HashMap, HashSet};

use crate::event::Tenant;
use crate::query::TimeRange;

/// Which samples a function query sums: a service's in a range, optionally of one endpoint,
/// one build, one function, per bucket of `step`.
#[derive(Debug, Clone)]
pub struct FunctionQuery {
    pub tenant: Tenant,
    pub service: String,
    pub range: TimeRange,
    pub endpoint: Option<String>,
    pub build: Option<String>,
    /// One function's rows only.
    pub function: Option<String>,
    /// Bucket width in ns (buckets start at its multiples); `None`: one total for the range.
    pub step: Option<i64>,
}

/// One function's samples and CPU time in one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FunctionTotals {
    /// Start of the bucket (unix ns, a multiple of the step); `None` without a step.
    pub time: Option<i64>,
    pub function: String,
    pub self_samples: u64,
    pub self_cpu_ns: u64,
    pub total_samples: u64,
    pub total_cpu_ns: u64,
}

impl FunctionQuery {
    /// The bucket of a sample at `ts`.
    pub fn bucket(&self, ts: i64) -> Option<i64> {
        self.step.map(|s| ts - ts.rem_euclid(s.max(1)))
    }

    /// Whether a sample of this endpoint and build is wanted (the tenant and service are the
    /// caller's to check).
    pub fn wants(&self, endpoint: &str, build: &str) -> bool {
        self.endpoint.as_deref().is_none_or(|e| e == endpoint)
            && self.build.as_deref().is_none_or(|b| b == build)
    }
}

/// Each function of `frames` once, with whether it is the leaf. Shallow stacks compare
/// frames pairwise; deep ones (recursive interpreters send hundreds of frames) use a set.
pub fn distinct_functions(frames: &[String]) -> impl Iterator<Item = (&str, bool)> {
    const PAIRWISE_UP_TO: usize = 24;
    let leaf = frames.last().map(String::as_str);
    let mut seen: HashSet<&str> = HashSet::new();
    frames.iter().enumerate().filter_map(move |(i, f)| {
        let first = if frames.len() <= PAIRWISE_UP_TO {
            !frames[..i].contains(f)
        } else {
            seen.insert(f.as_str())
        };
        first.then_some((f.as_str(), Some(f.as_str()) == leaf))
    })
}

/// Adds `samples` taking `cpu_ns` of one stack to a function's sums (self samples, self CPU
/// ns, total samples, total CPU ns): to self too when the function is the stack's leaf.
pub fn add_to_sums(v: &mut [u64; 4], is_self: bool, samples: u64, cpu_ns: u64) {
    if is_self {
        v[0] = v[0].saturating_add(samples);
        v[1] = v[1].saturating_add(cpu_ns);
    }
    v[2] = v[2].saturating_add(samples);
    v[3] = v[3].saturating_add(cpu_ns);
}

/// Sums per (bucket, function).
#[derive(Debug, Default)]
pub struct FunctionSums {
    by_bucket: HashMap<Option<i64>, HashMap<String, [u64; 4]>>,
}

impl FunctionSums {
    /// Adds `samples` of a stack taking `cpu_ns`, in bucket `time`; with `only`, just that
    /// function's row.
    pub fn add_stack(
        &mut self,
        time: Option<i64>,
        frames: &[String],
        samples: u64,
        cpu_ns: u64,
        only: Option<&str>,
    ) {
        let rows = self.by_bucket.entry(time).or_default();
        for (f, is_self) in distinct_functions(frames) {
            if only.is_some_and(|o| o != f) {
                continue;
            }
            let v = match rows.get_mut(f) {
                Some(v) => v,
                None => rows.entry(f.to_owned()).or_default(),
            };
            add_to_sums(v, is_self, samples, cpu_ns);
        }
    }

    /// Adds a row computed elsewhere (a rollup's).
    pub fn add(&mut self, t: &FunctionTotals) {
        self.add_sums(
            t.time,
            &t.function,
            [
                t.self_samples,
                t.self_cpu_ns,
                t.total_samples,
                t.total_cpu_ns,
            ],
        );
    }

    /// Adds self samples, self CPU ns, total samples and total CPU ns of `function` in `time`.
    pub fn add_sums(&mut self, time: Option<i64>, function: &str, sums: [u64; 4]) {
        let rows = self.by_bucket.entry(time).or_default();
        let v = match rows.get_mut(function) {
            Some(v) => v,
            None => rows.entry(function.to_owned()).or_default(),
        };
        for (slot, x) in v.iter_mut().zip(sums) {
            *slot = slot.saturating_add(x);
        }
    }

    /// Adds every row of `other`.
    pub fn merge(&mut self, other: FunctionSums) {
        for (time, rows) in other.by_bucket {
            for (function, sums) in rows {
                self.add_sums(time, &function, sums);
            }
        }
    }

    /// The rows, sorted by bucket, then function.
    pub fn into_rows(self) -> Vec<FunctionTotals> {
        let mut out: Vec<FunctionTotals> = self
            .by_bucket
            .into_iter()
            .flat_map(|(time, rows)| {
                rows.into_iter().map(move |(function, v)| FunctionTotals {
                    time,
                    function,
                    self_samples: v[0],
                    self_cpu_ns: v[1],
                    total_samples: v[2],
                    total_cpu_ns: v[3],
                })
            })
            .collect();
        out.sort_unstable_by(|a, b| {
            a.time
                .cmp(&b.time)
                .then_with(|| a.function.cmp(&b.function))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| (*f).to_owned()).collect()
    }

    fn row(rows: &[FunctionTotals], f: &str) -> (u64, u64, u64, u64) {
        rows.iter()
            .find(|r| r.function == f)
            .map(|r| {
                (
                    r.self_samples,
                    r.self_cpu_ns,
                    r.total_samples,
                    r.total_cpu_ns,
                )
            })
            .unwrap_or_default()
    }

    #[test]
    fn self_is_the_leaf_and_total_counts_a_recursive_stack_once() {
        let mut s = FunctionSums::default();
        s.add_stack(None, &stack(&["main", "serve", "price"]), 5, 50, None);
        s.add_stack(None, &stack(&["main", "price", "round"]), 3, 30, None);
        s.add_stack(None, &stack(&["main", "price", "price"]), 2, 20, None);
        s.add_stack(None, &stack(&["main", "render"]), 7, 70, None);
        s.add_stack(None, &[], 11, 110, None);
        let rows = s.into_rows();
        assert_eq!(row(&rows, "price"), (7, 70, 10, 100));
        assert_eq!(row(&rows, "main"), (0, 0, 17, 170));
        assert_eq!(row(&rows, "round"), (3, 30, 3, 30));
        assert_eq!(rows.len(), 5, "main, price, render, round, serve");
    }

    #[test]
    fn deep_recursive_stacks_count_each_function_once() {
        let mut frames = stack(&["main"]);
        for _ in 0..200 {
            frames.extend(stack(&["eval", "apply"]));
        }
        frames.push("eval".to_owned());
        let mut s = FunctionSums::default();
        s.add_stack(None, &frames, 1, 9, None);
        let rows = s.into_rows();
        assert_eq!(row(&rows, "eval"), (1, 9, 1, 9));
        assert_eq!(row(&rows, "apply"), (0, 0, 1, 9));
        assert_eq!(row(&rows, "main"), (0, 0, 1, 9));
    }

    #[test]
    fn buckets_and_one_function() {
        let q = FunctionQuery {
            tenant: Tenant("t".into()),
            service: "s".into(),
            range: TimeRange { from: 0, to: 100 },
            endpoint: None,
            build: None,
            function: Some("f".into()),
            step: Some(10),
        };
        assert_eq!(q.bucket(25), Some(20));
        assert_eq!(q.bucket(-1), Some(-10));
        let mut s = FunctionSums::default();
        s.add_stack(q.bucket(25), &stack(&["main", "f"]), 1, 1, Some("f"));
        s.add_stack(q.bucket(29), &stack(&["f", "g"]), 2, 2, Some("f"));
        s.add_stack(q.bucket(31), &stack(&["f"]), 4, 4, Some("f"));
        let rows = s.into_rows();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].time, rows[0].self_samples, rows[0].total_samples),
            (Some(20), 1, 3)
        );
        assert_eq!(rows[1].time, Some(30));
        let mut merged = FunctionSums::default();
        for r in &rows {
            merged.add(r);
            merged.add(r);
        }
        assert_eq!(merged.into_rows()[1].total_cpu_ns, 8);
    }
}
