//! Generated stack profiles whose truth is known, for the attribution tests and the evaluation.
//!
//! A profile is a calling-context tree: each node is a function called from its parent's place
//! and holds a *self weight*, the cost spent in that function at that place. Below a fixed chain
//! of frames (`main` → runtime → server → handler) the tree grows by attaching each new node to
//! the newest node (half the time: call chains) or to a uniformly drawn one (branching). A
//! fifth of the calls go to a pool of library functions (allocation, hashing, copying) shared
//! by many places. Self weights are log-normal (sigma 2.2, internal nodes smaller), so a few
//! places hold most of the cost, as in real profiles.
//!
//! A snapshot draws each place's sample count from a Poisson distribution around
//! `rate × self weight` (a sampler at a fixed frequency over the arm's CPU time: independent
//! counts, Poisson total). Changes (a function made more expensive, or a cost shift that keeps
//! the total) are edits of a copy of the tree, and the caller knows which function gained.
//!
//! Invariant: everything is a pure function of the parameters and the seed.

use crate::rng::Rng;

/// The frames every stack starts with.
const ROOT_CHAIN: [&str; 4] = [
    "main",
    "tokio::runtime::Runtime::block_on",
    "hyper::server::conn::serve",
    "app::handler::handle",
];

#[derive(Debug, Clone)]
struct Node {
    function: usize,
    parent: Option<usize>,
    self_weight: f64,
    /// Inlined into its parent: its frame no longer appears in stacks.
    elided: bool,
}

/// A calling-context tree with self weights.
#[derive(Debug, Clone)]
pub struct CallTree {
    names: Vec<String>,
    nodes: Vec<Node>,
}

/// How a cost shift moves cost; the endpoint's total is unchanged by all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShiftKind {
    /// A function is inlined into its caller: its self cost becomes the caller's self cost and
    /// its frame disappears from every stack.
    Inline,
    /// A function is renamed: the new name gains all of the old one's cost.
    Rename,
    /// Work moves from one child of a parent to another child of the same parent.
    Siblings,
    /// Self cost moves from one place to another place under a different parent (neither an
    /// ancestor of the other): code moved between unrelated functions.
    Distant,
    /// A call (with everything under it) moves to another caller: self costs stay, inclusive
    /// costs move.
    CallMoved,
}

/// A changed copy of a tree and what changed.
#[derive(Debug, Clone)]
pub struct Change {
    pub tree: CallTree,
    /// The function whose self cost rose.
    pub gained: String,
    /// The function whose cost moved away (a shift), if any.
    pub lost: Option<String>,
    /// The cost that moved or was added, as a share of the baseline's total.
    pub share: f64,
}

impl CallTree {
    /// A tree of about `functions` distinct functions (at least the root chain and a few more).
    pub fn generate(rng: &mut Rng, functions: usize) -> CallTree {
        let functions = functions.max(ROOT_CHAIN.len() + 10);
        let library = (functions / 10).max(5);
        let mut names: Vec<String> = ROOT_CHAIN.iter().map(|s| (*s).to_owned()).collect();
        names.extend((0..library).map(|i| match LIBRARY.get(i) {
            Some(name) => (*name).to_owned(),
            None => format!("{}_{i}", LIBRARY[i % LIBRARY.len()]),
        }));
        let mut nodes: Vec<Node> = (0..ROOT_CHAIN.len())
            .map(|i| Node {
                function: i,
                parent: i.checked_sub(1),
                self_weight: 0.0,
                elided: false,
            })
            .collect();
        let lib_range = ROOT_CHAIN.len()..ROOT_CHAIN.len() + library;
        let first_free = ROOT_CHAIN.len() - 1;
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
        while names.len() < functions {
            let last = nodes.len() - 1;
            let parent = if rng.uniform() < 0.5 {
                last
            } else {
                first_free + rng.below(nodes.len() - first_free)
            };
            let mut function = if rng.uniform() < 0.2 {
                lib_range.start + rng.below(library)
            } else {
                usize::MAX
            };
            if function == usize::MAX
                || children[parent]
                    .iter()
                    .any(|&c| nodes[c].function == function)
            {
                function = names.len();
                let module = rng.below(40);
                names.push(format!("app::m{module}::f{function}"));
            }
            children[parent].push(nodes.len());
            children.push(Vec::new());
            nodes.push(Node {
                function,
                parent: Some(parent),
                self_weight: 0.0,
                elided: false,
            });
        }
        for (i, node) in nodes.iter_mut().enumerate().skip(first_free) {
            let w = (2.2 * rng.normal()).exp();
            node.self_weight = if children[i].is_empty() {
                w
            } else if rng.uniform() < 0.5 {
                0.2 * w
            } else {
                0.0
            };
        }
        CallTree { names, nodes }
    }

    /// Sum of self weights (the cost of a request, in the tree's units).
    pub fn total(&self) -> f64 {
        self.nodes.iter().map(|n| n.self_weight).sum()
    }

    /// Distinct functions on some stack.
    pub fn functions(&self) -> usize {
        let mut seen = vec![false; self.names.len()];
        for n in self.nodes.iter().filter(|n| !n.elided) {
            seen[n.function] = true;
        }
        seen.iter().filter(|&&s| s).count()
    }

    /// The largest share of the total held by one function's self weight.
    pub fn top_self_share(&self) -> f64 {
        let by_function = self.self_by_function();
        let total = self.total();
        by_function.iter().copied().fold(0.0, f64::max) / total
    }

    /// Deepest stack, in frames.
    pub fn depth(&self) -> usize {
        (0..self.nodes.len())
            .map(|i| self.stack(i).len())
            .max()
            .unwrap_or(0)
    }

    /// One snapshot: each place's stack (root first) with a Poisson count of mean
    /// `rate × self weight`; places with no sample are left out.
    pub fn sample(&self, rng: &mut Rng, rate: f64) -> Vec<(Vec<String>, u64)> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.elided || n.self_weight <= 0.0 {
                continue;
            }
            let count = crate::stats::poisson(rng, rate * n.self_weight);
            if count > 0 {
                out.push((self.stack(i), count));
            }
        }
        out
    }

    /// A function drawn with probability proportional to its self weight (where the time is).
    pub fn pick_function(&self, rng: &mut Rng) -> usize {
        let by_function = self.self_by_function();
        pick_weighted(rng, &by_function).unwrap_or(0)
    }

    /// The function with the most self weight.
    pub fn largest_function(&self) -> usize {
        let by_function = self.self_by_function();
        (0..by_function.len())
            .max_by(|&a, &b| by_function[a].total_cmp(&by_function[b]))
            .unwrap_or(0)
    }

    /// The name of function `f`.
    pub fn name(&self, f: usize) -> &str {
        self.names.get(f).map_or("", String::as_str)
    }

    /// A copy where function `f` costs `share × total` more, added to its places in proportion
    /// to their self weight.
    pub fn regress(&self, f: usize, share: f64) -> Change {
        let mut tree = self.clone();
        let own: f64 = self
            .nodes
            .iter()
            .filter(|n| n.function == f)
            .map(|n| n.self_weight)
            .sum();
        let added = share * self.total();
        for n in tree.nodes.iter_mut().filter(|n| n.function == f) {
            n.self_weight += added * n.self_weight / own.max(f64::MIN_POSITIVE);
        }
        Change {
            tree,
            gained: self.name(f).to_owned(),
            lost: None,
            share,
        }
    }

    /// A copy where cost moved as `kind` says; `None` when the tree offers no place for it.
    pub fn shift(&self, rng: &mut Rng, kind: ShiftKind) -> Option<Change> {
        let total = self.total();
        let mut tree = self.clone();
        let movable = |i: usize| {
            let n = &self.nodes[i];
            i >= ROOT_CHAIN.len() && !n.elided && n.self_weight > 0.0
        };
        let weights: Vec<f64> = (0..self.nodes.len())
            .map(|i| {
                if movable(i) {
                    self.nodes[i].self_weight
                } else {
                    0.0
                }
            })
            .collect();
        match kind {
            ShiftKind::Inline => {
                // A function at one place only, so its frame disappears wholly.
                let places = self.places();
                let w: Vec<f64> = (0..self.nodes.len())
                    .map(|i| {
                        if places[self.nodes[i].function] == 1 {
                            weights[i]
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let i = pick_weighted(rng, &w)?;
                let p = self.nodes[i].parent?;
                let moved = self.nodes[i].self_weight;
                tree.nodes[p].self_weight += moved;
                tree.nodes[i].self_weight = 0.0;
                tree.nodes[i].elided = true;
                Some(Change {
                    gained: self.name(self.nodes[p].function).to_owned(),
                    lost: Some(self.name(self.nodes[i].function).to_owned()),
                    share: moved / total,
                    tree,
                })
            }
            ShiftKind::Rename => {
                let f = pick_weighted(rng, &self.self_by_function())?;
                if f < ROOT_CHAIN.len() {
                    return None;
                }
                let name = format!("{}_v2", self.names[f]);
                tree.names[f] = name.clone();
                let moved: f64 = self
                    .nodes
                    .iter()
                    .filter(|n| n.function == f)
                    .map(|n| n.self_weight)
                    .sum();
                Some(Change {
                    tree,
                    gained: name,
                    lost: Some(self.names[f].clone()),
                    share: moved / total,
                })
            }
            ShiftKind::CallMoved => {
                let inclusive = self.inclusive_weights();
                let w: Vec<f64> = (0..self.nodes.len())
                    .map(|i| {
                        if i >= ROOT_CHAIN.len() {
                            inclusive[i]
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let n = pick_weighted(rng, &w)?;
                let to: Vec<usize> = (ROOT_CHAIN.len() - 1..self.nodes.len())
                    .filter(|&j| {
                        j != n && Some(j) != self.nodes[n].parent && !self.is_ancestor(n, j)
                    })
                    .collect();
                if to.is_empty() {
                    return None;
                }
                let to = to[rng.below(to.len())];
                tree.nodes[n].parent = Some(to);
                Some(Change {
                    gained: self.name(self.nodes[to].function).to_owned(),
                    lost: self.nodes[n]
                        .parent
                        .map(|p| self.name(self.nodes[p].function).to_owned()),
                    share: inclusive[n] / total,
                    tree,
                })
            }
            ShiftKind::Siblings | ShiftKind::Distant => {
                let from = pick_weighted(rng, &weights)?;
                let parent = self.nodes[from].parent?;
                let to: Vec<usize> = (ROOT_CHAIN.len()..self.nodes.len())
                    .filter(|&j| {
                        j != from
                            && !self.nodes[j].elided
                            && self.nodes[j].function != self.nodes[from].function
                            && if kind == ShiftKind::Siblings {
                                self.nodes[j].parent == Some(parent)
                            } else {
                                self.nodes[j].parent != Some(parent)
                                    && !self.is_ancestor(j, from)
                                    && !self.is_ancestor(from, j)
                            }
                    })
                    .collect();
                if to.is_empty() {
                    return None;
                }
                let to = to[rng.below(to.len())];
                let moved = self.nodes[from].self_weight * (0.5 + 0.5 * rng.uniform());
                tree.nodes[from].self_weight -= moved;
                tree.nodes[to].self_weight += moved;
                Some(Change {
                    gained: self.name(self.nodes[to].function).to_owned(),
                    lost: Some(self.name(self.nodes[from].function).to_owned()),
                    share: moved / total,
                    tree,
                })
            }
        }
    }

    fn stack(&self, mut i: usize) -> Vec<String> {
        let mut frames = Vec::new();
        loop {
            let n = &self.nodes[i];
            if !n.elided {
                frames.push(self.names[n.function].clone());
            }
            match n.parent {
                Some(p) => i = p,
                None => break,
            }
        }
        frames.reverse();
        frames
    }

    fn is_ancestor(&self, a: usize, mut of: usize) -> bool {
        while let Some(p) = self.nodes[of].parent {
            if p == a {
                return true;
            }
            of = p;
        }
        false
    }

    /// Self weight of each node and everything under it.
    fn inclusive_weights(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            let mut at = Some(i);
            while let Some(j) = at {
                out[j] += n.self_weight;
                at = self.nodes[j].parent;
            }
        }
        out
    }

    fn self_by_function(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.names.len()];
        for n in &self.nodes {
            out[n.function] += n.self_weight;
        }
        out
    }

    /// Number of places of each function.
    fn places(&self) -> Vec<usize> {
        let mut out = vec![0; self.names.len()];
        for n in self.nodes.iter().filter(|n| !n.elided) {
            out[n.function] += 1;
        }
        out
    }
}

/// An index drawn with probability proportional to `weights` (`None` if all are zero).
fn pick_weighted(rng: &mut Rng, weights: &[f64]) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let mut target = rng.uniform() * total;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            if target < w {
                return Some(i);
            }
            target -= w;
        }
    }
    weights.iter().rposition(|&w| w > 0.0)
}

const LIBRARY: [&str; 16] = [
    "alloc::alloc::alloc",
    "alloc::alloc::dealloc",
    "core::ptr::drop_in_place",
    "memcpy",
    "memmove",
    "core::hash::sip::Hasher::write",
    "hashbrown::raw::RawTable::find",
    "serde_json::de::Deserializer::parse_str",
    "serde_json::ser::format_escaped_str",
    "core::fmt::write",
    "alloc::raw_vec::RawVec::grow_one",
    "std::sync::Mutex::lock",
    "tokio::sync::mpsc::Sender::send",
    "bytes::BytesMut::reserve",
    "regex::Regex::is_match",
    "ring::digest::Context::update",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn self_of(stacks: &[(Vec<String>, u64)], f: &str) -> u64 {
        stacks
            .iter()
            .filter(|(s, _)| s.last().is_some_and(|l| l == f))
            .map(|(_, n)| n)
            .sum()
    }

    #[test]
    fn trees_are_realistic_and_reproducible() {
        for seed in 0..5 {
            let t = CallTree::generate(&mut Rng::new(seed), 1000);
            assert!((950..=1050).contains(&t.functions()), "{}", t.functions());
            assert!(t.depth() >= 12, "{}", t.depth());
            let top = t.top_self_share();
            assert!((0.02..0.6).contains(&top), "{top}");
            let a = t.sample(&mut Rng::new(9), 20_000.0 / t.total());
            let b = t.sample(&mut Rng::new(9), 20_000.0 / t.total());
            assert_eq!(a, b);
            let n: u64 = a.iter().map(|s| s.1).sum();
            assert!((19_000..21_000).contains(&n), "{n}");
            assert!(a.iter().all(|(s, _)| s[0] == "main"));
        }
    }

    #[test]
    fn a_regression_adds_to_one_function_and_shifts_keep_the_total() {
        let mut rng = Rng::new(1);
        let t = CallTree::generate(&mut rng, 500);
        let f = t.pick_function(&mut rng);
        let r = t.regress(f, 0.05);
        assert!((r.tree.total() / t.total() - 1.05).abs() < 1e-9);
        let rate = 1e6 / t.total();
        let before = self_of(&t.sample(&mut Rng::new(2), rate), &r.gained) as f64;
        let after = self_of(&r.tree.sample(&mut Rng::new(2), rate), &r.gained) as f64;
        assert!(
            (after - before - 0.05e6).abs() < 5_000.0,
            "{before} {after}"
        );
        for kind in [
            ShiftKind::Inline,
            ShiftKind::Rename,
            ShiftKind::Siblings,
            ShiftKind::Distant,
        ] {
            let s = (0..20)
                .find_map(|_| t.shift(&mut rng, kind))
                .expect("a place for the shift");
            assert!((s.tree.total() / t.total() - 1.0).abs() < 1e-9, "{kind:?}");
            assert!(s.share > 0.0, "{kind:?}");
            let before = self_of(&t.sample(&mut Rng::new(3), rate), &s.gained) as f64;
            let after = self_of(&s.tree.sample(&mut Rng::new(3), rate), &s.gained) as f64;
            assert!(after > before, "{kind:?} {before} {after}");
        }
        let moved = (0..20)
            .find_map(|_| t.shift(&mut rng, ShiftKind::CallMoved))
            .expect("a call to move");
        assert!((moved.tree.total() / t.total() - 1.0).abs() < 1e-9);
        let under = |stacks: &[(Vec<String>, u64)]| -> u64 {
            stacks
                .iter()
                .filter(|(s, _)| s.contains(&moved.gained))
                .map(|(_, n)| n)
                .sum()
        };
        let before = under(&t.sample(&mut Rng::new(4), rate));
        let after = under(&moved.tree.sample(&mut Rng::new(4), rate));
        assert!(after > before, "{before} {after}");
    }
}
