//! The embedded store: a single-node, serverless backend on local disk.
//!
//! Layout under the data dir: `wal/wal-<gen>.log`, `segments/seg-<lo>-<hi>.parquet`, `tmp/`,
//! and a `LOCK` file held for the life of the process.
//!
//! Invariants:
//! - A batch is acknowledged only after its WAL record is fsynced (group commit: one fsync
//!   covers every batch waiting at that moment).
//! - A WAL generation is deleted only after a segment covering it has been renamed into place
//!   and the directory fsynced; on open, every WAL generation no segment covers is replayed.
//! - Segments are immutable. Compaction writes the merged file first, then retires its inputs;
//!   it only touches generations older than every unflushed one, so a segment range never
//!   covers a WAL generation whose rows it lacks.
//! - Idempotency keys: a keyed batch whose key was accepted within [`DEDUPE_WINDOW`] is
//!   answered `Duplicate` and not written. The writer thread checks and records keys itself,
//!   so two copies racing in are decided in order; keys travel in the WAL record, then in the
//!   footer of the segment that holds the batch, and are reloaded on open.
//! - Memory is bounded: at most `flush_rows` rows in the active memtable, at most
//!   `max_frozen` memtables waiting for the flusher, `queue_batches` batches queued, and
//!   compaction merges at most `compact_rows` rows at a time. Beyond that, writes get
//!   [`StoreError::Overloaded`].

#[cfg(test)]
mod fault_tests;
mod faults;
mod memtable;
mod profile_segment;
mod query;
mod regressions;
mod segment;
mod wal;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use profwatch_model::profile::{ProfileBatch, ProfileQuery, StackProfile};
use profwatch_model::query::{
    BuildSummary, BuildsQuery, CostSamples, CostSamplesQuery, EndpointSeries, EndpointStats,
    EndpointsQuery, SeriesQuery, ServiceSummary, ServicesQuery, TimeRange, TimeseriesPoint,
    TimeseriesQuery,
};
use profwatch_model::regression::RegressionRecord;
use profwatch_model::timefmt::now_ns;
use profwatch_model::{RequestEvent, Tenant};
use tokio::sync::oneshot;

use self::memtable::{MemTable, Rows};
use self::query::Source;
use self::segment::SegmentMeta;
use self::wal::{Entry, Wal};
use super::{Store, StoreError, Written};

/// How long an idempotency key is remembered.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(3600);

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub dir: PathBuf,
    /// Rows older than this are dropped.
    pub retention: Duration,
    /// Rows in the active memtable before it is frozen and flushed to a segment.
    pub flush_rows: usize,
    /// The active memtable is also flushed when it is this old and not empty.
    pub flush_interval: Duration,
    /// Batches waiting for the writer before writes are refused with 503.
    pub queue_batches: usize,
    /// Frozen memtables waiting for the flusher before the writer stalls.
    pub max_frozen: usize,
    /// Upper bound on the rows of one compaction (and so on its memory).
    pub compact_rows: usize,
    /// Threads a query scans with.
    pub query_threads: usize,
    /// On open, copy damaged WAL bytes aside and keep every intact record after them, instead of
    /// refusing to open (`profwatch server --repair`).
    pub repair: bool,
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            retention: Duration::from_secs(30 * 86_400),
            flush_rows: 1 << 20,
            flush_interval: Duration::from_secs(60),
            queue_batches: 64,
            max_frozen: 2,
            compact_rows: 8 << 20,
            query_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            repair: false,
        }
    }
}

enum Command {
    Write(WriteRequest),
    /// Freeze the active memtable now (for [`EmbeddedStore::flush`]).
    Rotate(oneshot::Sender<Result<(), StoreError>>),
}

struct WriteRequest {
    tenant: Tenant,
    record: Vec<u8>,
    entry: Entry,
    key: Option<String>,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

#[derive(Debug)]
struct State {
    active: Arc<RwLock<MemTable>>,
    frozen: Vec<Arc<MemTable>>,
    segments: Vec<Arc<SegmentMeta>>,
}

#[derive(Debug)]
struct Shared {
    cfg: EmbeddedConfig,
    wal_dir: PathBuf,
    seg_dir: PathBuf,
    tmp_dir: PathBuf,
    state: RwLock<State>,
    /// Signalled when a frozen memtable is added (flusher) or removed (writer stall).
    frozen_changed: Condvar,
    frozen_lock: Mutex<()>,
    closed: AtomicBool,
    queued: AtomicUsize,
    /// Idempotency keys accepted within the window: (tenant, key) → received (unix ns).
    seen: Mutex<HashMap<(String, String), i64>>,
    /// Held by a compaction and retention pass, so two never pick the same inputs.
    maintenance: Mutex<()>,
    /// Set when a WAL file failed for good (see `wal`): every later write is refused.
    wal_failed: Mutex<Option<(String, String)>>,
    /// Segments set aside at open for failing their checksum, one line each.
    quarantined: Vec<String>,
}

/// The embedded store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<SyncSender<Command>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    regressions: regressions::Regressions,
    /// Held (with an OS file lock) until shutdown.
    lock: Mutex<Option<File>>,
}

impl std::fmt::Debug for WriteRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteRequest")
            .field("rows", &self.entry.rows())
            .finish()
    }
}

fn mkdir(p: &Path) -> Result<(), StoreError> {
    std::fs::create_dir_all(p).map_err(|e| StoreError::io("create directory", p, e))
}

fn list(dir: &Path) -> Result<Vec<String>, StoreError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| StoreError::io("list", dir, e))? {
        let entry = entry.map_err(|e| StoreError::io("list", dir, e))?;
        if let Some(n) = entry.file_name().to_str() {
            names.push(n.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `cfg.dir`, recovering from any crash, and starts its
    /// writer and flusher threads.
    pub fn open(cfg: EmbeddedConfig) -> Result<EmbeddedStore, StoreError> {
        let dir = cfg.dir.clone();
        mkdir(&dir)?;
        let lock_path = dir.join("LOCK");
        let lock = File::create(&lock_path).map_err(|e| StoreError::io("create", &lock_path, e))?;
        lock.try_lock().map_err(|_| {
            StoreError::Unavailable(format!(
                "{} is in use by another profwatch process",
                dir.display()
            ))
        })?;
        let wal_dir = dir.join("wal");
        let seg_dir = dir.join("segments");
        let tmp_dir = dir.join("tmp");
        for d in [&wal_dir, &seg_dir, &tmp_dir] {
            mkdir(d)?;
        }
        for name in list(&tmp_dir)? {
            let p = tmp_dir.join(name);
            std::fs::remove_file(&p).map_err(|e| StoreError::io("remove", &p, e))?;
        }

        let (segments, quarantined) = load_segments(&seg_dir, &dir.join("quarantine"))?;
        let seg_covers = |g: u64| segments.iter().any(|s| s.lo <= g && g <= s.hi);

        // WAL generations: replay those no segment covers, delete the rest.
        let mut frozen = Vec::new();
        let mut max_gen = segments.iter().map(|s| s.hi).max().unwrap_or(0);
        let mut replayed = 0usize;
        for name in list(&wal_dir)? {
            let Some(gen) = wal::parse_file_name(&name) else {
                continue;
            };
            max_gen = max_gen.max(gen);
            let path = wal_dir.join(&name);
            if seg_covers(gen) {
                std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                continue;
            }
            let mut mt = MemTable::new(gen);
            let damage = if cfg.repair {
                wal::Damage::SetAside
            } else {
                wal::Damage::Refuse
            };
            for rec in wal::replay(&path, damage)? {
                replayed += rec.entry.rows();
                apply(&mut mt, &rec.tenant, &rec.entry);
                if let Some(key) = rec.key {
                    // The record's own receive time is unknown; the replay time keeps the key
                    // for a full window, which errs on the side of dropping a duplicate.
                    mt.keys.push(segment::IdemKey {
                        tenant: rec.tenant.0,
                        key,
                        received: now_ns(),
                    });
                }
            }
            frozen.push(Arc::new(mt));
        }
        if replayed > 0 {
            tracing::info!(
                events = replayed,
                generations = frozen.len(),
                "recovered events from the WAL"
            );
        }
        let gen = max_gen + 1;
        let wal = Wal::create(&wal_dir, gen)?;
        let horizon = now_ns() - DEDUPE_WINDOW.as_nanos() as i64;
        let seen: HashMap<(String, String), i64> = segments
            .iter()
            .flat_map(|s| s.keys.iter())
            .chain(frozen.iter().flat_map(|m: &Arc<MemTable>| m.keys.iter()))
            .filter(|k| k.received >= horizon)
            .map(|k| ((k.tenant.clone(), k.key.clone()), k.received))
            .collect();

        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            wal_dir,
            seg_dir,
            tmp_dir,
            state: RwLock::new(State {
                active: Arc::new(RwLock::new(MemTable::new(gen))),
                frozen,
                segments,
            }),
            frozen_changed: Condvar::new(),
            frozen_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            seen: Mutex::new(seen),
            maintenance: Mutex::new(()),
            wal_failed: Mutex::new(None),
            quarantined,
        });
        let regressions = regressions::Regressions::open(&dir, &shared.tmp_dir)?;
        let (tx, rx) = mpsc::sync_channel(cfg.queue_batches.max(1));
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(spawn("profwatch-wal", move || writer_loop(&s, rx, wal))?);
        let s = shared.clone();
        threads.push(spawn("profwatch-flush", move || flusher_loop(&s))?);
        let s = shared.clone();
        threads.push(spawn("profwatch-compact", move || maintenance_loop(&s))?);
        Ok(EmbeddedStore {
            shared,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            regressions,
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Bytes and rows on disk in segments (for benchmarks and `/metrics`).
    pub fn disk_usage(&self) -> (u64, u64) {
        let st = read(&self.shared.state);
        let bytes = st.segments.iter().map(|s| s.bytes).sum();
        let rows = st.segments.iter().map(|s| s.rows).sum();
        (bytes, rows)
    }

    /// Freezes the active memtable and waits until every memtable is in a segment.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = lock(&self.tx);
            let tx = tx.as_ref().ok_or(StoreError::Closed)?;
            tx.try_send(Command::Rotate(reply))
                .map_err(|_| StoreError::Overloaded {
                    what: "embedded write queue full",
                    retry_after: Duration::from_secs(1),
                })?;
        }
        rx.await.map_err(|_| StoreError::Closed)??;
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || wait_flushed(&shared))
            .await
            .map_err(|e| StoreError::Query(format!("flush task failed: {e}")))
    }
}

/// Blocks until the flusher has written every frozen memtable.
fn wait_flushed(s: &Shared) {
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

impl EmbeddedStore {
    /// Runs one compaction and retention pass now (normally the flusher does it).
    pub fn maintain(&self) -> Result<(), StoreError> {
        maintain(&self.shared)
    }

    fn sources(&self) -> Vec<Source> {
        let st = read(&self.shared.state);
        let mut out: Vec<Source> = st
            .segments
            .iter()
            .map(|s| Source::Segment(s.clone()))
            .collect();
        for mt in &st.frozen {
            out.push(Source::Frozen(mt.clone()));
        }
        out.push(Source::Active(st.active.clone()));
        out
    }

    fn clamp(&self, r: TimeRange) -> TimeRange {
        let cutoff = now_ns().saturating_sub(self.shared.cfg.retention.as_nanos() as i64);
        TimeRange {
            from: r.from.max(cutoff),
            to: r.to,
        }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(Vec<Source>, usize) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let sources = self.sources();
        let threads = self.shared.cfg.query_threads;
        tokio::task::spawn_blocking(move || f(sources, threads))
            .await
            .map_err(|e| StoreError::Query(format!("query task failed: {e}")))?
    }
}

fn apply(mt: &mut MemTable, tenant: &Tenant, entry: &Entry) {
    match entry {
        Entry::Events(e) => mt.insert(tenant, e),
        Entry::Profiles(p) => mt.insert_profiles(tenant, p),
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| StoreError::io("spawn thread", Path::new(name), e))
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Appends queued batches to the WAL with one fsync per group, then makes them visible.
impl Shared {
    /// The error every write gets once a WAL file failed for good.
    fn wal_failure(&self) -> Option<StoreError> {
        lock(&self.wal_failed)
            .as_ref()
            .map(|(path, detail)| StoreError::WalFailed {
                path: path.clone(),
                detail: detail.clone(),
            })
    }
}

/// Opens the segments: drops those whose range another covers (an interrupted compaction) and
/// profile files without their events file (an interrupted flush: the WAL or the inputs still
/// hold the rows); verifies each file's checksum and moves a segment that fails it, both its
/// files, to `quarantine` (answered as a warning with every query, never read). Returns the
/// good segments and a line per quarantined one.
fn load_segments(
    seg_dir: &Path,
    quarantine: &Path,
) -> Result<(Vec<Arc<SegmentMeta>>, Vec<String>), StoreError> {
    let mut ranges: Vec<(u64, u64, String)> = list(seg_dir)?
        .into_iter()
        .filter_map(|n| segment::parse_file_name(&n).map(|(lo, hi)| (lo, hi, n)))
        .collect();
    ranges.sort();
    let covered_by_other = |lo: u64, hi: u64| {
        ranges
            .iter()
            .any(|(l, h, _)| *l <= lo && hi <= *h && (*l, *h) != (lo, hi))
    };
    let mut segments = Vec::new();
    let mut quarantined = Vec::new();
    for (lo, hi, name) in &ranges {
        let path = seg_dir.join(name);
        let prof_path = seg_dir.join(profile_segment::file_name(*lo, *hi));
        let files = [path.as_path(), prof_path.as_path()];
        if covered_by_other(*lo, *hi) {
            tracing::info!(path = %path.display(), "removing a compaction input left behind");
            segment::remove_files(&files)?;
            continue;
        }
        if let Err(e) = segment::verify(&path).and_then(|()| segment::verify(&prof_path)) {
            tracing::error!(error = %e, "a segment failed its checksum; it is set aside in quarantine/ and queries leave it out");
            segment::quarantine(&files, quarantine)?;
            quarantined.push(format!(
                "segment {name} is damaged ({e}) and was moved to quarantine/: answers leave out \
                 its data"
            ));
            continue;
        }
        let profile = if prof_path.exists() {
            Some(profile_segment::open(&prof_path)?)
        } else {
            None
        };
        segments.push(Arc::new(segment::open(&path, *lo, *hi, profile)?));
    }
    for name in list(seg_dir)? {
        let orphan = match profile_segment::parse_file_name(&name) {
            Some((lo, hi)) => !segments.iter().any(|s| s.lo == lo && s.hi == hi),
            None => name
                .strip_suffix(segment::CHECKSUM_SUFFIX)
                .is_some_and(|data| !seg_dir.join(data).exists()),
        };
        if orphan {
            let p = seg_dir.join(&name);
            tracing::info!(path = %p.display(), "removing a segment file whose flush did not finish");
            segment::remove_files(&[p.as_path()])?;
        }
    }
    Ok((segments, quarantined))
}

fn writer_loop(s: &Shared, rx: Receiver<Command>, mut wal: Wal) {
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
                let empty = read(&read(&s.state).active).is_empty();
                let r = match s.wal_failure() {
                    Some(e) => Err(e),
                    None if empty => Ok(()),
                    None => rotate(s, &mut wal),
                };
                opened = Instant::now();
                let _ = reply.send(r);
                continue;
            }
        };
        let mut group = vec![first];
        while group.len() < 64 {
            match rx.try_recv() {
                Ok(Command::Write(r)) => group.push(r),
                Ok(other) => {
                    pending = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        s.queued.fetch_sub(group.len(), Ordering::SeqCst);
        // Duplicates (a key seen within the window, or twice in this group) are answered
        // without being written.
        let now = now_ns();
        let mut group_keys: Vec<(String, String)> = Vec::new();
        let group: Vec<WriteRequest> = {
            let seen = lock(&s.seen);
            group
                .into_iter()
                .filter_map(|r| {
                    let Some(key) = &r.key else { return Some(r) };
                    let k = (r.tenant.0.clone(), key.clone());
                    if seen.contains_key(&k) || group_keys.contains(&k) {
                        let _ = r.reply.send(Ok(Written::Duplicate));
                        return None;
                    }
                    group_keys.push(k);
                    Some(r)
                })
                .collect()
        };
        if group.is_empty() {
            continue;
        }
        let records: Vec<&[u8]> = group.iter().map(|r| r.record.as_slice()).collect();
        match wal.append(&records) {
            Ok(()) => {
                {
                    let mut seen = lock(&s.seen);
                    let horizon = now - DEDUPE_WINDOW.as_nanos() as i64;
                    if seen.len() > 100_000 {
                        seen.retain(|_, t| *t >= horizon);
                    }
                    for k in &group_keys {
                        seen.insert(k.clone(), now);
                    }
                }
                let active = read(&s.state).active.clone();
                let mut mt = write(&active);
                for r in &group {
                    apply(&mut mt, &r.tenant, &r.entry);
                    if let Some(key) = &r.key {
                        mt.keys.push(segment::IdemKey {
                            tenant: r.tenant.0.clone(),
                            key: key.clone(),
                            received: now,
                        });
                    }
                }
                let rows = mt.len();
                drop(mt);
                for r in group {
                    let _ = r.reply.send(Ok(Written::Stored));
                }
                if rows >= s.cfg.flush_rows
                    || (rows > 0 && opened.elapsed() >= s.cfg.flush_interval)
                {
                    match rotate(s, &mut wal) {
                        Ok(()) => opened = Instant::now(),
                        Err(e) => tracing::error!(error = %e, "could not rotate the WAL"),
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL append failed; batches refused");
                if let StoreError::WalFailed { path, detail } = &e {
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
        }
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
    let fresh = Arc::new(RwLock::new(MemTable::new(wal.gen)));
    let old = std::mem::replace(&mut st.active, fresh);
    let old = Arc::try_unwrap(old)
        .map(|l| l.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_else(|shared| read(&shared).snapshot());
    st.frozen.push(Arc::new(old));
    drop(st);
    s.frozen_changed.notify_all();
    Ok(())
}

fn flusher_loop(s: &Shared) {
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

/// Compaction and retention, on their own thread so that a long merge never holds up flushes
/// (and through them the writer).
fn maintenance_loop(s: &Shared) {
    let mut last = Instant::now();
    while !s.closed.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last.elapsed() >= Duration::from_secs(10) {
            if let Err(e) = maintain(s) {
                tracing::error!(error = %e, "compaction or retention failed");
            }
            last = Instant::now();
        }
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
            )?)
        };
        let (keys, rows) = mt.sorted();
        let attached = segment::Attached {
            profile,
            keys: mt.keys.clone(),
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
        Ok(()) => wal::sync_dir(&s.wal_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io("remove", &wal_path, e)),
    }
}

/// One pass of retention (drop segments wholly past it) and compaction (merge the oldest run
/// of small segments).
fn maintain(s: &Shared) -> Result<(), StoreError> {
    let _one_at_a_time = lock(&s.maintenance);
    let cutoff = now_ns().saturating_sub(s.cfg.retention.as_nanos() as i64);
    {
        let mut st = write(&s.state);
        st.segments.retain(|seg| {
            let keep = seg.newest_ts() >= cutoff;
            if !keep {
                tracing::info!(path = %seg.path.display(), "segment past retention");
                seg.mark_obsolete();
            }
            keep
        });
    }
    compact(s, cutoff)
}

fn compact(s: &Shared, cutoff: i64) -> Result<(), StoreError> {
    let (inputs, lo, hi) = {
        let st = read(&s.state);
        let oldest_unflushed = st
            .frozen
            .iter()
            .map(|f| f.gen)
            .chain(std::iter::once(read(&st.active).gen))
            .min()
            .unwrap_or(u64::MAX);
        let mut segs: Vec<Arc<SegmentMeta>> = st
            .segments
            .iter()
            .filter(|x| x.hi < oldest_unflushed)
            .cloned()
            .collect();
        segs.sort_by_key(|x| x.lo);
        let small = s.cfg.compact_rows as u64 / 4;
        let mut run: Vec<Arc<SegmentMeta>> = Vec::new();
        let mut rows = 0u64;
        for seg in segs {
            if seg.total_rows() >= small || rows + seg.total_rows() > s.cfg.compact_rows as u64 {
                if run.len() >= 4 {
                    break;
                }
                run.clear();
                rows = 0;
                if seg.total_rows() >= small {
                    continue;
                }
            }
            rows += seg.total_rows();
            run.push(seg);
        }
        if run.len() < 4 {
            return Ok(());
        }
        let lo = run.iter().map(|x| x.lo).min().unwrap_or(0);
        let hi = run.iter().map(|x| x.hi).max().unwrap_or(0);
        (run, lo, hi)
    };
    let mut dict = memtable::SeriesDict::default();
    let mut rows = Rows::default();
    for seg in &inputs {
        let map: Vec<u32> = seg.series.iter().map(|k| dict.intern_key(k)).collect();
        segment::scan(
            seg,
            segment::Projection {
                status: true,
                wall_ns: true,
                no_costs: false,
            },
            |chunk| {
                for i in 0..chunk.len() {
                    if chunk.ts[i] < cutoff {
                        continue;
                    }
                    if let Some(id) = map.get(chunk.series[i] as usize) {
                        rows.push_from(chunk, i, *id);
                    }
                }
            },
        )?;
    }
    let profile = compact_profiles(s, &inputs, lo, hi, cutoff)?;
    let (keys, sorted) = memtable::sort_rows(&dict.keys, &rows);
    let horizon = now_ns() - DEDUPE_WINDOW.as_nanos() as i64;
    let attached = segment::Attached {
        profile,
        keys: inputs
            .iter()
            .flat_map(|i| i.keys.iter())
            .filter(|k| k.received >= horizon)
            .cloned()
            .collect(),
    };
    let merged = Arc::new(segment::write(
        &s.seg_dir, &s.tmp_dir, lo, hi, &keys, &sorted, attached,
    )?);
    let mut st = write(&s.state);
    st.segments.retain(|x| {
        let input = inputs.iter().any(|i| Arc::ptr_eq(i, x));
        if input {
            x.mark_obsolete();
        }
        !input
    });
    st.segments.push(merged);
    tracing::debug!(
        inputs = inputs.len(),
        rows = sorted.len(),
        lo,
        hi,
        "compacted"
    );
    Ok(())
}

/// Merges the profile segments of a compaction run into one (written before the events file).
fn compact_profiles(
    s: &Shared,
    inputs: &[Arc<SegmentMeta>],
    lo: u64,
    hi: u64,
    cutoff: i64,
) -> Result<Option<profile_segment::ProfileMeta>, StoreError> {
    let mut dict = memtable::SeriesDict::default();
    let mut rows = memtable::SampleRows::default();
    let mut stacks = memtable::Stacks::new();
    for seg in inputs {
        let Some(p) = &seg.profile else { continue };
        let map: Vec<u32> = p.series.iter().map(|k| dict.intern_key(k)).collect();
        let all = |_: u64| true;
        profile_segment::scan(
            p,
            |chunk| {
                for i in 0..chunk.len() {
                    if chunk.ts[i] < cutoff {
                        continue;
                    }
                    if let Some(id) = map.get(chunk.series[i] as usize) {
                        rows.push(
                            chunk.ts[i],
                            *id,
                            chunk.stack[i],
                            chunk.samples[i],
                            chunk.cpu_ns[i],
                        );
                    }
                }
            },
            Some((&all, &mut stacks)),
        )?;
    }
    if rows.is_empty() {
        return Ok(None);
    }
    let sorted = memtable::sort_samples(&rows);
    profile_segment::write(&s.seg_dir, &s.tmp_dir, lo, hi, &dict.keys, &sorted, &stacks).map(Some)
}

impl EmbeddedStore {
    /// Queues an entry for the writer and waits until it is durable.
    async fn submit(
        &self,
        tenant: &Tenant,
        entry: Entry,
        key: Option<&str>,
    ) -> Result<Written, StoreError> {
        if entry.rows() == 0 {
            return Ok(Written::Stored);
        }
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        if let Some(e) = self.shared.wal_failure() {
            return Err(e);
        }
        let key = key.map(|k| k[..k.len().min(wal::MAX_KEY)].to_owned());
        let record = wal::encode_record(tenant, &entry, key.as_deref());
        if record.len() > wal::MAX_RECORD {
            return Err(StoreError::TooLarge {
                size: record.len(),
                limit: wal::MAX_RECORD,
            });
        }
        let (reply, rx) = oneshot::channel();
        let req = WriteRequest {
            tenant: tenant.clone(),
            record,
            entry,
            key,
            reply,
        };
        {
            let tx = lock(&self.tx);
            let Some(tx) = tx.as_ref() else {
                return Err(StoreError::Closed);
            };
            self.shared.queued.fetch_add(1, Ordering::SeqCst);
            match tx.try_send(Command::Write(req)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(StoreError::Overloaded {
                        what: "embedded write queue full",
                        retry_after: Duration::from_secs(1),
                    });
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.shared.queued.fetch_sub(1, Ordering::SeqCst);
                    return Err(StoreError::Closed);
                }
            }
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn write(&self, tenant: &Tenant, events: Vec<RequestEvent>) -> Result<(), StoreError> {
        self.submit(tenant, Entry::Events(events), None)
            .await
            .map(|_| ())
    }

    async fn write_once(
        &self,
        tenant: &Tenant,
        key: &str,
        events: Vec<RequestEvent>,
    ) -> Result<Written, StoreError> {
        self.submit(tenant, Entry::Events(events), Some(key)).await
    }

    async fn services(&self, q: &ServicesQuery) -> Result<Vec<ServiceSummary>, StoreError> {
        let q = ServicesQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::services(&src, &q, t)).await
    }

    async fn endpoints(&self, q: &EndpointsQuery) -> Result<Vec<EndpointStats>, StoreError> {
        let q = EndpointsQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::endpoints(&src, &q, t)).await
    }

    async fn timeseries(&self, q: &TimeseriesQuery) -> Result<Vec<TimeseriesPoint>, StoreError> {
        let q = TimeseriesQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::timeseries(&src, &q, t)).await
    }

    async fn endpoint_series(&self, q: &SeriesQuery) -> Result<Vec<EndpointSeries>, StoreError> {
        let q = SeriesQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::endpoint_series(&src, &q, t))
            .await
    }

    async fn builds(&self, q: &BuildsQuery) -> Result<Vec<BuildSummary>, StoreError> {
        let q = BuildsQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::builds(&src, &q, t)).await
    }

    async fn cost_samples(&self, q: &CostSamplesQuery) -> Result<Vec<CostSamples>, StoreError> {
        let q = CostSamplesQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::cost_samples(&src, &q, t))
            .await
    }

    async fn put_regression(&self, r: &RegressionRecord) -> Result<(), StoreError> {
        self.regressions.put(r)
    }

    async fn regressions(&self, tenant: &Tenant) -> Result<Vec<RegressionRecord>, StoreError> {
        Ok(self.regressions.list(tenant.as_str()))
    }

    async fn write_profiles(
        &self,
        tenant: &Tenant,
        batches: Vec<ProfileBatch>,
    ) -> Result<(), StoreError> {
        self.submit(tenant, Entry::Profiles(batches), None)
            .await
            .map(|_| ())
    }

    async fn write_profiles_once(
        &self,
        tenant: &Tenant,
        key: &str,
        batches: Vec<ProfileBatch>,
    ) -> Result<Written, StoreError> {
        self.submit(tenant, Entry::Profiles(batches), Some(key))
            .await
    }

    async fn profile(&self, q: &ProfileQuery) -> Result<StackProfile, StoreError> {
        let q = ProfileQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        self.run(move |src, t| query::profile(&src, &q, t)).await
    }

    fn warnings(&self) -> Vec<String> {
        self.shared.quarantined.clone()
    }

    async fn ready(&self) -> Result<(), StoreError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        match self.shared.wal_failure() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn queue_depth(&self) -> usize {
        self.shared.queued.load(Ordering::SeqCst)
    }

    async fn shutdown(&self) -> Result<(), StoreError> {
        // Close the queue: the writer drains what is queued, then exits.
        let tx = lock(&self.tx).take();
        drop(tx);
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.threads));
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut handles = handles.into_iter();
            if let Some(writer) = handles.next() {
                let _ = writer.join();
            }
            // Move the active memtable to the flusher and wait for it to drain.
            {
                let mut st = write(&shared.state);
                let gen = read(&st.active).gen;
                let old = std::mem::replace(
                    &mut st.active,
                    Arc::new(RwLock::new(MemTable::new(gen + 1))),
                );
                let old = read(&old).snapshot();
                st.frozen.push(Arc::new(old));
            }
            shared.frozen_changed.notify_all();
            shared.closed.store(true, Ordering::SeqCst);
            for h in handles {
                let _ = h.join();
            }
        })
        .await
        .map_err(|e| StoreError::Query(format!("shutdown task failed: {e}")))?;
        let left = read(&self.shared.state).frozen.len();
        if let Some(f) = lock(&self.lock).take() {
            let _ = f.unlock();
        }
        if left > 0 {
            return Err(StoreError::Unavailable(format!(
                "{left} memtables could not be flushed; they remain in the WAL and will be replayed"
            )));
        }
        Ok(())
    }
}
