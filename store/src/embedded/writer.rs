//! The writer thread: the only appender to the WAL and the only writer of the active memtable.
//!
//! It takes queued batches in groups of up to 64, answers duplicates without writing them,
//! appends the rest with one fsync (group commit), adds their rows to the active memtable and
//! only then acknowledges them. When the memtable is full or old (or on request) it starts a new
//! WAL generation and hands the memtable to the flusher, waiting while the flusher is
//! `max_frozen` memtables behind.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use profwatch_model::timefmt::now_ns;
use profwatch_model::Tenant;
use tokio::sync::oneshot;

use super::keys::IdemKey;
use super::memtable::MemTable;
use super::shared::{lock, read, write, Shared};
use super::wal::{Entry, Wal};
use crate::{StoreError, Written};

/// The most batches one append (and its one fsync) takes.
const GROUP: usize = 64;

pub enum Command {
    Write(WriteRequest),
    /// Freeze the active memtable now (for `EmbeddedStore::flush`).
    Rotate(oneshot::Sender<Result<(), StoreError>>),
}

pub struct WriteRequest {
    pub tenant: Tenant,
    pub record: Vec<u8>,
    pub entry: Entry,
    pub key: Option<String>,
    pub reply: oneshot::Sender<Result<Written, StoreError>>,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("rows", &self.entry.rows())
            .finish()
    }
}

/// Runs until the queue is closed and drained.
pub fn writer_loop(s: &Shared, rx: Receiver<Command>, mut wal: Wal) {
    let mut opened = Instant::now();
    let mut pending = None;
    loop {
        let first = match pending.take() {
            Some(c) => c,
            None => match rx.recv() {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        let first = match first {
            Command::Write(w) => w,
            Command::Rotate(reply) => {
                let r = rotate_on_request(s, &mut wal);
                opened = Instant::now();
                let _ = reply.send(r);
                continue;
            }
        };
        let group = take_group(first, &rx, &mut pending);
        s.queued.fetch_sub(group.len(), Ordering::SeqCst);
        let now = now_ns();
        let (group, keys) = drop_duplicates(s, group);
        if group.is_empty() {
            continue;
        }
        let records: Vec<&[u8]> = group.iter().map(|r| r.record.as_slice()).collect();
        match wal.append(&records) {
            Ok(()) => {
                let rows = publish(s, group, &keys, now);
                if rows >= s.cfg.flush_rows
                    || (rows > 0 && opened.elapsed() >= s.cfg.flush_interval)
                {
                    match rotate(s, &mut wal) {
                        Ok(()) => opened = Instant::now(),
                        Err(e) => tracing::error!(error = %e, "could not rotate the WAL"),
                    }
                }
            }
            Err(e) => refuse(s, group, &e),
        }
    }
}

/// `first` and the writes queued behind it, up to [`GROUP`]; a command other than a write is
/// left in `pending` for the next turn.
fn take_group(
    first: WriteRequest,
    rx: &Receiver<Command>,
    pending: &mut Option<Command>,
) -> Vec<WriteRequest> {
    let mut group = vec![first];
    while group.len() < GROUP {
        match rx.try_recv() {
            Ok(Command::Write(r)) => group.push(r),
            Ok(other) => {
                *pending = Some(other);
                break;
            }
            Err(_) => break,
        }
    }
    group
}

/// Answers the duplicates of a group (a key seen within the window, or twice in this group)
/// without writing them; returns the rest and their keys.
fn drop_duplicates(
    s: &Shared,
    group: Vec<WriteRequest>,
) -> (Vec<WriteRequest>, Vec<(String, String)>) {
    let mut group_keys: Vec<(String, String)> = Vec::new();
    let seen = lock(&s.seen);
    let group = group
        .into_iter()
        .filter_map(|r| {
            let Some(key) = &r.key else { return Some(r) };
            let k = (r.tenant.0.clone(), key.clone());
            if seen.contains(&k) || group_keys.contains(&k) {
                let _ = r.reply.send(Ok(Written::Duplicate));
                return None;
            }
            group_keys.push(k);
            Some(r)
        })
        .collect();
    (group, group_keys)
}

/// Makes a durable group visible: records its keys, adds its rows to the active memtable, and
/// acknowledges every batch. Returns the rows the active memtable holds now.
fn publish(s: &Shared, group: Vec<WriteRequest>, keys: &[(String, String)], now: i64) -> usize {
    lock(&s.seen).record(keys, now);
    let active = read(&s.state).active.clone();
    let mut mt = write(&active);
    let mut collisions = 0;
    for r in &group {
        collisions += apply(&mut mt, &r.tenant, &r.entry, r.key.as_deref(), now);
    }
    if collisions > 0 {
        s.stack_collisions.fetch_add(collisions, Ordering::Relaxed);
    }
    let rows = mt.len();
    drop(mt);
    for r in group {
        let _ = r.reply.send(Ok(Written::Stored));
    }
    rows
}

/// Answers every batch of a group whose append failed; a WAL that failed for good refuses
/// every later write too.
fn refuse(s: &Shared, group: Vec<WriteRequest>, e: &StoreError) {
    tracing::error!(error = %e, "WAL append failed; batches refused");
    if let StoreError::WalFailed { path, detail } = e {
        *lock(&s.wal_failed) = Some((path.clone(), detail.clone()));
    }
    let msg = e.to_string();
    for r in group {
        let reply = s
            .wal_failure()
            .unwrap_or_else(|| StoreError::Unavailable(msg.clone()));
        let _ = r.reply.send(Err(reply));
    }
}

/// Adds a batch's rows to a memtable, with its idempotency key (accepted at `received`);
/// returns the stacks that met another stack's id (see `MemTable::insert_profiles`).
pub fn apply(
    mt: &mut MemTable,
    tenant: &Tenant,
    entry: &Entry,
    key: Option<&str>,
    received: i64,
) -> u64 {
    let collisions = match entry {
        Entry::Events(e) => {
            mt.insert(tenant, e);
            0
        }
        Entry::Profiles(p) => mt.insert_profiles(tenant, p),
    };
    if let Some(key) = key {
        mt.keys.push(IdemKey {
            tenant: tenant.0.clone(),
            key: key.to_owned(),
            received,
        });
    }
    collisions
}

/// A rotation asked for by `EmbeddedStore::flush`: refused once the WAL failed, a no-op when
/// the active memtable is empty.
fn rotate_on_request(s: &Shared, wal: &mut Wal) -> Result<(), StoreError> {
    let empty = read(&read(&s.state).active).is_empty();
    match s.wal_failure() {
        Some(e) => Err(e),
        None if empty => Ok(()),
        None => rotate(s, wal),
    }
}

/// Starts a new WAL generation and hands the full memtable to the flusher, waiting while the
/// flusher is `max_frozen` memtables behind.
fn rotate(s: &Shared, wal: &mut Wal) -> Result<(), StoreError> {
    {
        let mut guard = lock(&s.frozen_lock);
        while read(&s.state).frozen.len() >= s.cfg.max_frozen && !s.closed.load(Ordering::SeqCst) {
            guard = s
                .frozen_changed
                .wait_timeout(guard, Duration::from_millis(100))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
    }
    let next = Wal::create(&s.wal_dir, wal.gen + 1)?;
    *wal = next;
    let mut st = write(&s.state);
    let ids = read(&st.active).stack_ids;
    let fresh = Arc::new(RwLock::new(MemTable::new(wal.gen, ids)));
    let old = std::mem::replace(&mut st.active, fresh);
    let old = Arc::try_unwrap(old)
        .map(|l| l.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_else(|shared| read(&shared).snapshot());
    st.frozen.push(Arc::new(old));
    drop(st);
    s.frozen_changed.notify_all();
    Ok(())
}
