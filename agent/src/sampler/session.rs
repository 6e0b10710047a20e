//! The process's sampling session: the registry of per-thread rings and the channels from
//! the request path to the sampler thread.
//!
//! Invariants: at most one session runs per process (perf events are per thread, and a
//! thread belongs to one session at a time); its `generation` is non-zero and unique, and
//! [`generation`] returns 0 when none runs. A thread registers at most once per session,
//! on its first measured stretch, which is the only time the request path takes a lock. The
//! registry holds every ring until the sampler thread has drained it after its thread ended.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};

use super::perf::{EventSpec, Ring};
use super::stats::StatCells;
use crate::endpoint::EndpointName;
use crate::labels::LabelSet;

static GENERATION: AtomicU64 = AtomicU64::new(0);
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
static CURRENT: Mutex<Option<Arc<Session>>> = Mutex::new(None);
/// Ring ids are unique across sessions, so request tags (built on them) never collide.
static NEXT_RING: AtomicU64 = AtomicU64::new(1);

// The messages of the session's two channels: the hook sends them, the worker receives them.

/// `active` when no measured stretch is open on the thread.
pub(crate) const IDLE: u64 = u64::MAX;

/// A closed stretch of one thread's ring that saw samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    pub(crate) ring: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) tag: u64,
}

/// The labels of a finished request that owns at least one range.
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) tag: u64,
    pub(crate) endpoint: EndpointName,
    pub(crate) labels: LabelSet,
}

/// A fresh `active` cell.
pub(crate) fn idle() -> AtomicU64 {
    AtomicU64::new(IDLE)
}

/// One thread's sampling event, shared by the thread (to read the head) and the sampler.
#[derive(Debug)]
pub(crate) struct ThreadRing {
    /// Unique within the process, across sessions (never reused, unlike thread ids).
    pub(crate) id: u64,
    pub(crate) ring: Ring,
    /// Start offset of the open measured stretch, or [`IDLE`].
    pub(crate) active: AtomicU64,
}

/// A running sampler's shared state.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) generation: u64,
    pub(crate) spec: EventSpec,
    /// The process sampled; 0 is this process (the only one the hook serves).
    pub(crate) pid: u32,
    pub(crate) rings: Mutex<Vec<Arc<ThreadRing>>>,
    pub(crate) ranges_tx: SyncSender<Range>,
    pub(crate) done_tx: SyncSender<Done>,
    pub(crate) stats: Arc<StatCells>,
    warned: AtomicBool,
}

/// The running session's generation, 0 when none runs. One relaxed load.
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

pub(crate) fn current() -> Option<Arc<Session>> {
    CURRENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

impl Session {
    /// Installs a new session; `None` if one runs already.
    pub(crate) fn install(
        spec: EventSpec,
        ranges_tx: SyncSender<Range>,
        done_tx: SyncSender<Done>,
        stats: Arc<StatCells>,
    ) -> Option<Arc<Session>> {
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some() {
            return None;
        }
        let session = Arc::new(Session {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            spec,
            pid: 0,
            rings: Mutex::new(Vec::new()),
            ranges_tx,
            done_tx,
            stats,
            warned: AtomicBool::new(false),
        });
        *current = Some(Arc::clone(&session));
        GENERATION.store(session.generation, Ordering::Relaxed);
        Some(session)
    }

    /// Ends the session: threads stop registering, every event stops sampling.
    pub(crate) fn uninstall(&self) {
        let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|s| s.generation == self.generation)
        {
            *current = None;
            GENERATION.store(0, Ordering::Relaxed);
        }
        drop(current);
        for ring in self.snapshot() {
            // Best effort: a failed disable leaves a sampling event until the ring drops.
            let _ = ring.ring.set_enabled(false);
        }
    }

    /// Opens a sampling event on the calling thread and registers it. `None` (logged once
    /// per session, counted always) when perf refuses.
    pub(crate) fn register_current_thread(&self) -> Option<Arc<ThreadRing>> {
        match Ring::open(0, &self.spec) {
            Ok(ring) => {
                let ring = Arc::new(ThreadRing {
                    id: NEXT_RING.fetch_add(1, Ordering::Relaxed),
                    ring,
                    active: idle(),
                });
                self.rings
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Arc::clone(&ring));
                self.stats.threads.fetch_add(1, Ordering::Relaxed);
                Some(ring)
            }
            Err(e) => {
                self.stats.threads_failed.fetch_add(1, Ordering::Relaxed);
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "profwatch sampler: perf_event_open(cpu-clock) failed on a thread \
                         ({e}); its stacks are not sampled"
                    );
                }
                None
            }
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<ThreadRing>> {
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets rings whose thread is gone (only the registry holds them) and that are empty.
    pub(crate) fn prune(&self, drained: impl Fn(&ThreadRing) -> bool) {
        self.rings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|r| Arc::strong_count(r) > 1 || !drained(r));
    }
}
