//! A query cache with leases, for dashboard traffic.
//!
//! When many clients ask the same question at once, the first takes a *lease* and runs the
//! query; the others wait for its answer instead of running it again. An answer is fresh for
//! `ttl`; ingest for a tenant makes that tenant's answers stale. A stale answer is still served
//! (marked stale) while exactly one request, holding the lease, refreshes it, so the identical
//! queries that follow an invalidation also cost one query. Entries are bounded in bytes; the
//! least recently used go first; an entry waiting for its first answer counts too, and when the
//! bound is full of those, a new question is answered without caching. Failures are not cached:
//! waiters of a failed lease each get the error, and the next request takes a new lease. A
//! lease ends when its holder finishes or is dropped (cancelled): a waiter then takes over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;

/// The outcome of a lease, shared with its waiters.
type Shared = Option<Result<Bytes, LeaderFailed>>;

/// What a request waiting on another's computation gets when that computation failed: the
/// leader's error, as text (the error itself went to the leader's caller).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct LeaderFailed(pub String);

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
    /// The cache is full of leased entries: compute without caching.
    Bypass,
}

/// What an entry costs against the bound besides its key and value.
const ENTRY_OVERHEAD: usize = 64;

/// Releases a lease when its holder finishes or is dropped (a client that hung up cancels its
/// handler): the entry loses its lease (and goes, if it has no answer), and the waiters, who see
/// the sender dropped, ask again; one of them leads. Without it a cancelled leader left the key
/// leased forever.
struct LeaseGuard<'a> {
    cache: &'a QueryCache,
    key: &'a str,
    tx: Option<watch::Sender<Shared>>,
}

impl LeaseGuard<'_> {
    /// Stores a successful answer (computed for `generation`) and hands the outcome to the
    /// waiters.
    fn finish(mut self, result: Result<Bytes, LeaderFailed>, generation: u64) {
        {
            let mut g = self.cache.lock();
            match &result {
                Ok(body) => {
                    let old = g
                        .entries
                        .get(self.key)
                        .and_then(|e| e.value.as_ref())
                        .map_or(0, Bytes::len);
                    if let Some(e) = g.entries.get_mut(self.key) {
                        e.value = Some(body.clone());
                        e.at = Instant::now();
                        e.generation = generation;
                        e.lease = None;
                        g.bytes = g.bytes.saturating_sub(old) + body.len();
                    }
                    self.cache.evict(&mut g);
                }
                Err(_) => release(&mut g, self.key),
            }
        }
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(result));
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if self.tx.is_some() {
            release(&mut self.cache.lock(), self.key);
        }
    }
}

/// Ends the lease on `key`, keeping a previous answer if there is one.
fn release(g: &mut Inner, key: &str) {
    let keep = g.entries.get(key).is_some_and(|e| e.value.is_some());
    if keep {
        if let Some(e) = g.entries.get_mut(key) {
            e.lease = None;
        }
    } else if g.entries.remove(key).is_some() {
        g.bytes = g.bytes.saturating_sub(key.len() + ENTRY_OVERHEAD);
    }
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

    /// Bytes held now (answers, keys and per-entry overhead, leased entries included).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Decides what a request for `key` does.
    fn plan(&self, tenant: &str, key: &str) -> Plan {
        let mut g = self.lock();
        let generation = g.generations.get(tenant).copied().unwrap_or(0);
        g.clock += 1;
        let now_tick = g.clock;
        if let Some(e) = g.entries.get_mut(key) {
            e.last_used = now_tick;
            let fresh = e.generation == generation && e.at.elapsed() < self.ttl;
            return match (&e.value, fresh, &e.lease) {
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
            };
        }
        self.stats.misses.inc();
        let cost = key.len() + ENTRY_OVERHEAD;
        g.bytes += cost;
        self.evict(&mut g);
        if g.bytes > self.max_bytes {
            g.bytes -= cost;
            return Plan::Bypass;
        }
        let (tx, rx) = watch::channel(None);
        g.entries.insert(
            key.to_owned(),
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
        E: From<LeaderFailed> + std::fmt::Display,
    {
        loop {
            let tx = match self.plan(tenant, &key) {
                Plan::Done(c) => return Ok(c),
                Plan::Bypass => return compute().await.map(|body| Cached { body, stale: false }),
                Plan::Wait(mut rx) => {
                    // `None`: the leader was cancelled; ask again (and perhaps lead).
                    if let Some(r) = wait(&mut rx).await {
                        return r.map(|body| Cached { body, stale: false }).map_err(E::from);
                    }
                    continue;
                }
                Plan::Lead(tx) => tx,
            };
            let guard = LeaseGuard {
                cache: self,
                key: &key,
                tx: Some(tx),
            };
            // The generation this answer is computed for: ingest during the query makes it
            // stale at once.
            let generation = self.lock().generations.get(tenant).copied().unwrap_or(0);
            let result = compute().await;
            let shared = match &result {
                Ok(b) => Ok(b.clone()),
                Err(e) => Err(LeaderFailed(e.to_string())),
            };
            guard.finish(shared, generation);
            return result.map(|body| Cached { body, stale: false });
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
                    .saturating_sub(e.value.map_or(0, |v| v.len()) + k.len() + ENTRY_OVERHEAD);
                self.stats.evictions.inc();
            }
        }
    }
}

/// The leader's outcome, or `None` when the leader went away without one.
async fn wait(rx: &mut watch::Receiver<Shared>) -> Option<Result<Bytes, LeaderFailed>> {
    loop {
        if let Some(r) = rx.borrow().clone() {
            return Some(r);
        }
        if rx.changed().await.is_err() {
            return rx.borrow().clone();
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
    impl From<LeaderFailed> for E {
        fn from(s: LeaderFailed) -> Self {
            E(s.0)
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
        // Two entries of 1 + 64 bytes each (key and overhead) and one answer of 60 fit in 200.
        let cache = QueryCache::new(200, Duration::from_secs(60));
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
        assert!(cache.bytes() <= 200, "{}", cache.bytes());
        assert_eq!(cache.stats.evictions.get(), 1);
    }

    /// Regression test: a leader cancelled mid-query (its client hung up) left the key leased
    /// forever, and every identical query after it failed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_hands_the_lease_on() {
        let cache = Arc::new(QueryCache::new(1 << 20, Duration::from_secs(60)));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let leader = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_compute("t", "q".into(), || async move {
                        let _ = started_tx.send(());
                        std::future::pending::<Result<Bytes, E>>().await
                    })
                    .await
            })
        };
        started_rx.await.expect("the leader runs");
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_compute("t", "q".into(), || async {
                        Ok::<_, E>(Bytes::from_static(b"from the waiter"))
                    })
                    .await
            })
        };
        // Let the waiter find the lease, then cancel the leader.
        while cache.stats.lease_waits.get() == 0 {
            tokio::task::yield_now().await;
        }
        leader.abort();
        let got = waiter.await.expect("join").expect("the waiter took over");
        assert_eq!(got.body.as_ref(), b"from the waiter");
        let again = cache
            .get_or_compute("t", "q".into(), || async {
                Err::<Bytes, E>(E("must not run: the answer is cached".into()))
            })
            .await
            .expect("cached");
        assert_eq!(again.body.as_ref(), b"from the waiter");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leased_entries_count_against_the_bound() {
        // Room for one leased entry (key + overhead); the second distinct question bypasses.
        let cache = Arc::new(QueryCache::new(80, Duration::from_secs(60)));
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let cache = cache.clone();
            tokio::spawn(async move {
                cache
                    .get_or_compute("t", "slow".into(), || async move {
                        let _ = started_tx.send(());
                        let _ = release_rx.await;
                        Ok::<_, E>(Bytes::from_static(b"s"))
                    })
                    .await
            })
        };
        started_rx.await.expect("leading");
        assert_eq!(cache.bytes(), 4 + ENTRY_OVERHEAD);
        let other = cache
            .get_or_compute("t", "other".into(), || async {
                Ok::<_, E>(Bytes::from_static(b"o"))
            })
            .await
            .expect("answered without the cache");
        assert_eq!(other.body.as_ref(), b"o");
        assert_eq!(cache.bytes(), 4 + ENTRY_OVERHEAD, "nothing cached for it");
        let _ = release_tx.send(());
        slow.await.expect("join").expect("ok");
    }
}
