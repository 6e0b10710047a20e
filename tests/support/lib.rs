//! Helpers for the end-to-end tests: run the real `profwatch` binary, talk to it over real HTTP,
//! build event batches in each wire format.

pub mod pki;
pub mod webdriver;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use profwatch_model::{wire, RequestEvent};

/// The `profwatch` binary: `$PROFWATCH_BIN`, or the one cargo built next to this test.
pub fn profwatch_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PROFWATCH_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("profwatch");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p profwatch` first (the test command does)",
        bin.display()
    );
    bin
}

/// A running `profwatch server`.
#[derive(Debug)]
pub struct Server {
    pub child: Child,
    pub url: String,
    pub args: Vec<String>,
    pub log: PathBuf,
}

impl Server {
    /// Starts `profwatch server --listen 127.0.0.1:0 ARGS...` and waits until it listens.
    pub fn start(args: &[&str], log: &Path) -> Server {
        Self::start_on("127.0.0.1:0", args, log)
    }

    pub fn start_on(listen: &str, args: &[&str], log: &Path) -> Server {
        let mut all = vec![
            "server".to_owned(),
            "--listen".to_owned(),
            listen.to_owned(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let mut child = Command::new(profwatch_bin())
            .args(&all)
            .env("PROFWATCH_LOG", "info")
            .env_remove("PROFWATCH_CLICKHOUSE_URL")
            .env_remove("PROFWATCH_TOKENS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn profwatch");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let log_path = log.to_owned();
        std::thread::spawn(move || {
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .ok();
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = out.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if !sent {
                    if let Some(url) = line.strip_prefix("profwatch server listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "profwatch did not start; log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        };
        Server {
            child,
            url,
            args: all,
            log: log.to_owned(),
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns whether it exited with success.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        false
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url)
    }

    /// The server's peak resident memory so far (`VmHWM` of `/proc/<pid>/status`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the server's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .expect("VmHWM in /proc status")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub retry_after: Option<String>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// A blocking HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    http: reqwest::blocking::Client,
    pub token: Option<String>,
}

impl Client {
    pub fn new(base: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http: http_client_builder()
                .timeout(Duration::from_secs(120))
                .build()
                .expect("client"),
            token: None,
        }
    }

    /// A client for `base` that sends its requests with `http` (e.g. [`pki::https_client`]).
    pub fn with_http(base: &str, http: reqwest::blocking::Client) -> Client {
        Client {
            base: base.trim_end_matches('/').to_owned(),
            http,
            token: None,
        }
    }

    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    /// POSTs a body to `/api/v1/events` with the given content type and encoding.
    pub fn post_events(&self, body: Vec<u8>, content_type: &str, encoding: Option<&str>) -> Reply {
        self.post_with(body, content_type, encoding, &[])
    }

    pub fn post_with(
        &self,
        body: Vec<u8>,
        content_type: &str,
        encoding: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self
            .http
            .post(format!("{}/api/v1/events", self.base))
            .header("content-type", content_type)
            .body(body);
        if let Some(enc) = encoding {
            req = req.header("content-encoding", enc);
        }
        self.send(req, headers)
    }

    /// Adds the token and `headers`, sends, and turns a transport failure into status 0.
    fn send(&self, mut req: reqwest::blocking::RequestBuilder, headers: &[(&str, &str)]) -> Reply {
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send() {
            Ok(r) => reply(r),
            Err(e) => Reply {
                status: 0,
                body: e.to_string(),
                retry_after: None,
            },
        }
    }

    /// Any request: method, path (with query string), extra headers, body.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Reply {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base))
            .body(body);
        self.send(req, headers)
    }

    /// GET a path (with query string).
    pub fn get(&self, path_and_query: &str) -> Reply {
        let mut req = self.http.get(format!("{}{path_and_query}", self.base));
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        match req.send() {
            Ok(r) => reply(r),
            Err(e) => Reply {
                status: 0,
                body: e.to_string(),
                retry_after: None,
            },
        }
    }

    /// Weighted requests of a service, summed over its endpoints, over the last `hours`.
    pub fn total_requests(&self, service: &str, hours: i64) -> f64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let r = self.get(&format!(
            "/api/v1/endpoints?service={service}&from={}&to={}",
            now - hours * 3600,
            now + 3600
        ));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
            .as_array()
            .expect("array")
            .iter()
            .map(|row| row["requests"].as_f64().unwrap_or(0.0))
            .sum()
    }
}

fn reply(r: reqwest::blocking::Response) -> Reply {
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.text().unwrap_or_default();
    Reply {
        status,
        body,
        retry_after,
    }
}

/// `n` events of `service`, spread over the last ten minutes, with the given build.
pub fn events(service: &str, build: &str, n: usize) -> Vec<RequestEvent> {
    let now = profwatch_model::timefmt::now_ns();
    (0..n)
        .map(|i| RequestEvent {
            ts: now - (i as i64 % 600) * 1_000_000_000,
            service: service.to_owned(),
            endpoint: ["GET /a", "GET /b", "POST /c"][i % 3].to_owned(),
            build: build.to_owned(),
            dc: "dc1".to_owned(),
            host: format!("host-{}", i % 8),
            status: 200,
            cpu_ns: 1_000_000 + (i as u64 % 1000) * 1000,
            instructions: Some(3_000_000 + i as u64 % 5000),
            wall_ns: 2_000_000,
            weight: 1.0,
            labels: Default::default(),
        })
        .collect()
}

pub fn ndjson(events: &[RequestEvent]) -> Vec<u8> {
    events
        .iter()
        .map(|e| profwatch_model::ndjson::to_line(e, false))
        .collect::<String>()
        .into_bytes()
}

pub fn protobuf(events: &[RequestEvent]) -> Vec<u8> {
    wire::encode_batch(events)
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

pub fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 1).expect("zstd")
}

/// Waits until `f` returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The ClickHouse URL of the test server, or `None` (a recorded skip) when told to skip.
pub use profwatch_testkit::clickhouse_url;

/// Runs SQL on ClickHouse over its HTTP interface and returns the text answer.
pub fn clickhouse_query(url: &str, sql: &str) -> Result<String, String> {
    let r = http_client()
        .post(url)
        .body(sql.to_owned())
        .send()
        .map_err(|e| e.to_string())?;
    let ok = r.status().is_success();
    let text = r.text().map_err(|e| e.to_string())?;
    if ok {
        Ok(text)
    } else {
        Err(text)
    }
}

/// 100,000 distinct stacks in folded form: five levels of ten under a common prefix (~111k
/// nodes), with `<`, `>` and `&` in the names. The UI test draws it; `profwatch-bench flame`
/// times the server's answer for it.
pub fn big_profile() -> String {
    let mut out = String::with_capacity(100_000 * 110);
    for i in 0..100_000u32 {
        let d = |k: u32| (i / 10u32.pow(k)) % 10;
        out.push_str(&format!(
            "main;search::serve<Q>;level1<{}>;level2&{};level3::<{}>;level4<&{}>;leaf{}<T&U> {}\n",
            d(4),
            d(3),
            d(2),
            d(1),
            d(0),
            1 + i % 7
        ));
    }
    out
}

/// The repository root (for scripts).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_owned()
}

/// A fresh directory for a test's logs and data, kept under `tests/artifacts/` for CI to show.
pub fn artifacts(test: &str) -> PathBuf {
    let dir = repo_root().join("tests").join("artifacts").join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// The workspace's seeded generator, for generated test data, so runs repeat.
pub use profwatch_model::rng::Rng;

/// A blocking HTTP client (the TLS crypto provider installed first: reqwest needs one).
pub fn http_client() -> reqwest::blocking::Client {
    profwatch_model::tls::install_crypto_provider();
    reqwest::blocking::Client::new()
}

/// A blocking HTTP client builder, likewise.
pub fn http_client_builder() -> reqwest::blocking::ClientBuilder {
    profwatch_model::tls::install_crypto_provider();
    reqwest::blocking::Client::builder()
}
