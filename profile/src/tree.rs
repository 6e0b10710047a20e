//! The flame-graph tree the dashboard draws: nested `{name, self, total, children}` with
//! samples and CPU time per node.
//!
//! Invariants: a node's `total` is its `self` plus its children's totals *before* pruning;
//! pruning keeps the `max_nodes` nodes with the largest totals such that every kept node's
//! parent is kept (the root always is), so what is dropped is always the thinnest frames, and
//! the answer says how many were dropped. Children are sorted by name.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

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

/// A node met while building: the stacks through it are `stacks[lo..hi]` (sorted by frames,
/// so every node's stacks are contiguous), its frame is at `depth - 1`.
struct Candidate {
    lo: usize,
    hi: usize,
    depth: usize,
    /// The earliest input position among its stacks: ties between equal totals go to the node
    /// met first in the input.
    first: usize,
    self_n: u64,
    self_c: u64,
    total_n: u64,
    total_c: u64,
}

/// A kept node and where it hangs.
struct Kept<'a> {
    parent: usize,
    name: &'a str,
    c: Candidate,
}

/// Builds the tree from `(frames root-first, samples, cpu_ns)`, keeping at most `max_nodes`.
///
/// Pruned while it is built: the stacks are sorted by frames (each node's stacks are then one
/// run), and nodes are expanded heaviest first from the root; only the kept nodes and the
/// children of kept nodes are ever made. Memory is the input's references plus `max_nodes` and
/// the pending children, never a node per frame; the total node count is counted from the
/// sorted stacks without making the nodes.
pub fn build<'a>(
    stacks: impl IntoIterator<Item = (&'a [String], u64, u64)>,
    max_nodes: usize,
) -> FlameTree {
    let mut stacks: Vec<(&'a [String], u64, u64, usize)> = stacks
        .into_iter()
        .enumerate()
        .map(|(i, (f, n, c))| (f, n, c, i))
        .collect();
    // Stable, and linear on the sorted input `StackProfile::merged` gives.
    stacks.sort_by(|a, b| a.0.cmp(b.0));
    let all = candidate(&stacks, 0, stacks.len(), 0);
    let max_nodes = max_nodes.max(1);
    let mut kept: Vec<Kept<'a>> = vec![Kept {
        parent: 0,
        name: "all",
        c: all,
    }];
    let mut heap: BinaryHeap<(u64, u64, Reverse<usize>, usize)> = BinaryHeap::new();
    // Pending children, by heap entry; a child is made when its parent is kept.
    let mut pending: Vec<Option<(usize, &'a str, Candidate)>> = Vec::new();
    let expand = |at: usize,
                  kept: &[Kept<'a>],
                  heap: &mut BinaryHeap<(u64, u64, Reverse<usize>, usize)>,
                  pending: &mut Vec<Option<(usize, &'a str, Candidate)>>| {
        let (lo, hi, depth) = (kept[at].c.lo, kept[at].c.hi, kept[at].c.depth);
        let mut i = lo;
        while i < hi {
            let Some(name) = stacks[i].0.get(depth) else {
                i += 1;
                continue;
            };
            let mut j = i + 1;
            while j < hi && stacks[j].0.get(depth) == Some(name) {
                j += 1;
            }
            let c = candidate(&stacks, i, j, depth + 1);
            heap.push((c.total_n, c.total_c, Reverse(c.first), pending.len()));
            pending.push(Some((at, name.as_str(), c)));
            i = j;
        }
    };
    expand(0, &kept, &mut heap, &mut pending);
    while kept.len() < max_nodes {
        let Some((_, _, _, slot)) = heap.pop() else {
            break;
        };
        let Some((parent, name, c)) = pending[slot].take() else {
            continue;
        };
        kept.push(Kept { parent, name, c });
        expand(kept.len() - 1, &kept, &mut heap, &mut pending);
    }
    drop(pending);

    // Parents are kept before their children, so building backwards sees every child first.
    let mut children: Vec<Vec<FlameNode>> = (0..kept.len()).map(|_| Vec::new()).collect();
    for i in (0..kept.len()).rev() {
        let k = &kept[i];
        let mut mine = std::mem::take(&mut children[i]);
        mine.sort_by(|x, y| x.name.cmp(&y.name));
        let node = FlameNode {
            name: k.name.to_owned(),
            self_samples: k.c.self_n,
            total: k.c.total_n,
            self_cpu_ns: k.c.self_c,
            total_cpu_ns: k.c.total_c,
            children: mine,
        };
        if i == 0 {
            return FlameTree {
                nodes: kept.len(),
                pruned: node_count(&stacks) - kept.len(),
                root: node,
            };
        }
        children[k.parent].push(node);
    }
    unreachable!("the root is always kept")
}

/// The node for `stacks[lo..hi]`, which share their first `depth` frames.
fn candidate(
    stacks: &[(&[String], u64, u64, usize)],
    lo: usize,
    hi: usize,
    depth: usize,
) -> Candidate {
    let mut c = Candidate {
        lo,
        hi,
        depth,
        first: usize::MAX,
        self_n: 0,
        self_c: 0,
        total_n: 0,
        total_c: 0,
    };
    for (frames, n, cpu, i) in &stacks[lo..hi] {
        c.first = c.first.min(*i);
        c.total_n = c.total_n.saturating_add(*n);
        c.total_c = c.total_c.saturating_add(*cpu);
        if frames.len() == depth {
            c.self_n = c.self_n.saturating_add(*n);
            c.self_c = c.self_c.saturating_add(*cpu);
        }
    }
    c
}

/// Nodes in the whole tree, the root included: each sorted stack adds the frames past what it
/// shares with the one before.
fn node_count(stacks: &[(&[String], u64, u64, usize)]) -> usize {
    let mut count = 1;
    let mut prev: &[String] = &[];
    for (frames, ..) in stacks {
        let shared = prev
            .iter()
            .zip(frames.iter())
            .take_while(|(a, b)| a == b)
            .count();
        count += frames.len() - shared;
        prev = frames;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    use proptest::prelude::*;

    struct ArenaNode {
        name: u32,
        self_n: u64,
        total_n: u64,
        self_c: u64,
        total_c: u64,
        children: Vec<u32>,
    }

    /// The tree as it was built before pruning while building: every node made, then the
    /// heaviest kept. The oracle for [`build`].
    fn whole<'a>(
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any stacks, in any order, with repeats: the same tree, node counts and ties as
        /// making every node first.
        #[test]
        fn pruning_while_building_matches_building_it_whole(
            raw in prop::collection::vec(
                (prop::collection::vec(0u8..4, 0..6), 0u64..5, 0u64..50),
                0..40,
            ),
            max_nodes in 1usize..30,
        ) {
            let names = ["main", "a", "b", "c"];
            let stacks: Vec<(Vec<String>, u64, u64)> = raw
                .iter()
                .map(|(f, n, c)| (f.iter().map(|i| names[*i as usize].to_owned()).collect(), *n, *c))
                .collect();
            let input = || stacks.iter().map(|(f, n, c)| (f.as_slice(), *n, *c));
            prop_assert_eq!(build(input(), max_nodes), whole(input(), max_nodes));
        }
    }

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
