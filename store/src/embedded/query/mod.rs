//! Queries over memtables and segments: every source is scanned column-wise, each row's series
//! is mapped to an output group through a per-source lookup table, and the groups accumulate in
//! bounded-size [`CostAccumulator`]s. Sources are scanned in parallel and merged.
//!
//! Files: `source.rs` (segments and memtables as sources of rows), `scan.rs` (series → group
//! maps, choosing what to read, the parallel runs), `counts.rs` (services, builds), `stats.rs`
//! (endpoints, timeseries, every endpoint's series), `costs.rs` (per-request costs for the
//! analyzer), `profiles.rs` (stack profiles), `functions.rs` (cost per function).
//!
//! [`CostAccumulator`]: profwatch_model::query::CostAccumulator

mod costs;
mod counts;
mod functions;
mod profiles;
mod scan;
mod source;
mod stats;
#[cfg(test)]
mod tests;

pub use self::costs::cost_samples;
pub use self::counts::{builds, services};
pub use self::functions::function_costs;
pub use self::profiles::profile;
pub use self::source::Source;
pub use self::stats::{endpoint_series, endpoints, timeseries};
