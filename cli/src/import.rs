//! `profwatch import`: upload profile files to a collector.
//!
//! Each file's format is detected from its content (gzip is undone first, by magic bytes):
//! pprof (`profile.proto`), folded stacks, or `perf script` text. pprof is uploaded as it is to
//! `POST /api/v1/profiles`; `perf script` is collapsed here with inferno's `collapse-perf`
//! (default options) so only the much smaller folded form travels; folded stacks go to
//! `POST /api/v1/profiles?format=folded`, gzipped. `--service` and `--label k=v` become query
//! parameters (for pprof, the profile's own sample labels win). A progress bar per file shows
//! the bytes sent.
//!
//! Invariant: files are uploaded one by one, in order; the first failure stops the run and
//! names the file, and what was uploaded before it is reported.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use profwatch_model::percent::query_component;
use prost::Message;

use profwatch_profile::collapse::{looks_like_perf, perf_to_folded, PerfOptions};
use profwatch_profile::compress::{gzip, is_gzip, maybe_gunzip};
use profwatch_profile::pprof::Profile;
use profwatch_profile::ProfileError;

/// Largest file `import` reads (inflated).
pub const MAX_FILE_BYTES: usize = 4 << 30;

/// What to import and where.
#[derive(Debug, Clone, Default)]
pub struct ImportArgs {
    /// The collector's base URL (`http://host:port`).
    pub server: String,
    /// Bearer token, if the server wants one.
    pub token: Option<String>,
    pub service: Option<String>,
    /// Extra labels (`endpoint`, `build`, `dc`, `host` or any key).
    pub labels: Vec<(String, String)>,
    /// Sampling frequency of folded / perf files, in Hz, to derive CPU time (optional).
    pub sample_rate: Option<u64>,
    pub files: Vec<PathBuf>,
    /// Draw progress bars (on stderr, when it is a terminal).
    pub progress: bool,
    /// The time the profiles are stored at.
    pub time: Retime,
}

/// When imported profiles happened (`profwatch import --time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retime {
    /// The file's own time (pprof's `time_nanos`; the upload time for folded and perf files).
    #[default]
    Original,
    /// The upload time: for historic files the server would refuse as older than its
    /// retention.
    Now,
    /// This time (unix ns).
    At(i64),
}

impl std::str::FromStr for Retime {
    type Err = String;

    /// `original`, `now`, unix seconds or RFC 3339.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "original" => Ok(Retime::Original),
            "now" => Ok(Retime::Now),
            other => profwatch_model::timefmt::parse_query_time_ns(other)
                .map(Retime::At)
                .map_err(|e| format!("{e}; give original, now, unix seconds or RFC 3339")),
        }
    }
}

impl Retime {
    /// The time to store at, unix ns; `None` keeps the file's own.
    fn ns(self) -> Option<i64> {
        match self {
            Retime::Original => None,
            Retime::Now => Some(profwatch_model::timefmt::now_ns()),
            Retime::At(ns) => Some(ns),
        }
    }
}

/// The detected format of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Pprof,
    Folded,
    PerfScript,
}

/// What happened to one file.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub format: FileFormat,
    /// Bytes uploaded.
    pub bytes: usize,
    /// The server's answer (`{"profiles", "stacks", "samples"}`).
    pub response: serde_json::Value,
}

/// The files imported.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    pub files: Vec<FileReport>,
}

/// Why an import stopped. The files before `path` were uploaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    #[error("no files given")]
    NoFiles,
    #[error("--label {0:?} must be key=value")]
    BadLabel(String),
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a pprof profile, folded stacks or perf script output")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: {source}")]
    Convert { path: PathBuf, source: ProfileError },
    #[error("{path}: could not reach {server}: {source}")]
    Http {
        path: PathBuf,
        server: String,
        source: reqwest::Error,
    },
    #[error("{path}: the server refused it ({status}): {message}")]
    Rejected {
        path: PathBuf,
        status: u16,
        message: String,
    },
}

/// Guesses a file's format from its (inflated) content.
pub fn detect(content: &[u8]) -> Option<FileFormat> {
    let head = &content[..content.len().min(64 << 10)];
    let text = match std::str::from_utf8(head) {
        Ok(t) => Some(t),
        // The cut may split a character.
        Err(e) if e.valid_up_to() + 4 >= head.len() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    };
    if let Some(text) = text {
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(100)
            .collect();
        let complete = if lines.len() > 1 {
            &lines[..lines.len() - 1]
        } else {
            &lines[..]
        };
        let folded = !complete.is_empty()
            && complete.iter().all(|l| {
                l.rsplit_once(' ')
                    .is_some_and(|(s, n)| !s.is_empty() && n.trim().parse::<u64>().is_ok())
            });
        if folded {
            return Some(FileFormat::Folded);
        }
        if looks_like_perf(text) {
            return Some(FileFormat::PerfScript);
        }
    }
    match Profile::decode(content) {
        Ok(p) if !p.sample_type.is_empty() => Some(FileFormat::Pprof),
        _ => None,
    }
}

/// Imports every file, stopping at the first failure.
pub fn run(args: ImportArgs) -> Result<ImportReport, ImportError> {
    if args.files.is_empty() {
        return Err(ImportError::NoFiles);
    }
    profwatch_model::tls::install_crypto_provider();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|source| ImportError::Http {
            path: PathBuf::new(),
            server: args.server.clone(),
            source,
        })?;
    let mut report = ImportReport::default();
    for path in &args.files {
        report.files.push(import_one(&client, &args, path)?);
    }
    Ok(report)
}

fn import_one(
    client: &reqwest::blocking::Client,
    args: &ImportArgs,
    path: &Path,
) -> Result<FileReport, ImportError> {
    let read_err = |source| ImportError::Read {
        path: path.to_owned(),
        source,
    };
    let convert_err = |source| ImportError::Convert {
        path: path.to_owned(),
        source,
    };
    let raw = std::fs::read(path).map_err(read_err)?;
    let content = maybe_gunzip(&raw, MAX_FILE_BYTES).map_err(convert_err)?;
    let format = detect(&content).ok_or_else(|| ImportError::UnknownFormat {
        path: path.to_owned(),
    })?;
    let mut query: Vec<(String, String)> = Vec::new();
    if let Some(s) = &args.service {
        query.push(("service".into(), s.clone()));
    }
    for (k, v) in &args.labels {
        if k.is_empty() || k.contains('=') {
            return Err(ImportError::BadLabel(format!("{k}={v}")));
        }
        query.push((k.clone(), v.clone()));
    }
    let at = args.time.ns();
    let body = match (format, at) {
        (FileFormat::Pprof, Some(ts)) => gzip(&retimed_pprof(&content, ts)),
        (FileFormat::Pprof, None) if is_gzip(&raw) => raw,
        (FileFormat::Pprof, None) => gzip(&raw),
        (FileFormat::Folded | FileFormat::PerfScript, _) => {
            query.push(("format".into(), "folded".into()));
            if let Some(ts) = at {
                query.push(("ts".into(), (ts / 1_000_000_000).to_string()));
            }
            if let Some(hz) = args.sample_rate {
                query.push(("sample_rate".into(), hz.to_string()));
            }
            let folded = match format {
                FileFormat::PerfScript => perf_to_folded(&content, PerfOptions::default())
                    .map_err(convert_err)?
                    .into_bytes(),
                _ => content.into_owned(),
            };
            gzip(&folded)
        }
    };
    let bytes = body.len();
    let bar = if args.progress {
        ProgressBar::with_draw_target(Some(bytes as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(format!("{} ({format:?})", path.display()));
    let reader = bar.wrap_read(std::io::Cursor::new(body));
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", query_component(k), query_component(v)))
        .collect();
    let url = format!(
        "{}/api/v1/profiles?{}",
        args.server.trim_end_matches('/'),
        query.join("&")
    );
    let mut req = client
        .post(&url)
        .header("content-type", "application/octet-stream")
        .body(reqwest::blocking::Body::sized(reader, bytes as u64));
    if let Some(t) = &args.token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|source| ImportError::Http {
        path: path.to_owned(),
        server: args.server.clone(),
        source,
    })?;
    bar.finish();
    let status = resp.status().as_u16();
    let mut text = String::new();
    let _ = resp.take(1 << 20).read_to_string(&mut text);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    if !(200..300).contains(&status) {
        let message = json
            .get("error")
            .and_then(|e| e.as_str())
            .map_or(text.clone(), str::to_owned);
        return Err(ImportError::Rejected {
            path: path.to_owned(),
            status,
            message,
        });
    }
    Ok(FileReport {
        path: path.to_owned(),
        format,
        bytes,
        response: json,
    })
}

/// A pprof profile whose `time_nanos` (field 9) is `ts`: the field is appended, and in
/// protobuf the last value of a scalar field wins, so nothing else of the file changes.
fn retimed_pprof(content: &[u8], ts: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 11);
    out.extend_from_slice(content);
    out.push(9 << 3);
    let mut v = ts as u64;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retiming_a_pprof_sets_its_time_and_keeps_the_rest() {
        let original = Profile {
            time_nanos: 1_600_000_000_000_000_000,
            duration_nanos: 5,
            ..Default::default()
        };
        let bytes = prost::Message::encode_to_vec(&original);
        let ts = 1_800_000_000_123_456_789;
        let got: Profile =
            prost::Message::decode(retimed_pprof(&bytes, ts).as_slice()).expect("decode");
        assert_eq!(got.time_nanos, ts);
        assert_eq!(got.duration_nanos, 5);
    }

    #[test]
    fn time_arguments_parse() {
        assert_eq!("original".parse::<Retime>(), Ok(Retime::Original));
        assert_eq!("now".parse::<Retime>(), Ok(Retime::Now));
        assert_eq!(
            "1700000000".parse::<Retime>(),
            Ok(Retime::At(1_700_000_000_000_000_000))
        );
        assert!("yesterday".parse::<Retime>().is_err());
    }

    #[test]
    fn detects_formats() {
        assert_eq!(detect(b"main;run 3\nmain 1\n"), Some(FileFormat::Folded));
        let perf = b"dd 29776 666709.771979:   10101010 cpu-clock: \n\t  414b3b fsnotify (/vmlinux)\n\t  e5f70 read (/libc.so)\n\n";
        assert_eq!(detect(perf), Some(FileFormat::PerfScript));
        let pprof = Profile {
            sample_type: vec![profwatch_profile::pprof::ValueType { r#type: 1, unit: 2 }],
            string_table: vec![String::new(), "samples".into(), "count".into()],
            ..Profile::default()
        }
        .encode_to_vec();
        assert_eq!(detect(&pprof), Some(FileFormat::Pprof));
        assert_eq!(detect(b"hello world\n"), None);
    }
}
