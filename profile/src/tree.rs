//! The flame-graph tree the dashboard draws: nested `{name, self, total, children}` with
//! samples and CPU time per node.
//!
//! Invariants: a node's `total` is its `self` plus its children's totals *before* pruning;
//! pruning keeps the `max_nodes` nodes with the largest totals such that every kept node's
//! parent is kept (the root always is), so what is dropped is always the thinnest frames, and
//! the answer says how many were dropped. Children are sorted by name.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use serde::Serialize;

/// One frame in context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlameNode {
    pub name: String,
    /// Samples with this frame as the leaf.
    #[serde(rename = "self")]
    pub self_samples: u64,
    /// Samples with this frame on the stack (at this position).
    pub total: u64,
    pub self_cpu_ns: u64,
    pub total_cpu_ns: u64,
    pub children: Vec<FlameNode>,
}

/// The tree and how much of it was pruned.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlameTree {
    /// Nodes in the answer, the root included.
    pub nodes: usize,
    /// Nodes dropped by `max_nodes`.
    pub pruned: usize,
    pub root: FlameNode,
}

struct ArenaNode {
    name: u32,
    self_n: u64,
    total_n: u64,
    self_c: u64,
    total_c: u64,
    children: Vec<u32>,
}

/// Builds the tree from `(frames root-first, samples, cpu_ns)`, keeping at most `max_nodes`.
pub fn build<'a>(
    stacks: impl IntoIterator<Item = (&'a [String], u64, u64)>,
    max_nodes: usize,
) -> FlameTree {
    let mut names: Vec<&'a str> = vec!["all"];
    let mut name_ids: HashMap<&'a str, u32> = HashMap::new();
    let mut arena = vec![ArenaNode {
        name: 0,
        self_n: 0,
        total_n: 0,
        self_c: 0,
        total_c: 0,
        children: Vec::new(),
    }];
    let mut child_of: HashMap<(u32, u32), u32> = HashMap::new();
    for (frames, n, c) in stacks {
        let mut at = 0u32;
        add(&mut arena[0], n, c, frames.is_empty());
        for (depth, frame) in frames.iter().enumerate() {
            let name = *name_ids.entry(frame.as_str()).or_insert_with(|| {
                names.push(frame.as_str());
                (names.len() - 1) as u32
            });
            let next = match child_of.get(&(at, name)) {
                Some(i) => *i,
                None => {
                    let i = arena.len() as u32;
                    arena.push(ArenaNode {
                        name,
                        self_n: 0,
                        total_n: 0,
                        self_c: 0,
                        total_c: 0,
                        children: Vec::new(),
                    });
                    arena[at as usize].children.push(i);
                    child_of.insert((at, name), i);
                    i
                }
            };
            add(&mut arena[next as usize], n, c, depth + 1 == frames.len());
            at = next;
        }
    }

    // Keep the heaviest nodes whose parents are kept.
    let max_nodes = max_nodes.max(1);
    let mut keep = vec![false; arena.len()];
    keep[0] = true;
    let mut kept = 1;
    let mut heap: BinaryHeap<(u64, u64, Reverse<u32>)> = arena[0]
        .children
        .iter()
        .map(|&i| {
            (
                arena[i as usize].total_n,
                arena[i as usize].total_c,
                Reverse(i),
            )
        })
        .collect();
    while kept < max_nodes {
        let Some((_, _, Reverse(i))) = heap.pop() else {
            break;
        };
        keep[i as usize] = true;
        kept += 1;
        for &c in &arena[i as usize].children {
            heap.push((
                arena[c as usize].total_n,
                arena[c as usize].total_c,
                Reverse(c),
            ));
        }
    }

    // Children always come after their parent in the arena, so building backwards sees every
    // child before its parent.
    let mut built: Vec<Option<FlameNode>> = Vec::with_capacity(arena.len());
    built.resize_with(arena.len(), || None);
    for i in (0..arena.len()).rev() {
        if !keep[i] {
            continue;
        }
        let a = &arena[i];
        let mut children: Vec<FlameNode> = a
            .children
            .iter()
            .filter_map(|&c| built[c as usize].take())
            .collect();
        children.sort_by(|x, y| x.name.cmp(&y.name));
        built[i] = Some(FlameNode {
            name: names[a.name as usize].to_owned(),
            self_samples: a.self_n,
            total: a.total_n,
            self_cpu_ns: a.self_c,
            total_cpu_ns: a.total_c,
            children,
        });
    }
    let root = built[0].take().unwrap_or(FlameNode {
        name: "all".into(),
        self_samples: 0,
        total: 0,
        self_cpu_ns: 0,
        total_cpu_ns: 0,
        children: Vec::new(),
    });
    FlameTree {
        nodes: kept,
        pruned: arena.len() - kept,
        root,
    }
}

fn add(node: &mut ArenaNode, n: u64, c: u64, leaf: bool) {
    node.total_n = node.total_n.saturating_add(n);
    node.total_c = node.total_c.saturating_add(c);
    if leaf {
        node.self_n = node.self_n.saturating_add(n);
        node.self_c = node.self_c.saturating_add(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn totals_and_pruning() {
        let a = s(&["main", "a"]);
        let b = s(&["main", "b"]);
        let m = s(&["main"]);
        let stacks = [
            (a.as_slice(), 10, 100),
            (b.as_slice(), 1, 10),
            (m.as_slice(), 2, 20),
        ];
        let t = build(stacks, 100);
        assert_eq!((t.nodes, t.pruned), (4, 0));
        assert_eq!(t.root.total, 13);
        let main = &t.root.children[0];
        assert_eq!(
            (main.self_samples, main.total, main.total_cpu_ns),
            (2, 13, 130)
        );
        assert_eq!(main.children[0].name, "a");
        let t = build(stacks, 3);
        assert_eq!((t.nodes, t.pruned), (3, 1));
        assert_eq!(
            t.root.children[0].children.len(),
            1,
            "b, the thinnest, is pruned"
        );
    }
}
