//! Rows in memory, column by column, with a dictionary of series.
//!
//! A series is everything about an event that is not a measurement: tenant, service, endpoint,
//! build, dc, host and labels. Rows refer to their series by index, so the per-row cost of those
//! strings is four bytes. The same layout is what a segment file holds.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use profwatch_model::profile::{stack_hash, ProfileBatch, SampleLabels};
use profwatch_model::{RequestEvent, Tenant};
use serde::{Deserialize, Serialize};

use super::keys::IdemKey;

/// The identity of a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SeriesKey {
    pub tenant: String,
    pub service: String,
    pub endpoint: String,
    pub build: String,
    pub dc: String,
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<(String, String)>,
}

fn hash_fields(tenant: &str, e: &RequestEvent) -> u64 {
    let mut h = DefaultHasher::new();
    (tenant, &e.service, &e.endpoint, &e.build, &e.dc, &e.host).hash(&mut h);
    for (k, v) in &e.labels {
        (k, v).hash(&mut h);
    }
    h.finish()
}

fn same_series(k: &SeriesKey, tenant: &str, e: &RequestEvent) -> bool {
    k.tenant == tenant
        && k.service == e.service
        && k.endpoint == e.endpoint
        && k.build == e.build
        && k.dc == e.dc
        && k.host == e.host
        && k.labels.len() == e.labels.len()
        && k.labels
            .iter()
            .zip(&e.labels)
            .all(|(a, b)| a.0 == *b.0 && a.1 == *b.1)
}

/// Interns series keys; lookups by an event's fields allocate nothing when the series exists.
#[derive(Debug, Default, Clone)]
pub struct SeriesDict {
    pub keys: Vec<Arc<SeriesKey>>,
    by_hash: HashMap<u64, Vec<u32>>,
}

impl SeriesDict {
    pub fn intern(&mut self, tenant: &str, e: &RequestEvent) -> u32 {
        let h = hash_fields(tenant, e);
        if let Some(ids) = self.by_hash.get(&h) {
            for id in ids {
                if same_series(&self.keys[*id as usize], tenant, e) {
                    return *id;
                }
            }
        }
        let id = self.keys.len() as u32;
        self.keys.push(Arc::new(SeriesKey {
            tenant: tenant.to_owned(),
            service: e.service.clone(),
            endpoint: e.endpoint.clone(),
            build: e.build.clone(),
            dc: e.dc.clone(),
            host: e.host.clone(),
            labels: e
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }));
        self.by_hash.entry(h).or_default().push(id);
        id
    }

    /// Interns the series of a profile's labels.
    pub fn intern_labels(&mut self, tenant: &str, l: &SampleLabels) -> u32 {
        let key = Arc::new(SeriesKey {
            tenant: tenant.to_owned(),
            service: l.service.clone(),
            endpoint: l.endpoint.clone(),
            build: l.build.clone(),
            dc: l.dc.clone(),
            host: l.host.clone(),
            labels: l
                .extra
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        self.intern_key(&key)
    }

    /// Interns a key as it is (used when merging dictionaries).
    pub fn intern_key(&mut self, key: &Arc<SeriesKey>) -> u32 {
        let mut h = DefaultHasher::new();
        (
            &key.tenant,
            &key.service,
            &key.endpoint,
            &key.build,
            &key.dc,
            &key.host,
        )
            .hash(&mut h);
        for (k, v) in &key.labels {
            (k, v).hash(&mut h);
        }
        let h = h.finish();
        if let Some(ids) = self.by_hash.get(&h) {
            for id in ids {
                if self.keys[*id as usize] == *key {
                    return *id;
                }
            }
        }
        let id = self.keys.len() as u32;
        self.keys.push(key.clone());
        self.by_hash.entry(h).or_default().push(id);
        id
    }
}

/// Measurements, one vector per column, all of the same length.
#[derive(Debug, Default, Clone)]
pub struct Rows {
    pub ts: Vec<i64>,
    pub series: Vec<u32>,
    pub status: Vec<u16>,
    pub cpu_ns: Vec<u64>,
    pub instructions: Vec<Option<u64>>,
    pub wall_ns: Vec<u64>,
    pub weight: Vec<f64>,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn push(&mut self, series: u32, e: &RequestEvent) {
        self.ts.push(e.ts);
        self.series.push(series);
        self.status.push(e.status);
        self.cpu_ns.push(e.cpu_ns);
        self.instructions.push(e.instructions);
        self.wall_ns.push(e.wall_ns);
        self.weight.push(e.weight);
    }

    /// Copies row `i` of `other`, with its series renumbered to `series`.
    pub fn push_from(&mut self, other: &Rows, i: usize, series: u32) {
        self.ts.push(other.ts[i]);
        self.series.push(series);
        self.status.push(other.status[i]);
        self.cpu_ns.push(other.cpu_ns[i]);
        self.instructions.push(other.instructions[i]);
        self.wall_ns.push(other.wall_ns[i]);
        self.weight.push(other.weight[i]);
    }
}

/// Stack samples, one vector per column, all of the same length. `stack` is the content hash
/// of the frames, which live once per table in a [`Stacks`] map.
#[derive(Debug, Default, Clone)]
pub struct SampleRows {
    pub ts: Vec<i64>,
    pub series: Vec<u32>,
    pub stack: Vec<u64>,
    pub samples: Vec<u64>,
    pub cpu_ns: Vec<u64>,
}

impl SampleRows {
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    pub fn push(&mut self, ts: i64, series: u32, stack: u64, samples: u64, cpu_ns: u64) {
        self.ts.push(ts);
        self.series.push(series);
        self.stack.push(stack);
        self.samples.push(samples);
        self.cpu_ns.push(cpu_ns);
    }
}

/// Frames by stack hash.
pub type Stacks = HashMap<u64, Arc<[String]>>;

/// The rows of one WAL generation, in memory.
#[derive(Debug)]
pub struct MemTable {
    pub gen: u64,
    pub dict: SeriesDict,
    pub rows: Rows,
    pub samples: SampleRows,
    pub stacks: Stacks,
    /// Idempotency keys of the batches in this memtable.
    pub keys: Vec<IdemKey>,
}

impl MemTable {
    pub fn new(gen: u64) -> Self {
        MemTable {
            gen,
            dict: SeriesDict::default(),
            rows: Rows::default(),
            samples: SampleRows::default(),
            stacks: Stacks::new(),
            keys: Vec::new(),
        }
    }

    /// Rows of both kinds.
    pub fn len(&self) -> usize {
        self.rows.len() + self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.samples.is_empty()
    }

    pub fn insert(&mut self, tenant: &Tenant, events: &[RequestEvent]) {
        for e in events {
            let s = self.dict.intern(tenant.as_str(), e);
            self.rows.push(s, e);
        }
    }

    pub fn insert_profiles(&mut self, tenant: &Tenant, batches: &[ProfileBatch]) {
        for b in batches {
            let series = self.dict.intern_labels(tenant.as_str(), &b.labels);
            for s in &b.samples {
                let h = stack_hash(&s.frames);
                self.stacks
                    .entry(h)
                    .or_insert_with(|| Arc::from(s.frames.clone().into_boxed_slice()));
                self.samples.push(b.ts, series, h, s.samples, s.cpu_ns);
            }
        }
    }

    /// A copy (for freezing an active memtable that a query still reads).
    pub fn snapshot(&self) -> MemTable {
        MemTable {
            gen: self.gen,
            dict: self.dict.clone(),
            rows: self.rows.clone(),
            samples: self.samples.clone(),
            stacks: self.stacks.clone(),
            keys: self.keys.clone(),
        }
    }

    /// Rows sorted by (series key, ts) with a dictionary in key order: the layout segments use.
    pub fn sorted(&self) -> (Vec<Arc<SeriesKey>>, Rows) {
        sort_rows(&self.dict.keys, &self.rows)
    }
}

/// Sorts samples by (series, stack, ts).
pub fn sort_samples(rows: &SampleRows) -> SampleRows {
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.sort_unstable_by_key(|i| (rows.series[*i], rows.stack[*i], rows.ts[*i]));
    let mut out = SampleRows::default();
    for i in idx {
        out.push(
            rows.ts[i],
            rows.series[i],
            rows.stack[i],
            rows.samples[i],
            rows.cpu_ns[i],
        );
    }
    out
}

/// Sorts rows by (series key, ts) and renumbers the series in key order.
pub fn sort_rows(keys: &[Arc<SeriesKey>], rows: &Rows) -> (Vec<Arc<SeriesKey>>, Rows) {
    let mut order: Vec<u32> = (0..keys.len() as u32).collect();
    order.sort_by(|a, b| keys[*a as usize].cmp(&keys[*b as usize]));
    let mut rank = vec![0u32; keys.len()];
    for (r, id) in order.iter().enumerate() {
        rank[*id as usize] = r as u32;
    }
    let mut idx: Vec<usize> = (0..rows.len()).collect();
    idx.sort_unstable_by_key(|i| (rank[rows.series[*i] as usize], rows.ts[*i]));
    let mut out = Rows::default();
    for i in idx {
        out.push_from(rows, i, rank[rows.series[i] as usize]);
    }
    let sorted_keys = order.iter().map(|id| keys[*id as usize].clone()).collect();
    (sorted_keys, out)
}
