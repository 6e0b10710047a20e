//! What the SDK did with events: a public, lock-free set of counters.
//!
//! Invariant: every event that reaches the SDK after sampling ends in exactly one of
//! `exported`, `queue_full`, `invalid`, `export_failed`, or is still queued; `labels_dropped`
//! counts labels, not events.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of an agent's counters (see [`crate::Agent::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Events accepted into the queue.
    pub queued: u64,
    /// Events dropped because the queue was full (the request path never waits).
    pub queue_full: u64,
    /// Labels refused: over the bound of 16 per request, or invalid.
    pub labels_dropped: u64,
    /// Events dropped because the collector would refuse them (e.g. an over-long endpoint).
    pub invalid: u64,
    /// Events delivered.
    pub exported: u64,
    /// Events dropped after the exporter failed (retries exhausted, or a permanent error).
    pub export_failed: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatCells {
    pub(crate) queued: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) labels_dropped: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) exported: AtomicU64,
    pub(crate) export_failed: AtomicU64,
}

impl StatCells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        if n > 0 {
            cell.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            queued: get(&self.queued),
            queue_full: get(&self.queue_full),
            labels_dropped: get(&self.labels_dropped),
            invalid: get(&self.invalid),
            exported: get(&self.exported),
            export_failed: get(&self.export_failed),
        }
    }
}
