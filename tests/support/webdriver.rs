//! A minimal W3C WebDriver client over blocking reqwest, for headless Chromium driven by
//! Debian's `chromedriver`: sessions, navigation, elements, pointer actions, scripts,
//! screenshots and the browser log. Just what the dashboard tests need.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The key under which W3C element references travel.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What a test needs installed: the exact apt line, for the failure message.
pub const APT_LINE: &str = "apt-get install -y chromium chromium-driver";

/// A `chromedriver` process and one browser session in it.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

fn find_binary(names: &[&str]) -> Option<String> {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = Path::new(dir).join(n);
            if p.exists() {
                return Some(p.to_string_lossy().into_owned());
            }
        }
    }
    None
}

impl Browser {
    /// Whether headless Chromium and chromedriver are installed; else what to install.
    pub fn installed() -> Result<(), String> {
        match (
            find_binary(&["chromium", "chromium-browser"]),
            find_binary(&["chromedriver"]),
        ) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err(format!(
                "Chromium or chromedriver is missing: run `{APT_LINE}` (Debian packages)"
            )),
        }
    }

    /// Starts chromedriver and a headless Chromium with a fresh profile and no network chatter.
    /// Panics, naming the apt line, when either is missing.
    pub fn start(width: u32, height: u32) -> Browser {
        let chromium = find_binary(&["chromium", "chromium-browser"]).unwrap_or_else(|| {
            panic!("headless Chromium is missing: run `{APT_LINE}` (Debian packages)")
        });
        let driver_bin = find_binary(&["chromedriver"]).unwrap_or_else(|| {
            panic!("chromedriver is missing: run `{APT_LINE}` (Debian packages)")
        });
        // Port 0: chromedriver picks a free port and says which.
        let mut driver = Command::new(driver_bin)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let port = announced_port(&mut driver);
        let base = format!("http://127.0.0.1:{port}");
        let http = crate::http_client_builder()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-default-apps".to_owned(),
            "--disable-extensions".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-quic".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "webdriver {method} {path}: {status}: {}",
            v["value"]["message"]
        );
        v["value"].clone()
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// Runs a synchronous script; `return` gives the answer.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The first element matching a CSS selector, waiting up to `timeout` for it.
    pub fn find(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let url = format!("{}{}", self.base, self.s("/element"));
            let r = self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(json!({"using": "css selector", "value": css}).to_string())
                .send()
                .expect("find element");
            if r.status().is_success() {
                let v: Value = r.json().expect("json");
                return v["value"][ELEMENT]
                    .as_str()
                    .unwrap_or_else(|| panic!("no element id in {v}"))
                    .to_owned();
            }
            assert!(Instant::now() < deadline, "no element matches {css:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, element: &str) {
        self.call("POST", &self.s(&format!("/element/{element}/click")), None);
    }

    pub fn send_keys(&self, element: &str, text: &str) {
        self.call(
            "POST",
            &self.s(&format!("/element/{element}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// Moves the pointer to (x, y) in viewport pixels and, when `click`, clicks there.
    pub fn pointer(&self, x: f64, y: f64, click: bool) {
        let mut actions = vec![
            json!({"type": "pointerMove", "duration": 0, "origin": "viewport",
            "x": x.round() as i64, "y": y.round() as i64}),
        ];
        if click {
            actions.push(json!({"type": "pointerDown", "button": 0}));
            actions.push(json!({"type": "pointerUp", "button": 0}));
        }
        self.call(
            "POST",
            &self.s("/actions"),
            Some(json!({"actions": [{"type": "pointer", "id": "mouse",
                "parameters": {"pointerType": "mouse"}, "actions": actions}]})),
        );
        self.call("DELETE", &self.s("/actions"), None);
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64_decode(b64.as_str().expect("base64 string"));
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Browser log entries since the last call: (level, message).
    pub fn log(&self) -> Vec<(String, String)> {
        let url = format!("{}{}", self.base, self.s("/se/log"));
        let Ok(r) = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(json!({"type": "browser"}).to_string())
            .send()
        else {
            return Vec::new();
        };
        let v: Value = r.json().unwrap_or(Value::Null);
        v["value"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        (
                            e["level"].as_str().unwrap_or("").to_owned(),
                            e["message"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Polls `script` (which returns a boolean) until true.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.js(script, json!([])) != Value::Bool(true) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// The port chromedriver announces on stdout ("... started successfully on port N."); its
/// stdout is drained afterwards so it never blocks on a full pipe.
fn announced_port(driver: &mut std::process::Child) -> u16 {
    use std::io::BufRead;
    let stdout = driver.stdout.take().expect("chromedriver stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sent {
                continue;
            }
            if let Some(rest) = line.split("on port ").nth(1) {
                if let Ok(port) = rest.trim_end_matches('.').trim().parse::<u16>() {
                    if port != 0 {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("chromedriver did not say which port it listens on")
}
