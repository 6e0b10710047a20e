//! What all ingest requests together may hold: a budget of body bytes in flight (as sent and
//! after decompression) and a number of requests at once.
//!
//! An ingest request is admitted with a [`Reservation`], which holds one request slot and the
//! bytes granted to it; reading the body and every decompression (the `Content-Encoding`, then a
//! gzipped profile inside) ask it before their buffers grow. A request waits up to
//! [`ADMISSION_WAIT`] for a slot (it holds no bytes while it waits, so waiting cannot deadlock),
//! then is refused with 429 and `Retry-After`. A request that finds no bytes left is refused at
//! once, unless it is the oldest request in flight: then, while decompressing (on a blocking
//! thread), it waits up to [`ADMISSION_WAIT`] for bytes to come back. Only the oldest waits, so
//! waiting cannot deadlock (no one it waits for waits for it), and since every younger request
//! gives up its bytes when refused, the oldest always makes progress: concurrent requests that
//! together overrun the budget cannot starve each other.
//!
//! Invariants: the bytes granted to all live reservations never exceed the limit (each grant is
//! one compare-and-swap on one counter); a reservation gives its slot and bytes back when it is
//! dropped, on every path, success or error.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use profwatch_profile::compress::{Allowance, Refusal};

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
    next_ticket: AtomicU64,
    /// Tickets of the live reservations, oldest first; its condition variable is signalled
    /// whenever a reservation gives its bytes back.
    live: Mutex<BTreeSet<u64>>,
    released: Condvar,
}

impl Budget {
    /// A budget of `limit` bytes and `max_requests` requests at once.
    pub fn new(limit: usize, max_requests: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            max_requests,
            slots: Arc::new(Semaphore::new(max_requests)),
            next_ticket: AtomicU64::new(0),
            live: Mutex::new(BTreeSet::new()),
            released: Condvar::new(),
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
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ticket);
        Ok(Reservation {
            budget: self.clone(),
            bytes: 0,
            ticket,
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
    ticket: u64,
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

    /// As [`Reservation::grant`], but the oldest request in flight waits up to `wait` for
    /// bytes to come back instead of being refused. Blocks: for blocking threads only.
    pub fn grant_or_wait(&mut self, bytes: usize, wait: Duration) -> Result<(), Refusal> {
        match self.grant(bytes) {
            Err(Refusal::Busy) => {}
            other => return other,
        }
        let deadline = Instant::now() + wait;
        let b = &self.budget;
        let mut live = b.live.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if b.take(bytes) {
                self.bytes += bytes;
                return Ok(());
            }
            let oldest = live.first() == Some(&self.ticket);
            let left = deadline.saturating_duration_since(Instant::now());
            if !oldest || left.is_zero() {
                return Err(Refusal::Busy);
            }
            live = b
                .released
                .wait_timeout(live, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Decompression runs on blocking threads, so it may wait (see [`Reservation::grant_or_wait`]).
impl Allowance for Reservation {
    fn grant(&mut self, bytes: usize) -> Result<(), Refusal> {
        self.grant_or_wait(bytes, ADMISSION_WAIT)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let b = &self.budget;
        b.used.fetch_sub(self.bytes, Ordering::AcqRel);
        b.live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.ticket);
        b.released.notify_all();
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

    /// Regression: 24 requests inflating at once each took part of the budget and were all
    /// refused; the oldest now waits for the bytes the others give back, so one gets through.
    #[test]
    fn the_oldest_request_waits_for_bytes_and_the_others_are_refused() {
        let b = Budget::new(100, 4);
        let mut oldest = admit(&b).expect("slot");
        let mut young = admit(&b).expect("slot");
        assert_eq!(oldest.grant(50), Ok(()));
        assert_eq!(young.grant(50), Ok(()));
        assert_eq!(
            young.grant_or_wait(10, Duration::from_secs(3600)),
            Err(Refusal::Busy),
            "a younger request is refused at once"
        );
        std::thread::scope(|s| {
            let waiter = s.spawn(|| oldest.grant_or_wait(40, Duration::from_secs(3600)));
            // The younger request, refused, gives its bytes back.
            drop(young);
            assert_eq!(waiter.join().expect("thread"), Ok(()));
        });
        assert_eq!(b.in_use(), 90);
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
