//! Rows in memory, column by column, with a dictionary of series.
//!
//! A series is everything about an event that is not a measurement: tenant, service, endpoint,
//! build, dc, host and labels. Rows refer to their series by index, so the per-row cost of those
//! strings is four bytes. The same layout is what a segment file holds.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use profwatch_model::profile::{ProfileBatch, SampleLabels};
use profwatch_model::{RequestEvent, Tenant};
use serde::{Deserialize, Serialize};

use super::keys::IdemKey;
use crate::stack_ids::StackIds;

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

/// Stack samples, one vector per column, all of the same length. `stack` is the stack's id
/// (`stack_ids`), its frames live once per table in a [`Stacks`] map.
#[derive(Debug, Default, Clone)]
pub struct SampleRows {
    pub ts: Vec<i64>,
    pub series: Vec<u32>,
    pub stack: Vec<u128>,
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

    pub fn push(&mut self, ts: i64, series: u32, stack: u128, samples: u64, cpu_ns: u64) {
        self.ts.push(ts);
        self.series.push(series);
        self.stack.push(stack);
        self.samples.push(samples);
        self.cpu_ns.push(cpu_ns);
    }
}

/// Frames by stack id (`stack_ids`).
pub type Stacks = HashMap<u128, Arc<[String]>>;

/// Probes past a colliding id before a sample is given up (with the keyed id, one collision
/// is a one-in-2^128 event; 64 in a row do not happen).
const MAX_PROBES: u32 = 64;

/// The rows of one WAL generation, in memory.
#[derive(Debug)]
pub struct MemTable {
    pub gen: u64,
    pub dict: SeriesDict,
    pub rows: Rows,
    pub samples: SampleRows,
    pub stacks: Stacks,
    /// How stack ids are made (the data directory's key).
    pub stack_ids: StackIds,
    /// Stacks whose first id was taken by other frames, re-keyed (see `stack_ids`).
    pub stack_collisions: u64,
    /// Idempotency keys of the batches in this memtable.
    pub keys: Vec<IdemKey>,
}

impl MemTable {
    pub fn new(gen: u64, stack_ids: StackIds) -> Self {
        MemTable {
            gen,
            dict: SeriesDict::default(),
            rows: Rows::default(),
            samples: SampleRows::default(),
            stacks: Stacks::new(),
            stack_ids,
            stack_collisions: 0,
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

    /// Adds stack samples; returns how many stacks met another stack's id on the way (each
    /// took the next probe).
    pub fn insert_profiles(&mut self, tenant: &Tenant, batches: &[ProfileBatch]) -> u64 {
        let before = self.stack_collisions;
        for b in batches {
            let series = self.dict.intern_labels(tenant.as_str(), &b.labels);
            for s in &b.samples {
                if let Some(h) = self.stack_id(tenant, &s.frames) {
                    self.samples.push(b.ts, series, h, s.samples, s.cpu_ns);
                }
            }
        }
        self.stack_collisions - before
    }

    /// The id of `frames`, its frames held under it: the first probe whose id is free or
    /// holds these very frames. `None` (the sample dropped, logged) only past [`MAX_PROBES`].
    fn stack_id(&mut self, tenant: &Tenant, frames: &[String]) -> Option<u128> {
        for probe in 0..MAX_PROBES {
            let h = self.stack_ids.id(tenant.as_str(), frames, probe);
            match self.stacks.entry(h) {
                Entry::Vacant(v) => {
                    v.insert(Arc::from(frames.to_vec().into_boxed_slice()));
                    return Some(h);
                }
                Entry::Occupied(o) if o.get().as_ref() == frames => return Some(h),
                Entry::Occupied(_) => {
                    self.stack_collisions += 1;
                    tracing::warn!(tenant = %tenant.as_str(), probe,
                        "two stacks share an id; the later one takes the next");
                }
            }
        }
        tracing::error!(tenant = %tenant.as_str(), probes = MAX_PROBES,
            "a stack collided with other frames at every probe; its sample is dropped");
        None
    }

    /// A copy (for freezing an active memtable that a query still reads).
    pub fn snapshot(&self) -> MemTable {
        MemTable {
            gen: self.gen,
            dict: self.dict.clone(),
            rows: self.rows.clone(),
            samples: self.samples.clone(),
            stacks: self.stacks.clone(),
            stack_ids: self.stack_ids,
            stack_collisions: self.stack_collisions,
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

#[cfg(test)]
mod tests {
    use profwatch_model::profile::StackSample;

    use super::*;

    fn batch(frames: &[&str], samples: u64) -> ProfileBatch {
        ProfileBatch {
            ts: 1,
            labels: SampleLabels {
                service: "shop".into(),
                ..Default::default()
            },
            samples: vec![StackSample {
                frames: frames.iter().map(|f| (*f).to_owned()).collect(),
                samples,
                cpu_ns: 0,
            }],
        }
    }

    fn frames_of(mt: &MemTable, row: usize) -> Vec<String> {
        mt.stacks[&mt.samples.stack[row]].to_vec()
    }

    /// Every stack's first id is the same here (a collision every time): each keeps its own
    /// frames under the next free id, a stack seen again finds its id, and the collisions are
    /// counted.
    #[test]
    fn stacks_that_collide_keep_their_own_frames() {
        let mut mt = MemTable::new(1, StackIds::colliding());
        let (a, b) = (Tenant("a".into()), Tenant("b".into()));
        assert_eq!(
            mt.insert_profiles(&a, &[batch(&["main", "a_secret"], 1)]),
            0
        );
        assert_eq!(
            mt.insert_profiles(&b, &[batch(&["main", "spoofed"], 2)]),
            1,
            "the store adds what each insert met to its count"
        );
        assert_eq!(
            mt.insert_profiles(&a, &[batch(&["main", "a_secret"], 3)]),
            0
        );
        assert_eq!(frames_of(&mt, 0), ["main", "a_secret"]);
        assert_eq!(frames_of(&mt, 1), ["main", "spoofed"]);
        assert_eq!(frames_of(&mt, 2), ["main", "a_secret"]);
        assert_eq!(mt.samples.stack[0], mt.samples.stack[2]);
        assert_ne!(mt.samples.stack[0], mt.samples.stack[1]);
        assert_eq!(mt.stacks.len(), 2);
        assert_eq!(mt.stack_collisions, 1);
    }

    /// Under the real (keyed) ids, the same frames of two tenants get two ids.
    #[test]
    fn equal_stacks_of_two_tenants_have_two_ids() {
        let mut mt = MemTable::new(1, StackIds::fixed());
        let _ = mt.insert_profiles(&Tenant("a".into()), &[batch(&["main"], 1)]);
        let _ = mt.insert_profiles(&Tenant("b".into()), &[batch(&["main"], 1)]);
        assert_ne!(mt.samples.stack[0], mt.samples.stack[1]);
        assert_eq!(mt.stack_collisions, 0);
    }
}
