//! The sidecar's memory readings of local processes (`--memory-pid`, `--memory-name`): every
//! interval, each watched process's `/proc/PID/smaps_rollup` (or `smaps`, summed) as a
//! [`MemorySample`] labelled from its own environment or the flags.
//!
//! - [`smaps`]: the bounded parser of both files.
//! - [`labels`]: `PROFWATCH_SERVICE`/`BUILD`/`DC` from `/proc/PID/environ`, else the flags.
//! - `watcher`: the thread that reads every watched process each interval.

pub mod labels;
pub mod smaps;
mod watcher;

use std::path::Path;

use profwatch_model::memory::MemorySample;

pub use labels::DefaultLabels;
pub use smaps::{SmapsError, Source};
pub(crate) use watcher::Watcher;

/// Reads one sample of process `pid` under `proc` (`/proc`, or a copy in tests) at `ts`
/// (unix ns), labelled with `host` and the labels its environment or `defaults` give.
pub fn read_sample(
    proc: &Path,
    pid: u32,
    defaults: &DefaultLabels,
    host: &str,
    ts: i64,
) -> Result<MemorySample, SmapsError> {
    let (bytes, _) = smaps::read(proc, pid)?;
    let env = labels::read_environ(proc, pid);
    let service = env
        .service
        .or_else(|| defaults.service.clone())
        .unwrap_or_else(|| super::procs::service_name(&super::procs::name(pid)));
    Ok(MemorySample {
        ts,
        service,
        build: env.build.unwrap_or_else(|| defaults.build.clone()),
        dc: env.dc.unwrap_or_else(|| defaults.dc.clone()),
        host: host.to_owned(),
        pid,
        bytes,
    })
}
