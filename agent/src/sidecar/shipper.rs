//! The shipper: sends spooled batches to the collector, oldest first, one at a time. Event
//! batches go to `/api/v1/events`, profiles to `/api/v1/profiles?{their query}`; both kinds
//! share the spool, the order and the outcomes below.
//!
//! Each attempt ends in one of three outcomes (Vector's end-to-end acknowledgement):
//! - **Delivered** (2xx): the record is removed from the spool, and only then.
//! - **Errored** (network error, timeout, 408, 429, 5xx): the same record, with the same
//!   `Idempotency-Key`, is sent again after an exponential backoff with jitter, or after the
//!   collector's `Retry-After` when it asks for longer. Nothing is removed.
//! - **Rejected** (any other 4xx: the batch itself, or the token, is refused): the record is
//!   removed and its events counted as dropped (`collector_rejected`).
//!
//! Invariant: the spool is the only copy of a batch in flight, so a crash at any point either
//! re-sends it (same id) or has already delivered it. The collector deduplicates event batches
//! by their id; it does not (yet) for profiles, so a profile whose 2xx was lost to a crash or a
//! timeout may be stored twice.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::config::RetryPolicy;
use super::metrics::{DropReason, Metrics};
use super::spool::{random_u64, RecordKind, Spool, SpoolRecord};

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Errored {
        retry_after: Option<Duration>,
        why: String,
    },
    Rejected {
        status: u16,
        message: String,
    },
}

/// Classifies an HTTP status (and its `Retry-After`).
pub fn classify(status: u16, retry_after: Option<Duration>, body: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Errored {
            retry_after,
            why: format!("collector answered {status}: {}", excerpt(body)),
        },
        _ => Outcome::Rejected {
            status,
            message: excerpt(body),
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

/// Ships the spool to one collector.
#[derive(Debug)]
pub struct Shipper {
    pub client: reqwest::Client,
    pub events_url: String,
    /// `{base}/api/v1/profiles`, without a query.
    pub profiles_url: String,
    pub token: Option<String>,
    pub spool: Arc<Spool>,
    pub metrics: Arc<Metrics>,
    pub retry: RetryPolicy,
}

impl Shipper {
    pub fn new(
        events_url: String,
        profiles_url: String,
        token: Option<String>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
    ) -> Result<Shipper, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(retry.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("profwatch-agent/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Shipper {
            client,
            events_url,
            profiles_url,
            token,
            spool,
            metrics,
            retry,
        })
    }

    /// Ships until `stop` turns true. An unsent or unacknowledged batch stays spooled.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut rng = random_u64() | 1;
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
            let spool = self.spool.clone();
            let record = match tokio::task::spawn_blocking(move || spool.read(seq)).await {
                Ok(Ok(Some(record))) => record,
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => {
                    self.pause(&e.to_string(), &mut stop).await;
                    continue;
                }
                Err(e) => {
                    self.pause(&format!("spool read task: {e}"), &mut stop)
                        .await;
                    continue;
                }
            };
            let mut attempt = 0u32;
            loop {
                let outcome = self.send(&record).await;
                match outcome {
                    Outcome::Delivered => {
                        self.remove(record.seq).await;
                        if record.kind.is_profile() {
                            self.metrics.profile_shipped();
                        } else {
                            self.metrics.shipped(u64::from(record.events));
                        }
                        break;
                    }
                    Outcome::Rejected { status, message } => {
                        let what = if record.kind.is_profile() {
                            self.metrics
                                .profiles_dropped(DropReason::CollectorRejected, 1);
                            "a profile"
                        } else {
                            self.metrics
                                .dropped(DropReason::CollectorRejected, u64::from(record.events));
                            "a batch"
                        };
                        tracing::error!(
                            batch = record.id,
                            events = record.events,
                            status,
                            "collector refused {what}; dropped: {message}"
                        );
                        self.metrics
                            .set_last_error(format!("collector answered {status}: {message}"));
                        self.remove(record.seq).await;
                        break;
                    }
                    Outcome::Errored { retry_after, why } => {
                        attempt = attempt.saturating_add(1);
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let delay = backoff(&self.retry, attempt, retry_after, rng);
                        if attempt == 1 || attempt % 10 == 0 {
                            tracing::warn!(
                                batch = record.id,
                                attempt,
                                "delivery failed, retrying in {delay:?}: {why}"
                            );
                        }
                        self.metrics.retried(why);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = stop.changed() => return,
                        }
                        if !self.spool.contains(record.seq) {
                            break;
                        }
                    }
                }
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
        };
        let mut req = self
            .client
            .post(&url)
            .header("content-type", content_type)
            .header("content-encoding", "zstd")
            .header("idempotency-key", &record.id)
            .body(record.body.clone());
        if let Some(token) = &self.token {
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
        assert!(matches!(classify(401, None, ""), Outcome::Rejected { .. }));
        assert!(matches!(classify(413, None, ""), Outcome::Rejected { .. }));
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
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
