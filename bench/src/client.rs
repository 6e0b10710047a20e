//! The HTTP side: posting batches with N client threads, verifying counts, timing queries.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::Value;

use crate::gen::Workload;

pub fn http_client() -> anyhow::Result<reqwest::blocking::Client> {
    profwatch_model::tls::install_crypto_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .pool_max_idle_per_host(64)
        .build()
        .context("building an HTTP client")
}

/// What sending a workload measured.
#[derive(Debug, Clone)]
pub struct PostResult {
    /// Events the server acknowledged (sum of `stored`).
    pub acked: u64,
    pub batches: usize,
    /// Batches that got at least one 429/503 before their 200.
    pub retried_batches: usize,
    /// 429 and 503 answers in all.
    pub status_429: u64,
    pub status_503: u64,
    /// From the first request to the last 200.
    pub elapsed: Duration,
    /// Latency of every request answered 200, seconds, sorted.
    pub latencies: Vec<f64>,
    /// Latency of every request answered 429/503, seconds.
    pub rejected_latencies: Vec<f64>,
}

impl PostResult {
    pub fn events_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The percentile `p` (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How long a 429/503 asks us to wait: its `Retry-After` in seconds, else 100 ms; at most 30 s.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|s| Duration::from_secs_f64(s.clamp(0.0, 30.0)))
        .unwrap_or(Duration::from_millis(100))
}

#[derive(Debug, Default)]
struct WorkerStats {
    acked: u64,
    retried_batches: usize,
    status_429: u64,
    status_503: u64,
    latencies: Vec<f64>,
    rejected_latencies: Vec<f64>,
    last_ok: Option<Instant>,
}

/// POSTs every batch of `work` with `clients` threads; 429/503 are retried after Retry-After.
/// Anything else that is not a 200 (or a transport error, after which we cannot know whether
/// the batch was stored) fails the run. With `progress`, prints a line to stderr every 5 s.
pub fn post_all(
    base: &str,
    work: &Workload,
    clients: usize,
    progress: Option<&str>,
) -> anyhow::Result<PostResult> {
    let http = http_client()?;
    let url = format!("{base}/api/v1/events");
    let next = AtomicUsize::new(0);
    let acked = AtomicU64::new(0);
    let abort = AtomicBool::new(false);
    let done = Mutex::new(false);
    let done_cv = std::sync::Condvar::new();
    let started = Instant::now();

    let results: Vec<anyhow::Result<WorkerStats>> = std::thread::scope(|scope| {
        let progress_thread = progress.map(|what| {
            let (acked, done, done_cv) = (&acked, &done, &done_cv);
            scope.spawn(move || {
                let mut guard = done.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (g, timeout) = done_cv
                        .wait_timeout(guard, Duration::from_secs(5))
                        .unwrap_or_else(|e| e.into_inner());
                    guard = g;
                    if *guard {
                        break;
                    }
                    if timeout.timed_out() {
                        let n = acked.load(Ordering::Relaxed);
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!(
                            "  {what}: {n} / {} events acknowledged, {:.0} s, {:.0} events/s",
                            work.events,
                            secs,
                            n as f64 / secs
                        );
                    }
                }
            })
        });
        let workers: Vec<_> = (0..clients.max(1))
            .map(|_| {
                let (http, url, next, acked, abort) = (&http, &url, &next, &acked, &abort);
                scope.spawn(move || -> anyhow::Result<WorkerStats> {
                    let mut st = WorkerStats::default();
                    let result = (|| -> anyhow::Result<()> {
                        loop {
                            if abort.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(batch) = work.batches.get(i) else {
                                return Ok(());
                            };
                            let mut retried = false;
                            loop {
                                let t0 = Instant::now();
                                let resp = http
                                    .post(url.as_str())
                                    .header("content-type", "application/x-protobuf")
                                    .header("content-encoding", "gzip")
                                    .body(batch.body.clone())
                                    .send()
                                    .with_context(|| format!("POST batch {i} to {url}"))?;
                                let status = resp.status().as_u16();
                                let wait = retry_after(resp.headers());
                                let body = resp
                                    .text()
                                    .with_context(|| format!("reading the answer to batch {i}"))?;
                                let lat = t0.elapsed().as_secs_f64();
                                match status {
                                    200 => {
                                        let v: Value = serde_json::from_str(&body).with_context(
                                            || format!("answer to batch {i} is not JSON: {body}"),
                                        )?;
                                        let stored = v["stored"].as_u64().with_context(|| {
                                            format!("answer to batch {i} has no `stored`: {body}")
                                        })?;
                                        if stored != batch.events as u64 {
                                            bail!(
                                                "batch {i}: sent {} events, server says stored {stored}",
                                                batch.events
                                            );
                                        }
                                        st.acked += stored;
                                        acked.fetch_add(stored, Ordering::Relaxed);
                                        st.latencies.push(lat);
                                        st.last_ok = Some(Instant::now());
                                        if retried {
                                            st.retried_batches += 1;
                                        }
                                        break;
                                    }
                                    429 | 503 => {
                                        if status == 429 {
                                            st.status_429 += 1;
                                        } else {
                                            st.status_503 += 1;
                                        }
                                        st.rejected_latencies.push(lat);
                                        retried = true;
                                        std::thread::sleep(wait);
                                    }
                                    _ => bail!("batch {i}: HTTP {status}: {}", body.trim()),
                                }
                            }
                        }
                    })();
                    if result.is_err() {
                        abort.store(true, Ordering::Relaxed);
                    }
                    result.map(|()| st)
                })
            })
            .collect();
        let results = workers
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect();
        *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        done_cv.notify_all();
        if let Some(p) = progress_thread {
            let _ = p.join();
        }
        results
    });

    let mut out = PostResult {
        acked: 0,
        batches: work.batches.len(),
        retried_batches: 0,
        status_429: 0,
        status_503: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        rejected_latencies: Vec::new(),
    };
    let mut last_ok = started;
    for r in results {
        let st = r?;
        out.acked += st.acked;
        out.retried_batches += st.retried_batches;
        out.status_429 += st.status_429;
        out.status_503 += st.status_503;
        out.latencies.extend(st.latencies);
        out.rejected_latencies.extend(st.rejected_latencies);
        if let Some(t) = st.last_ok {
            last_ok = last_ok.max(t);
        }
    }
    out.elapsed = last_ok - started;
    out.latencies.sort_by(f64::total_cmp);
    out.rejected_latencies.sort_by(f64::total_cmp);
    Ok(out)
}

/// A GET answered 200 with a JSON body, and how long it took (to the last byte).
pub fn get_json(http: &reqwest::blocking::Client, url: &str) -> anyhow::Result<(Value, Duration)> {
    let (took, body) = get_timed(http, url)?;
    let v = serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))?;
    Ok((v, took))
}

/// GET `url`: the time from the request to the last byte of the answer, and its body; an
/// answer other than 2xx is an error carrying the body.
pub fn get_timed(
    http: &reqwest::blocking::Client,
    url: &str,
) -> anyhow::Result<(Duration, Vec<u8>)> {
    let t0 = Instant::now();
    let resp = http.get(url).send().with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .with_context(|| format!("reading the answer of GET {url}"))?;
    let took = t0.elapsed();
    if !status.is_success() {
        bail!(
            "GET {url}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok((took, body.to_vec()))
}

/// Sum of `requests` over the rows of a JSON array answer.
pub fn sum_requests(v: &Value) -> anyhow::Result<f64> {
    let rows = v.as_array().context("the answer is not a JSON array")?;
    rows.iter()
        .map(|r| {
            r["requests"]
                .as_f64()
                .context("a row has no numeric `requests`")
        })
        .sum()
}

/// The `from`/`to` query parameters (unix seconds) that cover every event of `work`.
pub fn covering_range(work: &Workload) -> (i64, i64) {
    let from = work.min_ts.div_euclid(1_000_000_000) - 60;
    let to = work.max_ts.div_euclid(1_000_000_000) + 3600;
    (from, to)
}

/// Checks through `/api/v1/endpoints` that each service holds exactly the events generated
/// for it, and that their sum equals the events acknowledged. Returns the total found.
pub fn verify(base: &str, work: &Workload, acked: u64) -> anyhow::Result<u64> {
    let http = http_client()?;
    let (from, to) = covering_range(work);
    let mut total = 0u64;
    let mut problems = Vec::new();
    for (service, expected) in work.services.iter().zip(&work.per_service) {
        let url = format!("{base}/api/v1/endpoints?service={service}&from={from}&to={to}");
        let (v, _) = get_json(&http, &url)?;
        let found = sum_requests(&v)?.round() as u64;
        total += found;
        if found != *expected {
            problems.push(format!("{service}: {found} stored, {expected} sent"));
        }
    }
    if total != acked || !problems.is_empty() {
        bail!(
            "stored events do not match: {total} found by /api/v1/endpoints, {acked} acknowledged, {} sent; {}",
            work.events,
            problems.join("; ")
        );
    }
    Ok(total)
}

/// Timings of one query: a warm-up, then `runs` timed runs.
#[derive(Debug, Clone)]
pub struct QueryTiming {
    pub what: String,
    pub url: String,
    pub warmup_secs: f64,
    /// Sorted.
    pub runs: Vec<f64>,
    pub rows: usize,
    pub requests: f64,
}

impl QueryTiming {
    pub fn min(&self) -> f64 {
        self.runs.first().copied().unwrap_or(f64::NAN)
    }
    pub fn max(&self) -> f64 {
        self.runs.last().copied().unwrap_or(f64::NAN)
    }
    pub fn median(&self) -> f64 {
        crate::sys::median(&self.runs)
    }
}

pub fn time_query(
    http: &reqwest::blocking::Client,
    what: &str,
    url: &str,
    runs: usize,
) -> anyhow::Result<QueryTiming> {
    let (v, warm) = get_json(http, url)?;
    let rows = v.as_array().map_or(0, Vec::len);
    let requests = sum_requests(&v)?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (v, took) = get_json(http, url)?;
        if v.as_array().map_or(0, Vec::len) != rows {
            bail!("{what}: the number of rows changed between runs");
        }
        times.push(took.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(QueryTiming {
        what: what.to_owned(),
        url: url.to_owned(),
        warmup_secs: warm.as_secs_f64(),
        runs: times,
        rows,
        requests,
    })
}
