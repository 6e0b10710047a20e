//! The JSON side of a differential profile: per function, baseline against candidate, self and
//! inclusive (total) cost as samples and share of all samples, and, when the request figures of
//! each side are known, as CPU nanoseconds per request.
//!
//! Cost per request is `share × mean CPU per request`: the profile says which fraction of the
//! CPU a function takes, the request events say how much CPU a request takes. It is only given
//! when the caller could find request figures for exactly the side's selector.

use std::collections::HashMap;

use serde::Serialize;

use super::functions::{FunctionCost, FunctionTable};

/// Request figures of one side (from the request events of the same selector).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RequestFigures {
    /// Weighted requests.
    pub requests: f64,
    /// Mean CPU nanoseconds per request.
    pub cpu_ns_per_request: f64,
}

/// Totals of one side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideSummary {
    pub samples: u64,
    pub cpu_ns: u64,
    /// `null` when no request figures match the selector.
    pub requests: Option<RequestFigures>,
}

/// One function on one side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct SideCost {
    pub self_samples: u64,
    pub total_samples: u64,
    pub self_share: f64,
    pub total_share: f64,
    /// `self_share × cpu_ns_per_request`, when known.
    pub self_cpu_ns_per_request: Option<f64>,
    pub total_cpu_ns_per_request: Option<f64>,
}

/// One function, both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDiff {
    pub name: String,
    pub baseline: SideCost,
    pub candidate: SideCost,
    /// `candidate.self_share − baseline.self_share`.
    pub self_share_delta: f64,
    pub total_share_delta: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffReport {
    pub baseline: SideSummary,
    pub candidate: SideSummary,
    /// Ordered by the size of the self-share change, largest first.
    pub functions: Vec<FunctionDiff>,
}

fn side(f: Option<&FunctionCost>, req: Option<RequestFigures>) -> SideCost {
    let Some(f) = f else {
        return SideCost {
            self_cpu_ns_per_request: req.map(|_| 0.0),
            total_cpu_ns_per_request: req.map(|_| 0.0),
            ..SideCost::default()
        };
    };
    SideCost {
        self_samples: f.self_samples,
        total_samples: f.total_samples,
        self_share: f.self_share,
        total_share: f.total_share,
        self_cpu_ns_per_request: req.map(|r| f.self_share * r.cpu_ns_per_request),
        total_cpu_ns_per_request: req.map(|r| f.total_share * r.cpu_ns_per_request),
    }
}

/// Compares two function tables; keeps the `limit` largest changes.
pub fn compare(
    baseline: &FunctionTable,
    base_req: Option<RequestFigures>,
    candidate: &FunctionTable,
    cand_req: Option<RequestFigures>,
    limit: usize,
) -> DiffReport {
    let b: HashMap<&str, &FunctionCost> = baseline
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    let c: HashMap<&str, &FunctionCost> = candidate
        .functions
        .iter()
        .map(|f| (f.name.as_str(), f))
        .collect();
    let mut names: Vec<&str> = b.keys().chain(c.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    let mut functions: Vec<FunctionDiff> = names
        .into_iter()
        .map(|name| {
            let bs = side(b.get(name).copied(), base_req);
            let cs = side(c.get(name).copied(), cand_req);
            FunctionDiff {
                name: name.to_owned(),
                self_share_delta: cs.self_share - bs.self_share,
                total_share_delta: cs.total_share - bs.total_share,
                baseline: bs,
                candidate: cs,
            }
        })
        .collect();
    functions.sort_by(|x, y| {
        y.self_share_delta
            .abs()
            .total_cmp(&x.self_share_delta.abs())
            .then_with(|| {
                y.total_share_delta
                    .abs()
                    .total_cmp(&x.total_share_delta.abs())
            })
            .then_with(|| x.name.cmp(&y.name))
    });
    functions.truncate(limit);
    DiffReport {
        baseline: SideSummary {
            samples: baseline.samples,
            cpu_ns: baseline.cpu_ns,
            requests: base_req,
        },
        candidate: SideSummary {
            samples: candidate.samples,
            cpu_ns: candidate.cpu_ns,
            requests: cand_req,
        },
        functions,
    }
}
