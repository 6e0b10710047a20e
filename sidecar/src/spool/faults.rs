//! Injected I/O failures for tests: every create, write, fsync, rename and removal of spool and
//! dead-letter files passes through a named point ([`check`]); a test makes the next passes
//! through a point fail for files under one directory (its own temporary spool), so tests
//! running side by side do not disturb each other. Without `cfg(test)` every check is a no-op
//! the compiler removes.

/// Fails with the injected error when a test armed `point` for a directory holding `path`.
#[cfg(not(test))]
#[inline(always)]
pub fn check(_point: &'static str, _path: &std::path::Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
pub use armed::{arm, check};

#[cfg(test)]
mod armed {
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
}
