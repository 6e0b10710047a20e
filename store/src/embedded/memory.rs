//! Memory samples in the embedded store: an append-only log of their own, one file per UTC day
//! of writing, `memory/mem-<day>.log` (days since 1970-01-01).
//!
//! A record is `length (u32 LE) · crc32 (u32 LE, over the payload) · payload`, the payload a
//! JSON [`LogRecord`]: tenant, idempotency key, time received and the samples. Memory samples
//! are few (one per process and interval) next to events, so they need no memtable, segments or
//! compaction: queries read the log files that can hold their range, a record at a time.
//!
//! Invariants:
//! - A write is acknowledged only after its record is appended and the file fsynced (and, for
//!   a new day's file, the directory). A failed append is cut back to the last good length
//!   (durably) before anything else is appended; a failed fsync is never retried: the log
//!   refuses writes until the store is reopened (as the WAL does).
//! - On open, a torn record at the end of a file (a crash mid-append) is cut off; a damaged
//!   record followed by more bytes is an error naming the file and the offset, never skipped.
//! - Idempotency keys: a keyed write whose key was accepted for its tenant within
//!   `DEDUPE_WINDOW` (`keys.rs`) is answered `Duplicate` and not written; keys are reloaded on open.
//! - Retention: a file is deleted once the whole day it was written in is older than the
//!   retention. A file of day D holds samples from `D - max age` to `D + 1 day + skew`, so a
//!   query reads only the files whose day can hold its range.
//! - Memory is bounded: one record (at most [`MAX_RECORD`] bytes) at a time is read, and a
//!   query holds one accumulator per (group, process) or (bucket, group, process).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use profwatch_model::memory::{
    bucket_of, MemoryAccumulator, MemoryPoint, MemoryQuery, MemoryRow, MemorySample, ProcessMemory,
};
use profwatch_model::query::TimeRange;
use profwatch_model::Tenant;
use serde::{Deserialize, Serialize};

use super::files::{mkdir, sync_dir};
use super::keys::horizon;
use crate::{StoreError, Written};

/// The largest record (of one write) the log takes.
pub const MAX_RECORD: usize = 64 << 20;
const HEADER: usize = 8;
const DAY_NS: i64 = 86_400 * 1_000_000_000;
/// How far before its file's day a sample may be (the collector refuses older data).
const MAX_AGE_NS: i64 = 31 * DAY_NS;
/// How far after its file's day a sample may be (clock skew, with room to spare).
const MAX_SKEW_NS: i64 = DAY_NS;

/// One write, as the log holds it.
#[derive(Debug, Serialize, Deserialize)]
struct LogRecord {
    tenant: String,
    key: Option<String>,
    /// When the write was accepted (unix ns): the dedupe window counts from it.
    received: i64,
    samples: Vec<MemorySample>,
}

/// The memory log of one embedded store.
#[derive(Debug)]
pub struct MemoryLog {
    dir: PathBuf,
    retention: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The file being appended to: its day, the file, and its length.
    current: Option<(i64, File, u64)>,
    /// (tenant, key) → received (unix ns), within the dedupe window.
    keys: HashMap<(String, String), i64>,
    /// Why writes are refused (a failed fsync or cut).
    failed: Option<String>,
}

impl MemoryLog {
    /// Opens (or creates) `dir`, cuts torn tails, reloads the keys and applies retention.
    pub fn open(dir: &Path, retention: Duration, now: i64) -> Result<MemoryLog, StoreError> {
        mkdir(dir)?;
        let log = MemoryLog {
            dir: dir.to_owned(),
            retention,
            inner: Mutex::new(Inner::default()),
        };
        log.retain(now)?;
        let mut keys = HashMap::new();
        for (_, path) in log.files()? {
            let good = scan(&path, |r| {
                if let Some(key) = r.key {
                    if r.received >= horizon(now) {
                        keys.insert((r.tenant, key), r.received);
                    }
                }
            })?;
            cut_torn_tail(&path, good)?;
        }
        log.lock().keys = keys;
        Ok(log)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The log files, by day.
    fn files(&self) -> Result<BTreeMap<i64, PathBuf>, StoreError> {
        let mut out = BTreeMap::new();
        let entries =
            std::fs::read_dir(&self.dir).map_err(|e| StoreError::io("list", &self.dir, e))?;
        for entry in entries {
            let path = entry
                .map_err(|e| StoreError::io("list", &self.dir, e))?
                .path();
            let day = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("mem-")?.strip_suffix(".log")?.parse().ok());
            if let Some(day) = day {
                out.insert(day, path);
            }
        }
        Ok(out)
    }

    /// Appends `samples` for `tenant` durably (blocking), unless `key` was seen.
    pub fn write(
        &self,
        tenant: &Tenant,
        key: Option<&str>,
        samples: Vec<MemorySample>,
        now: i64,
    ) -> Result<Written, StoreError> {
        let mut inner = self.lock();
        if let Some(why) = &inner.failed {
            return Err(StoreError::WalFailed {
                path: self.dir.display().to_string(),
                detail: why.clone(),
            });
        }
        inner.keys.retain(|_, received| *received >= horizon(now));
        if let Some(key) = key {
            if inner.keys.contains_key(&(tenant.0.clone(), key.to_owned())) {
                return Ok(Written::Duplicate);
            }
        }
        if samples.is_empty() {
            return Ok(Written::Stored);
        }
        let record = encode(&LogRecord {
            tenant: tenant.0.clone(),
            key: key.map(str::to_owned),
            received: now,
            samples,
        })?;
        let day = now.div_euclid(DAY_NS);
        // Under the lock: the length kept with the file must be the file's, for a cut back.
        if inner.current.as_ref().is_none_or(|(d, _, _)| *d != day) {
            inner.current = None;
            self.retain(now)?;
            inner.current = Some(self.open_day(day)?);
        }
        self.append(&mut inner, &record)?;
        if let Some(key) = key {
            inner.keys.insert((tenant.0.clone(), key.to_owned()), now);
        }
        Ok(Written::Stored)
    }

    /// Opens (creating durably) the file of `day` for appending.
    fn open_day(&self, day: i64) -> Result<(i64, File, u64), StoreError> {
        let path = self.dir.join(format!("mem-{day}.log"));
        let existed = path.exists();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io("open", &path, e))?;
        if !existed {
            file.sync_all()
                .map_err(|e| StoreError::io("fsync", &path, e))?;
            sync_dir(&self.dir)?;
        }
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("stat", &path, e))?
            .len();
        Ok((day, file, len))
    }

    fn append(&self, inner: &mut Inner, record: &[u8]) -> Result<(), StoreError> {
        let Some((day, file, len)) = inner.current.as_mut() else {
            return Err(StoreError::Closed);
        };
        let path = self.dir.join(format!("mem-{day}.log"));
        if let Err(e) = file.write_all(record) {
            let cut = file.set_len(*len).and_then(|()| file.sync_all());
            if let Err(cut) = cut {
                inner.failed = Some(format!(
                    "an append failed ({e}) and could not be cut off: {cut}"
                ));
            }
            return Err(StoreError::io("append", &path, e));
        }
        if let Err(e) = file.sync_all() {
            inner.failed = Some(format!("fsync failed: {e}"));
            return Err(StoreError::WalFailed {
                path: path.display().to_string(),
                detail: format!("fsync failed: {e}"),
            });
        }
        *len += record.len() as u64;
        Ok(())
    }

    /// Deletes the files of days wholly older than the retention.
    fn retain(&self, now: i64) -> Result<(), StoreError> {
        let cutoff = now.saturating_sub(self.retention.as_nanos() as i64);
        let mut removed = false;
        for (day, path) in self.files()? {
            if (day + 1).saturating_mul(DAY_NS) < cutoff {
                std::fs::remove_file(&path).map_err(|e| StoreError::io("remove", &path, e))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Calls `f` with every sample of `q`'s tenant and service in its range (blocking).
    fn each(&self, q: &MemoryQuery, f: impl FnMut(&MemorySample)) -> Result<(), StoreError> {
        self.each_of(&q.tenant, Some(&q.service), q.range, f)
    }

    /// Calls `f` with every sample of `tenant` (and `service`, when given) in `range`.
    fn each_of(
        &self,
        tenant: &Tenant,
        service: Option<&str>,
        range: TimeRange,
        mut f: impl FnMut(&MemorySample),
    ) -> Result<(), StoreError> {
        for (day, path) in self.files()? {
            let (start, end) = (day.saturating_mul(DAY_NS), (day + 1).saturating_mul(DAY_NS));
            if end.saturating_add(MAX_SKEW_NS) < range.from
                || start.saturating_sub(MAX_AGE_NS) >= range.to
            {
                continue;
            }
            scan(&path, |r| {
                if r.tenant != tenant.0 {
                    return;
                }
                for s in &r.samples {
                    if service.is_none_or(|name| s.service == name)
                        && s.ts >= range.from
                        && s.ts < range.to
                    {
                        f(s);
                    }
                }
            })?;
        }
        Ok(())
    }

    /// The services of `tenant` with samples in `range`, sorted.
    pub fn services(&self, tenant: &Tenant, range: TimeRange) -> Result<Vec<String>, StoreError> {
        let mut names = std::collections::BTreeSet::new();
        self.each_of(tenant, None, range, |s| {
            if !names.contains(&s.service) {
                names.insert(s.service.clone());
            }
        })?;
        Ok(names.into_iter().collect())
    }

    /// One row per group, sorted by group.
    pub fn rows(&self, q: &MemoryQuery) -> Result<Vec<MemoryRow>, StoreError> {
        let mut groups: BTreeMap<String, MemoryAccumulator> = BTreeMap::new();
        self.each(q, |s| {
            groups
                .entry(q.group_by.group_of(s).to_owned())
                .or_default()
                .add(s);
        })?;
        Ok(groups.into_iter().map(|(g, acc)| acc.row(g)).collect())
    }

    /// Each process's means per bucket of `step`, sorted by bucket, build, host and pid.
    pub fn processes(&self, q: &MemoryQuery, step: i64) -> Result<Vec<ProcessMemory>, StoreError> {
        type Cell = (String, u64, f64, f64);
        let mut cells: BTreeMap<(i64, String, String, u32), Cell> = BTreeMap::new();
        self.each(q, |s| {
            let key = (
                bucket_of(s.ts, step),
                s.build.clone(),
                s.host.clone(),
                s.pid,
            );
            let cell = cells
                .entry(key)
                .or_insert_with(|| (s.dc.clone(), 0, 0.0, 0.0));
            cell.1 += 1;
            cell.2 += s.bytes.private() as f64;
            cell.3 += s.bytes.shared() as f64;
        })?;
        Ok(cells
            .into_iter()
            .map(
                |((ts, build, host, pid), (dc, n, private, shared))| ProcessMemory {
                    ts,
                    build,
                    dc,
                    host,
                    pid,
                    samples: n,
                    private_bytes: private / n as f64,
                    shared_bytes: shared / n as f64,
                },
            )
            .collect())
    }

    /// One row per (bucket of `step`, group), sorted by both.
    pub fn points(&self, q: &MemoryQuery, step: i64) -> Result<Vec<MemoryPoint>, StoreError> {
        let mut cells: BTreeMap<(i64, String), MemoryAccumulator> = BTreeMap::new();
        self.each(q, |s| {
            cells
                .entry((bucket_of(s.ts, step), q.group_by.group_of(s).to_owned()))
                .or_default()
                .add(s);
        })?;
        Ok(cells
            .into_iter()
            .map(|((ts, g), acc)| MemoryPoint {
                time: ts.div_euclid(1_000_000_000),
                row: acc.row(g),
            })
            .collect())
    }
}

fn encode(record: &LogRecord) -> Result<Vec<u8>, StoreError> {
    let payload = serde_json::to_vec(record).map_err(|e| StoreError::Query(e.to_string()))?;
    if payload.len() + HEADER > MAX_RECORD {
        return Err(StoreError::TooLarge {
            size: payload.len() + HEADER,
            limit: MAX_RECORD,
        });
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Reads every whole record of `path` into `f`; returns the length of the good prefix. A
/// damaged record with bytes after it is an error; a torn one at the end ends the scan.
fn scan(path: &Path, mut f: impl FnMut(LogRecord)) -> Result<u64, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io("open", path, e)),
    };
    let size = file
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?
        .len();
    let mut reader = BufReader::new(file);
    let mut at: u64 = 0;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; HEADER];
        if size - at < HEADER as u64 {
            return Ok(at);
        }
        reader
            .read_exact(&mut header)
            .map_err(|e| StoreError::io("read", path, e))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as u64;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let end = at + HEADER as u64 + len;
        if end > size {
            // Torn: the crash came mid-append (or the length is damaged; nothing follows).
            return Ok(at);
        }
        if len + HEADER as u64 > MAX_RECORD as u64 {
            return Err(damaged(path, at, "a record longer than the limit"));
        }
        payload.resize(len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|e| StoreError::io("read", path, e))?;
        if crc32fast::hash(&payload) != crc {
            if end == size {
                return Ok(at);
            }
            return Err(damaged(path, at, "checksum mismatch"));
        }
        let record: LogRecord = serde_json::from_slice(&payload).map_err(|e| {
            damaged(
                path,
                at,
                &format!("passed its checksum but does not decode: {e}"),
            )
        })?;
        f(record);
        at = end;
    }
}

fn damaged(path: &Path, at: u64, why: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail: format!("memory log record at byte {at}: {why}"),
    }
}

/// Cuts `path` to its good prefix of `good` bytes (durably), when longer.
fn cut_torn_tail(path: &Path, good: u64) -> Result<(), StoreError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| StoreError::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| StoreError::io("stat", path, e))?
        .len();
    if len > good {
        tracing::warn!(
            path = %path.display(),
            "memory log: cutting a torn record of {} bytes at its end",
            len - good
        );
        file.set_len(good)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io("truncate", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use profwatch_model::memory::{MemoryBytes, MemoryGroupBy};
    use profwatch_model::query::TimeRange;

    const NOW: i64 = 1_800_000_000_000_000_000;

    fn sample(pid: u32, ts: i64, private: u64) -> MemorySample {
        MemorySample {
            ts,
            service: "shop".into(),
            build: "1".into(),
            dc: String::new(),
            host: "h".into(),
            pid,
            bytes: MemoryBytes {
                private_dirty: private,
                ..MemoryBytes::default()
            },
        }
    }

    fn query() -> MemoryQuery {
        MemoryQuery {
            tenant: Tenant("t".into()),
            service: "shop".into(),
            range: TimeRange {
                from: NOW - 3_600_000_000_000,
                to: NOW + 1,
            },
            group_by: MemoryGroupBy::None,
        }
    }

    #[test]
    fn a_torn_tail_is_cut_and_damage_before_more_records_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = MemoryLog::open(dir.path(), Duration::from_secs(86_400), NOW).expect("open");
        let t = Tenant("t".into());
        for pid in [1, 2] {
            log.write(&t, None, vec![sample(pid, NOW, 100)], NOW)
                .expect("write");
        }
        drop(log);
        let (_, path) = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| ((), e.path()))
            .next()
            .expect("a log file");
        let whole = std::fs::read(&path).expect("read");
        std::fs::write(&path, &whole[..whole.len() - 3]).expect("tear");
        let log = MemoryLog::open(dir.path(), Duration::from_secs(86_400), NOW).expect("reopen");
        assert_eq!(log.rows(&query()).expect("rows")[0].processes, 1);
        drop(log);
        let mut damaged = whole.clone();
        damaged[HEADER + 2] ^= 0xff;
        std::fs::write(&path, &damaged).expect("damage");
        assert!(matches!(
            MemoryLog::open(dir.path(), Duration::from_secs(86_400), NOW),
            Err(StoreError::Corrupt { .. })
        ));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Any bytes after a good record: the log opens (a torn tail cut) or refuses with
        /// `Corrupt`, never panics, and the good record is still read when it opens.
        #[test]
        fn any_tail_opens_or_is_refused(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let dir = tempfile::tempdir().expect("tempdir");
            let log = MemoryLog::open(dir.path(), Duration::from_secs(86_400), NOW).expect("open");
            log.write(&Tenant("t".into()), None, vec![sample(1, NOW, 100)], NOW).expect("write");
            drop(log);
            let path = dir.path().join(format!("mem-{}.log", NOW.div_euclid(DAY_NS)));
            let mut bytes = std::fs::read(&path).expect("read");
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).expect("write");
            match MemoryLog::open(dir.path(), Duration::from_secs(86_400), NOW) {
                Ok(log) => {
                    let rows = log.rows(&query()).map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
                    proptest::prop_assert!(!rows.is_empty());
                }
                Err(e) => proptest::prop_assert!(matches!(e, StoreError::Corrupt { .. }), "{e}"),
            }
        }
    }

    #[test]
    fn keys_survive_a_reopen_and_old_days_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let retention = Duration::from_secs(2 * 86_400);
        let log = MemoryLog::open(dir.path(), retention, NOW).expect("open");
        let t = Tenant("t".into());
        let old = NOW - 5 * DAY_NS;
        assert_eq!(
            log.write(&t, Some("k"), vec![sample(1, NOW, 1)], NOW)
                .expect("write"),
            Written::Stored
        );
        drop(log);
        std::fs::write(
            dir.path()
                .join(format!("mem-{}.log", old.div_euclid(DAY_NS))),
            b"",
        )
        .expect("an old file");
        let log = MemoryLog::open(dir.path(), retention, NOW).expect("reopen");
        assert_eq!(
            log.write(&t, Some("k"), vec![sample(1, NOW, 1)], NOW)
                .expect("again"),
            Written::Duplicate
        );
        assert_eq!(log.files().expect("files").len(), 1, "the old day is gone");
    }
}
