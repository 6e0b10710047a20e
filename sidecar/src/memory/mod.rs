//! The sidecar's memory readings of local processes (`--memory-pid`, `--memory-name`, and the
//! processes an SDK registers with a hello frame on the socket): every interval, each watched
//! process's `/proc/PID/smaps_rollup` (or `smaps`, summed) as a [`MemorySample`] labelled from
//! its hello, its own environment or the flags.
//!
//! - [`smaps`]: the bounded parser of both files.
//! - [`labels`]: the hello's labels, else `PROFWATCH_SERVICE`/`BUILD`/`DC` from
//!   `/proc/PID/environ`, else the flags.
//! - `watcher`: the thread that reads every watched process each interval, and the
//!   [`Registrar`] through which the listener hands it the processes that said hello.

pub mod labels;
pub mod smaps;
mod watcher;

use std::path::Path;

use profwatch_model::memory::MemorySample;

pub use labels::{DefaultLabels, OwnLabels};
pub use smaps::{SmapsError, Source};
pub(crate) use watcher::Watcher;
pub use watcher::{Registrar, MAX_WATCHED};

/// Reads one sample of process `pid` under `proc` (`/proc`, or a copy in tests) at `ts`
/// (unix ns), labelled with `host` and the labels its `hello`, its environment or `defaults`
/// give ([`labels::resolve`]).
pub fn read_sample(
    proc: &Path,
    pid: u32,
    hello: &OwnLabels,
    defaults: &DefaultLabels,
    host: &str,
    ts: i64,
) -> Result<MemorySample, SmapsError> {
    let (bytes, _) = smaps::read(proc, pid)?;
    let env = labels::read_environ(proc, pid);
    let (service, build, dc) = labels::resolve(hello, env, defaults);
    Ok(MemorySample {
        ts,
        service: service.unwrap_or_else(|| super::procs::service_name(&super::procs::name(pid))),
        build,
        dc,
        host: host.to_owned(),
        pid,
        bytes,
    })
}
