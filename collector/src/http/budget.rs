//! What all ingest requests together may hold: a budget of body bytes in flight (as sent and
//! after decompression) and a number of requests at once.
//!
//! An ingest request is admitted with a [`Reservation`], which holds one request slot and the
//! bytes granted to it; reading the body and every decompression (the `Content-Encoding`, then a
//! gzipped profile inside) ask it before their buffers grow. A request waits up to
//! [`ADMISSION_WAIT`] for a slot (it holds no bytes while it waits, so waiting cannot deadlock),
//! then is refused with 429 and `Retry-After`. A request that finds no bytes left is refused at
//! once: waiting while holding part of the budget could deadlock requests that each wait for the
//! others' bytes.
//!
//! Invariants: the bytes granted to all live reservations never exceed the limit (each grant is
//! one compare-and-swap on one counter); a reservation gives its slot and bytes back when it is
//! dropped, on every path, success or error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use crate::profile::compress::{Allowance, Refusal};

/// How long a refused client is asked to wait.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long a request waits for a slot before it is refused.
pub const ADMISSION_WAIT: Duration = Duration::from_secs(10);

/// The byte budget and request slots shared by all ingest requests.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    max_requests: usize,
    slots: Arc<Semaphore>,
}

impl Budget {
    /// A budget of `limit` bytes and `max_requests` requests at once.
    pub fn new(limit: usize, max_requests: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            max_requests,
            slots: Arc::new(Semaphore::new(max_requests)),
        })
    }

    /// Takes a request slot, waiting up to `wait` for one; refuses the request (429) when
    /// none frees in time.
    pub async fn admit(self: &Arc<Self>, wait: Duration) -> Result<Reservation, ApiError> {
        let busy = || ApiError::Overloaded {
            message: format!(
                "the server is ingesting {} requests at once, its limit \
                 (limits.max_concurrent_ingest); nothing was stored, retry later",
                self.max_requests
            ),
            retry_after: RETRY_AFTER,
        };
        let slot = tokio::time::timeout(wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| busy())?
            .map_err(|_| busy())?;
        Ok(Reservation {
            budget: self.clone(),
            bytes: 0,
            _slot: slot,
        })
    }

    /// Bytes granted to live reservations.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }
}

/// The answer to a request whose bytes the budget refused.
pub fn refused(why: Refusal) -> ApiError {
    match why {
        Refusal::Busy => ApiError::Overloaded {
            message: "the server holds its limit of request bodies in flight \
                      (limits.max_inflight_bytes); nothing was stored, retry later"
                .into(),
            retry_after: RETRY_AFTER,
        },
        Refusal::TooLarge { limit } => ApiError::PayloadTooLarge(format!(
            "the request needs more than the server's {limit} bytes of bodies in flight \
             (limits.max_inflight_bytes); send smaller batches"
        )),
    }
}

/// One request's slot and bytes, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: usize,
    _slot: OwnedSemaphorePermit,
}

impl Reservation {
    /// Grants `bytes` more to this request, or says why not: busy while others hold bytes,
    /// too large when this request alone would pass the limit.
    pub fn grant(&mut self, bytes: usize) -> Result<(), Refusal> {
        if self.bytes.saturating_add(bytes) > self.budget.limit {
            return Err(Refusal::TooLarge {
                limit: self.budget.limit,
            });
        }
        if !self.budget.take(bytes) {
            return Err(Refusal::Busy);
        }
        self.bytes += bytes;
        Ok(())
    }
}

impl Allowance for Reservation {
    fn grant(&mut self, bytes: usize) -> Result<(), Refusal> {
        Reservation::grant(self, bytes)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits without waiting, from a test thread.
    fn admit(b: &Arc<Budget>) -> Result<Reservation, ApiError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(b.admit(Duration::ZERO))
    }

    #[test]
    fn grants_stay_within_the_limit_and_come_back() {
        let b = Budget::new(100, 2);
        let mut r1 = admit(&b).expect("slot");
        let mut r2 = admit(&b).expect("slot");
        assert!(matches!(admit(&b), Err(ApiError::Overloaded { .. })));
        assert_eq!(r1.grant(60), Ok(()));
        assert_eq!(r2.grant(41), Err(Refusal::Busy), "others hold the bytes");
        assert_eq!(r2.grant(40), Ok(()));
        assert_eq!(b.in_use(), 100);
        drop(r1);
        assert_eq!(b.in_use(), 40);
        assert_eq!(
            r2.grant(61),
            Err(Refusal::TooLarge { limit: 100 }),
            "never fits"
        );
        let mut r3 = admit(&b).expect("the slot came back");
        assert_eq!(r3.grant(60), Ok(()));
        drop((r2, r3));
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn concurrent_grants_never_exceed_the_limit() {
        let b = Budget::new(1000, 64);
        let peak = std::sync::Mutex::new(0usize);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..200 {
                        let Ok(mut r) = admit(&b) else { continue };
                        while r.grant(7).is_ok() {
                            let now = b.in_use();
                            if let Ok(mut p) = peak.lock() {
                                *p = (*p).max(now);
                            }
                        }
                    }
                });
            }
        });
        assert!(*peak.lock().expect("lock") <= 1000);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_request_waits_for_a_slot() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let b = Budget::new(100, 1);
        rt.block_on(async {
            let first = b.admit(Duration::ZERO).await.expect("slot");
            let waiting = tokio::spawn({
                let b = b.clone();
                async move { b.admit(Duration::from_secs(3600)).await.is_ok() }
            });
            tokio::task::yield_now().await;
            drop(first);
            assert!(
                waiting.await.expect("task"),
                "admitted once the slot came back"
            );
        });
    }
}
