//! The write-ahead log: one file per memtable generation, `wal-<gen>.log`.
//!
//! A record is `len: u32 LE | crc32(payload): u32 LE | payload`, and a payload is
//! `kind: u8 | tenant_len: u16 LE | tenant | key_len: u8 | key | body`, where `key` is the
//! batch's idempotency key (empty when it has none), and the body of kind 1 is a
//! `profwatch.v1.EventBatch` protobuf and of kind 2 a [`WalProfiles`] protobuf. Appends are followed by
//! `fdatasync` before any batch in them is acknowledged. Replay stops at the first record that is
//! short or fails its checksum (a torn tail from a crash mid-append, never acknowledged) and
//! truncates the file there.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::{wire, RequestEvent, Tenant};
use prost::Message;

use crate::store::StoreError;

const HEADER: usize = 8;
/// A record larger than this is treated as corruption on replay.
const MAX_RECORD: usize = 512 << 20;

/// An open WAL file being appended to.
#[derive(Debug)]
pub struct Wal {
    file: File,
    path: PathBuf,
    pub gen: u64,
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
        Ok(Wal { file, path, gen })
    }

    /// Appends encoded records and makes them durable.
    pub fn append(&mut self, records: &[&[u8]]) -> Result<(), StoreError> {
        for r in records {
            self.file
                .write_all(r)
                .map_err(|e| StoreError::io("append to", &self.path, e))?;
        }
        self.file
            .sync_data()
            .map_err(|e| StoreError::io("fsync", &self.path, e))
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every intact record of a WAL file, truncating a torn tail.
pub fn replay(path: &Path) -> Result<Vec<Record>, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| StoreError::io("read", path, e))?;
    let mut out = Vec::new();
    let mut at = 0;
    while at + HEADER <= bytes.len() {
        let len =
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        let crc = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let end = at + HEADER + len;
        if len > MAX_RECORD || end > bytes.len() || len < 4 {
            break;
        }
        let payload = &bytes[at + HEADER..end];
        if crc32fast::hash(payload) != crc {
            break;
        }
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
            KIND_EVENTS => Entry::Events(
                wire::decode_batch(body).map_err(|e| corrupt(path, at, &e.to_string()))?,
            ),
            KIND_PROFILES => Entry::Profiles(
                decode_profiles(body).map_err(|e| corrupt(path, at, &e.to_string()))?,
            ),
            other => return Err(corrupt(path, at, &format!("unknown record kind {other}"))),
        };
        out.push(Record {
            tenant: Tenant(tenant.to_owned()),
            entry,
            key,
        });
        at = end;
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), valid = at, len = bytes.len(), "truncating torn WAL tail");
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| {
                f.set_len(at as u64)?;
                f.sync_all()
            })
            .map_err(|e| StoreError::io("truncate", path, e))?;
    }
    Ok(out)
}

fn corrupt(path: &Path, at: usize, detail: &str) -> StoreError {
    StoreError::Corrupt {
        path: path.display().to_string(),
        detail: format!("record at byte {at} passed its checksum but does not decode: {detail}"),
    }
}

/// Fsyncs a directory so that creates, renames and deletes in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("fsync directory", dir, e))
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

        let got = replay(&path).expect("replay");
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
        let got = replay(wal.path()).expect("replay");
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
        let got = replay(wal.path()).expect("replay");
        assert_eq!((&got[0].entry, got[0].key.as_deref()), (&p, None));
        assert_eq!(
            (&got[1].entry, got[1].key.as_deref()),
            (&e, Some("batch-7"))
        );
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("wal-x.log"), None);
    }
}
