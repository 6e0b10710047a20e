//! The labels of a watched process's memory samples: `PROFWATCH_SERVICE`, `PROFWATCH_BUILD`
//! and `PROFWATCH_DC` from the process's own environment (`/proc/PID/environ`, the
//! environment it started with), else the sidecar's flags.
//!
//! Invariants: at most [`MAX_ENVIRON_BYTES`] of an environment are read; a variable whose value
//! the collector would refuse (empty, too long, control characters) counts as unset; an
//! environment that cannot be read (another user's process) leaves every label to the flags.

use std::io::Read;
use std::path::Path;

use profwatch_model::Limits;

/// The part of `/proc/PID/environ` searched for the variables.
pub const MAX_ENVIRON_BYTES: u64 = 1 << 20;

/// What the flags say, for processes whose environment does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultLabels {
    /// `--memory-service`; `None`: the process's executable file name (else its comm).
    pub service: Option<String>,
    /// `--memory-build`.
    pub build: String,
    /// `--dc`.
    pub dc: String,
}

/// The labels the environment sets, each `None` when it does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvLabels {
    pub service: Option<String>,
    pub build: Option<String>,
    pub dc: Option<String>,
}

/// Finds the variables in NUL-separated `KEY=VALUE` text; the last setting of a key wins.
pub fn parse_environ(environ: &[u8]) -> EnvLabels {
    let max = Limits::default().max_name_len;
    let mut out = EnvLabels::default();
    for entry in environ.split(|b| *b == 0) {
        let Some(eq) = entry.iter().position(|b| *b == b'=') else {
            continue;
        };
        let slot = match &entry[..eq] {
            b"PROFWATCH_SERVICE" => &mut out.service,
            b"PROFWATCH_BUILD" => &mut out.build,
            b"PROFWATCH_DC" => &mut out.dc,
            _ => continue,
        };
        *slot = std::str::from_utf8(&entry[eq + 1..])
            .ok()
            .filter(|v| !v.is_empty() && v.len() <= max && !v.contains(char::is_control))
            .map(str::to_owned);
    }
    out
}

/// The environment labels of process `pid` under `proc`; all `None` when it cannot be read.
pub fn read_environ(proc: &Path, pid: u32) -> EnvLabels {
    let mut bytes = Vec::new();
    let path = proc.join(pid.to_string()).join("environ");
    match std::fs::File::open(path).and_then(|f| f.take(MAX_ENVIRON_BYTES).read_to_end(&mut bytes))
    {
        Ok(_) => parse_environ(&bytes),
        Err(_) => EnvLabels::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_are_found_and_bad_values_ignored() {
        let env = b"PATH=/bin\0PROFWATCH_SERVICE=shop\0PROFWATCH_BUILD=\0PROFWATCH_DC=eu\x01\0\
PROFWATCH_SERVICE_X=no\0PROFWATCH_BUILD\0";
        assert_eq!(
            parse_environ(env),
            EnvLabels {
                service: Some("shop".into()),
                build: None,
                dc: None,
            }
        );
        let long = format!("PROFWATCH_DC={}\0PROFWATCH_BUILD=812", "d".repeat(129));
        assert_eq!(
            parse_environ(long.as_bytes()),
            EnvLabels {
                service: None,
                build: Some("812".into()),
                dc: None,
            }
        );
        assert_eq!(parse_environ(&[0xff, b'=', 0, 0]), EnvLabels::default());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes: no panic, and every label found is one the collector accepts.
        #[test]
        fn any_environment_parses_to_valid_labels(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            prefix in proptest::sample::select(vec!["", "PROFWATCH_SERVICE=", "PROFWATCH_BUILD=", "PROFWATCH_DC="]),
        ) {
            let mut env = prefix.as_bytes().to_vec();
            env.extend_from_slice(&bytes);
            let got = parse_environ(&env);
            for value in [got.service, got.build, got.dc].into_iter().flatten() {
                proptest::prop_assert!(!value.is_empty() && value.len() <= 128);
                proptest::prop_assert!(!value.contains(char::is_control));
            }
        }
    }

    #[test]
    fn a_child_s_environment_is_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("PROFWATCH_SERVICE", "memtest")
            .env("PROFWATCH_BUILD", "b7")
            .spawn()
            .expect("spawn sleep");
        // Until the child has exec'd, /proc shows this process's environment.
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let got = read_environ(Path::new("/proc"), child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.service.as_deref(), Some("memtest"));
        assert_eq!(got.build.as_deref(), Some("b7"));
        assert_eq!(
            read_environ(Path::new("/nonexistent"), 1),
            EnvLabels::default()
        );
    }
}
