//! Running the real `profwatch server` binary, and talking to ClickHouse over HTTP.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Where a server keeps its data.
#[derive(Debug, Clone)]
pub enum StoreArgs {
    Embedded {
        data_dir: PathBuf,
    },
    ClickHouse {
        url: String,
        database: String,
    },
    /// ClickHouse in cluster mode, entering through `url`.
    ClickHouseCluster {
        url: String,
        database: String,
        cluster: String,
    },
}

impl StoreArgs {
    fn args(&self) -> Vec<String> {
        match self {
            StoreArgs::Embedded { data_dir } => {
                vec!["--data-dir".into(), data_dir.display().to_string()]
            }
            StoreArgs::ClickHouse { url, database } => vec![
                "--clickhouse-url".into(),
                url.clone(),
                "--clickhouse-database".into(),
                database.clone(),
            ],
            StoreArgs::ClickHouseCluster {
                url,
                database,
                cluster,
            } => vec![
                "--clickhouse-url".into(),
                url.clone(),
                "--clickhouse-database".into(),
                database.clone(),
                "--clickhouse-cluster".into(),
                cluster.clone(),
            ],
        }
    }
}

/// A running `profwatch server`, killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

/// Environment variables of `profwatch server` that must not leak into the benchmark.
const SERVER_ENV: &[&str] = &[
    "PROFWATCH_CONFIG",
    "PROFWATCH_LISTEN",
    "PROFWATCH_DATA_DIR",
    "PROFWATCH_RETENTION",
    "PROFWATCH_CLICKHOUSE_URL",
    "PROFWATCH_CLICKHOUSE_DATABASE",
    "PROFWATCH_CLICKHOUSE_USER",
    "PROFWATCH_CLICKHOUSE_PASSWORD",
    "PROFWATCH_CLICKHOUSE_CLUSTER",
    "PROFWATCH_TOKENS",
];

impl Server {
    /// Starts `BIN server --listen 127.0.0.1:0 STORE-ARGS` and waits until it listens.
    /// Its stderr is appended to `log`.
    pub fn start(bin: &Path, store: &StoreArgs, log: &Path) -> anyhow::Result<Server> {
        Server::start_with(bin, store, log, &[])
    }

    /// [`Server::start`] with more flags (`--no-rollups`).
    pub fn start_with(
        bin: &Path,
        store: &StoreArgs,
        log: &Path,
        flags: &[&str],
    ) -> anyhow::Result<Server> {
        let mut cmd = Command::new(bin);
        cmd.arg("server")
            .arg("--listen")
            .arg("127.0.0.1:0")
            // Every timed query must reach the store, not the query cache; the analysis runs
            // only when the bench asks for it.
            .args(["--query-cache-bytes", "0", "--analysis-interval", "0s"])
            .args(store.args())
            .args(flags);
        for v in SERVER_ENV {
            cmd.env_remove(v);
        }
        if std::env::var_os("PROFWATCH_LOG").is_none() {
            cmd.env("PROFWATCH_LOG", "info");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child
            .stderr
            .take()
            .context("the server's stderr was not captured")?;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(out, "{line}");
                if !sent {
                    if let Some(url) = line.strip_prefix("profwatch server listening on ") {
                        let _ = tx.send(url.trim().to_owned());
                        sent = true;
                    }
                }
            }
        });
        let started = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(url) => {
                    return Ok(Server {
                        child,
                        url,
                        log: log.to_owned(),
                    })
                }
                Err(mpsc::RecvTimeoutError::Timeout)
                    if started.elapsed() < Duration::from_secs(120) =>
                {
                    if let Some(status) = child.try_wait().context("waiting for the server")? {
                        bail!(
                            "profwatch server exited with {status} before listening; log {}:\n{}",
                            log.display(),
                            tail(log)
                        );
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    bail!(
                        "profwatch server did not start listening within 120 s; log {}:\n{}",
                        log.display(),
                        tail(log)
                    );
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -TERM` and waits for the exit (at most `timeout`, then SIGKILL and an error).
    /// Returns how long the shutdown took.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            bail!("kill -TERM {} failed: {status}", self.child.id());
        }
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().context("waiting for the server")? {
                return self.exited(status, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!(
            "profwatch server did not exit within {timeout:?} of SIGTERM (killed); log {}",
            self.log.display()
        )
    }

    fn exited(&self, status: ExitStatus, took: Duration) -> anyhow::Result<Duration> {
        if !status.success() {
            bail!(
                "profwatch server exited with {status} after SIGTERM; log {}:\n{}",
                self.log.display(),
                tail(&self.log)
            );
        }
        Ok(took)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A scratch ClickHouse database, dropped when this value is dropped.
#[derive(Debug)]
pub struct ClickHouse {
    pub url: String,
    pub database: String,
    /// Leave the database in place at the end (`--keep`).
    pub keep: bool,
    http: reqwest::blocking::Client,
}

impl ClickHouse {
    /// Checks that ClickHouse answers and names a fresh database `pw_bench_<pid>`.
    pub fn new(url: &str) -> anyhow::Result<ClickHouse> {
        profwatch_model::tls::install_crypto_provider();
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(3600))
            .build()
            .context("building an HTTP client")?;
        let ch = ClickHouse {
            url: url.trim_end_matches('/').to_owned(),
            database: format!("pw_bench_{}", std::process::id()),
            keep: false,
            http,
        };
        ch.exec(&format!("DROP DATABASE IF EXISTS {}", ch.database))
            .with_context(|| format!("ClickHouse at {url} does not answer"))?;
        Ok(ch)
    }

    /// POSTs one SQL statement and returns the answer's body.
    pub fn exec(&self, sql: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .post(format!("{}/", self.url))
            .body(sql.to_owned())
            .send()
            .with_context(|| format!("sending {sql:?} to {}", self.url))?;
        let status = r.status();
        let body = r.text().context("reading ClickHouse's answer")?;
        if !status.is_success() {
            bail!("ClickHouse answered {status} to {sql:?}: {}", body.trim());
        }
        Ok(body)
    }

    pub fn version(&self) -> anyhow::Result<String> {
        Ok(self.exec("SELECT version()")?.trim().to_owned())
    }

    /// Merges the events table's parts, then returns the bytes on disk of the whole database,
    /// the rows of `events` and the number of active parts.
    pub fn disk_usage(&self) -> anyhow::Result<(u64, u64, u64)> {
        self.exec(&format!("OPTIMIZE TABLE {}.events FINAL", self.database))?;
        let out = self.exec(&format!(
            "SELECT sum(bytes_on_disk), sumIf(rows, table = 'events'), count() FROM system.parts \
             WHERE database = '{}' AND active FORMAT TSV",
            self.database
        ))?;
        let fields: Vec<u64> = out
            .trim()
            .split('\t')
            .map(|f| f.parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading system.parts: {out:?}"))?;
        match fields.as_slice() {
            [bytes, rows, parts] => Ok((*bytes, *rows, *parts)),
            _ => bail!("unexpected answer from system.parts: {out:?}"),
        }
    }

    /// Compressed bytes on disk per table and per column of the events table (the codecs'
    /// share), from `system.parts` and `system.columns`.
    pub fn disk_breakdown(&self) -> anyhow::Result<DiskBreakdown> {
        let tables = self.exec(&format!(
            "SELECT table, sum(bytes_on_disk) FROM system.parts \
             WHERE database = '{}' AND active GROUP BY table ORDER BY table FORMAT TSV",
            self.database
        ))?;
        let tables = tables
            .lines()
            .map(|l| match l.split('\t').collect::<Vec<_>>().as_slice() {
                [t, b] => Ok((t.to_string(), b.parse::<u64>()?)),
                _ => bail!("unexpected line from system.parts: {l:?}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // `compression_codec` came with codecs (19.x); 18.16 has neither.
        let has_codecs = self.exec(
            "SELECT count() FROM system.columns \
             WHERE database = 'system' AND table = 'columns' AND name = 'compression_codec' \
             FORMAT TSV",
        )?;
        let codec = if has_codecs.trim() == "0" {
            "''"
        } else {
            "compression_codec"
        };
        let columns = self.exec(&format!(
            "SELECT name, concat(type, ' ', {codec}), data_compressed_bytes \
             FROM system.columns WHERE database = '{}' AND table = 'events' FORMAT TSV",
            self.database
        ))?;
        let columns = columns
            .lines()
            .map(|l| match l.split('\t').collect::<Vec<_>>().as_slice() {
                [n, t, b] => Ok((n.to_string(), t.trim().to_string(), b.parse::<u64>()?)),
                _ => bail!("unexpected line from system.columns: {l:?}"),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(DiskBreakdown { tables, columns })
    }
}

/// Where a ClickHouse database's bytes are.
pub struct DiskBreakdown {
    /// `(table, bytes on disk)`.
    pub tables: Vec<(String, u64)>,
    /// Of the events table: `(column, type with codec, compressed bytes)`.
    pub columns: Vec<(String, String, u64)>,
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept ClickHouse database {}", self.database);
            return;
        }
        if let Err(e) = self.exec(&format!("DROP DATABASE IF EXISTS {}", self.database)) {
            eprintln!("warning: could not drop database {}: {e:#}", self.database);
        }
    }
}
