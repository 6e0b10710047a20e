//! The embedded store: a single-node, serverless backend on local disk.
//!
//! Layout under the data dir: `wal/wal-<gen>.log`, `segments/seg-<lo>-<hi>.parquet` (and
//! `prof-<lo>-<hi>.parquet`, each with a `.crc32` beside it), `tmp/`, `quarantine/`,
//! `regressions.json`, `memory/mem-<day>.log` (memory samples, `memory.rs`: a durable log of
//! their own), and a `LOCK` file held for the life of the process.
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
//!
//! Files: `wal.rs` (the log), `writer.rs` (the writer thread), `memtable.rs` (rows in memory),
//! `flush.rs` (the flusher thread), `segment.rs` and `profile_segment.rs` (the Parquet files),
//! `files.rs` (what both kinds of file share: writing in place, checksums, footers, directory
//! syncs), `keys.rs` (idempotency keys), `compaction.rs` (compaction and retention),
//! `recovery.rs` (open after a crash), `query/` (scans), `regressions.rs`, `shared.rs` (the
//! state the threads share), `config.rs`, and `faults.rs` (failure points for tests).

mod compaction;
mod config;
#[cfg(test)]
mod fault_tests;
mod faults;
pub(crate) mod files;
mod flush;
mod function_rollup;
mod keys;
mod memory;
mod memtable;
mod profile_segment;
mod query;
mod recovery;
mod regressions;
mod rollup;
mod segment;
mod shared;
mod wal;
mod writer;

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use profwatch_model::functions::{FunctionQuery, FunctionTotals};
use profwatch_model::memory::{MemoryPoint, MemoryQuery, MemoryRow, MemorySample, ProcessMemory};
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

pub use self::config::EmbeddedConfig;
use self::files::mkdir;
pub use self::keys::DEDUPE_WINDOW;
use self::memtable::MemTable;
use self::query::Source;
use self::recovery::Recovered;
use self::shared::{lock, read, write, Shared, State};
use self::wal::{Entry, Wal};
use self::writer::{Command, WriteRequest};
use crate::stack_ids::StackIds;
use crate::{Store, StoreError, Written};

/// The embedded store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: Mutex<Option<SyncSender<Command>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    regressions: regressions::Regressions,
    memory: Arc<memory::MemoryLog>,
    /// Held (with an OS file lock) until shutdown.
    lock: Mutex<Option<File>>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in `cfg.dir`, recovering from any crash, and starts its
    /// writer, flusher and maintenance threads.
    pub fn open(cfg: EmbeddedConfig) -> Result<EmbeddedStore, StoreError> {
        let dir = cfg.dir.clone();
        let lock = lock_dir(&dir)?;
        let (wal_dir, seg_dir, tmp_dir) = (dir.join("wal"), dir.join("segments"), dir.join("tmp"));
        for d in [&wal_dir, &seg_dir, &tmp_dir] {
            mkdir(d)?;
        }
        let stack_ids = StackIds::open(&dir, &tmp_dir)?;
        let recovered =
            recovery::recover(&dir, &wal_dir, &seg_dir, &tmp_dir, stack_ids, cfg.repair)?;
        let wal = Wal::create(&wal_dir, recovered.next_gen)?;
        let Recovered {
            segments,
            quarantined,
            frozen,
            next_gen,
            seen,
        } = recovered;
        let shared = Arc::new(Shared {
            cfg: cfg.clone(),
            wal_dir,
            seg_dir,
            tmp_dir,
            state: RwLock::new(State {
                active: Arc::new(RwLock::new(MemTable::new(next_gen, stack_ids))),
                frozen,
                segments,
            }),
            frozen_changed: Condvar::new(),
            frozen_lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            stack_collisions: AtomicU64::new(0),
            seen: Mutex::new(seen),
            maintenance: Mutex::new(()),
            wal_failed: Mutex::new(None),
            quarantined,
        });
        let regressions = regressions::Regressions::open(&dir, &shared.tmp_dir)?;
        let memory = Arc::new(memory::MemoryLog::open(
            &dir.join("memory"),
            cfg.retention,
            now_ns(),
        )?);
        let (tx, threads) = start_threads(&shared, wal)?;
        Ok(EmbeddedStore {
            shared,
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            regressions,
            memory,
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
        tokio::task::spawn_blocking(move || flush::wait_flushed(&shared))
            .await
            .map_err(|e| StoreError::Query(format!("flush task failed: {e}")))
    }

    /// Runs one compaction and retention pass now (normally the maintenance thread does it).
    pub fn maintain(&self) -> Result<(), StoreError> {
        compaction::maintain(&self.shared)
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

/// Creates `dir` if needed and takes its `LOCK` file, which one process holds at a time.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    mkdir(dir)?;
    let lock_path = dir.join("LOCK");
    let lock = File::create(&lock_path).map_err(|e| StoreError::io("create", &lock_path, e))?;
    lock.try_lock().map_err(|_| {
        StoreError::Unavailable(format!(
            "{} is in use by another profwatch process",
            dir.display()
        ))
    })?;
    Ok(lock)
}

/// Starts the writer (first: shutdown joins it before the others), the flusher and the
/// maintenance thread; returns the writer's queue and the threads.
fn start_threads(
    shared: &Arc<Shared>,
    wal: Wal,
) -> Result<(SyncSender<Command>, Vec<JoinHandle<()>>), StoreError> {
    let (tx, rx) = mpsc::sync_channel(shared.cfg.queue_batches.max(1));
    let mut threads = Vec::new();
    let s = shared.clone();
    threads.push(spawn("profwatch-wal", move || {
        writer::writer_loop(&s, rx, wal)
    })?);
    let s = shared.clone();
    threads.push(spawn("profwatch-flush", move || flush::flusher_loop(&s))?);
    let s = shared.clone();
    threads.push(spawn("profwatch-compact", move || {
        compaction::maintenance_loop(&s)
    })?);
    Ok((tx, threads))
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| StoreError::io("spawn thread", Path::new(name), e))
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
        let rollups = self.shared.cfg.rollups;
        self.run(move |src, t| query::endpoints(&src, &q, t, rollups))
            .await
    }

    async fn timeseries(&self, q: &TimeseriesQuery) -> Result<Vec<TimeseriesPoint>, StoreError> {
        let q = TimeseriesQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        let rollups = self.shared.cfg.rollups;
        self.run(move |src, t| query::timeseries(&src, &q, t, rollups))
            .await
    }

    async fn endpoint_series(&self, q: &SeriesQuery) -> Result<Vec<EndpointSeries>, StoreError> {
        let q = SeriesQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        let rollups = self.shared.cfg.rollups;
        self.run(move |src, t| query::endpoint_series(&src, &q, t, rollups))
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
        self.run(move |src, _| query::profile(&src, &q)).await
    }

    async fn function_costs(&self, q: &FunctionQuery) -> Result<Vec<FunctionTotals>, StoreError> {
        let q = FunctionQuery {
            range: self.clamp(q.range),
            ..q.clone()
        };
        let rollups = self.shared.cfg.rollups;
        self.run(move |src, _| query::function_costs(&src, &q, rollups))
            .await
    }

    fn warnings(&self) -> Vec<String> {
        self.shared.quarantined.clone()
    }

    async fn write_memory(
        &self,
        tenant: &Tenant,
        key: Option<&str>,
        samples: Vec<MemorySample>,
    ) -> Result<Written, StoreError> {
        if self.shared.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let (log, tenant, key) = (self.memory.clone(), tenant.clone(), key.map(str::to_owned));
        tokio::task::spawn_blocking(move || log.write(&tenant, key.as_deref(), samples, now_ns()))
            .await
            .map_err(|e| StoreError::Unavailable(format!("memory write task failed: {e}")))?
    }

    async fn memory(&self, q: &MemoryQuery) -> Result<Vec<MemoryRow>, StoreError> {
        let mut q = q.clone();
        q.range = self.clamp(q.range);
        let log = self.memory.clone();
        tokio::task::spawn_blocking(move || log.rows(&q))
            .await
            .map_err(|e| StoreError::Query(format!("query task failed: {e}")))?
    }

    async fn memory_timeseries(
        &self,
        q: &MemoryQuery,
        step: i64,
    ) -> Result<Vec<MemoryPoint>, StoreError> {
        if step <= 0 {
            return Err(StoreError::Query(format!("step {step} must be > 0")));
        }
        let mut q = q.clone();
        q.range = self.clamp(q.range);
        let log = self.memory.clone();
        tokio::task::spawn_blocking(move || log.points(&q, step))
            .await
            .map_err(|e| StoreError::Query(format!("query task failed: {e}")))?
    }

    async fn memory_services(
        &self,
        tenant: &Tenant,
        range: TimeRange,
    ) -> Result<Vec<String>, StoreError> {
        let (log, tenant, range) = (self.memory.clone(), tenant.clone(), self.clamp(range));
        tokio::task::spawn_blocking(move || log.services(&tenant, range))
            .await
            .map_err(|e| StoreError::Query(format!("query task failed: {e}")))?
    }

    async fn memory_processes(
        &self,
        q: &MemoryQuery,
        step: i64,
    ) -> Result<Vec<ProcessMemory>, StoreError> {
        if step <= 0 {
            return Err(StoreError::Query(format!("step {step} must be > 0")));
        }
        let mut q = q.clone();
        q.range = self.clamp(q.range);
        let log = self.memory.clone();
        tokio::task::spawn_blocking(move || log.processes(&q, step))
            .await
            .map_err(|e| StoreError::Query(format!("query task failed: {e}")))?
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

    fn stack_collisions(&self) -> u64 {
        self.shared.stack_collisions.load(Ordering::Relaxed)
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
                let (gen, ids) = {
                    let active = read(&st.active);
                    (active.gen, active.stack_ids)
                };
                let old = std::mem::replace(
                    &mut st.active,
                    Arc::new(RwLock::new(MemTable::new(gen + 1, ids))),
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
