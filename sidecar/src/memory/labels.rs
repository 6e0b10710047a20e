//! The labels of a watched process's memory samples, each from the first that sets it: the
//! process's hello (an SDK's registration), then `PROFWATCH_SERVICE`, `PROFWATCH_BUILD` and
//! `PROFWATCH_DC` in the process's own environment (`/proc/PID/environ`, the environment it
//! started with), then the sidecar's flags ([`resolve`]).
//!
//! Invariants: at most [`MAX_ENVIRON_BYTES`] of an environment are read; a variable whose value
//! the collector would refuse (empty, too long, control characters) counts as unset (a hello
//! with such a label is refused whole before it gets here); an environment that cannot be read
//! (another user's process) leaves every label to the hello and the flags.

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

/// The labels a process gives itself (in its hello, or its environment), each `None` when it
/// does not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnLabels {
    pub service: Option<String>,
    pub build: Option<String>,
    pub dc: Option<String>,
}

impl From<profwatch_model::hello::Hello> for OwnLabels {
    fn from(hello: profwatch_model::hello::Hello) -> OwnLabels {
        OwnLabels {
            service: hello.service,
            build: hello.build,
            dc: hello.dc,
        }
    }
}

/// A sample's service (`None`: the flags leave it to the process's name), build and dc: the
/// hello's, else the environment's, else the flags'.
pub fn resolve(
    hello: &OwnLabels,
    env: OwnLabels,
    defaults: &DefaultLabels,
) -> (Option<String>, String, String) {
    let service = hello
        .service
        .clone()
        .or(env.service)
        .or_else(|| defaults.service.clone());
    let build = hello
        .build
        .clone()
        .or(env.build)
        .unwrap_or_else(|| defaults.build.clone());
    let dc = hello
        .dc
        .clone()
        .or(env.dc)
        .unwrap_or_else(|| defaults.dc.clone());
    (service, build, dc)
}

/// Finds the variables in NUL-separated `KEY=VALUE` text; the last setting of a key wins.
pub fn parse_environ(environ: &[u8]) -> OwnLabels {
    let max = Limits::default().max_name_len;
    let mut out = OwnLabels::default();
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
pub fn read_environ(proc: &Path, pid: u32) -> OwnLabels {
    let mut bytes = Vec::new();
    let path = proc.join(pid.to_string()).join("environ");
    match std::fs::File::open(path).and_then(|f| f.take(MAX_ENVIRON_BYTES).read_to_end(&mut bytes))
    {
        Ok(_) => parse_environ(&bytes),
        Err(_) => OwnLabels::default(),
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
            OwnLabels {
                service: Some("shop".into()),
                build: None,
                dc: None,
            }
        );
        let long = format!("PROFWATCH_DC={}\0PROFWATCH_BUILD=812", "d".repeat(129));
        assert_eq!(
            parse_environ(long.as_bytes()),
            OwnLabels {
                service: None,
                build: Some("812".into()),
                dc: None,
            }
        );
        assert_eq!(parse_environ(&[0xff, b'=', 0, 0]), OwnLabels::default());
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
    fn the_hello_wins_over_the_environment_which_wins_over_the_flags() {
        let some = |s: &str| Some(s.to_owned());
        let flags = DefaultLabels {
            service: some("flag-svc"),
            build: "flag-build".into(),
            dc: "flag-dc".into(),
        };
        let env = OwnLabels {
            service: some("env-svc"),
            build: some("env-build"),
            dc: None,
        };
        let hello = OwnLabels {
            service: some("hello-svc"),
            build: None,
            dc: None,
        };
        assert_eq!(
            resolve(&hello, env.clone(), &flags),
            (some("hello-svc"), "env-build".into(), "flag-dc".into())
        );
        let all = OwnLabels {
            service: some("h"),
            build: some("hb"),
            dc: some("hd"),
        };
        assert_eq!(
            resolve(&all, env.clone(), &flags),
            (some("h"), "hb".into(), "hd".into())
        );
        assert_eq!(
            resolve(&OwnLabels::default(), env, &flags),
            (some("env-svc"), "env-build".into(), "flag-dc".into())
        );
        let no_service = DefaultLabels {
            service: None,
            ..flags
        };
        assert_eq!(
            resolve(&OwnLabels::default(), OwnLabels::default(), &no_service),
            (None, "flag-build".into(), "flag-dc".into()),
            "no service anywhere: the caller names it after the process"
        );
    }

    #[test]
    fn a_child_s_environment_is_read() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("PROFWATCH_SERVICE", "memtest")
            .env("PROFWATCH_BUILD", "b7")
            .spawn()
            .expect("spawn sleep");
        // Until the child has exec'd, /proc shows this process's environment, and for a moment
        // during the exec (its name already changed, its new stack not yet set up) none: read
        // until the new one shows, as the watch would at its next interval.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = read_environ(Path::new("/proc"), child.id());
        while got.service.as_deref() != Some("memtest") && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
            got = read_environ(Path::new("/proc"), child.id());
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(got.service.as_deref(), Some("memtest"));
        assert_eq!(got.build.as_deref(), Some("b7"));
        assert_eq!(
            read_environ(Path::new("/nonexistent"), 1),
            OwnLabels::default()
        );
    }
}
