//! Cost per function: *self* (the function is the leaf) and *total* (the function is anywhere
//! on the stack, counted once per stack even when recursive), in samples, CPU time and share
//! of all samples with a stack (samples without frames count nowhere).

use std::collections::HashMap;

use profwatch_model::functions::FunctionTotals;
use serde::Serialize;

/// One function's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionCost {
    pub name: String,
    pub self_samples: u64,
    pub total_samples: u64,
    pub self_cpu_ns: u64,
    pub total_cpu_ns: u64,
    /// `self_samples` over all samples (0..=1).
    pub self_share: f64,
    /// `total_samples` over all samples (0..=1).
    pub total_share: f64,
}

/// All functions of a profile and its totals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionTable {
    pub samples: u64,
    pub cpu_ns: u64,
    pub functions: Vec<FunctionCost>,
}

/// Which cost orders the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    SelfCost,
    Total,
}

/// Computes the table from `(frames, samples, cpu_ns)`, ordered by `sort` (then name).
pub fn table<'a>(
    stacks: impl IntoIterator<Item = (&'a [String], u64, u64)>,
    sort: SortBy,
) -> FunctionTable {
    let mut ids: HashMap<&'a str, usize> = HashMap::new();
    let mut rows: Vec<(&'a str, [u64; 4], usize)> = Vec::new();
    let (mut samples, mut cpu_ns) = (0u64, 0u64);
    for (stack_no, (frames, n, c)) in stacks.into_iter().enumerate() {
        // A stack without frames holds no function and is left out of the totals too, so
        // shares are of the samples with a stack (as the stores' function sums count them).
        if frames.is_empty() {
            continue;
        }
        samples = samples.saturating_add(n);
        cpu_ns = cpu_ns.saturating_add(c);
        for (depth, f) in frames.iter().enumerate() {
            let id = *ids.entry(f.as_str()).or_insert_with(|| {
                rows.push((f.as_str(), [0; 4], usize::MAX));
                rows.len() - 1
            });
            let row = &mut rows[id];
            if row.2 != stack_no {
                row.2 = stack_no;
                row.1[1] = row.1[1].saturating_add(n);
                row.1[3] = row.1[3].saturating_add(c);
            }
            if depth + 1 == frames.len() {
                row.1[0] = row.1[0].saturating_add(n);
                row.1[2] = row.1[2].saturating_add(c);
            }
        }
    }
    finish(
        samples,
        cpu_ns,
        rows.into_iter().map(|(name, v, _)| (name.to_owned(), v)),
        sort,
    )
}

/// The table from a store's per-function sums over one range (`Store::function_costs`
/// without a step): all samples are the sum of the self samples, every sample with frames
/// having one leaf; stacks without frames are in no row and, as in [`table`], in no total.
pub fn table_of_totals(rows: Vec<FunctionTotals>, sort: SortBy) -> FunctionTable {
    let samples = rows
        .iter()
        .fold(0u64, |a, r| a.saturating_add(r.self_samples));
    let cpu_ns = rows
        .iter()
        .fold(0u64, |a, r| a.saturating_add(r.self_cpu_ns));
    let named = rows.into_iter().map(|r| {
        let v = [
            r.self_samples,
            r.total_samples,
            r.self_cpu_ns,
            r.total_cpu_ns,
        ];
        (r.function, v)
    });
    finish(samples, cpu_ns, named, sort)
}

/// Shares and order: `v` is self samples, total samples, self CPU, total CPU.
fn finish(
    samples: u64,
    cpu_ns: u64,
    rows: impl Iterator<Item = (String, [u64; 4])>,
    sort: SortBy,
) -> FunctionTable {
    let share = |v: u64| {
        if samples == 0 {
            0.0
        } else {
            v as f64 / samples as f64
        }
    };
    let mut functions: Vec<FunctionCost> = rows
        .map(|(name, v)| FunctionCost {
            name,
            self_samples: v[0],
            total_samples: v[1],
            self_cpu_ns: v[2],
            total_cpu_ns: v[3],
            self_share: share(v[0]),
            total_share: share(v[1]),
        })
        .collect();
    functions.sort_by(|a, b| {
        let key = |f: &FunctionCost| match sort {
            SortBy::SelfCost => (f.self_samples, f.self_cpu_ns),
            SortBy::Total => (f.total_samples, f.total_cpu_ns),
        };
        key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name))
    });
    FunctionTable {
        samples,
        cpu_ns,
        functions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table from per-function sums equals the table from the stacks.
    #[test]
    fn the_table_of_totals_is_the_table_of_the_stacks() {
        use profwatch_model::functions::FunctionSums;
        let s = |f: &str| f.split(';').map(str::to_owned).collect::<Vec<String>>();
        let stacks = [
            (s("main;serve;price"), 5, 50),
            (s("main;price;price"), 2, 20),
            (s("main;render"), 7, 77),
            (s("gc"), 1, 3),
            (Vec::new(), 4, 40),
        ];
        for sort in [SortBy::SelfCost, SortBy::Total] {
            let direct = table(stacks.iter().map(|(f, n, c)| (f.as_slice(), *n, *c)), sort);
            assert_eq!(table_of_totals(sums_rows(&stacks), sort), direct);
        }

        fn sums_rows(stacks: &[(Vec<String>, u64, u64)]) -> Vec<FunctionTotals> {
            let mut sums = FunctionSums::default();
            for (f, n, c) in stacks {
                sums.add_stack(None, f, *n, *c, None);
            }
            sums.into_rows()
        }
    }

    #[test]
    fn recursion_counts_once() {
        let r: Vec<String> = ["main", "f", "f"].iter().map(|s| (*s).to_owned()).collect();
        let m: Vec<String> = vec!["main".to_owned()];
        let t = table(
            [(r.as_slice(), 3, 30), (m.as_slice(), 1, 10)],
            SortBy::Total,
        );
        assert_eq!(t.samples, 4);
        assert_eq!(t.functions[0].name, "main");
        assert_eq!(
            (t.functions[0].total_samples, t.functions[0].self_samples),
            (4, 1)
        );
        assert_eq!(
            (t.functions[1].total_samples, t.functions[1].self_samples),
            (3, 3)
        );
        assert!((t.functions[1].total_share - 0.75).abs() < 1e-9);
    }
}
