//! The registry of injected I/O failures that the stores' and the sidecar's fault points read
//! in their tests (`store/src/embedded/faults.rs`, `sidecar/src/spool/faults.rs`: in builds
//! without `cfg(test)` their checks are no-ops and never reach this). A test makes the next
//! passes through a named point fail for files under one directory (its own temporary folder),
//! so tests running side by side do not disturb each other.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

struct Fault {
    point: &'static str,
    under: PathBuf,
    kind: std::io::ErrorKind,
    times: usize,
}

static FAULTS: Mutex<Vec<Fault>> = Mutex::new(Vec::new());

/// Makes the next `times` passes through `point` for files under `dir` fail with `kind`.
pub fn arm(point: &'static str, dir: &Path, kind: std::io::ErrorKind, times: usize) {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    faults.push(Fault {
        point,
        under: dir.to_owned(),
        kind,
        times,
    });
}

/// Fails with the injected error when a test armed `point` for a directory holding `path`.
pub fn check(point: &'static str, path: &Path) -> std::io::Result<()> {
    let mut faults = FAULTS.lock().unwrap_or_else(|e| e.into_inner());
    let hit = faults
        .iter_mut()
        .find(|f| f.point == point && f.times > 0 && path.starts_with(&f.under));
    match hit {
        Some(f) => {
            f.times -= 1;
            Err(std::io::Error::from(f.kind))
        }
        None => Ok(()),
    }
}
