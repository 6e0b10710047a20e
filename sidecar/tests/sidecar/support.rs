//! A scriptable mock collector and helpers to run a sidecar against it.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use profwatch_model::memory::{MemoryBatch, MemorySample};
use profwatch_model::{ndjson, wire, RequestEvent};
use profwatch_sidecar::{RetryPolicy, Sidecar, SidecarConfig};

/// One POST the mock collector saw.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: u16,
    pub key: Option<String>,
    pub auth: Option<String>,
    pub events: Vec<RequestEvent>,
}

/// One memory POST the mock collector saw: its status, `Idempotency-Key` and samples.
pub type MemoryAttempt = (u16, Option<String>, Vec<MemorySample>);

/// One profile POST the mock collector saw.
#[derive(Debug, Clone)]
pub struct ProfileAttempt {
    pub status: u16,
    pub key: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// The query parameters, percent-decoded.
    pub params: BTreeMap<String, String>,
    /// The body, decompressed: folded stacks.
    pub folded: String,
}

impl ProfileAttempt {
    /// (stack, count) per folded line.
    pub fn stacks(&self) -> Vec<(String, u64)> {
        self.folded
            .lines()
            .filter_map(|l| l.rsplit_once(' '))
            .map(|(stack, n)| (stack.to_owned(), n.parse().unwrap_or(0)))
            .collect()
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

#[derive(Debug, Default)]
pub struct MockState {
    pub attempts: Mutex<Vec<Attempt>>,
    pub profile_attempts: Mutex<Vec<ProfileAttempt>>,
    /// What profile POSTs are answered (200 unless set).
    pub profile_status: Mutex<Option<u16>>,
    /// Statuses (and Retry-After seconds) answered before falling back to `default`.
    pub script: Mutex<VecDeque<(u16, Option<u64>)>>,
    /// What to answer when the script is empty (200 unless set).
    pub default: Mutex<Option<u16>>,
    /// When set, event POSTs without `Authorization: Bearer {token}` are answered 401.
    pub token: Mutex<Option<String>>,
    /// When set, an event batch holding an event of this `build` is answered this status.
    pub poison: Mutex<Option<(String, u16)>>,
    /// Memory POSTs: their status and samples.
    pub memory_attempts: Mutex<Vec<MemoryAttempt>>,
    /// What memory POSTs are answered (200 unless set).
    pub memory_status: Mutex<Option<u16>>,
}

#[derive(Debug)]
pub struct MockCollector {
    pub url: String,
    pub state: Arc<MockState>,
}

impl MockCollector {
    pub async fn start() -> MockCollector {
        let state = Arc::new(MockState::default());
        let app = axum::Router::new()
            .route("/api/v1/events", axum::routing::post(ingest))
            .route("/api/v1/profiles", axum::routing::post(ingest_profile))
            .route("/api/v1/memory", axum::routing::post(ingest_memory))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockCollector {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.state
            .script
            .lock()
            .expect("lock")
            .extend(answers.iter().copied());
    }

    pub fn set_default(&self, status: u16) {
        *self.state.default.lock().expect("lock") = Some(status);
    }

    /// Answers 401 to every event batch without this bearer token.
    pub fn require_token(&self, token: &str) {
        *self.state.token.lock().expect("lock") = Some(token.to_owned());
    }

    /// Answers `status` to every event batch holding an event of `build` (`None`: stop).
    pub fn poison(&self, build: Option<&str>, status: u16) {
        *self.state.poison.lock().expect("lock") = build.map(|b| (b.to_owned(), status));
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.attempts.lock().expect("lock").clone()
    }

    pub fn set_profile_status(&self, status: u16) {
        *self.state.profile_status.lock().expect("lock") = Some(status);
    }

    pub fn profile_attempts(&self) -> Vec<ProfileAttempt> {
        self.state.profile_attempts.lock().expect("lock").clone()
    }

    /// Every acknowledged profile.
    pub fn profiles(&self) -> Vec<ProfileAttempt> {
        self.profile_attempts()
            .into_iter()
            .filter(|a| a.status == 200)
            .collect()
    }

    pub fn set_memory_status(&self, status: u16) {
        *self.state.memory_status.lock().expect("lock") = Some(status);
    }

    /// Memory POSTs: (status, idempotency key, samples).
    pub fn memory_attempts(&self) -> Vec<MemoryAttempt> {
        self.state.memory_attempts.lock().expect("lock").clone()
    }

    /// Samples of every acknowledged memory POST.
    pub fn memory(&self) -> Vec<MemorySample> {
        self.memory_attempts()
            .into_iter()
            .filter(|a| a.0 == 200)
            .flat_map(|a| a.2)
            .collect()
    }

    /// Events of every acknowledged batch.
    pub fn stored(&self) -> Vec<RequestEvent> {
        self.attempts()
            .into_iter()
            .filter(|a| a.status == 200)
            .flat_map(|a| a.events)
            .collect()
    }
}

async fn ingest(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(header("content-encoding").as_deref(), Some("zstd"));
    let raw = zstd::decode_all(body.as_ref()).expect("zstd body");
    let events = wire::decode_batch(&raw).expect("protobuf batch");
    let token = state.token.lock().expect("lock").clone();
    let poison = state.poison.lock().expect("lock").clone();
    let (status, retry_after) =
        if token.is_some_and(|t| header("authorization") != Some(format!("Bearer {t}"))) {
            (401, None)
        } else if let Some((_, status)) =
            poison.filter(|(build, _)| events.iter().any(|e| &e.build == build))
        {
            (status, None)
        } else {
            let scripted = state.script.lock().expect("lock").pop_front();
            scripted.unwrap_or((state.default.lock().expect("lock").unwrap_or(200), None))
        };
    state.attempts.lock().expect("lock").push(Attempt {
        status,
        key: header("idempotency-key"),
        auth: header("authorization"),
        events: events.clone(),
    });
    let mut resp = (
        StatusCode::from_u16(status).expect("status"),
        format!("{{\"stored\":{}}}", events.len()),
    )
        .into_response();
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", s.to_string().parse().expect("header"));
    }
    resp
}

async fn ingest_profile(
    State(state): State<Arc<MockState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let raw = if header("content-encoding").as_deref() == Some("zstd") {
        zstd::decode_all(body.as_ref()).unwrap_or_default()
    } else {
        body.to_vec()
    };
    let params = query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let status = state.profile_status.lock().expect("lock").unwrap_or(200);
    state
        .profile_attempts
        .lock()
        .expect("lock")
        .push(ProfileAttempt {
            status,
            key: header("idempotency-key"),
            content_type: header("content-type"),
            content_encoding: header("content-encoding"),
            params,
            folded: String::from_utf8_lossy(&raw).into_owned(),
        });
    (StatusCode::from_u16(status).expect("status"), "{}")
}

async fn ingest_memory(
    State(state): State<Arc<MockState>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    assert_eq!(header("content-encoding").as_deref(), Some("zstd"));
    let raw = zstd::decode_all(body.as_ref()).expect("zstd body");
    let batch: MemoryBatch = serde_json::from_slice(&raw).expect("a JSON MemoryBatch");
    let status = state.memory_status.lock().expect("lock").unwrap_or(200);
    state.memory_attempts.lock().expect("lock").push((
        status,
        header("idempotency-key"),
        batch.samples,
    ));
    (StatusCode::from_u16(status).expect("status"), "{}")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A sidecar config for tests: fast batches and retries, UDP and metrics on free ports.
pub fn config(collector: &str, dir: &Path) -> SidecarConfig {
    let mut cfg =
        SidecarConfig::new(collector, dir.join("agent.sock"), dir.join("spool")).expect("config");
    cfg.host = "test-host".into();
    cfg.dc = Some("test-dc".into());
    cfg.udp = Some("127.0.0.1:0".parse().expect("addr"));
    cfg.metrics = Some("127.0.0.1:0".parse().expect("addr"));
    cfg.batch_max_events = 100;
    cfg.batch_max_wait = Duration::from_millis(100);
    cfg.retry = RetryPolicy {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        set_aside_after: 10,
    };
    cfg
}

/// The names of the files in `dir`, sorted (none if it does not exist).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// GETs `path` from the sidecar's metrics port.
pub async fn get_text(sidecar: &Sidecar, path: &str) -> String {
    let addr = sidecar.metrics_addr().expect("metrics port");
    profwatch_model::tls::install_crypto_provider();
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}

/// An event line of `service` with a distinguishing `build`.
pub fn line(service: &str, build: &str) -> String {
    ndjson::to_line(&event(service, build), false)
}

pub fn event(service: &str, build: &str) -> RequestEvent {
    RequestEvent {
        ts: profwatch_model::timefmt::now_ns(),
        service: service.into(),
        endpoint: "GET /x".into(),
        build: build.into(),
        dc: String::new(),
        host: String::new(),
        status: 200,
        cpu_ns: 1000,
        instructions: None,
        wall_ns: 2000,
        weight: 1.0,
        labels: Default::default(),
    }
}

/// Writes `bytes` to the sidecar's socket on one connection (blocking; run off the runtime).
pub async fn send_unix(sidecar: &Sidecar, bytes: Vec<u8>) {
    let path = sidecar.socket_path().to_owned();
    tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(&path).expect("connect");
        s.write_all(&bytes).expect("write");
    })
    .await
    .expect("send task");
}

pub fn send_udp(to: SocketAddr, datagram: &[u8]) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    s.send_to(datagram, to).expect("send");
}

/// Polls `f` every 20 ms for up to `timeout`.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Runs a compiler; panics with its output when it fails.
pub fn build(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
