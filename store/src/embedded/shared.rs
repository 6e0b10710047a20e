//! What the store's threads share: the memtables and segments behind one lock, the signal
//! between the writer and the flusher, the idempotency keys seen, and whether the WAL failed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::config::EmbeddedConfig;
use super::keys::SeenKeys;
use super::memtable::MemTable;
use super::segment::SegmentMeta;
use crate::StoreError;

/// The rows a query can see, newest last.
#[derive(Debug)]
pub struct State {
    pub active: Arc<RwLock<MemTable>>,
    pub frozen: Vec<Arc<MemTable>>,
    pub segments: Vec<Arc<SegmentMeta>>,
}

#[derive(Debug)]
pub struct Shared {
    pub cfg: EmbeddedConfig,
    pub wal_dir: PathBuf,
    pub seg_dir: PathBuf,
    pub tmp_dir: PathBuf,
    pub state: RwLock<State>,
    /// Signalled when a frozen memtable is added (flusher) or removed (writer stall).
    pub frozen_changed: Condvar,
    pub frozen_lock: Mutex<()>,
    pub closed: AtomicBool,
    pub queued: AtomicUsize,
    /// Stacks that met another stack's id since the store opened (each took the next probe).
    pub stack_collisions: AtomicU64,
    /// Idempotency keys accepted within the window.
    pub seen: Mutex<SeenKeys>,
    /// Held by a compaction and retention pass, so two never pick the same inputs.
    pub maintenance: Mutex<()>,
    /// Set when a WAL file failed for good (see `wal`): every later write is refused.
    pub wal_failed: Mutex<Option<(String, String)>>,
    /// Segments set aside at open for failing their checksum, one line each.
    pub quarantined: Vec<String>,
}

impl Shared {
    /// The error every write gets once a WAL file failed for good.
    pub fn wal_failure(&self) -> Option<StoreError> {
        lock(&self.wal_failed)
            .as_ref()
            .map(|(path, detail)| StoreError::WalFailed {
                path: path.clone(),
                detail: detail.clone(),
            })
    }
}

/// A poisoned lock is used as it is: a panic in one thread does not stop the others.
pub fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

pub fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
