//! A spool record on disk, and how a file is written so that a crash never leaves half of one.
//!
//! Two formats:
//! - events: `PWSPOOL1` · crc32 (LE, over everything after it) · event count (u32 LE) · id
//!   length (u16 LE) · id · body (the zstd-compressed protobuf `EventBatch`, exactly what is
//!   POSTed to `/api/v1/events`). Unchanged since the first sidecar, so a spool of events
//!   survives an upgrade or a downgrade.
//! - everything else: `PWSPOOL2` · crc32 · count (u32 LE) · id length (u16 LE) · id · kind
//!   (u8: 0 events, 1 a profile, 2 memory samples) · query length (u16 LE) · query · body. A
//!   profile's body is its zstd-compressed folded text and its query the `/api/v1/profiles`
//!   query string (labels, `format=folded`, `sample_rate`, `ts`); its count is its samples.
//!   Memory samples have an empty query; their body is the zstd-compressed JSON
//!   `{"samples": [...]}` POSTed to `/api/v1/memory`, their count the samples.
//!
//! Invariants: `encode` is deterministic, so a record read and encoded again is the file it
//! came from; `decode` never panics on any input and accepts only what passes the checksum.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use super::super::error::SidecarError;
use super::faults;

const MAGIC: &[u8; 8] = b"PWSPOOL1";
const MAGIC2: &[u8; 8] = b"PWSPOOL2";
/// Magic, crc, count, id length.
pub(super) const FIXED: usize = 8 + 4 + 4 + 2;
/// Kind and query length, after the id of a `PWSPOOL2` record.
const FIXED2: usize = 1 + 2;
const KIND_EVENTS: u8 = 0;
const KIND_PROFILE: u8 = 1;
const KIND_MEMORY: u8 = 2;

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
    /// Memory samples, a zstd-compressed JSON `MemoryBatch` for `/api/v1/memory`.
    Memory,
}

/// What a record's count counts, and the unit its drops are counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Events,
    /// One per record: a profile's samples are not counted as profiles.
    Profiles,
    MemorySamples,
}

impl RecordKind {
    pub fn is_profile(&self) -> bool {
        matches!(self, RecordKind::Profile { .. })
    }

    /// What the record's count counts.
    pub fn unit(&self) -> Unit {
        match self {
            RecordKind::Events => Unit::Events,
            RecordKind::Profile { .. } => Unit::Profiles,
            RecordKind::Memory => Unit::MemorySamples,
        }
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
    /// What a drop (or dead letter) of this record counts: its events, one profile, or its
    /// memory samples.
    pub(crate) fn units(&self) -> (Unit, u64) {
        units(self.kind.unit(), u64::from(self.events))
    }

    /// The record as a spool file holds it.
    pub fn to_bytes(&self) -> Vec<u8> {
        encode(self)
    }
}

/// How many of its unit a record of this unit and count stands for.
pub(crate) fn units(unit: Unit, count: u64) -> (Unit, u64) {
    match unit {
        Unit::Profiles => (unit, 1),
        Unit::Events | Unit::MemorySamples => (unit, count),
    }
}

pub(super) fn file_len(record: &SpoolRecord) -> u64 {
    let extra = match &record.kind {
        RecordKind::Events => 0,
        RecordKind::Profile { query } => FIXED2 + query.len().min(usize::from(u16::MAX)),
        RecordKind::Memory => FIXED2,
    };
    (FIXED + extra + record.id.len().min(usize::from(u16::MAX)) + record.body.len()) as u64
}

/// At most `u16::MAX` bytes of `s`, with their length.
fn short(s: &str) -> (u16, &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    (len, &s.as_bytes()[..usize::from(len)])
}

pub(super) fn encode(record: &SpoolRecord) -> Vec<u8> {
    let (id_len, id) = short(&record.id);
    let mut out = Vec::with_capacity(file_len(record) as usize);
    out.extend_from_slice(match record.kind {
        RecordKind::Events => MAGIC,
        RecordKind::Profile { .. } | RecordKind::Memory => MAGIC2,
    });
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&record.events.to_le_bytes());
    out.extend_from_slice(&id_len.to_le_bytes());
    out.extend_from_slice(id);
    let (kind, query) = match &record.kind {
        RecordKind::Events => (None, ""),
        RecordKind::Profile { query } => (Some(KIND_PROFILE), query.as_str()),
        RecordKind::Memory => (Some(KIND_MEMORY), ""),
    };
    if let Some(kind) = kind {
        let (query_len, query) = short(query);
        out.push(kind);
        out.extend_from_slice(&query_len.to_le_bytes());
        out.extend_from_slice(query);
    }
    out.extend_from_slice(&record.body);
    let crc = crc32fast::hash(&out[12..]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A record that cannot be trusted; `count` is its count if the header was readable, `unit`
/// what its header says it holds (a `PWSPOOL2` record whose kind cannot be read counts as a
/// profile).
#[derive(Debug)]
pub(super) struct Corrupt {
    pub(super) count: u64,
    pub(super) unit: Unit,
    pub(super) why: String,
}

/// The unit a (possibly damaged) record's header names.
fn unit_of_header(bytes: &[u8]) -> Unit {
    if bytes.get(..8) != Some(MAGIC2.as_slice()) {
        return Unit::Events;
    }
    let kind = bytes
        .get(16..FIXED)
        .map(|l| FIXED + usize::from(u16::from_le_bytes([l[0], l[1]])))
        .and_then(|at| bytes.get(at));
    match kind {
        Some(&KIND_MEMORY) => Unit::MemorySamples,
        Some(&KIND_EVENTS) => Unit::Events,
        _ => Unit::Profiles,
    }
}

fn decode(bytes: &[u8], seq: u64) -> Result<SpoolRecord, Corrupt> {
    let v2 = bytes.get(..8) == Some(MAGIC2.as_slice());
    let unit = unit_of_header(bytes);
    let corrupt = |events: u32, why: &str| Corrupt {
        count: u64::from(events),
        unit,
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
            KIND_MEMORY => RecordKind::Memory,
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

pub(super) fn read_record(path: &Path, seq: u64) -> Result<Option<SpoolRecord>, Corrupt> {
    let mut bytes = Vec::new();
    match File::open(path).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => decode(&bytes, seq).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Corrupt {
            count: 0,
            unit: Unit::Events,
            why: format!("unreadable: {e}"),
        }),
    }
}

/// Writes `bytes` to `tmp`, fsyncs it, renames it to `dest` and fsyncs `dir` (`dest`'s
/// directory): afterwards `dest` is whole, even across a crash. On an error neither file is
/// left behind (as far as the filesystem lets us remove them), so a failed write is not
/// shipped later as a batch the caller counted as dropped; a file whose fsync failed is never
/// synced again (its pages' state is unknown after the failure), the next write starts anew.
pub(crate) fn write_durably(
    tmp: &Path,
    dest: &Path,
    dir: &Path,
    bytes: &[u8],
) -> Result<(), SidecarError> {
    let written = (|| {
        let mut f = faults::check("spool.create", tmp)
            .and_then(|()| File::create(tmp))
            .map_err(|e| SidecarError::spool(tmp, "create", e))?;
        faults::check("spool.write", tmp)
            .and_then(|()| f.write_all(bytes))
            .map_err(|e| SidecarError::spool(tmp, "write", e))?;
        faults::check("spool.fsync", tmp)
            .and_then(|()| f.sync_all())
            .map_err(|e| SidecarError::spool(tmp, "fsync", e))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    if let Err(e) = faults::check("spool.rename", dest).and_then(|()| fs::rename(tmp, dest)) {
        let _ = fs::remove_file(tmp);
        return Err(SidecarError::spool(dest, "rename into place", e));
    }
    sync_dir(dir).inspect_err(|_| {
        let _ = fs::remove_file(dest);
    })
}

/// Makes the renames and creations in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), SidecarError> {
    faults::check("spool.dir_fsync", dir)
        .and_then(|()| File::open(dir))
        .and_then(|d| d.sync_all())
        .map_err(|e| SidecarError::spool(dir, "fsync the directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = SpoolRecord> {
        (
            any::<u64>(),
            "[ -~]{0,40}",
            proptest::option::of("[ -~]{0,200}"),
            any::<bool>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..512),
        )
            .prop_map(|(seq, id, query, memory, events, body)| SpoolRecord {
                seq,
                id,
                kind: match (query, memory) {
                    (_, true) => RecordKind::Memory,
                    (None, false) => RecordKind::Events,
                    (Some(query), false) => RecordKind::Profile { query },
                },
                events,
                body,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any bytes: no panic, and what is accepted holds no more than the bytes given.
        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
            if let Ok(r) = decode(&bytes, 1) {
                prop_assert!(r.body.len() + r.id.len() <= bytes.len());
            }
        }

        /// A record round-trips; any one flipped byte or cut is refused, never misread.
        #[test]
        fn records_round_trip_and_damage_is_refused(
            r in record(),
            flip in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode(&r);
            let back = decode(&bytes, r.seq).map_err(|e| TestCaseError::fail(e.why))?;
            prop_assert_eq!(&back, &r);
            let mut bad = bytes.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 0x01;
            prop_assert!(decode(&bad, r.seq).is_err(), "a flip at {} is accepted", at);
            let short = &bytes[..cut.index(bytes.len())];
            prop_assert!(decode(short, r.seq).is_err());
        }
    }
}
