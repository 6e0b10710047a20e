//! The disk spool: one file per batch, written whole and renamed into place.
//!
//! Layout: `<dir>/batches/<seq, 20 digits>.batch` and `<dir>/tmp/`. Two record formats:
//! - events: `PWSPOOL1` · crc32 (LE, over everything after it) · event count (u32 LE) · id
//!   length (u16 LE) · id · body (the zstd-compressed protobuf `EventBatch`, exactly what is
//!   POSTed to `/api/v1/events`). Unchanged since the first sidecar, so a spool of events
//!   survives an upgrade or a downgrade.
//! - everything else: `PWSPOOL2` · crc32 · count (u32 LE) · id length (u16 LE) · id · kind
//!   (u8: 0 events, 1 a profile) · query length (u16 LE) · query · body. A profile's body is
//!   its zstd-compressed folded text and its query the `/api/v1/profiles` query string
//!   (labels, `format=folded`, `sample_rate`, `ts`); its count is its samples.
//!
//! Invariants:
//! - A file in `batches/` is complete: it is written in `tmp/`, fsynced, renamed, and the
//!   directory fsynced before [`Spool::append`] returns. A crash leaves at most a file in
//!   `tmp/`, which [`Spool::open`] removes.
//! - A record leaves `batches/` only when the collector answered 2xx ([`Spool::remove`] after
//!   delivery), answered a permanent 4xx (dropped and counted), was evicted to make room
//!   (oldest first, counted as `spool_full`), or failed its checksum (counted as
//!   `spool_corrupt`; skipped, never a panic).
//! - Sequence numbers only grow, also across restarts (the next one is one past the largest on
//!   disk), so the lowest is the oldest and batches ship in order.
//! - A record's id (`Idempotency-Key`) is stored in it, so a batch re-sent after a crash carries
//!   the same id; ids are unique because their prefix is random per process.
//! - The bytes on disk never exceed `max_bytes`; a batch larger than that alone is dropped.
//! - Drops are counted in the unit of the record: events for event batches, profiles for
//!   profiles (whose samples are not events).
//! - Removals are not fsynced: a removal lost in a crash only re-sends an acknowledged batch,
//!   which the collector recognises by its id.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::error::SidecarError;
use super::metrics::{DropReason, Metrics};

const MAGIC: &[u8; 8] = b"PWSPOOL1";
const MAGIC2: &[u8; 8] = b"PWSPOOL2";
/// Magic, crc, count, id length.
const FIXED: usize = 8 + 4 + 4 + 2;
/// Kind and query length, after the id of a `PWSPOOL2` record.
const FIXED2: usize = 1 + 2;
const KIND_EVENTS: u8 = 0;
const KIND_PROFILE: u8 = 1;
const SUFFIX: &str = ".batch";

/// What a spooled record holds, and so where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordKind {
    /// A zstd-compressed protobuf `EventBatch` for `/api/v1/events`.
    Events,
    /// A zstd-compressed folded profile for `/api/v1/profiles?{query}`.
    Profile {
        /// The query string, without `?`: labels, `format=folded`, `sample_rate`, `ts`.
        query: String,
    },
}

impl RecordKind {
    pub fn is_profile(&self) -> bool {
        matches!(self, RecordKind::Profile { .. })
    }
}

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolRecord {
    pub seq: u64,
    /// Sent as `Idempotency-Key`.
    pub id: String,
    pub kind: RecordKind,
    /// Events of an event batch, samples of a profile.
    pub events: u32,
    /// Exactly the bytes POSTed.
    pub body: Vec<u8>,
}

impl SpoolRecord {
    /// What a drop of this record counts: its events, or one profile.
    fn dropped_units(&self) -> (u64, u64) {
        units(self.kind.is_profile(), u64::from(self.events))
    }
}

/// (events, profiles) a record of this kind and count stands for.
fn units(profile: bool, count: u64) -> (u64, u64) {
    if profile {
        (0, 1)
    } else {
        (count, 0)
    }
}

/// What [`Spool::append`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `None` when the batch alone is larger than the spool.
    pub seq: Option<u64>,
    pub evicted_records: u64,
    pub evicted_events: u64,
    pub evicted_profiles: u64,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    bytes: u64,
    /// 0 for a profile.
    events: u64,
    profile: bool,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<u64, Meta>,
    bytes: u64,
    events: u64,
    next_seq: u64,
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
                Err(Corrupt {
                    events,
                    profile,
                    why,
                }) => {
                    tracing::warn!("spool: skipping corrupt record {}: {why}", path.display());
                    let (events, profiles) = units(profile, events);
                    metrics.dropped(DropReason::SpoolCorrupt, events);
                    metrics.profiles_dropped(DropReason::SpoolCorrupt, profiles);
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
        };
        if size > self.max_bytes {
            let (events, profiles) = record.dropped_units();
            self.metrics.dropped(DropReason::SpoolFull, events);
            self.metrics
                .profiles_dropped(DropReason::SpoolFull, profiles);
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
                let Some((old, meta)) = inner.records.pop_first() else {
                    break;
                };
                inner.bytes -= meta.bytes;
                inner.events -= meta.events;
                outcome.evicted_records += 1;
                outcome.evicted_events += meta.events;
                outcome.evicted_profiles += u64::from(meta.profile);
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
            tracing::warn!(
                records = outcome.evicted_records,
                events = outcome.evicted_events,
                profiles = outcome.evicted_profiles,
                "spool full: evicted the oldest batches"
            );
        }
        let tmp = self.tmp.join(format!("{seq:020}{SUFFIX}"));
        let final_path = self.path(seq);
        write_durably(&tmp, &final_path, &self.batches, &record)?;
        {
            let mut inner = self.lock();
            inner.records.insert(seq, meta);
            inner.bytes += meta.bytes;
            inner.events += meta.events;
            self.metrics
                .spool_size(inner.records.len() as u64, inner.bytes, inner.events);
        }
        if meta.profile {
            self.metrics.profile_spooled();
        } else {
            self.metrics.spooled(events as usize);
        }
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

    /// Reads record `seq`; `None` when it is gone or corrupt (then removed and counted).
    pub fn read(&self, seq: u64) -> Result<Option<SpoolRecord>, SidecarError> {
        let path = self.path(seq);
        match read_record(&path, seq) {
            Ok(Some(record)) => Ok(Some(record)),
            Ok(None) => {
                self.forget(seq);
                Ok(None)
            }
            Err(Corrupt {
                events,
                profile,
                why,
            }) => {
                tracing::warn!("spool: skipping corrupt record {}: {why}", path.display());
                let (events, profiles) = units(profile, events);
                self.metrics.dropped(DropReason::SpoolCorrupt, events);
                self.metrics
                    .profiles_dropped(DropReason::SpoolCorrupt, profiles);
                self.remove(seq)?;
                Ok(None)
            }
        }
    }

    /// Deletes record `seq` (delivered or permanently refused). Missing files are fine.
    pub fn remove(&self, seq: u64) -> Result<(), SidecarError> {
        let path = self.path(seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(SidecarError::spool(path, "remove a delivered batch", e)),
        }
        self.forget(seq);
        Ok(())
    }

    fn forget(&self, seq: u64) {
        let mut inner = self.lock();
        if let Some(meta) = inner.records.remove(&seq) {
            inner.bytes -= meta.bytes;
            inner.events -= meta.events;
        }
        self.metrics
            .spool_size(inner.records.len() as u64, inner.bytes, inner.events);
    }

    /// Records, bytes and events spooled.
    pub fn stats(&self) -> (u64, u64, u64) {
        let inner = self.lock();
        (inner.records.len() as u64, inner.bytes, inner.events)
    }

    /// Wakes when a record is appended (a permit is kept if nobody waits).
    pub fn appended(&self) -> &Notify {
        &self.notify
    }
}

fn meta_of(record: &SpoolRecord) -> Meta {
    let (events, _) = record.dropped_units();
    Meta {
        bytes: file_len(record),
        events,
        profile: record.kind.is_profile(),
    }
}

fn file_len(record: &SpoolRecord) -> u64 {
    let extra = match &record.kind {
        RecordKind::Events => 0,
        RecordKind::Profile { query } => FIXED2 + query.len().min(usize::from(u16::MAX)),
    };
    (FIXED + extra + record.id.len().min(usize::from(u16::MAX)) + record.body.len()) as u64
}

fn seq_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// At most `u16::MAX` bytes of `s`, with their length.
fn short(s: &str) -> (u16, &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    (len, &s.as_bytes()[..usize::from(len)])
}

fn encode(record: &SpoolRecord) -> Vec<u8> {
    let (id_len, id) = short(&record.id);
    let mut out = Vec::with_capacity(file_len(record) as usize);
    out.extend_from_slice(match record.kind {
        RecordKind::Events => MAGIC,
        RecordKind::Profile { .. } => MAGIC2,
    });
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.events.to_le_bytes());
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id);
    if let RecordKind::Profile { query } = &record.kind {
        let (query_len, query) = short(query);
        out.push(KIND_PROFILE);
        out.extend_from_slice(&query_len.to_le_bytes());
        out.extend_from_slice(query);
    }
    out.extend_from_slice(&record.body);
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A record that cannot be trusted; `events` is its count if the header was readable,
/// `profile` whether its magic says it is not an event batch.
#[derive(Debug)]
struct Corrupt {
    events: u64,
    profile: bool,
    why: String,
}

fn decode(bytes: &[u8], seq: u64) -> Result<SpoolRecord, Corrupt> {
    let v2 = bytes.get(..8) == Some(MAGIC2.as_slice());
    let corrupt = |events: u32, why: &str| Corrupt {
        events: u64::from(events),
        profile: v2,
        why: why.to_owned(),
    };
    if bytes.len() < FIXED || !(v2 || &bytes[..8] == MAGIC) {
        return Err(corrupt(0, "bad magic or torn header"));
    }
    let word = |at: usize| [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
    let crc = u32::from_le_bytes(word(8));
    let events = u32::from_le_bytes(word(12));
    if crc32fast::hash(&bytes[12..]) != crc {
        return Err(corrupt(events, "checksum mismatch"));
    }
    let id_len = usize::from(u16::from_le_bytes([bytes[16], bytes[17]]));
    let text = |at: usize, len: usize, what: &str| {
        bytes
            .get(at..at + len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .map(str::to_owned)
            .ok_or_else(|| corrupt(events, what))
    };
    let id = text(FIXED, id_len, "bad id")?;
    let mut at = FIXED + id_len;
    let kind = if v2 {
        let head = bytes
            .get(at..at + FIXED2)
            .ok_or_else(|| corrupt(events, "torn kind"))?;
        let query_len = usize::from(u16::from_le_bytes([head[1], head[2]]));
        let query = text(at + FIXED2, query_len, "bad query")?;
        at += FIXED2 + query_len;
        match head[0] {
            KIND_EVENTS => RecordKind::Events,
            KIND_PROFILE => RecordKind::Profile { query },
            _ => return Err(corrupt(events, "unknown record kind")),
        }
    } else {
        RecordKind::Events
    };
    Ok(SpoolRecord {
        seq,
        id,
        kind,
        events,
        body: bytes[at..].to_vec(),
    })
}

fn read_record(path: &Path, seq: u64) -> Result<Option<SpoolRecord>, Corrupt> {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => decode(&bytes, seq).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Corrupt {
            events: 0,
            profile: false,
            why: format!("unreadable: {e}"),
        }),
    }
}

fn write_durably(
    tmp: &Path,
    dest: &Path,
    dir: &Path,
    record: &SpoolRecord,
) -> Result<(), SidecarError> {
    let bytes = encode(record);
    let mut f = File::create(tmp).map_err(|e| SidecarError::spool(tmp, "create", e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| SidecarError::spool(tmp, "write and fsync", e))?;
    drop(f);
    fs::rename(tmp, dest).map_err(|e| SidecarError::spool(dest, "rename into place", e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| SidecarError::spool(dir, "fsync the directory", e))
}

/// 64 random bits from `/dev/urandom` (time and pid mixed in if it cannot be read).
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .is_ok()
    {
        return u64::from_le_bytes(buf);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32) ^ 0x9e37_79b9_7f4a_7c15
}

#[cfg(test)]
mod tests {
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
        assert_eq!(spool.stats().0, 2);
        assert_eq!(spool.stats().2, 7);
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
        assert_eq!(spool.stats().0, 1, "only record 0 is whole");
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
        let (records, bytes, events) = spool.stats();
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
            spool.stats().0,
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
            (3, spool.stats().1, 5),
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
        assert_eq!(spool.stats().0, 2);
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
            spool.stats().1
        };
        let (spool, metrics) = open(dir.path(), used);
        let body = vec![0; used as usize - 100];
        let out = spool.append(profile, 1, &body).expect("append");
        assert_eq!((out.evicted_events, out.evicted_profiles), (5, 1));
        assert_eq!(metrics.dropped_count(DropReason::SpoolFull), 5);
        assert_eq!(metrics.profiles_dropped_count(DropReason::SpoolFull), 1);
    }
}
