//! The flusher thread: writes each frozen memtable as a segment (its profile file first, then
//! its events file, the commit point), publishes the segment, and only then deletes the WAL
//! generation it came from. A failed flush keeps the memtable frozen and is retried; at
//! shutdown the WAL keeps its rows for the next open.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::memtable::{self, MemTable};
use super::shared::{lock, read, write, Shared};
use super::{files, profile_segment, segment, wal};
use crate::StoreError;

/// Runs until the store is closed and no frozen memtable is left (or a flush failed at
/// shutdown).
pub fn flusher_loop(s: &Shared) {
    loop {
        let next = read(&s.state).frozen.first().cloned();
        if let Some(mt) = next {
            match flush_memtable(s, &mt) {
                Ok(()) => s.frozen_changed.notify_all(),
                Err(e) if s.closed.load(Ordering::SeqCst) => {
                    tracing::error!(error = %e, gen = mt.gen, "flush failed at shutdown; the WAL keeps the rows");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, gen = mt.gen, "flush failed; will retry");
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            continue;
        }
        if s.closed.load(Ordering::SeqCst) {
            return;
        }
        let guard = lock(&s.frozen_lock);
        let _ = s
            .frozen_changed
            .wait_timeout(guard, Duration::from_millis(200));
    }
}

/// Blocks until the flusher has written every frozen memtable.
pub fn wait_flushed(s: &Shared) {
    let mut guard = lock(&s.frozen_lock);
    while !read(&s.state).frozen.is_empty() {
        s.frozen_changed.notify_all();
        guard = s
            .frozen_changed
            .wait_timeout(guard, Duration::from_millis(50))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

/// Writes a frozen memtable as a segment, publishes it, and deletes its WAL file.
fn flush_memtable(s: &Shared, mt: &Arc<MemTable>) -> Result<(), StoreError> {
    let seg = if mt.is_empty() {
        None
    } else {
        let profile = if mt.samples.is_empty() {
            None
        } else {
            let sorted = memtable::sort_samples(&mt.samples);
            Some(profile_segment::write(
                &s.seg_dir,
                &s.tmp_dir,
                mt.gen,
                mt.gen,
                &mt.dict.keys,
                &sorted,
                &mt.stacks,
                s.cfg.rollups,
            )?)
        };
        let (keys, rows) = mt.sorted();
        let attached = segment::Attached {
            profile,
            keys: mt.keys.clone(),
            rollup: s.cfg.rollups,
        };
        Some(Arc::new(segment::write(
            &s.seg_dir, &s.tmp_dir, mt.gen, mt.gen, &keys, &rows, attached,
        )?))
    };
    {
        let mut st = write(&s.state);
        st.frozen.retain(|f| !Arc::ptr_eq(f, mt));
        if let Some(seg) = seg {
            st.segments.push(seg);
        }
    }
    let wal_path = s.wal_dir.join(wal::file_name(mt.gen));
    match std::fs::remove_file(&wal_path) {
        Ok(()) => files::sync_dir(&s.wal_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", &wal_path, e)),
    }
}
