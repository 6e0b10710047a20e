//! The disk spool: one file per batch, written whole and renamed into place.
//!
//! Layout: `<dir>/batches/<seq, 20 digits>.batch` and `<dir>/tmp/`; each file is one record
//! in the format of `record.rs` (events, a profile or memory samples). `<dir>/dead-letter/`
//! belongs to `super::dead_letter`.
//!
//! Invariants:
//! - A file in `batches/` is complete: it is written in `tmp/`, fsynced, renamed, and the
//!   directory fsynced before [`Spool::append`] returns. A crash leaves at most a file in
//!   `tmp/`, which [`Spool::open`] removes.
//! - A record leaves `batches/` only when the collector answered 2xx ([`Spool::remove`] after
//!   delivery), answered 400, 413 or 422 and the record is already durably in the dead-letter
//!   folder (`super::dead_letter`), was evicted to make room (oldest first, counted as
//!   `spool_full`), or failed its checksum (counted as `spool_corrupt`; skipped, never a
//!   panic). Never for being retried too often.
//! - Sequence numbers only grow, also across restarts (the next one is one past the largest on
//!   disk), so the lowest ships next and batches ship in the order they were spooled, except
//!   one [`Spool::set_aside`]: renamed to a new, highest number (same file, same id), it ships
//!   after everything spooled before that, so a batch that keeps failing blocks nothing.
//! - A record's id (`Idempotency-Key`) is stored in it, so a batch re-sent after a crash carries
//!   the same id; ids are unique because their prefix is random per process.
//! - The bytes on disk never exceed `max_bytes`; a batch larger than that alone is dropped.
//! - Drops are counted in the unit of the record: events for event batches, profiles for
//!   profiles (whose samples are not events), memory samples for memory records.
//! - Removals are not fsynced: a removal lost in a crash only re-sends an acknowledged batch,
//!   which the collector recognises by its id.

pub(crate) mod faults;
mod record;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::error::SidecarError;
use super::metrics::{DropReason, Metrics};
use record::{encode, file_len, read_record, units, Corrupt};
pub(crate) use record::{sync_dir, write_durably};
pub use record::{RecordKind, SpoolRecord, Unit};

const SUFFIX: &str = ".batch";

/// What [`Spool::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `None` when the batch alone is larger than the spool.
    pub seq: Option<u64>,
    pub evicted_records: u64,
    pub evicted_events: u64,
    pub evicted_profiles: u64,
    pub evicted_memory_samples: u64,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    bytes: u64,
    /// Events of an event batch; 0 for other records.
    events: u64,
    unit: Unit,
    /// The record's count in its unit.
    count: u64,
    /// Set aside since this sidecar started (not kept across restarts).
    set_aside: bool,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<u64, Meta>,
    bytes: u64,
    events: u64,
    /// Records with `set_aside`.
    set_aside: u64,
    next_seq: u64,
}

impl Inner {
    /// Takes `seq` out of the totals.
    fn take(&mut self, seq: u64) -> Option<Meta> {
        let meta = self.records.remove(&seq)?;
        self.bytes -= meta.bytes;
        self.events -= meta.events;
        self.set_aside -= u64::from(meta.set_aside);
        Some(meta)
    }
}

/// The spool of one sidecar. Methods block on disk I/O; call them off the async workers.
#[derive(Debug)]
pub struct Spool {
    batches: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    id_prefix: String,
    inner: Mutex<Inner>,
    notify: Notify,
    metrics: Arc<Metrics>,
}

/// What a spool holds: whole records, their bytes on disk, and the events in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    pub records: u64,
    pub bytes: u64,
    pub events: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, drops `tmp/` leftovers and checks every record.
    pub fn open(dir: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<Spool, SidecarError> {
        let batches = dir.join("batches");
        let tmp = dir.join("tmp");
        for d in [&batches, &tmp] {
            fs::create_dir_all(d).map_err(|e| SidecarError::spool(d, "create the directory", e))?;
        }
        for entry in fs::read_dir(&tmp).map_err(|e| SidecarError::spool(&tmp, "list", e))? {
            let path = entry
                .map_err(|e| SidecarError::spool(&tmp, "list", e))?
                .path();
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!("spool: cannot remove leftover {}: {e}", path.display());
            }
        }
        let mut inner = Inner::default();
        let mut max_seq = None;
        for entry in fs::read_dir(&batches).map_err(|e| SidecarError::spool(&batches, "list", e))? {
            let path = entry
                .map_err(|e| SidecarError::spool(&batches, "list", e))?
                .path();
            let Some(seq) = seq_of(&path) else {
                tracing::warn!("spool: ignoring unexpected file {}", path.display());
                continue;
            };
            max_seq = max_seq.max(Some(seq));
            match read_record(&path, seq) {
                Ok(Some(record)) => {
                    let meta = meta_of(&record);
                    inner.bytes += meta.bytes;
                    inner.events += meta.events;
                    inner.records.insert(seq, meta);
                }
                Ok(None) => {}
                Err(Corrupt { count, unit, why }) => {
                    tracing::warn!("spool: skipping corrupt record {}: {why}", path.display());
                    let (unit, n) = units(unit, count);
                    metrics.dropped_in(DropReason::SpoolCorrupt, unit, n);
                    if let Err(e) = fs::remove_file(&path) {
                        tracing::warn!("spool: cannot remove {}: {e}", path.display());
                    }
                }
            }
        }
        inner.next_seq = max_seq.map_or(0, |s| s + 1);
        if !inner.records.is_empty() {
            tracing::info!(
                records = inner.records.len(),
                events = inner.events,
                bytes = inner.bytes,
                "spool: resuming delivery of spooled batches"
            );
        }
        metrics.spool_size(inner.records.len() as u64, inner.bytes, inner.events);
        let spool = Spool {
            batches,
            tmp,
            max_bytes,
            id_prefix: format!("{:016x}", random_u64()),
            inner: Mutex::new(inner),
            notify: Notify::new(),
            metrics,
        };
        Ok(spool)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent with the disk in a
        // way that loses data (files are the truth), so a poisoned lock is still used.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.batches.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Writes a batch of `events` events (or a profile of `events` samples) durably; evicts
    /// the oldest records first when it would not fit.
    pub fn append(
        &self,
        kind: RecordKind,
        events: u32,
        body: &[u8],
    ) -> Result<AppendOutcome, SidecarError> {
        let seq = {
            let mut inner = self.lock();
            let seq = inner.next_seq;
            inner.next_seq += 1;
            seq
        };
        let record = SpoolRecord {
            seq,
            id: format!("{}-{seq}", self.id_prefix),
            kind,
            events,
            body: body.to_vec(),
        };
        let meta = meta_of(&record);
        let size = meta.bytes;
        let mut outcome = AppendOutcome {
            seq: Some(seq),
            evicted_records: 0,
            evicted_events: 0,
            evicted_profiles: 0,
            evicted_memory_samples: 0,
        };
        if size > self.max_bytes {
            let (unit, n) = record.units();
            self.metrics.dropped_in(DropReason::SpoolFull, unit, n);
            tracing::warn!(
                "spool: a batch of {size} bytes does not fit in --spool-max {}; dropped",
                self.max_bytes
            );
            outcome.seq = None;
            return Ok(outcome);
        }
        {
            let mut inner = self.lock();
            while inner.bytes + size > self.max_bytes {
                let Some(old) = inner.records.keys().next().copied() else {
                    break;
                };
                let Some(meta) = inner.take(old) else {
                    break;
                };
                outcome.evicted_records += 1;
                match meta.unit {
                    Unit::Events => outcome.evicted_events += meta.count,
                    Unit::Profiles => outcome.evicted_profiles += meta.count,
                    Unit::MemorySamples => outcome.evicted_memory_samples += meta.count,
                }
                let path = self.path(old);
                if let Err(e) = fs::remove_file(&path) {
                    if e.kind() != io::ErrorKind::NotFound {
                        tracing::warn!("spool: cannot evict {}: {e}", path.display());
                    }
                }
            }
        }
        if outcome.evicted_records > 0 {
            self.metrics
                .dropped(DropReason::SpoolFull, outcome.evicted_events);
            self.metrics
                .profiles_dropped(DropReason::SpoolFull, outcome.evicted_profiles);
            self.metrics.dropped_in(
                DropReason::SpoolFull,
                Unit::MemorySamples,
                outcome.evicted_memory_samples,
            );
            tracing::warn!(
                records = outcome.evicted_records,
                events = outcome.evicted_events,
                profiles = outcome.evicted_profiles,
                memory_samples = outcome.evicted_memory_samples,
                "spool full: evicted the oldest batches"
            );
        }
        let tmp = self.tmp.join(format!("{seq:020}{SUFFIX}"));
        let final_path = self.path(seq);
        write_durably(&tmp, &final_path, &self.batches, &encode(&record))?;
        {
            let mut inner = self.lock();
            inner.records.insert(seq, meta);
            inner.bytes += meta.bytes;
            inner.events += meta.events;
            self.publish(&inner);
        }
        self.metrics.spooled_in(meta.unit, meta.count);
        self.notify.notify_one();
        Ok(outcome)
    }

    /// The oldest record's sequence number.
    pub fn oldest(&self) -> Option<u64> {
        self.lock().records.keys().next().copied()
    }

    /// Whether `seq` is still spooled (not delivered, dropped or evicted).
    pub fn contains(&self, seq: u64) -> bool {
        self.lock().records.contains_key(&seq)
    }

    /// Whether `seq` was set aside since this sidecar started.
    pub fn is_set_aside(&self, seq: u64) -> bool {
        self.lock().records.get(&seq).is_some_and(|m| m.set_aside)
    }

    /// Moves record `seq` behind every record spooled so far: its file is renamed to the next
    /// sequence number (content and id unchanged) and the directory fsynced. Returns the new
    /// number; `None` when the record is gone (delivered or evicted meanwhile).
    pub fn set_aside(&self, seq: u64) -> Result<Option<u64>, SidecarError> {
        let mut inner = self.lock();
        if !inner.records.contains_key(&seq) {
            return Ok(None);
        }
        let new = inner.next_seq;
        inner.next_seq += 1;
        let from = self.path(seq);
        match faults::check("spool.set_aside", &from)
            .and_then(|()| fs::rename(&from, self.path(new)))
        {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                inner.take(seq);
                self.publish(&inner);
                return Ok(None);
            }
            Err(e) => return Err(SidecarError::spool(from, "rename a batch set aside", e)),
        }
        if let Some(mut meta) = inner.take(seq) {
            meta.set_aside = true;
            inner.bytes += meta.bytes;
            inner.events += meta.events;
            inner.set_aside += 1;
            inner.records.insert(new, meta);
        }
        self.publish(&inner);
        drop(inner);
        sync_dir(&self.batches)?;
        Ok(Some(new))
    }

    /// Reads record `seq`; `None` when it is gone or corrupt (then removed and counted).
    pub fn read(&self, seq: u64) -> Result<Option<SpoolRecord>, SidecarError> {
        let path = self.path(seq);
        match read_record(&path, seq) {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) => {
                self.forget(seq);
                Ok(None)
            }
            Err(Corrupt { count, unit, why }) => {
                tracing::warn!("spool: skipping corrupt record {}: {why}", path.display());
                let (unit, n) = units(unit, count);
                self.metrics.dropped_in(DropReason::SpoolCorrupt, unit, n);
                self.remove(seq)?;
                Ok(None)
            }
        }
    }

    /// Deletes record `seq` (delivered or permanently refused). Missing files are fine.
    pub fn remove(&self, seq: u64) -> Result<(), SidecarError> {
        let path = self.path(seq);
        match faults::check("spool.remove", &path).and_then(|()| fs::remove_file(&path)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SidecarError::spool(path, "remove a delivered batch", e)),
        }
        self.forget(seq);
        Ok(())
    }

    fn forget(&self, seq: u64) {
        let mut inner = self.lock();
        inner.take(seq);
        self.publish(&inner);
    }

    fn publish(&self, inner: &Inner) {
        self.metrics
            .spool_size(inner.records.len() as u64, inner.bytes, inner.events);
        self.metrics.spool_set_aside(inner.set_aside);
    }

    /// What the spool holds now.
    pub fn stats(&self) -> SpoolStats {
        let inner = self.lock();
        SpoolStats {
            records: inner.records.len() as u64,
            bytes: inner.bytes,
            events: inner.events,
        }
    }

    /// Wakes when a record is appended (a permit is kept if nobody waits).
    pub fn appended(&self) -> &Notify {
        &self.notify
    }
}

fn meta_of(record: &SpoolRecord) -> Meta {
    let (unit, count) = record.units();
    Meta {
        bytes: file_len(record),
        events: if unit == Unit::Events { count } else { 0 },
        unit,
        count,
        set_aside: false,
    }
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// 64 random bits from the operating system (time and pid mixed, if it has none to give).
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let nanos = profwatch_model::timefmt::now_ns() as u64;
        nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
    })
}

#[cfg(test)]
mod tests {
    use super::record::FIXED;
    use super::*;

    fn open(dir: &Path, max: u64) -> (Spool, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        (
            Spool::open(dir, max, metrics.clone()).expect("open"),
            metrics,
        )
    }

    #[test]
    fn records_survive_a_reopen_in_order_with_their_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = open(dir.path(), 1 << 20);
        spool.append(RecordKind::Events, 3, b"one").expect("append");
        spool.append(RecordKind::Events, 4, b"two").expect("append");
        let first = spool
            .read(spool.oldest().expect("one"))
            .expect("read")
            .expect("there");
        drop(spool);
        let (spool, _) = open(dir.path(), 1 << 20);
        assert_eq!(spool.stats().records, 2);
        assert_eq!(spool.stats().events, 7);
        let again = spool
            .read(spool.oldest().expect("one"))
            .expect("read")
            .expect("there");
        assert_eq!(again, first);
        spool.remove(again.seq).expect("remove");
        let out = spool
            .append(RecordKind::Events, 1, b"three")
            .expect("append");
        assert_eq!(
            out.seq,
            Some(2),
            "sequence numbers continue after a restart"
        );
        let second = spool
            .read(spool.oldest().expect("two"))
            .expect("read")
            .expect("there");
        assert_eq!((second.body.as_slice(), second.events), (&b"two"[..], 4));
        assert_ne!(second.id, first.id);
    }

    #[test]
    fn corrupt_and_torn_records_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = open(dir.path(), 1 << 20);
        for i in 0..4u8 {
            spool
                .append(RecordKind::Events, 10, &[i; 100])
                .expect("append");
        }
        drop(spool);
        let batches = dir.path().join("batches");
        let path = |seq: u64| batches.join(format!("{seq:020}.batch"));
        let mut bytes = fs::read(path(1)).expect("read");
        bytes[40] ^= 0xff;
        fs::write(path(1), &bytes).expect("flip a bit");
        let bytes = fs::read(path(2)).expect("read");
        fs::write(path(2), &bytes[..bytes.len() / 2]).expect("tear");
        fs::write(path(3), b"PW").expect("torn header");
        fs::write(
            dir.path().join("tmp").join("00000000000000000009.batch"),
            b"partial",
        )
        .expect("leftover");
        let (spool, metrics) = open(dir.path(), 1 << 20);
        assert_eq!(spool.stats().records, 1, "only record 0 is whole");
        assert_eq!(metrics.dropped_count(DropReason::SpoolCorrupt), 20);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).expect("tmp").count(),
            0
        );
        assert_eq!(
            spool
                .append(RecordKind::Events, 1, b"x")
                .expect("append")
                .seq,
            Some(4)
        );
    }

    #[test]
    fn a_full_spool_evicts_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let per = (FIXED + 20 + 1000) as u64;
        let (spool, metrics) = open(dir.path(), per * 3 + 10);
        for i in 0..5u8 {
            spool
                .append(RecordKind::Events, 7, &[i; 1000])
                .expect("append");
        }
        let SpoolStats {
            records,
            bytes,
            events,
        } = spool.stats();
        assert_eq!((records, events), (3, 21));
        assert!(bytes <= per * 3 + 10);
        assert_eq!(metrics.dropped_count(DropReason::SpoolFull), 14);
        let oldest = spool
            .read(spool.oldest().expect("some"))
            .expect("read")
            .expect("there");
        assert_eq!(oldest.body[0], 2);
        let big = spool
            .append(RecordKind::Events, 1, &vec![0; 10_000])
            .expect("append");
        assert_eq!(big.seq, None);
        assert_eq!(
            spool.stats().records,
            3,
            "a batch larger than the spool evicts nothing"
        );
    }

    #[test]
    fn profile_records_keep_their_query_and_are_counted_as_profiles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = open(dir.path(), 1 << 20);
        let profile = RecordKind::Profile {
            query: "format=folded&sample_rate=99&service=s".into(),
        };
        spool
            .append(RecordKind::Events, 5, b"events")
            .expect("append");
        spool
            .append(profile.clone(), 40, b"main;f 40")
            .expect("append");
        spool
            .append(profile.clone(), 2, b"main;g 2")
            .expect("append");
        assert_eq!(
            spool.stats(),
            SpoolStats {
                records: 3,
                bytes: spool.stats().bytes,
                events: 5
            },
            "profiles hold no events"
        );
        drop(spool);
        let batches = dir.path().join("batches");
        let path = |seq: u64| batches.join(format!("{seq:020}.batch"));
        let mut bytes = fs::read(path(2)).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(path(2), &bytes).expect("flip a bit");

        let (spool, metrics) = open(dir.path(), 1 << 20);
        assert_eq!(spool.stats().records, 2);
        assert_eq!(metrics.dropped_count(DropReason::SpoolCorrupt), 0);
        assert_eq!(metrics.profiles_dropped_count(DropReason::SpoolCorrupt), 1);
        let events = spool.read(0).expect("read").expect("there");
        assert_eq!(
            (events.kind, events.body),
            (RecordKind::Events, b"events".to_vec())
        );
        let p = spool.read(1).expect("read").expect("there");
        assert_eq!(
            (&p.kind, p.events, p.body.as_slice()),
            (&profile, 40, &b"main;f 40"[..])
        );

        drop(spool);
        let used = {
            let (spool, _) = open(dir.path(), 1 << 20);
            spool.stats().bytes
        };
        let (spool, metrics) = open(dir.path(), used);
        let body = vec![0; used as usize - 100];
        let out = spool.append(profile, 1, &body).expect("append");
        assert_eq!((out.evicted_events, out.evicted_profiles), (5, 1));
        assert_eq!(metrics.dropped_count(DropReason::SpoolFull), 5);
        assert_eq!(metrics.profiles_dropped_count(DropReason::SpoolFull), 1);
    }

    #[test]
    fn a_record_set_aside_ships_after_the_others_keeps_its_id_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, metrics) = open(dir.path(), 1 << 20);
        for body in [b"stuck", b"one__", b"two__"] {
            spool.append(RecordKind::Events, 2, body).expect("append");
        }
        let stuck = spool.read(0).expect("read").expect("there");
        assert_eq!(spool.set_aside(0).expect("set aside"), Some(3));
        assert!(!spool.contains(0) && spool.is_set_aside(3));
        assert_eq!(
            spool.stats(),
            SpoolStats {
                records: 3,
                bytes: spool.stats().bytes,
                events: 6
            },
            "nothing lost"
        );
        assert_eq!(metrics.snapshot("", "").spool_set_aside, 1);
        assert_eq!(spool.oldest(), Some(1), "the others go first");
        spool.remove(1).expect("remove");
        spool.remove(2).expect("remove");
        let again = spool.read(3).expect("read").expect("there");
        assert_eq!((again.id, again.body), (stuck.id.clone(), stuck.body));
        assert_eq!(spool.set_aside(3).expect("set aside"), Some(4));
        assert_eq!(metrics.snapshot("", "").spool_set_aside, 1);
        assert_eq!(spool.set_aside(99).expect("gone"), None);
        drop(spool);

        let (spool, _) = open(dir.path(), 1 << 20);
        assert_eq!(spool.oldest(), Some(4));
        assert_eq!(spool.read(4).expect("read").expect("there").id, stuck.id);
        assert_eq!(
            spool
                .append(RecordKind::Events, 1, b"x")
                .expect("append")
                .seq,
            Some(5)
        );
    }
    /// Every record on disk, in shipping order: (events, body).
    fn on_disk(dir: &Path) -> Vec<(u32, Vec<u8>)> {
        let (spool, _) = open(dir, 1 << 20);
        let mut out = Vec::new();
        while let Some(seq) = spool.oldest() {
            let r = spool.read(seq).expect("read").expect("there");
            out.push((r.events, r.body));
            spool.remove(seq).expect("remove");
        }
        // Put them back: the caller's spool is the one under test.
        for (events, body) in &out {
            spool
                .append(RecordKind::Events, *events, body)
                .expect("append");
        }
        out
    }

    fn files(dir: &Path) -> usize {
        fs::read_dir(dir).map_or(0, |d| d.count())
    }

    #[test]
    fn an_append_failing_at_any_io_step_leaves_no_file_and_the_next_append_is_stored() {
        for point in [
            "spool.create",
            "spool.write",
            "spool.fsync",
            "spool.rename",
            "spool.dir_fsync",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let (spool, _) = open(dir.path(), 1 << 20);
            spool
                .append(RecordKind::Events, 1, b"before")
                .expect("append");
            faults::arm(point, dir.path(), io::ErrorKind::Other, 1);
            let err = spool
                .append(RecordKind::Events, 2, b"failed")
                .expect_err(point);
            assert!(err.to_string().contains("spool"), "{point}: {err}");
            assert_eq!(spool.stats().records, 1, "{point}");
            assert_eq!(files(&dir.path().join("tmp")), 0, "{point}: tmp/ is clean");
            assert_eq!(files(&dir.path().join("batches")), 1, "{point}");
            spool.append(RecordKind::Events, 3, b"after").expect(point);
            drop(spool);
            assert_eq!(
                on_disk(dir.path()),
                vec![(1, b"before".to_vec()), (3, b"after".to_vec())],
                "{point}: the failed batch is not shipped later, the others are all there"
            );
        }
    }

    #[test]
    fn a_failed_removal_or_set_aside_keeps_the_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spool, _) = open(dir.path(), 1 << 20);
        spool.append(RecordKind::Events, 1, b"one").expect("append");
        faults::arm(
            "spool.remove",
            dir.path(),
            io::ErrorKind::PermissionDenied,
            1,
        );
        assert!(spool.remove(0).is_err());
        assert!(
            spool.contains(0),
            "still spooled: it ships again, and the collector dedups it"
        );
        faults::arm("spool.set_aside", dir.path(), io::ErrorKind::Other, 1);
        assert!(spool.set_aside(0).is_err());
        assert!(spool.contains(0) && !spool.is_set_aside(0));
        faults::arm("spool.dir_fsync", dir.path(), io::ErrorKind::Other, 1);
        assert!(
            spool.set_aside(0).is_err(),
            "its rename is not known durable"
        );
        drop(spool);
        assert_eq!(on_disk(dir.path()), vec![(1, b"one".to_vec())]);
    }
}
