//! Where aggregated profiles go: the [`ProfileSink`] trait, the collector's folded ingest
//! (`POST {url}/api/v1/profiles?format=folded&...`), the sidecar's socket (profile frames,
//! relayed through its spool), an in-memory sink and a discarding one.
//!
//! Invariants: sinks run only on the sampler thread. A profile is one label set; its labels
//! travel as query parameters (`service`, `endpoint`, `build`, `dc`, `host`, then every extra
//! label as `key=value`), its stacks as folded text, root first, with `sample_rate` so that
//! the collector fills in CPU time. Values are percent-encoded. The sidecar gets the same two
//! parts in one frame (`agent/PROTOCOL.md`); a profile too large for one frame is split by
//! stacks into several frames with the same labels and time.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use profwatch_model::percent::query_component;
use profwatch_model::profile::ProfileBatch;

use crate::error::{AgentError, ExportError};
use crate::export::CollectorHttp;

/// Something that delivers profiles (one per label set and interval).
pub trait ProfileSink: Send + 'static {
    /// Delivers `profiles` (stacks sampled at `frequency_hz`), or fails.
    fn export(&mut self, profiles: &[ProfileBatch], frequency_hz: u32) -> Result<(), ExportError>;
}

/// Throws profiles away.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl ProfileSink for DiscardSink {
    fn export(&mut self, _: &[ProfileBatch], _: u32) -> Result<(), ExportError> {
        Ok(())
    }
}

/// Keeps every profile in memory (tests, embedding); clones share the store.
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    profiles: Arc<Mutex<Vec<ProfileBatch>>>,
}

impl MemorySink {
    pub fn new() -> MemorySink {
        MemorySink::default()
    }

    /// A copy of everything delivered so far.
    pub fn profiles(&self) -> Vec<ProfileBatch> {
        self.profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ProfileSink for MemorySink {
    fn export(&mut self, profiles: &[ProfileBatch], _: u32) -> Result<(), ExportError> {
        self.profiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(profiles);
        Ok(())
    }
}

/// Posts each profile to the collector as folded text, over plain HTTP/1.1.
#[derive(Debug, Clone)]
pub struct CollectorSink {
    http: CollectorHttp,
}

impl CollectorSink {
    /// `url` is `http://host[:port][/base]`, as for the SDK's event exporter.
    pub fn new(url: &str, token: Option<String>) -> Result<CollectorSink, AgentError> {
        Ok(CollectorSink {
            http: CollectorHttp::new(url, token)?,
        })
    }
}

impl ProfileSink for CollectorSink {
    fn export(&mut self, profiles: &[ProfileBatch], frequency_hz: u32) -> Result<(), ExportError> {
        for profile in profiles {
            let target = self.http.target(&format!(
                "/api/v1/profiles?{}",
                query(profile, frequency_hz)
            ));
            self.http
                .post(&target, "text/plain", folded(profile).as_bytes())?;
        }
        Ok(())
    }
}

/// The marker byte of a profile frame on the sidecar's socket.
pub const PROFILE_FRAME_MARKER: u8 = 0x01;
/// Largest profile frame payload the sidecar takes by default (4 MiB).
pub const MAX_PROFILE_FRAME: usize = 4 << 20;

/// Writes each profile as a frame to the sidecar's Unix socket; the sidecar relays it to the
/// collector through its disk spool. The connection is opened lazily and reopened after an
/// error.
#[derive(Debug)]
pub struct SidecarSink {
    path: PathBuf,
    stream: Option<UnixStream>,
    timeout: Duration,
    max_frame: usize,
}

impl SidecarSink {
    pub fn new(path: impl AsRef<Path>) -> SidecarSink {
        SidecarSink {
            path: path.as_ref().to_owned(),
            stream: None,
            timeout: Duration::from_secs(5),
            max_frame: MAX_PROFILE_FRAME,
        }
    }

    fn io_error(&self, source: std::io::Error) -> ExportError {
        ExportError::Io {
            target: format!("sidecar socket {}", self.path.display()),
            source,
        }
    }

    fn write(&mut self, frames: &[u8]) -> Result<(), ExportError> {
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let stream = UnixStream::connect(&self.path).map_err(|e| self.io_error(e))?;
                stream
                    .set_write_timeout(Some(self.timeout))
                    .map_err(|e| self.io_error(e))?;
                stream
            }
        };
        stream.write_all(frames).map_err(|e| self.io_error(e))?;
        self.stream = Some(stream);
        Ok(())
    }
}

impl ProfileSink for SidecarSink {
    fn export(&mut self, profiles: &[ProfileBatch], frequency_hz: u32) -> Result<(), ExportError> {
        let mut out = Vec::new();
        for profile in profiles {
            for payload in frame_payloads(profile, frequency_hz, self.max_frame) {
                out.push(PROFILE_FRAME_MARKER);
                out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                out.extend_from_slice(payload.as_bytes());
            }
        }
        self.write(&out)
    }
}

/// A profile as profile-frame payloads of at most `max` bytes each: the query line, then as
/// many folded lines as fit (a single line longer than that is dropped: the sidecar would
/// refuse it anyway).
pub fn frame_payloads(profile: &ProfileBatch, frequency_hz: u32, max: usize) -> Vec<String> {
    let mut head = query(profile, frequency_hz);
    head.push('\n');
    let mut out = Vec::new();
    let mut current = head.clone();
    for s in &profile.samples {
        let line = format!("{} {}\n", s.frames.join(";"), s.samples);
        if head.len() + line.len() > max {
            continue;
        }
        if current.len() + line.len() > max {
            out.push(std::mem::replace(&mut current, head.clone()));
        }
        current.push_str(&line);
    }
    if current.len() > head.len() {
        out.push(current);
    }
    out
}

/// The query string carrying a profile's labels, format and sample rate.
pub fn query(profile: &ProfileBatch, frequency_hz: u32) -> String {
    let l = &profile.labels;
    let mut q = format!(
        "format=folded&sample_rate={frequency_hz}&ts={}",
        profile.ts / 1_000_000_000
    );
    for (k, v) in [
        ("service", &l.service),
        ("endpoint", &l.endpoint),
        ("build", &l.build),
        ("dc", &l.dc),
        ("host", &l.host),
    ]
    .into_iter()
    .chain(l.extra.iter().map(|(k, v)| (k.as_str(), v)))
    {
        if v.is_empty() {
            continue;
        }
        q.push('&');
        q.push_str(&query_component(k));
        q.push('=');
        q.push_str(&query_component(v));
    }
    q
}

/// The profile's stacks as folded text: `root;...;leaf count` per line.
pub fn folded(profile: &ProfileBatch) -> String {
    let mut out = String::new();
    for s in &profile.samples {
        out.push_str(&s.frames.join(";"));
        out.push(' ');
        out.push_str(&s.samples.to_string());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use profwatch_model::profile::{SampleLabels, StackSample};
    use std::io::Read;

    #[test]
    fn query_and_folded_body() {
        let p = ProfileBatch {
            ts: 1_700_000_000_000_000_000,
            labels: SampleLabels {
                service: "shop".into(),
                endpoint: "GET /cart/{id}".into(),
                build: "812".into(),
                dc: String::new(),
                host: "h".into(),
                extra: [("new_ui".to_owned(), "on&off".to_owned())].into(),
            },
            samples: vec![StackSample {
                frames: vec!["main".into(), "work".into()],
                samples: 3,
                cpu_ns: 0,
            }],
        };
        assert_eq!(
            query(&p, 99),
            "format=folded&sample_rate=99&ts=1700000000&service=shop\
             &endpoint=GET%20%2Fcart%2F%7Bid%7D&build=812&host=h&new_ui=on%26off"
        );
        assert_eq!(folded(&p), "main;work 3\n");
        assert!(CollectorSink::new("https://x", None).is_err());
    }

    #[test]
    fn collector_sink_posts_folded_text_with_labels_in_the_query() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            while !String::from_utf8_lossy(&seen).ends_with("main;run 2\n") {
                let n = conn.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .expect("answer");
            String::from_utf8_lossy(&seen).into_owned()
        });
        let mut sink =
            CollectorSink::new(&format!("http://{addr}/base/"), Some("t0k".into())).expect("url");
        let profile = ProfileBatch {
            ts: 2_000_000_000,
            labels: SampleLabels {
                service: "s".into(),
                endpoint: "GET /x".into(),
                ..SampleLabels::default()
            },
            samples: vec![StackSample {
                frames: vec!["main".into(), "run".into()],
                samples: 2,
                cpu_ns: 0,
            }],
        };
        sink.export(&[profile], 99).expect("delivered");
        let request = server.join().expect("server");
        assert!(
            request.starts_with(
                "POST /base/api/v1/profiles?format=folded&sample_rate=99&ts=2&service=s\
                 &endpoint=GET%20%2Fx HTTP/1.1\r\n"
            ),
            "{request}"
        );
        assert!(
            request.contains("Authorization: Bearer t0k\r\n"),
            "{request}"
        );
    }

    #[test]
    fn large_profiles_are_split_into_frames_with_the_same_labels() {
        let p = ProfileBatch {
            ts: 5_000_000_000,
            labels: SampleLabels {
                service: "s".into(),
                ..SampleLabels::default()
            },
            samples: (0..10)
                .map(|i| StackSample {
                    frames: vec!["main".into(), format!("f{i}")],
                    samples: 1,
                    cpu_ns: 0,
                })
                .chain(std::iter::once(StackSample {
                    frames: vec!["x".repeat(500)],
                    samples: 1,
                    cpu_ns: 0,
                }))
                .collect(),
        };
        let head = "format=folded&sample_rate=99&ts=5&service=s\n";
        let payloads = frame_payloads(&p, 99, head.len() + 30);
        assert_eq!(payloads.len(), 4, "{payloads:?}");
        assert!(payloads
            .iter()
            .all(|f| f.starts_with(head) && f.len() <= head.len() + 30));
        let lines: Vec<&str> = payloads.iter().flat_map(|f| f.lines().skip(1)).collect();
        assert_eq!(lines.len(), 10, "the oversize stack is left out");
        assert_eq!(frame_payloads(&p, 99, 1 << 20).len(), 1);
    }
}
