//! Cost per function: *self* (the function is the leaf) and *total* (the function is anywhere
//! on the stack, counted once per stack even when recursive), in samples, CPU time and share
//! of all samples.

use std::collections::HashMap;

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
    let share = |v: u64| {
        if samples == 0 {
            0.0
        } else {
            v as f64 / samples as f64
        }
    };
    let mut functions: Vec<FunctionCost> = rows
        .into_iter()
        .map(|(name, v, _)| FunctionCost {
            name: name.to_owned(),
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
