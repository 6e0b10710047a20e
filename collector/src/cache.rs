//! A query cache with leases, for dashboard traffic.
//!
//! When many clients ask the same question at once, the first takes a *lease* and runs the
//! query; the others wait for its answer instead of running it again. An answer is fresh for
//! `ttl`; ingest for a tenant makes that tenant's answers stale. A stale answer is still served
//! (marked stale) while exactly one request, holding the lease, refreshes it, so the identical
//! queries that follow an invalidation also cost one query. Entries are bounded in bytes; the
//! least recently used go first. Failures are not cached: waiters of a failed lease each get the
//! error, and the next request takes a new lease.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

/// The outcome of a lease, shared with its waiters.
type Shared = Option<Result<Bytes, String>>;

#[derive(Debug)]
struct Entry {
    value: Option<Bytes>,
    at: Instant,
    generation: u64,
    last_used: u64,
    /// Set while a request holds the lease for this key.
    lease: Option<watch::Receiver<Shared>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Per tenant, bumped by ingest.
    generations: HashMap<String, u64>,
    bytes: usize,
    clock: u64,
}

/// Counters, registered in `/metrics` (`profwatch_query_cache_*_total`).
#[derive(Debug, Default, Clone)]
pub struct CacheStats {
    pub hits: Counter,
    pub misses: Counter,
    pub lease_waits: Counter,
    pub stale_served: Counter,
    pub evictions: Counter,
}

/// An answer and whether it is stale.
#[derive(Debug, Clone)]
pub struct Cached {
    pub body: Bytes,
    pub stale: bool,
}

/// The cache. One per server.
#[derive(Debug)]
pub struct QueryCache {
    inner: Mutex<Inner>,
    max_bytes: usize,
    ttl: Duration,
    pub stats: CacheStats,
}

enum Plan {
    Done(Cached),
    Wait(watch::Receiver<Shared>),
    Lead(watch::Sender<Shared>),
}

impl QueryCache {
    pub fn new(max_bytes: usize, ttl: Duration) -> QueryCache {
        QueryCache {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            ttl,
            stats: CacheStats::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every cached answer of `tenant` stale (called after ingest).
    pub fn invalidate(&self, tenant: &str) {
        *self
            .lock()
            .generations
            .entry(tenant.to_owned())
            .or_default() += 1;
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The answer for `key` (of `tenant`): cached, awaited from the lease holder, or computed by
    /// `compute` under a new lease.
    pub async fn get_or_compute<F, Fut, E>(
        &self,
        tenant: &str,
        key: String,
        compute: F,
    ) -> Result<Cached, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Bytes, E>>,
        E: From<String> + std::fmt::Display,
    {
        let plan = {
            let mut g = self.lock();
            let generation = g.generations.get(tenant).copied().unwrap_or(0);
            g.clock += 1;
            let now_tick = g.clock;
            match g.entries.get_mut(&key) {
                Some(e) => {
                    e.last_used = now_tick;
                    let fresh = e.generation == generation && e.at.elapsed() < self.ttl;
                    match (&e.value, fresh, &e.lease) {
                        (Some(v), true, _) => {
                            self.stats.hits.inc();
                            Plan::Done(Cached {
                                body: v.clone(),
                                stale: false,
                            })
                        }
                        (Some(v), false, Some(_)) => {
                            self.stats.stale_served.inc();
                            Plan::Done(Cached {
                                body: v.clone(),
                                stale: true,
                            })
                        }
                        (None, _, Some(rx)) => {
                            self.stats.lease_waits.inc();
                            Plan::Wait(rx.clone())
                        }
                        (_, _, None) => {
                            self.stats.misses.inc();
                            let (tx, rx) = watch::channel(None);
                            e.lease = Some(rx);
                            Plan::Lead(tx)
                        }
                    }
                }
                None => {
                    self.stats.misses.inc();
                    let (tx, rx) = watch::channel(None);
                    g.entries.insert(
                        key.clone(),
                        Entry {
                            value: None,
                            at: Instant::now(),
                            generation,
                            last_used: now_tick,
                            lease: Some(rx),
                        },
                    );
                    Plan::Lead(tx)
                }
            }
        };
        match plan {
            Plan::Done(c) => Ok(c),
            Plan::Wait(mut rx) => loop {
                if let Some(r) = rx.borrow().clone() {
                    return r.map(|body| Cached { body, stale: false }).map_err(E::from);
                }
                if rx.changed().await.is_err() {
                    return Err(E::from(
                        "the query this request waited for was abandoned; retry".to_owned(),
                    ));
                }
            },
            Plan::Lead(tx) => {
                // The generation this answer is computed for: ingest during the query makes it
                // stale at once.
                let generation = self.lock().generations.get(tenant).copied().unwrap_or(0);
                let result = compute().await;
                let shared = match &result {
                    Ok(b) => Ok(b.clone()),
                    Err(e) => Err(e.to_string()),
                };
                {
                    let mut g = self.lock();
                    match &result {
                        Ok(body) => {
                            let old = g
                                .entries
                                .get(&key)
                                .and_then(|e| e.value.as_ref())
                                .map_or(0, |v| v.len() + key.len());
                            g.bytes = g.bytes.saturating_sub(old) + body.len() + key.len();
                            if let Some(e) = g.entries.get_mut(&key) {
                                e.value = Some(body.clone());
                                e.at = Instant::now();
                                e.generation = generation;
                                e.lease = None;
                            }
                            self.evict(&mut g);
                        }
                        Err(_) => {
                            let keep = g.entries.get(&key).is_some_and(|e| e.value.is_some());
                            if keep {
                                if let Some(e) = g.entries.get_mut(&key) {
                                    e.lease = None;
                                }
                            } else {
                                g.entries.remove(&key);
                            }
                        }
                    }
                }
                let _ = tx.send(Some(shared));
                result.map(|body| Cached { body, stale: false })
            }
        }
    }

    /// Drops least recently used answers (not leased) until the cache fits `max_bytes`.
    fn evict(&self, g: &mut Inner) {
        while g.bytes > self.max_bytes {
            let victim = g
                .entries
                .iter()
                .filter(|(_, e)| e.lease.is_none() && e.value.is_some())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { break };
            if let Some(e) = g.entries.remove(&k) {
                g.bytes = g
                    .bytes
                    .saturating_sub(e.value.map_or(0, |v| v.len()) + k.len());
                self.stats.evictions.inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Debug)]
    struct E(String);
    impl From<String> for E {
        fn from(s: String) -> Self {
            E(s)
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_identical_queries_run_once_and_again_once_after_invalidation() {
        let cache = Arc::new(QueryCache::new(1 << 20, Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let ask = |cache: Arc<QueryCache>, runs: Arc<AtomicUsize>| async move {
            cache
                .get_or_compute("t", "q".into(), || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    Ok::<_, E>(Bytes::from_static(b"answer"))
                })
                .await
        };
        let tasks: Vec<_> = (0..100)
            .map(|_| tokio::spawn(ask(cache.clone(), runs.clone())))
            .collect();
        for t in tasks {
            assert_eq!(t.await.expect("join").expect("ok").body.as_ref(), b"answer");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats.misses.get(), 1);
        cache.invalidate("t");
        let tasks: Vec<_> = (0..100)
            .map(|_| tokio::spawn(ask(cache.clone(), runs.clone())))
            .collect();
        let mut stale = 0;
        for t in tasks {
            if t.await.expect("join").expect("ok").stale {
                stale += 1;
            }
        }
        assert_eq!(
            runs.load(Ordering::SeqCst),
            2,
            "one refresh after the invalidation"
        );
        assert!(
            stale > 0,
            "the others got the previous answer, marked stale"
        );
    }

    #[tokio::test]
    async fn failures_are_not_cached_and_bytes_are_bounded() {
        let cache = QueryCache::new(100, Duration::from_secs(60));
        let r = cache
            .get_or_compute("t", "a".into(), || async {
                Err::<Bytes, E>(E("boom".into()))
            })
            .await;
        assert!(r.is_err());
        let r = cache
            .get_or_compute("t", "a".into(), || async {
                Ok::<_, E>(Bytes::from(vec![0u8; 60]))
            })
            .await;
        assert!(r.is_ok());
        let _ = cache
            .get_or_compute("t", "b".into(), || async {
                Ok::<_, E>(Bytes::from(vec![0u8; 60]))
            })
            .await;
        assert!(cache.bytes() <= 100, "{}", cache.bytes());
        assert_eq!(cache.stats.evictions.get(), 1);
    }
}
