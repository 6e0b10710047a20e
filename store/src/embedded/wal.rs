//! The write-ahead log: one file per memtable generation, `wal-<gen>.log`.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`, and a payload is
//! `kind: u8 | tenant_len: u16 LE | tenant | key_len: u8 | key | body`, where `key` is the
//! batch's idempotency key (empty when it has none), and the body of kind 1 is a
//! `profwatch.v1.EventBatch` protobuf and of kind 2 a [`WalProfiles`] protobuf. Appends are followed by
//! `fdatasync` before any batch in them is acknowledged.
//!
//! Invariants:
//! - A failed append never leaves a torn record in front of later ones: the file is cut back to
//!   its last good length and that cut is synced before anything else is appended; if the cut
//!   cannot be made durable, the file acknowledges nothing more.
//! - A failed `fdatasync` is never retried on the same file (after one, the kernel may have
//!   dropped the dirty pages and cleared the error, so a retry can "succeed" without the data):
//!   the file is marked failed and every later append is refused. The store refuses writes
//!   until it is restarted, and recovery replays what reached the disk.
//! - A record larger than [`MAX_RECORD`] is never written (it is refused before it is queued),
//!   so replay never discards an acknowledged record for its size.
//! - Replay keeps every intact record. Damage followed by nothing intact is a torn tail (a crash
//!   mid-append: never acknowledged) and is truncated. Damage followed by an intact record is
//!   corruption of acknowledged data: an error that names the file and the byte range, unless
//!   replay is told to repair, in which case the damaged bytes are copied aside and the file
//!   keeps every intact record. Records are found again after damage by their length and CRC.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::{wire, RequestEvent, Tenant};
use prost::Message;

use super::faults;
use super::files::sync_dir;
use crate::StoreError;

const HEADER: usize = 8;
/// The largest record (header included) the WAL writes; larger batches are refused with 413.
pub const MAX_RECORD: usize = 512 << 20;

/// An open WAL file being appended to.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    pub gen: u64,
    /// Bytes of intact, synced records.
    good_len: u64,
    /// Why this file acknowledges nothing more (a failed sync, or a failed cut after a failed
    /// append).
    failed: Option<String>,
}

/// The file name of generation `gen`.
pub fn file_name(gen: u64) -> String {
    format!("wal-{gen:012}.log")
}

/// Reads the generation out of a WAL file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

/// What one WAL record holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Events(Vec<RequestEvent>),
    Profiles(Vec<ProfileBatch>),
}

impl Entry {
    /// Rows this entry adds (events, or distinct stacks of samples).
    pub fn rows(&self) -> usize {
        match self {
            Entry::Events(e) => e.len(),
            Entry::Profiles(p) => p.iter().map(|b| b.samples.len()).sum(),
        }
    }
}

const KIND_EVENTS: u8 = 1;
const KIND_PROFILES: u8 = 2;

/// The WAL body of profile batches (internal; not a public wire format).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WalProfiles {
    #[prost(message, repeated, tag = "1")]
    pub batches: Vec<WalProfile>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WalProfile {
    #[prost(int64, tag = "1")]
    pub ts: i64,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "3")]
    pub endpoint: String,
    #[prost(string, tag = "4")]
    pub build: String,
    #[prost(string, tag = "5")]
    pub dc: String,
    #[prost(string, tag = "6")]
    pub host: String,
    #[prost(btree_map = "string, string", tag = "7")]
    pub extra: std::collections::BTreeMap<String, String>,
    #[prost(message, repeated, tag = "8")]
    pub stacks: Vec<WalStack>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WalStack {
    #[prost(string, repeated, tag = "1")]
    pub frames: Vec<String>,
    #[prost(uint64, tag = "2")]
    pub samples: u64,
    #[prost(uint64, tag = "3")]
    pub cpu_ns: u64,
}

fn encode_profiles(batches: &[ProfileBatch]) -> Vec<u8> {
    WalProfiles {
        batches: batches
            .iter()
            .map(|b| WalProfile {
                ts: b.ts,
                service: b.labels.service.clone(),
                endpoint: b.labels.endpoint.clone(),
                build: b.labels.build.clone(),
                dc: b.labels.dc.clone(),
                host: b.labels.host.clone(),
                extra: b.labels.extra.clone(),
                stacks: b
                    .samples
                    .iter()
                    .map(|s| WalStack {
                        frames: s.frames.clone(),
                        samples: s.samples,
                        cpu_ns: s.cpu_ns,
                    })
                    .collect(),
            })
            .collect(),
    }
    .encode_to_vec()
}

fn decode_profiles(bytes: &[u8]) -> Result<Vec<ProfileBatch>, prost::DecodeError> {
    Ok(WalProfiles::decode(bytes)?
        .batches
        .into_iter()
        .map(|b| ProfileBatch {
            ts: b.ts,
            labels: SampleLabels {
                service: b.service,
                endpoint: b.endpoint,
                build: b.build,
                dc: b.dc,
                host: b.host,
                extra: b.extra,
            },
            samples: b
                .stacks
                .into_iter()
                .map(|s| StackSample {
                    frames: s.frames,
                    samples: s.samples,
                    cpu_ns: s.cpu_ns,
                })
                .collect(),
        })
        .collect())
}

/// One replayed record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub tenant: Tenant,
    pub entry: Entry,
    /// The batch's idempotency key, if it had one.
    pub key: Option<String>,
}

/// The longest idempotency key a record can hold.
pub const MAX_KEY: usize = 255;

/// Encodes one batch as a WAL record (header included). `key` is cut to [`MAX_KEY`] bytes.
pub fn encode_record(tenant: &Tenant, entry: &Entry, key: Option<&str>) -> Vec<u8> {
    let (kind, batch) = match entry {
        Entry::Events(events) => (KIND_EVENTS, wire::encode_batch(events)),
        Entry::Profiles(p) => (KIND_PROFILES, encode_profiles(p)),
    };
    let tenant = tenant.as_str().as_bytes();
    let key = key.unwrap_or("").as_bytes();
    let key = &key[..key.len().min(MAX_KEY)];
    let payload_len = 4 + tenant.len() + key.len() + batch.len();
    let mut out = Vec::with_capacity(HEADER + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    out.extend_from_slice(&(tenant.len() as u16).to_le_bytes());
    out.extend_from_slice(tenant);
    out.push(key.len() as u8);
    out.extend_from_slice(key);
    out.extend_from_slice(&batch);
    let crc = crc32fast::hash(&out[HEADER..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

impl Wal {
    /// Creates `wal-<gen>.log` in `dir` (which must not exist yet) and syncs the directory.
    pub fn create(dir: &Path, gen: u64) -> Result<Wal, StoreError> {
        let path = dir.join(file_name(gen));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(|e| StoreError::io("create", &path, e))?;
        sync_dir(dir)?;
        Ok(Wal {
            file,
            path,
            gen,
            good_len: 0,
            failed: None,
        })
    }

    /// Appends encoded records and makes them durable. After an error nothing of this append
    /// is acknowledged; see the module docs for what the file does next.
    pub fn append(&mut self, records: &[&[u8]]) -> Result<(), StoreError> {
        if let Some(why) = &self.failed {
            return Err(StoreError::WalFailed {
                path: self.path.display().to_string(),
                detail: why.clone(),
            });
        }
        let mut written = 0u64;
        for r in records {
            if let Err(e) = faults::check("wal-append", &self.path) {
                // An injected failure acts like ENOSPC in the middle of a write: part of the
                // record reaches the file.
                let _ = self.file.write_all(&r[..r.len() / 2]);
                return Err(self.cut_back(e));
            }
            if let Err(e) = self.file.write_all(r) {
                return Err(self.cut_back(e));
            }
            written += r.len() as u64;
        }
        if let Err(e) = faults::check("wal-sync", &self.path).and_then(|()| self.file.sync_data()) {
            let detail = format!("fsync failed: {e}");
            self.failed = Some(detail.clone());
            return Err(StoreError::WalFailed {
                path: self.path.display().to_string(),
                detail,
            });
        }
        self.good_len += written;
        Ok(())
    }

    /// Undoes a failed append: the file is cut back to its last good length, durably, so the
    /// next append follows the last intact record. If that fails too, the file is done.
    fn cut_back(&mut self, cause: std::io::Error) -> StoreError {
        let cut = faults::check("wal-cut", &self.path)
            .and_then(|()| self.file.set_len(self.good_len))
            .and_then(|()| self.file.sync_all());
        match cut {
            Ok(()) => StoreError::io("append to", &self.path, cause),
            Err(e) => {
                let detail =
                    format!("append failed ({cause}) and the torn part could not be cut off ({e})");
                self.failed = Some(detail.clone());
                StoreError::WalFailed {
                    path: self.path.display().to_string(),
                    detail,
                }
            }
        }
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How replay treats damage followed by intact records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// Refuse to open: an error names the file and the damaged bytes.
    Refuse,
    /// Copy the damaged bytes into this folder's `damaged/` subfolder and keep every intact
    /// record (`profwatch server --repair`).
    SetAside,
}

/// The length of the intact record at `at`, if one starts there.
fn record_at(bytes: &[u8], at: usize) -> Option<usize> {
    let header = bytes.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(4..=MAX_RECORD).contains(&len) {
        return None;
    }
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    if !matches!(payload[0], KIND_EVENTS | KIND_PROFILES) || crc32fast::hash(payload) != crc {
        return None;
    }
    Some(HEADER + len)
}

/// Reads every intact record of a WAL file: truncates a torn tail, and treats damage followed by
/// intact records as `damage` says (see the module docs).
pub fn replay(path: &Path, damage: Damage) -> Result<Vec<Record>, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| StoreError::io("read", path, e))?;
    let mut out = Vec::new();
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut damaged: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if let Some(len) = record_at(&bytes, at) {
            out.push(decode_record(path, at, &bytes[at + HEADER..at + len])?);
            kept.push((at, at + len));
            at += len;
            continue;
        }
        // Damage: look for the next intact record after it.
        let next = (at + 1..bytes.len()).find(|&i| record_at(&bytes, i).is_some());
        match next {
            Some(next) => {
                damaged.push((at, next));
                at = next;
            }
            None => {
                truncate_torn_tail(path, at, bytes.len())?;
                break;
            }
        }
    }
    if damaged.is_empty() {
        return Ok(out);
    }
    match damage {
        Damage::Refuse => Err(StoreError::Corrupt {
            path: path.display().to_string(),
            detail: format!(
                "bytes {} of {} are damaged and intact records follow them; acknowledged data \
                 may be missing. Start the server once with --repair to copy the damaged bytes \
                 aside and keep every intact record",
                ranges(&damaged),
                bytes.len()
            ),
        }),
        Damage::SetAside => {
            set_aside(path, &bytes, &damaged, &kept)?;
            Ok(out)
        }
    }
}

fn ranges(r: &[(usize, usize)]) -> String {
    r.iter()
        .map(|(a, b)| format!("{a}..{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn truncate_torn_tail(path: &Path, valid: usize, len: usize) -> Result<(), StoreError> {
    tracing::warn!(path = %path.display(), valid, len, "truncating torn WAL tail");
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| {
            f.set_len(valid as u64)?;
            f.sync_all()
        })
        .map_err(|e| StoreError::io("truncate", path, e))
}

/// Copies the damaged ranges to `damaged/<file>.<from>-<to>` beside the WAL folder's files, then
/// replaces the file with its intact records only (written aside, synced, renamed).
fn set_aside(
    path: &Path,
    bytes: &[u8],
    damaged: &[(usize, usize)],
    kept: &[(usize, usize)],
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = dir.join("damaged");
    std::fs::create_dir_all(&aside).map_err(|e| StoreError::io("create", &aside, e))?;
    let name = path
        .file_name()
        .map_or_else(|| "wal".to_owned(), |n| n.to_string_lossy().into_owned());
    for &(from, to) in damaged {
        let copy = aside.join(format!("{name}.{from}-{to}"));
        write_synced(&copy, &[&bytes[from..to]])?;
        tracing::warn!(path = %path.display(), from, to, copy = %copy.display(), "set damaged WAL bytes aside");
    }
    sync_dir(&aside)?;
    let tmp = dir.join(format!("{name}.repaired"));
    let parts: Vec<&[u8]> = kept.iter().map(|&(a, b)| &bytes[a..b]).collect();
    write_synced(&tmp, &parts)?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io("rename", &tmp, e))?;
    sync_dir(dir)
}

fn write_synced(path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
    let mut f = File::create(path).map_err(|e| StoreError::io("create", path, e))?;
    for p in parts {
        f.write_all(p)
            .map_err(|e| StoreError::io("write", path, e))?;
    }
    f.sync_all().map_err(|e| StoreError::io("fsync", path, e))
}

/// Decodes the payload of a record that passed its checksum.
fn decode_record(path: &Path, at: usize, payload: &[u8]) -> Result<Record, StoreError> {
    let kind = payload[0];
    let tenant_len = u16::from_le_bytes([payload[1], payload[2]]) as usize;
    let Some(tenant) = payload
        .get(3..3 + tenant_len)
        .and_then(|t| std::str::from_utf8(t).ok())
    else {
        return Err(corrupt(path, at, "tenant"));
    };
    let key_at = 3 + tenant_len;
    let Some(key_len) = payload.get(key_at).map(|k| *k as usize) else {
        return Err(corrupt(path, at, "key length"));
    };
    let Some(key) = payload
        .get(key_at + 1..key_at + 1 + key_len)
        .and_then(|k| std::str::from_utf8(k).ok())
    else {
        return Err(corrupt(path, at, "key"));
    };
    let key = (!key.is_empty()).then(|| key.to_owned());
    let body = &payload[key_at + 1 + key_len..];
    let entry = match kind {
        KIND_EVENTS => {
            Entry::Events(wire::decode_batch(body).map_err(|e| corrupt(path, at, &e.to_string()))?)
        }
        KIND_PROFILES => {
            Entry::Profiles(decode_profiles(body).map_err(|e| corrupt(path, at, &e.to_string()))?)
        }
        other => return Err(corrupt(path, at, &format!("unknown record kind {other}"))),
    };
    Ok(Record {
        tenant: Tenant(tenant.to_owned()),
        entry,
        key,
    })
}

fn corrupt(path: &Path, at: usize, detail: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail: format!("record at byte {at} passed its checksum but does not decode: {detail}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> RequestEvent {
        RequestEvent {
            ts: 1_700_000_000_000_000_000 + i as i64,
            service: "s".into(),
            endpoint: "e".into(),
            build: "b".into(),
            dc: String::new(),
            host: String::new(),
            status: 200,
            cpu_ns: i,
            instructions: None,
            wall_ns: i,
            weight: 1.0,
            labels: Default::default(),
        }
    }

    #[test]
    fn replays_intact_records_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 7).expect("create");
        let t = Tenant("t1".into());
        let a = encode_record(&t, &Entry::Events(vec![event(1), event(2)]), None);
        let b = encode_record(&t, &Entry::Events(vec![event(3)]), None);
        wal.append(&[&a, &b]).expect("append");
        let path = wal.path().to_owned();
        drop(wal);
        // A torn third record: header and half a payload.
        let c = encode_record(&t, &Entry::Events(vec![event(4)]), None);
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(&c[..c.len() / 2]).expect("write");
        drop(f);

        let got = replay(&path, Damage::Refuse).expect("replay");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].entry.rows(), 2);
        assert_eq!(got[1].entry, Entry::Events(vec![event(3)]));
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len() as usize,
            a.len() + b.len()
        );
    }

    #[test]
    fn a_flipped_bit_stops_replay_at_that_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1).expect("create");
        let t = Tenant("t".into());
        let a = encode_record(&t, &Entry::Events(vec![event(1)]), None);
        let mut b = encode_record(&t, &Entry::Events(vec![event(2)]), None);
        let last = b.len() - 1;
        b[last] ^= 0x40;
        wal.append(&[&a, &b]).expect("append");
        let got = replay(wal.path(), Damage::Refuse).expect("replay");
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn profile_records_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 3).expect("create");
        let p = Entry::Profiles(vec![ProfileBatch {
            ts: 5,
            labels: SampleLabels {
                service: "s".into(),
                endpoint: "GET /".into(),
                extra: [("flag".to_owned(), "on".to_owned())].into(),
                ..Default::default()
            },
            samples: vec![StackSample {
                frames: vec!["main".into(), "work".into()],
                samples: 3,
                cpu_ns: 30,
            }],
        }]);
        let e = Entry::Events(vec![event(9)]);
        wal.append(&[
            &encode_record(&Tenant("t".into()), &p, None),
            &encode_record(&Tenant("t".into()), &e, Some("batch-7")),
        ])
        .expect("append");
        let got = replay(wal.path(), Damage::Refuse).expect("replay");
        assert_eq!((&got[0].entry, got[0].key.as_deref()), (&p, None));
        assert_eq!(
            (&got[1].entry, got[1].key.as_deref()),
            (&e, Some("batch-7"))
        );
    }

    fn events_record(i: u64) -> Vec<u8> {
        encode_record(&Tenant("t".into()), &Entry::Events(vec![event(i)]), None)
    }

    fn cpu_of(records: &[Record]) -> Vec<u64> {
        records
            .iter()
            .flat_map(|r| match &r.entry {
                Entry::Events(e) => e.iter().map(|e| e.cpu_ns).collect(),
                Entry::Profiles(_) => Vec::new(),
            })
            .collect()
    }

    /// Regression test: after a failed (partial) append, for example on a full disk, the WAL
    /// kept appending behind the torn bytes, and replay dropped every later, acknowledged
    /// record.
    #[test]
    fn appends_after_a_failed_append_survive_replay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1).expect("create");
        wal.append(&[&events_record(1)]).expect("append");
        // The second record of this group fails: the first was written, the group is refused.
        // A group fails half-way through its first record (a full disk).
        faults::arm("wal-append", dir.path(), std::io::ErrorKind::StorageFull, 1);
        assert!(wal.append(&[&events_record(2), &events_record(3)]).is_err());
        wal.append(&[&events_record(4)])
            .expect("append after the failure");
        wal.append(&[&events_record(5)]).expect("append");
        let got = replay(wal.path(), Damage::Refuse).expect("replay");
        assert_eq!(cpu_of(&got), vec![1, 4, 5]);
    }

    #[test]
    fn a_failed_sync_refuses_every_later_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1).expect("create");
        wal.append(&[&events_record(1)]).expect("append");
        faults::arm("wal-sync", dir.path(), std::io::ErrorKind::Other, 1);
        let err = wal.append(&[&events_record(2)]).expect_err("sync fails");
        assert!(matches!(err, StoreError::WalFailed { .. }), "{err}");
        // The fault is spent, yet the file never syncs again.
        let err = wal.append(&[&events_record(3)]).expect_err("refused");
        assert!(matches!(err, StoreError::WalFailed { .. }), "{err}");
    }

    #[test]
    fn a_failed_cut_after_a_failed_append_refuses_every_later_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1).expect("create");
        faults::arm("wal-append", dir.path(), std::io::ErrorKind::StorageFull, 1);
        faults::arm("wal-cut", dir.path(), std::io::ErrorKind::StorageFull, 1);
        let err = wal.append(&[&events_record(1)]).expect_err("append fails");
        assert!(matches!(err, StoreError::WalFailed { .. }), "{err}");
        assert!(wal.append(&[&events_record(2)]).is_err());
    }

    #[test]
    fn damage_before_intact_records_is_an_error_that_names_the_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut wal = Wal::create(dir.path(), 1).expect("create");
        let records: Vec<Vec<u8>> = (1..=4).map(events_record).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        wal.append(&refs).expect("append");
        let path = wal.path().to_owned();
        drop(wal);
        let mut bytes = std::fs::read(&path).expect("read");
        let second = records[0].len();
        bytes[second + 12] ^= 0x08;
        std::fs::write(&path, &bytes).expect("write");

        let err = replay(&path, Damage::Refuse).expect_err("damage in the middle");
        let StoreError::Corrupt { detail, .. } = &err else {
            panic!("{err}");
        };
        let range = format!("{second}..{}", second + records[1].len());
        assert!(detail.contains(&range), "{detail}");
        assert!(detail.contains("--repair"), "{detail}");
        assert_eq!(std::fs::read(&path).expect("read"), bytes, "untouched");

        let got = replay(&path, Damage::SetAside).expect("repair");
        assert_eq!(cpu_of(&got), vec![1, 3, 4]);
        let aside = std::fs::read(dir.path().join("damaged").join(format!(
            "{}.{second}-{}",
            file_name(1),
            second + records[1].len()
        )))
        .expect("the damaged bytes, set aside");
        assert_eq!(aside, bytes[second..second + records[1].len()]);
        // The repaired file replays cleanly.
        let again = replay(&path, Damage::Refuse).expect("replay after repair");
        assert_eq!(cpu_of(&again), vec![1, 3, 4]);
    }

    #[test]
    fn a_wal_cut_at_any_byte_of_its_last_records_replays_what_is_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let records: Vec<Vec<u8>> = (1..=3).map(events_record).collect();
        let whole: Vec<u8> = records.concat();
        let ends: Vec<usize> = records
            .iter()
            .scan(0, |at, r| {
                *at += r.len();
                Some(*at)
            })
            .collect();
        let path = dir.path().join(file_name(1));
        // Every cut inside the last two records.
        for cut in ends[0]..=whole.len() {
            std::fs::write(&path, &whole[..cut]).expect("write");
            let got = replay(&path, Damage::Refuse).expect("a torn tail is not an error");
            let whole_records = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(got.len(), whole_records, "cut at {cut}");
            let kept = ends
                .iter()
                .copied()
                .filter(|&e| e <= cut)
                .max()
                .unwrap_or(0);
            assert_eq!(
                std::fs::metadata(&path).expect("stat").len() as usize,
                kept,
                "the torn tail is truncated (cut at {cut})"
            );
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("wal-x.log"), None);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Any file: replay answers without panic, in either damage mode.
            #[test]
            fn any_file_replays_without_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                repair in any::<bool>(),
            ) {
                let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let path = dir.path().join(file_name(1));
                std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let _ = replay(&path, if repair { Damage::SetAside } else { Damage::Refuse });
            }

            /// Intact records, then damage (garbage, or a record cut or with a byte flipped),
            /// then intact records: with --repair every intact record comes back, in order.
            #[test]
            fn repair_keeps_every_intact_record_around_damage(
                before in 0u64..4,
                after in 0u64..4,
                garbage in proptest::collection::vec(any::<u8>(), 1..64),
            ) {
                let t = Tenant("t".into());
                let rec = |i| encode_record(&t, &Entry::Events(vec![event(i)]), None);
                let mut bytes = Vec::new();
                for i in 0..before {
                    bytes.extend(rec(i));
                }
                bytes.extend(&garbage);
                for i in 100..100 + after {
                    bytes.extend(rec(i));
                }
                let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let path = dir.path().join(file_name(1));
                std::fs::write(&path, &bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let got = replay(&path, Damage::SetAside).map_err(|e| TestCaseError::fail(e.to_string()))?;
                let want: Vec<Entry> = (0..before)
                    .chain(100..100 + after)
                    .map(|i| Entry::Events(vec![event(i)]))
                    .collect();
                // Garbage may by chance hold a record of its own; the intact ones are all there.
                let entries: Vec<Entry> = got.into_iter().map(|r| r.entry).collect();
                let mut it = entries.iter();
                for w in &want {
                    prop_assert!(it.any(|e| e == w), "{:?} missing from {:?}", w, entries);
                }
            }
        }
    }
}
