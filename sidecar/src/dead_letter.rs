//! The dead-letter folder: batches the collector refused for good (400, 413, 422), kept on disk
//! instead of being deleted, so they can be read, fixed and re-sent by hand.
//!
//! Layout: `<spool dir>/dead-letter/<name>.batch` is the spool record unchanged (same format as
//! in `batches/`), `<name>.json` says why ([`DeadLetterInfo`]: status, the collector's message,
//! id, kind, count, time). `<name>` is the record's `Idempotency-Key`, so a batch refused again
//! after a crash (its removal from the spool lost) replaces its own dead letter.
//! `<spool dir>/dead-letter/tmp/` holds files being written.
//!
//! Invariants:
//! - A dead letter is whole before the spool lets go of its batch: both files are written in
//!   `tmp/`, fsynced and renamed into place (`.json` first, then `.batch`), and the folder
//!   fsynced before [`DeadLetters::put`] returns; the shipper removes the spool record only
//!   after that. A crash in between leaves the record in the spool (sent again, refused again,
//!   put again) and at most files in `tmp/` or a `.json` without its `.batch`, both removed at
//!   [`DeadLetters::open`].
//! - Bounded: at most `max_files` dead letters and `max_bytes` bytes (both files of each). Room
//!   is made by removing the oldest dead letters (by modification time at open, then in the
//!   order they were put), counted as dropped under `dead_letter_full`, in the record's unit
//!   (events, one profile, or memory samples). A batch larger than `max_bytes` alone is not
//!   kept and counted as dropped under `collector_rejected`.
//! - Counted: what was put (`events_dead_lettered`, `profiles_dead_lettered`) and what the
//!   folder holds (`dead_letter_records`, `dead_letter_bytes`).

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::error::SidecarError;
use super::metrics::{DropReason, Metrics};
use super::spool::{write_durably, RecordKind, SpoolRecord, Unit};

const BATCH: &str = "batch";
const JSON: &str = "json";

/// Why a batch is in the dead-letter folder: the `.json` next to its `.batch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterInfo {
    /// The batch's `Idempotency-Key`.
    pub id: String,
    /// What the collector answered: 400, 413 or 422.
    pub status: u16,
    /// The start of the collector's answer (at most 300 characters).
    pub message: String,
    /// `events`, `profile` or `memory`.
    pub kind: String,
    /// The profile's query string; `None` for events.
    #[serde(default)]
    pub query: Option<String>,
    /// Events of an event batch, samples of a profile or of a memory record.
    pub count: u32,
    /// When it was refused, RFC 3339.
    pub refused_at: String,
}

/// What [`DeadLetters::put`] did with a refused batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Written whole as `dead-letter/<name>.batch`; `evicted` older dead letters made room.
    Kept { name: String, evicted: u64 },
    /// Larger than the whole folder: counted as dropped, not written.
    TooLarge { bytes: u64 },
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    bytes: u64,
    unit: Unit,
    /// In `unit`.
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// Oldest first.
    entries: VecDeque<Entry>,
    bytes: u64,
}

/// The dead-letter folder of one spool. Methods block on disk I/O; call them off the async
/// workers.
#[derive(Debug)]
pub struct DeadLetters {
    dir: PathBuf,
    tmp: PathBuf,
    max_bytes: u64,
    max_files: usize,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
}

/// What the dead-letter folder holds: batches and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadLetterStats {
    pub letters: u64,
    pub bytes: u64,
}

impl DeadLetters {
    /// Opens (or creates) `<spool_dir>/dead-letter/`, removes leftovers of interrupted writes
    /// and takes stock of what is there (making room if the bounds shrank).
    pub fn open(
        spool_dir: &Path,
        max_bytes: u64,
        max_files: usize,
        metrics: Arc<Metrics>,
    ) -> Result<DeadLetters, SidecarError> {
        let dir = spool_dir.join("dead-letter");
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| SidecarError::spool(&tmp, "create the directory", e))?;
        for path in list(&tmp)? {
            remove_quietly(&path);
        }
        let mut found = Vec::new();
        for path in list(&dir)? {
            let (Some(stem), Some(ext)) = (
                path.file_stem().and_then(|s| s.to_str()),
                path.extension().and_then(|s| s.to_str()),
            ) else {
                continue;
            };
            if ext == JSON && !dir.join(format!("{stem}.{BATCH}")).exists() {
                remove_quietly(&path);
            } else if ext == BATCH {
                found.push(entry_on_disk(&dir, stem)?);
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
        let letters = DeadLetters {
            dir,
            tmp,
            max_bytes,
            max_files: max_files.max(1),
            inner: Mutex::new(Inner::default()),
            metrics,
        };
        {
            let mut inner = letters.lock();
            for (_, entry) in found {
                inner.bytes += entry.bytes;
                inner.entries.push_back(entry);
            }
            letters.make_room(&mut inner, 0);
            letters.publish(&inner);
        }
        Ok(letters)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The files are the truth; a panic elsewhere cannot make the totals lose a file.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `record`, refused with `status` and `message`, as a dead letter: whole and
    /// fsynced when this returns `Kept`. Evicts the oldest dead letters to stay in bounds.
    pub fn put(
        &self,
        record: &SpoolRecord,
        status: u16,
        message: &str,
    ) -> Result<Put, SidecarError> {
        let name = file_name(record);
        let info = DeadLetterInfo {
            id: record.id.clone(),
            status,
            message: message.to_owned(),
            kind: match record.kind {
                RecordKind::Events => "events".to_owned(),
                RecordKind::Profile { .. } => "profile".to_owned(),
                RecordKind::Memory => "memory".to_owned(),
            },
            query: match &record.kind {
                RecordKind::Events | RecordKind::Memory => None,
                RecordKind::Profile { query } => Some(query.clone()),
            },
            count: record.events,
            refused_at: profwatch_model::timefmt::format_rfc3339(profwatch_model::timefmt::now_ns()),
        };
        let json = serde_json::to_vec_pretty(&info).unwrap_or_default();
        let batch = record.to_bytes();
        let bytes = (json.len() + batch.len()) as u64;
        let (unit, count) = record.units();
        if bytes > self.max_bytes {
            self.metrics
                .dropped_in(DropReason::CollectorRejected, unit, count);
            return Ok(Put::TooLarge { bytes });
        }
        let mut inner = self.lock();
        if let Some(at) = inner.entries.iter().position(|e| e.name == name) {
            if let Some(old) = inner.entries.remove(at) {
                inner.bytes -= old.bytes;
            }
        }
        let evicted = self.make_room(&mut inner, bytes);
        for (ext, content) in [(JSON, &json), (BATCH, &batch)] {
            let file = format!("{name}.{ext}");
            write_durably(
                &self.tmp.join(&file),
                &self.dir.join(&file),
                &self.dir,
                content,
            )?;
        }
        inner.entries.push_back(Entry {
            name: name.clone(),
            bytes,
            unit,
            count,
        });
        inner.bytes += bytes;
        self.publish(&inner);
        drop(inner);
        self.metrics.dead_lettered_in(unit, count);
        Ok(Put::Kept { name, evicted })
    }

    /// Removes the oldest dead letters until one of `incoming` bytes fits; returns how many.
    fn make_room(&self, inner: &mut Inner, incoming: u64) -> u64 {
        let slots = if incoming > 0 { 1 } else { 0 };
        let mut evicted = 0;
        while !inner.entries.is_empty()
            && (inner.entries.len() + slots > self.max_files
                || inner.bytes + incoming > self.max_bytes)
        {
            let Some(old) = inner.entries.pop_front() else {
                break;
            };
            inner.bytes -= old.bytes;
            for ext in [BATCH, JSON] {
                remove_quietly(&self.dir.join(format!("{}.{ext}", old.name)));
            }
            self.metrics
                .dropped_in(DropReason::DeadLetterFull, old.unit, old.count);
            evicted += 1;
        }
        if evicted > 0 {
            tracing::warn!(
                evicted,
                "dead-letter folder full: removed the oldest dead letters"
            );
        }
        evicted
    }

    fn publish(&self, inner: &Inner) {
        self.metrics
            .dead_letter_size(inner.entries.len() as u64, inner.bytes);
    }

    /// What the folder holds now.
    pub fn stats(&self) -> DeadLetterStats {
        let inner = self.lock();
        DeadLetterStats {
            letters: inner.entries.len() as u64,
            bytes: inner.bytes,
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The record's id with anything but `[A-Za-z0-9_-]` replaced, at most 100 characters.
fn file_name(record: &SpoolRecord) -> String {
    let name: String = record
        .id
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        format!("record-{}", record.seq)
    } else {
        name
    }
}

/// A dead letter found at open, with the modification time of its `.batch`.
fn entry_on_disk(dir: &Path, stem: &str) -> Result<(SystemTime, Entry), SidecarError> {
    let batch = dir.join(format!("{stem}.{BATCH}"));
    let json = dir.join(format!("{stem}.{JSON}"));
    let meta = fs::metadata(&batch).map_err(|e| SidecarError::spool(&batch, "stat", e))?;
    let info: Option<DeadLetterInfo> = fs::read(&json)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let json_len = fs::metadata(&json).map_or(0, |m| m.len());
    let (unit, count) = match &info {
        Some(i) if i.kind == "profile" => (Unit::Profiles, 1),
        Some(i) if i.kind == "memory" => (Unit::MemorySamples, u64::from(i.count)),
        Some(i) => (Unit::Events, u64::from(i.count)),
        None => (Unit::Events, 0),
    };
    let entry = Entry {
        name: stem.to_owned(),
        bytes: meta.len() + json_len,
        unit,
        count,
    };
    Ok((meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), entry))
}

/// The files (not directories) in `dir`.
fn list(dir: &Path) -> Result<Vec<PathBuf>, SidecarError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| SidecarError::spool(dir, "list", e))? {
        let entry = entry.map_err(|e| SidecarError::spool(dir, "list", e))?;
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn remove_quietly(path: &Path) {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("dead letters: cannot remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: u64, events: u32, body: usize) -> SpoolRecord {
        SpoolRecord {
            seq,
            id: format!("0123456789abcdef-{seq}"),
            kind: RecordKind::Events,
            events,
            body: vec![7; body],
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = list(dir)
            .expect("list")
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the folder's files hold (a damaged `.json`, a `.batch` of any bytes), open
        /// takes stock without panicking, counts every dead letter and its bytes, and keeps it.
        #[test]
        fn any_file_contents_are_taken_stock_of(
            json in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            batch in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let folder = dir.path().join("dead-letter");
            fs::create_dir_all(&folder).expect("folder");
            fs::write(folder.join("x.json"), &json).expect("json");
            fs::write(folder.join("x.batch"), &batch).expect("batch");
            let letters = DeadLetters::open(dir.path(), 1 << 20, 10, Arc::new(Metrics::new()))
                .expect("open");
            let stats = letters.stats();
            proptest::prop_assert_eq!(stats.letters, 1);
            proptest::prop_assert_eq!(stats.bytes, (json.len() + batch.len()) as u64);
            proptest::prop_assert_eq!(names(&folder), ["x.batch", "x.json"]);
        }
    }

    #[test]
    fn a_dead_letter_is_the_record_and_why_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let letters = DeadLetters::open(dir.path(), 1 << 20, 10, metrics.clone()).expect("open");
        let r = record(4, 5, 100);
        let put = letters.put(&r, 422, "bad label").expect("put");
        assert_eq!(
            put,
            Put::Kept {
                name: "0123456789abcdef-4".into(),
                evicted: 0
            }
        );
        let folder = dir.path().join("dead-letter");
        assert_eq!(
            fs::read(folder.join("0123456789abcdef-4.batch")).expect("batch"),
            r.to_bytes()
        );
        let info: DeadLetterInfo = serde_json::from_slice(
            &fs::read(folder.join("0123456789abcdef-4.json")).expect("json"),
        )
        .expect("info");
        assert_eq!(
            (
                info.status,
                info.message.as_str(),
                info.count,
                info.kind.as_str()
            ),
            (422, "bad label", 5, "events")
        );
        let snapshot = metrics.snapshot("", "");
        assert_eq!(
            (snapshot.dead_lettered_events, snapshot.dead_letter_records),
            (5, 1)
        );
        let bytes = letters.stats().bytes;
        assert_eq!(snapshot.dead_letter_bytes, bytes);

        letters.put(&r, 422, "again").expect("put again");
        assert_eq!(
            letters.stats().letters,
            1,
            "the same batch is one dead letter"
        );
        fs::write(folder.join("tmp").join("x.json"), b"partial").expect("leftover");
        fs::write(folder.join("orphan.json"), b"{}").expect("orphan");
        drop(letters);
        let letters = DeadLetters::open(dir.path(), 1 << 20, 10, metrics).expect("reopen");
        assert_eq!(letters.stats().letters, 1);
        assert_eq!(
            names(&folder),
            ["0123456789abcdef-4.batch", "0123456789abcdef-4.json"]
        );
        assert!(names(&folder.join("tmp")).is_empty());
    }

    #[test]
    fn a_dead_letter_that_cannot_be_written_is_an_error_and_leaves_no_batch() {
        // Each case: the point, and the path it fails for (a put writes its JSON, then its batch).
        let batch = "dead-letter/tmp/0123456789abcdef-4.batch";
        let cases = [
            ("spool.write", ""),
            ("spool.dir_fsync", ""),
            ("spool.create", batch),
            ("spool.write", batch),
            ("spool.fsync", batch),
            ("spool.rename", "dead-letter/0123456789abcdef-4.batch"),
        ];
        for (point, at) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            let metrics = Arc::new(Metrics::new());
            let letters =
                DeadLetters::open(dir.path(), 1 << 20, 10, metrics.clone()).expect("open");
            let at = dir.path().join(at);
            crate::spool::faults::arm(point, &at, std::io::ErrorKind::Other, 1);
            let err = letters
                .put(&record(4, 5, 100), 422, "bad")
                .expect_err(point);
            assert!(err.to_string().contains("dead-letter"), "{point}: {err}");
            assert_eq!(letters.stats().letters, 0, "{point}");
            assert_eq!(metrics.snapshot("", "").dead_lettered_events, 0, "{point}");
            drop(letters);
            let letters = DeadLetters::open(dir.path(), 1 << 20, 10, metrics).expect("reopen");
            assert_eq!(letters.stats().letters, 0, "{point}");
            let left = names(&dir.path().join("dead-letter"));
            assert!(
                !left.iter().any(|n| n.ends_with(".batch")),
                "{point}: {left:?}"
            );
        }
    }

    #[test]
    fn the_folder_stays_in_bounds_and_counts_what_it_removes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let letters = DeadLetters::open(dir.path(), 1 << 20, 3, metrics.clone()).expect("open");
        for seq in 0..5 {
            letters.put(&record(seq, 10, 100), 400, "no").expect("put");
        }
        assert_eq!(letters.stats().letters, 3);
        assert_eq!(metrics.dropped_count(DropReason::DeadLetterFull), 20);
        let folder = dir.path().join("dead-letter");
        assert_eq!(names(&folder).len(), 6);
        assert!(names(&folder).contains(&"0123456789abcdef-4.batch".to_owned()));
        assert!(!names(&folder).contains(&"0123456789abcdef-1.batch".to_owned()));

        let per = letters.stats().bytes / 3;
        drop(letters);
        let letters =
            DeadLetters::open(dir.path(), per * 2 + per / 2, 10, metrics.clone()).expect("open");
        assert_eq!(
            letters.stats().letters,
            2,
            "a smaller bound applies at open"
        );
        assert!(letters.stats().bytes <= per * 2 + per / 2);
        assert_eq!(metrics.dropped_count(DropReason::DeadLetterFull), 30);
        let put = letters
            .put(&record(9, 3, 10_000), 413, "huge")
            .expect("put");
        assert!(matches!(put, Put::TooLarge { .. }), "{put:?}");
        assert_eq!(metrics.dropped_count(DropReason::CollectorRejected), 3);
        assert_eq!(
            letters.stats().letters,
            2,
            "a batch that cannot fit evicts nothing"
        );
    }

    /// What agent/README.md tells operators to do to send a dead letter again.
    #[test]
    fn a_dead_letter_moved_into_the_spool_is_a_spool_record_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Arc::new(Metrics::new());
        let letters = DeadLetters::open(dir.path(), 1 << 20, 10, metrics.clone()).expect("open");
        let r = record(4, 5, 100);
        letters.put(&r, 413, "too large").expect("put");
        let batches = dir.path().join("batches");
        fs::create_dir_all(&batches).expect("mkdir");
        fs::rename(
            dir.path()
                .join("dead-letter")
                .join("0123456789abcdef-4.batch"),
            batches.join("00000000000000900000.batch"),
        )
        .expect("move");
        let spool = crate::spool::Spool::open(dir.path(), 1 << 20, metrics).expect("spool");
        let back = spool.read(900_000).expect("read").expect("there");
        assert_eq!((back.id, back.events, back.body), (r.id, 5, r.body));
    }
}
