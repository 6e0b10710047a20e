//! The shipper: sends spooled batches to the collector, oldest first, one at a time. Event
//! batches go to `/api/v1/events`, profiles to `/api/v1/profiles?{their query}`, memory
//! samples to `/api/v1/memory`; every kind shares the spool, the order and the outcomes below.
//!
//! Each attempt ends in one of three outcomes (Vector's end-to-end acknowledgement):
//! - **Delivered** (2xx): the record is removed from the spool, and only then.
//! - **Errored** (network error, timeout, and every status but 2xx, 400, 413 and 422: 401,
//!   403, 404, 407, 408, 429, 5xx, ...): the same record, with the same `Idempotency-Key`, is
//!   sent again after an exponential backoff with jitter, or after the collector's
//!   `Retry-After` when it asks for longer. Nothing is removed: a 401 after a token rotation,
//!   or a 403/404 from a proxy during a deploy, ends when the collector accepts again.
//! - **Rejected** (400, 413, 422: the batch itself is refused, sending it again cannot help):
//!   the record is written whole to the dead-letter folder (`super::dead_letter`), and only
//!   then removed from the spool. Should that write fail, the attempt counts as Errored.
//!
//! A batch that ends Errored `set_aside_after` times in a row is **set aside**
//! ([`Spool::set_aside`]): it moves behind every batch spooled so far, so the batches after it
//! ship; when its turn comes again it gets one attempt per turn. It is never deleted for
//! failing. The backoff grows with consecutive failures of any batch and resets on a delivery,
//! so an outage (every batch failing, each set aside in turn) keeps the longest delay.
//!
//! The collector's status while it refuses (the last non-2xx status, since when) is in the
//! metrics and `profwatch agent status` until a delivery succeeds.
//!
//! Invariant: the spool (or, for a Rejected batch, the dead-letter folder) holds the only copy
//! of a batch in flight, so a crash at any point either re-sends it (same id) or has already
//! delivered (or dead-lettered) it. The collector deduplicates event batches and profiles by
//! their id.

use std::sync::Arc;
use std::time::Duration;

use profwatch_model::secret::Secret;
use tokio::sync::watch;

use super::config::{RetryPolicy, SidecarConfig};
use super::dead_letter::{DeadLetters, Put};
use super::metrics::Metrics;
use super::spool::{random_u64, RecordKind, Spool, SpoolRecord};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth sending again; `status` is the collector's answer (`None`: no answer).
    Errored {
        status: Option<u16>,
        retry_after: Option<Duration>,
        why: String,
    },
    /// The batch itself is refused: 400, 413, 422.
    Rejected {
        status: u16,
        message: String,
    },
}

/// Classifies an HTTP status (and its `Retry-After`). Only 400, 413 and 422 say the batch
/// itself is wrong; any other refusal (authentication, a proxy, an overloaded or restarting
/// collector) may end, so the batch is kept and sent again.
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        400 | 413 | 422 => Outcome::Rejected {
            status,
            message: excerpt(body),
        },
        _ => Outcome::Errored {
            status: Some(status),
            retry_after,
            why: format!("collector answered {status}: {}", excerpt(body)),
        },
    }
}

fn excerpt(body: &str) -> String {
    body.trim().chars().take(300).collect()
}

/// `Retry-After` in seconds (an HTTP date is ignored: the backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Delay before retry number `attempt` (1-based): `initial * 2^(attempt-1)` capped at `max`,
/// jittered into its upper half; at least `retry_after` (capped at `max_retry_after`).
pub fn backoff(
    policy: &RetryPolicy,
    attempt: u32,
    retry_after: Option<Duration>,
    random: u64,
) -> Duration {
    let exp = policy
        .initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(policy.max);
    let half = exp / 2;
    let jitter = Duration::from_nanos(random % (half.as_nanos().max(1) as u64));
    let base = half + jitter;
    match retry_after {
        Some(ra) => base.max(ra.min(policy.max_retry_after)),
        None => base,
    }
}

/// Consecutive failed attempts (of any batch) and the jitter source: the backoff.
#[derive(Debug)]
struct Pace {
    failures: u32,
    rng: u64,
}

impl Pace {
    /// The delay after one more failure.
    fn failed(&mut self, policy: &RetryPolicy, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        backoff(policy, self.failures, retry_after, self.rng)
    }
}

/// What the shipper does after a batch.
enum Next {
    Batch,
    Stop,
}

/// Ships the spool to one collector.
#[derive(Debug)]
pub struct Shipper {
    pub client: reqwest::Client,
    pub events_url: String,
    /// `{base}/api/v1/profiles`, without a query.
    pub profiles_url: String,
    /// `{base}/api/v1/memory`.
    pub memory_url: String,
    pub token: Secret<Option<String>>,
    pub spool: Arc<Spool>,
    pub dead_letters: Arc<DeadLetters>,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl Shipper {
    /// A shipper to the collector `cfg` names, with its token, retry policy and TLS settings.
    pub fn new(
        cfg: &SidecarConfig,
        spool: Arc<Spool>,
        dead_letters: Arc<DeadLetters>,
        metrics: Arc<Metrics>,
    ) -> Result<Shipper, reqwest::Error> {
        profwatch_model::tls::install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .timeout(cfg.retry.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("profwatch-agent/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(cfg.tls.extra_roots.iter().cloned());
        if let Some(identity) = &cfg.tls.identity {
            builder = builder.identity(identity.clone());
        }
        Ok(Shipper {
            client: builder.build()?,
            events_url: cfg.events_url.clone(),
            profiles_url: cfg.profiles_url.clone(),
            memory_url: cfg.memory_url.clone(),
            token: cfg.token.clone(),
            spool,
            dead_letters,
            metrics,
            retry: cfg.retry.clone(),
        })
    }

    /// Ships until `stop` turns true. An unsent or unacknowledged batch stays spooled.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut pace = Pace {
            failures: 0,
            rng: random_u64() | 1,
        };
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(seq) = self.spool.oldest() else {
                tokio::select! {
                    () = self.spool.appended().notified() => continue,
                    _ = stop.changed() => return,
                }
            };
            let Some(record) = self.load(seq, &mut stop).await else {
                continue;
            };
            if let Next::Stop = self.ship(&record, &mut pace, &mut stop).await {
                return;
            }
        }
    }

    /// Reads record `seq`; `None` when it is gone, or the spool failed (after a pause).
    async fn load(&self, seq: u64, stop: &mut watch::Receiver<bool>) -> Option<SpoolRecord> {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.read(seq)).await {
            Ok(Ok(record)) => record,
            Ok(Err(e)) => {
                self.pause(&e.to_string(), stop).await;
                None
            }
            Err(e) => {
                self.pause(&format!("spool read task: {e}"), stop).await;
                None
            }
        }
    }

    /// Sends `record` until it is delivered, dead-lettered, set aside or gone.
    async fn ship(
        &self,
        record: &SpoolRecord,
        pace: &mut Pace,
        stop: &mut watch::Receiver<bool>,
    ) -> Next {
        let limit = if self.spool.is_set_aside(record.seq) {
            1
        } else {
            self.retry.set_aside_after.max(1)
        };
        let mut attempt = 0u32;
        loop {
            let (retry_after, why) = match self.send(record).await {
                Outcome::Delivered => {
                    pace.failures = 0;
                    self.delivered(record).await;
                    return Next::Batch;
                }
                Outcome::Rejected { status, message } => {
                    self.metrics.refused(status);
                    match self.dead_letter(record, status, &message).await {
                        Ok(()) => return Next::Batch,
                        Err(why) => (None, why),
                    }
                }
                Outcome::Errored {
                    status,
                    retry_after,
                    why,
                } => {
                    if let Some(status) = status {
                        self.metrics.refused(status);
                    }
                    (retry_after, why)
                }
            };
            attempt = attempt.saturating_add(1);
            let delay = pace.failed(&self.retry, retry_after);
            if attempt == 1 || attempt.is_multiple_of(10) {
                tracing::warn!(
                    batch = record.id,
                    attempt,
                    "delivery failed, retrying in {delay:?}: {why}"
                );
            }
            self.metrics.retried(why);
            let set_aside = attempt >= limit && self.set_aside(record, attempt).await;
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return Next::Stop,
            }
            if set_aside || !self.spool.contains(record.seq) {
                return Next::Batch;
            }
        }
    }

    async fn delivered(&self, record: &SpoolRecord) {
        self.remove(record.seq).await;
        self.metrics.refusals_over();
        let (unit, count) = record.units();
        self.metrics.shipped_in(unit, count);
    }

    /// Moves a refused record to the dead-letter folder, then out of the spool. `Err`: it
    /// could not be kept, and stays spooled.
    async fn dead_letter(
        &self,
        record: &SpoolRecord,
        status: u16,
        message: &str,
    ) -> Result<(), String> {
        let what = match record.kind {
            RecordKind::Events => "a batch",
            RecordKind::Profile { .. } => "a profile",
            RecordKind::Memory => "memory samples",
        };
        let (letters, copy, text) = (
            self.dead_letters.clone(),
            record.clone(),
            message.to_owned(),
        );
        let put = match tokio::task::spawn_blocking(move || letters.put(&copy, status, &text)).await
        {
            Ok(Ok(put)) => put,
            Ok(Err(e)) => return Err(format!("cannot keep {what} the collector refused: {e}")),
            Err(e) => return Err(format!("dead-letter task: {e}")),
        };
        match put {
            Put::Kept { name, .. } => tracing::error!(
                batch = record.id,
                events = record.events,
                status,
                "collector refused {what}; kept as {}/{name}.batch: {message}",
                self.dead_letters.dir().display()
            ),
            Put::TooLarge { bytes } => tracing::error!(
                batch = record.id,
                events = record.events,
                status,
                "collector refused {what} of {bytes} bytes, larger than the dead-letter \
                 folder; dropped: {message}"
            ),
        }
        self.metrics
            .set_last_error(format!("collector answered {status}: {message}"));
        self.remove(record.seq).await;
        Ok(())
    }

    /// Moves a record that keeps failing behind the others; whether it moved.
    async fn set_aside(&self, record: &SpoolRecord, attempts: u32) -> bool {
        let spool = self.spool.clone();
        let seq = record.seq;
        match tokio::task::spawn_blocking(move || spool.set_aside(seq)).await {
            Ok(Ok(Some(new))) => {
                self.metrics.set_aside();
                tracing::warn!(
                    batch = record.id,
                    attempts,
                    "set aside after {attempts} failed attempts; the batches behind it go \
                     first (spool record {seq} is now {new})"
                );
                true
            }
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::error!("{e}");
                false
            }
            Err(e) => {
                tracing::error!("spool set-aside task: {e}");
                false
            }
        }
    }

    async fn pause(&self, why: &str, stop: &mut watch::Receiver<bool>) {
        tracing::error!("spool: {why}");
        self.metrics.set_last_error(why.to_owned());
        tokio::select! {
            () = tokio::time::sleep(self.retry.max.min(Duration::from_secs(5))) => {}
            _ = stop.changed() => {}
        }
    }

    async fn remove(&self, seq: u64) {
        let spool = self.spool.clone();
        match tokio::task::spawn_blocking(move || spool.remove(seq)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("{e}"),
            Err(e) => tracing::error!("spool remove task: {e}"),
        }
    }

    /// One POST of a spooled batch or profile.
    pub async fn send(&self, record: &SpoolRecord) -> Outcome {
        let (url, content_type) = match &record.kind {
            RecordKind::Events => (self.events_url.clone(), "application/x-protobuf"),
            RecordKind::Profile { query } => {
                (format!("{}?{query}", self.profiles_url), "text/plain")
            }
            RecordKind::Memory => (self.memory_url.clone(), "application/json"),
        };
        let mut req = self
            .client
            .post(&url)
            .header("content-type", content_type)
            .header("content-encoding", "zstd")
            .header("idempotency-key", &record.id)
            .body(record.body.clone());
        if let Some(token) = self.token.as_ref() {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_retry_after);
                let body = if (200..300).contains(&status) {
                    String::new()
                } else {
                    resp.text().await.unwrap_or_default()
                };
                classify(status, retry_after, &body)
            }
            Err(e) => Outcome::Errored {
                status: None,
                retry_after: None,
                why: format!(
                    "cannot reach {}: {e}",
                    url.split('?').next().unwrap_or(&url)
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_like_vector() {
        assert_eq!(classify(200, None, ""), Outcome::Delivered);
        assert!(
            matches!(classify(429, Some(Duration::from_secs(3)), ""), Outcome::Errored { retry_after: Some(d), .. } if d.as_secs() == 3)
        );
        assert!(matches!(classify(503, None, ""), Outcome::Errored { .. }));
        assert!(matches!(
            classify(400, None, "bad"),
            Outcome::Rejected { status: 400, .. }
        ));
        assert!(matches!(classify(413, None, ""), Outcome::Rejected { .. }));
        assert!(matches!(
            classify(422, None, ""),
            Outcome::Rejected { status: 422, .. }
        ));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    /// Regression (issue 12): a 401 after a token rotation, and 403/404/407 from a proxy,
    /// deleted the spooled batches as rejected.
    #[test]
    fn only_400_413_and_422_are_final_every_other_refusal_is_retried() {
        for status in [
            401, 403, 404, 405, 407, 408, 409, 410, 429, 451, 500, 502, 503, 504, 599, 304,
        ] {
            assert!(
                matches!(
                    classify(status, None, "no"),
                    Outcome::Errored { status: Some(s), .. } if s == status
                ),
                "{status} must be retried"
            );
        }
        for status in 100..=599u16 {
            let rejected = matches!(classify(status, None, ""), Outcome::Rejected { .. });
            assert_eq!(rejected, [400, 413, 422].contains(&status), "{status}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_jittered_and_honours_retry_after() {
        let p = RetryPolicy::default();
        for r in [0, 1, u64::MAX / 3, u64::MAX] {
            let d1 = backoff(&p, 1, None, r);
            assert!(
                d1 >= Duration::from_millis(100) && d1 < Duration::from_millis(200),
                "{d1:?}"
            );
            let d5 = backoff(&p, 5, None, r);
            assert!(
                d5 >= Duration::from_millis(1600) && d5 < Duration::from_millis(3200),
                "{d5:?}"
            );
            let big = backoff(&p, 40, None, r);
            assert!(big <= p.max, "{big:?}");
            assert_eq!(
                backoff(&p, 1, Some(Duration::from_secs(9)), r),
                Duration::from_secs(9)
            );
            assert_eq!(
                backoff(&p, 1, Some(Duration::from_secs(9999)), r),
                p.max_retry_after
            );
        }
    }
}
