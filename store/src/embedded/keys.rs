//! Idempotency keys: a keyed batch whose key was accepted for its tenant within
//! [`DEDUPE_WINDOW`] is answered `Duplicate` and not written.
//!
//! The writer thread alone checks and records keys ([`SeenKeys`]), so two copies racing in are
//! decided in order. A key travels with its batch: in the WAL record, in the memtable, then in
//! the footer of the segment that holds the batch; on open the keys of segments and replayed
//! WAL records are loaded again, so a duplicate is recognised after a restart too.

use std::collections::HashMap;
use std::time::Duration;

/// How long an idempotency key is remembered.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(3600);

/// A batch idempotency key accepted at `received` (unix ns); segments keep the keys of the
/// batches they hold so duplicates are recognised after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdemKey {
    pub tenant: String,
    pub key: String,
    pub received: i64,
}

/// The oldest time (unix ns) at which a key accepted is still remembered at `now`.
pub fn horizon(now: i64) -> i64 {
    now - DEDUPE_WINDOW.as_nanos() as i64
}

/// Keys accepted within the window: (tenant, key) → received (unix ns).
#[derive(Debug, Default)]
pub struct SeenKeys(HashMap<(String, String), i64>);

impl SeenKeys {
    /// The keys among `keys` accepted within the window before `now`.
    pub fn recent<'a>(keys: impl IntoIterator<Item = &'a IdemKey>, now: i64) -> SeenKeys {
        let horizon = horizon(now);
        SeenKeys(
            keys.into_iter()
                .filter(|k| k.received >= horizon)
                .map(|k| ((k.tenant.clone(), k.key.clone()), k.received))
                .collect(),
        )
    }

    pub fn contains(&self, key: &(String, String)) -> bool {
        self.0.contains_key(key)
    }

    /// Records keys accepted at `now`. Past 100,000 keys, first forgets those past the window.
    pub fn record(&mut self, keys: &[(String, String)], now: i64) {
        let horizon = horizon(now);
        if self.0.len() > 100_000 {
            self.0.retain(|_, t| *t >= horizon);
        }
        for k in keys {
            self.0.insert(k.clone(), now);
        }
    }
}
