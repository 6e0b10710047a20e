//! What the sampler did: a public, lock-free set of counters.
//!
//! Invariant: every sample read from a ring is counted once, as `attributed` (to a request) or
//! `unattributed` (no measured request ran on the thread, or its range was dropped); samples
//! the kernel dropped because a ring was full are counted in `lost`. A sample with a user stack
//! copy is also counted once as `unwound` (to its root) or `truncated`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a sampler's counters (see [`super::Sampler::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SamplerStats {
    /// Threads with a sampling event.
    pub threads: u64,
    /// Threads whose sampling event could not be opened.
    pub threads_failed: u64,
    /// Samples attributed to a request.
    pub attributed: u64,
    /// Samples taken outside any measured request (or whose range was dropped).
    pub unattributed: u64,
    /// Samples the kernel dropped because a ring was full.
    pub lost: u64,
    /// Range messages dropped because the channel to the sampler thread was full.
    pub ranges_dropped: u64,
    /// Label messages of finished requests dropped because the channel was full.
    pub done_dropped: u64,
    /// Samples whose request never reported its labels (exported without request labels).
    pub unresolved: u64,
    /// Profiles (label sets) delivered.
    pub profiles_exported: u64,
    /// Profiles dropped because the sink failed.
    pub export_failed: u64,
    /// Samples whose stack copy was unwound to the stack's root.
    pub unwound: u64,
    /// Samples whose unwinding stopped early (shipped with a `[truncated]` root frame).
    pub truncated: u64,
    /// Bytes of unwind information held for the process's modules (the per-module cache).
    pub unwind_info_bytes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct StatCells {
    pub(crate) threads: AtomicU64,
    pub(crate) threads_failed: AtomicU64,
    pub(crate) attributed: AtomicU64,
    pub(crate) unattributed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) ranges_dropped: AtomicU64,
    pub(crate) done_dropped: AtomicU64,
    pub(crate) unresolved: AtomicU64,
    pub(crate) profiles_exported: AtomicU64,
    pub(crate) export_failed: AtomicU64,
    pub(crate) unwound: AtomicU64,
    pub(crate) truncated: AtomicU64,
    pub(crate) unwind_info_bytes: AtomicU64,
}

impl StatCells {
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> SamplerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SamplerStats {
            threads: get(&self.threads),
            threads_failed: get(&self.threads_failed),
            attributed: get(&self.attributed),
            unattributed: get(&self.unattributed),
            lost: get(&self.lost),
            ranges_dropped: get(&self.ranges_dropped),
            done_dropped: get(&self.done_dropped),
            unresolved: get(&self.unresolved),
            profiles_exported: get(&self.profiles_exported),
            export_failed: get(&self.export_failed),
            unwound: get(&self.unwound),
            truncated: get(&self.truncated),
            unwind_info_bytes: get(&self.unwind_info_bytes),
        }
    }
}
