//! Stack profiles: reading them (pprof, folded, `perf script`), and drawing them (JSON tree,
//! folded, SVG flame graphs, pprof, per-function tables and differentials).
//!
//! Everything here is pure (bytes in, values out) and bounded by [`ProfileLimits`]: malformed
//! input is a [`ProfileError`], never a panic. The HTTP handlers in `crate::http::profiles` and
//! `crate::http::pyroscope` and the `import` client are thin layers over it.
//!
//! | file | concept |
//! |---|---|
//! | [`pprof`] | `profile.proto` messages |
//! | [`push`] | Pyroscope `push.v1` messages |
//! | [`decode`] | pprof → [`ProfileBatch`](profwatch_model::profile::ProfileBatch) |
//! | [`encode`] | [`StackProfile`](profwatch_model::profile::StackProfile) → pprof |
//! | [`folded`] | folded stacks in and out |
//! | [`collapse`] | `perf script` → folded (inferno) |
//! | [`render`] | SVG flame graphs and differential folded output (inferno) |
//! | [`tree`] | the JSON flame tree |
//! | [`functions`] | per-function self/total cost |
//! | [`compare`] | baseline vs candidate per function |
//! | [`labels`] | label names → our label fields |
//! | [`appname`] | Pyroscope's `app.cpu{k=v}` names |
//! | [`multipart`] | one part out of a form body |
//! | [`compress`] | gzip by magic bytes; any inflation capped and granted by an allowance |
//! | [`otlp`] | OTLP profiles (protobuf and JSON) → [`ProfileBatch`](profwatch_model::profile::ProfileBatch) |

// The property tests hold the decoders to a peak heap use (`profwatch_testkit::alloc`).
#[cfg(test)]
#[global_allocator]
static ALLOC: profwatch_testkit::alloc::PeakAlloc = profwatch_testkit::alloc::PeakAlloc;

pub mod appname;
pub mod collapse;
pub mod compare;
pub mod compress;
pub mod decode;
pub mod encode;
pub mod error;
pub mod folded;
pub mod functions;
pub mod labels;
pub mod limits;
pub mod multipart;
pub mod otlp;
pub mod pprof;
pub mod push;
pub mod render;
pub mod tree;

pub use error::ProfileError;
pub use limits::ProfileLimits;
