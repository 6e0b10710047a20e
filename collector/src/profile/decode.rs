//! pprof (`profile.proto`, gzipped or not) → [`ProfileBatch`]es, one per distinct label set.
//!
//! Invariants: every input is bounded before it is held in memory (inflated size, then the
//! number of samples, counted by a scan of the top-level fields before the full decode, then
//! frames per stack and bytes per frame name); every index and id is checked, so a malformed
//! profile is an error, never a panic. Frames come out root-first: a sample's locations are
//! leaf-first, and within a location the last line is the caller, so both are walked backwards.
//!
//! Values: the `samples/count` type gives `samples` (else any `count` unit); the `cpu/nanoseconds`
//! type gives `cpu_ns` (else any `nanoseconds` unit). When only one is present the other is
//! derived from `period` if `period_type` is in nanoseconds (`cpu_ns = samples × period`,
//! `samples = round(cpu_ns / period)`), else left at 0 (`cpu_ns`) or taken as 1 per non-zero
//! sample (`samples`).

use std::collections::HashMap;

use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::Limits;
use prost::Message;

use super::compress::maybe_gunzip;
use super::error::ProfileError;
use super::labels;
use super::limits::ProfileLimits;
use super::pprof::{Location, Profile};

/// What a conversion needs besides the bytes.
#[derive(Debug, Clone)]
pub struct DecodeOptions<'a> {
    /// Labels from outside the profile (query parameters, a push series); sample labels win.
    pub base: &'a SampleLabels,
    pub limits: &'a ProfileLimits,
    pub label_limits: &'a Limits,
    /// Timestamp used when the profile's `time_nanos` is 0.
    pub now: i64,
}

/// Decodes a pprof profile (gzip recognised by its magic) and converts it.
pub fn pprof_to_batches(
    bytes: &[u8],
    opt: &DecodeOptions<'_>,
) -> Result<Vec<ProfileBatch>, ProfileError> {
    let profile = decode_profile(bytes, opt.limits)?;
    convert(&profile, opt)
}

/// Inflates if needed, checks the sample count, and decodes.
pub fn decode_profile(bytes: &[u8], limits: &ProfileLimits) -> Result<Profile, ProfileError> {
    let raw = maybe_gunzip(bytes, limits.max_decompressed)?;
    let samples = count_samples(&raw);
    if samples > limits.max_samples {
        return Err(ProfileError::TooManySamples {
            samples,
            max: limits.max_samples,
        });
    }
    Profile::decode(raw.as_ref()).map_err(ProfileError::Protobuf)
}

/// Counts top-level field 2 (`sample`) without decoding; stops quietly at anything malformed
/// (the full decode reports it).
fn count_samples(mut buf: &[u8]) -> usize {
    use prost::encoding::decode_varint;
    let mut n = 0;
    while !buf.is_empty() {
        let Ok(key) = decode_varint(&mut buf) else {
            break;
        };
        let skip = match key & 7 {
            0 => match decode_varint(&mut buf) {
                Ok(_) => 0,
                Err(_) => break,
            },
            1 => 8,
            2 => match decode_varint(&mut buf)
                .ok()
                .and_then(|l| usize::try_from(l).ok())
            {
                Some(len) => len,
                None => break,
            },
            5 => 4,
            _ => break,
        };
        if key >> 3 == 2 && key & 7 == 2 {
            n += 1;
        }
        match buf.get(skip..) {
            Some(rest) => buf = rest,
            None => break,
        }
    }
    n
}

/// Looks up strings by index with a useful error.
struct Strings<'a>(&'a [String]);

impl<'a> Strings<'a> {
    fn get(&self, index: i64, what: &'static str) -> Result<&'a str, ProfileError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.0.get(i))
            .map(String::as_str)
            .ok_or(ProfileError::StringIndex {
                what,
                index,
                len: self.0.len(),
            })
    }
}

/// Which values of a sample give samples and CPU time.
#[derive(Debug, Clone, Copy)]
struct ValuePick {
    samples: Option<usize>,
    cpu: Option<usize>,
    /// Nanoseconds per sample, when `period_type` says nanoseconds.
    period_ns: Option<u64>,
}

fn pick_values(p: &Profile, s: &Strings<'_>) -> Result<ValuePick, ProfileError> {
    let mut types = Vec::with_capacity(p.sample_type.len());
    for vt in &p.sample_type {
        types.push((
            s.get(vt.r#type, "sample_type.type")?,
            s.get(vt.unit, "sample_type.unit")?,
        ));
    }
    let find = |exact: (&str, &str)| types.iter().position(|t| *t == exact);
    let by_unit = |unit: &str| types.iter().position(|t| t.1 == unit);
    let samples = find(("samples", "count")).or_else(|| by_unit("count"));
    let cpu = find(("cpu", "nanoseconds")).or_else(|| by_unit("nanoseconds"));
    if samples.is_none() && cpu.is_none() {
        return Err(ProfileError::NoSampleType);
    }
    let period_ns = match p.period_type {
        Some(pt) if s.get(pt.unit, "period_type.unit")? == "nanoseconds" && p.period > 0 => {
            u64::try_from(p.period).ok()
        }
        _ => None,
    };
    Ok(ValuePick {
        samples,
        cpu,
        period_ns,
    })
}

/// Root-first frames of each location (the last line of a location is the outermost caller).
fn location_frames(
    p: &Profile,
    s: &Strings<'_>,
    limits: &ProfileLimits,
) -> Result<HashMap<u64, Vec<String>>, ProfileError> {
    let mut functions: HashMap<u64, &str> = HashMap::with_capacity(p.function.len());
    for f in &p.function {
        let mut name = s.get(f.name, "function.name")?;
        if name.is_empty() {
            name = s.get(f.system_name, "function.system_name")?;
        }
        if name.len() > limits.max_frame_len {
            return Err(ProfileError::FrameTooLong {
                len: name.len(),
                max: limits.max_frame_len,
            });
        }
        functions.insert(f.id, name);
    }
    let mut out = HashMap::with_capacity(p.location.len());
    for loc in &p.location {
        out.insert(loc.id, frames_of(loc, &functions)?);
    }
    Ok(out)
}

fn frames_of(loc: &Location, functions: &HashMap<u64, &str>) -> Result<Vec<String>, ProfileError> {
    if loc.line.is_empty() {
        return Ok(vec![format!("0x{:x}", loc.address)]);
    }
    loc.line
        .iter()
        .rev()
        .map(|line| {
            functions
                .get(&line.function_id)
                .map(|name| {
                    if name.is_empty() {
                        format!("0x{:x}", loc.address)
                    } else {
                        (*name).to_owned()
                    }
                })
                .ok_or(ProfileError::UnknownFunction {
                    location: loc.id,
                    id: line.function_id,
                })
        })
        .collect()
}

/// Converts a decoded profile.
pub fn convert(p: &Profile, opt: &DecodeOptions<'_>) -> Result<Vec<ProfileBatch>, ProfileError> {
    let limits = opt.limits;
    if p.sample.len() > limits.max_samples {
        return Err(ProfileError::TooManySamples {
            samples: p.sample.len(),
            max: limits.max_samples,
        });
    }
    if p.string_table.first().is_some_and(|s| !s.is_empty()) {
        return Err(ProfileError::StringTableStart);
    }
    let s = Strings(&p.string_table);
    let pick = pick_values(p, &s)?;
    let locations = location_frames(p, &s, limits)?;

    // (label set, location ids) → (samples, cpu_ns); frames are resolved once per key.
    let mut label_sets: Vec<SampleLabels> = Vec::new();
    let mut label_index: HashMap<Vec<(i64, i64)>, usize> = HashMap::new();
    let mut stacks: HashMap<(usize, &[u64]), (u64, u64)> = HashMap::new();
    for (i, sample) in p.sample.iter().enumerate() {
        if sample.value.len() < p.sample_type.len() {
            return Err(ProfileError::ValueCount {
                sample: i,
                values: sample.value.len(),
                types: p.sample_type.len(),
            });
        }
        let value = |idx: Option<usize>| -> Result<Option<u64>, ProfileError> {
            idx.map(|k| u64::try_from(sample.value[k]))
                .transpose()
                .map_err(|_| ProfileError::NegativeValue { sample: i })
        };
        let (samples, cpu) = match (value(pick.samples)?, value(pick.cpu)?) {
            (Some(n), Some(c)) => (n, c),
            (Some(n), None) => (n, pick.period_ns.map_or(0, |p| n.saturating_mul(p))),
            (None, Some(c)) => {
                let n = match pick.period_ns {
                    Some(p) => c.saturating_add(p / 2) / p,
                    None => 0,
                };
                (if n == 0 && c > 0 { 1 } else { n }, c)
            }
            (None, None) => (0, 0),
        };
        if samples == 0 && cpu == 0 {
            continue;
        }
        for id in &sample.location_id {
            if *id == 0 {
                return Err(ProfileError::LocationIdZero { sample: i });
            }
            if !locations.contains_key(id) {
                return Err(ProfileError::UnknownLocation { sample: i, id: *id });
            }
        }
        if sample.location_id.len() > limits.max_frames {
            return Err(ProfileError::TooManyFrames {
                frames: sample.location_id.len(),
                max: limits.max_frames,
            });
        }
        let mut key: Vec<(i64, i64)> = sample
            .label
            .iter()
            .filter(|l| l.str != 0)
            .map(|l| (l.key, l.str))
            .collect();
        key.sort_unstable();
        let set = match label_index.get(&key) {
            Some(k) => *k,
            None => {
                let mut labels = opt.base.clone();
                for (k, v) in &key {
                    labels::apply(
                        &mut labels,
                        s.get(*k, "label.key")?,
                        s.get(*v, "label.str")?,
                    );
                }
                labels::validate(&labels, opt.label_limits)?;
                label_sets.push(labels);
                label_index.insert(key, label_sets.len() - 1);
                label_sets.len() - 1
            }
        };
        let e = stacks
            .entry((set, sample.location_id.as_slice()))
            .or_default();
        e.0 = e.0.saturating_add(samples);
        e.1 = e.1.saturating_add(cpu);
    }

    let mut per_set: Vec<HashMap<Vec<String>, (u64, u64)>> = vec![HashMap::new(); label_sets.len()];
    for ((set, ids), (n, c)) in stacks {
        let mut frames = Vec::with_capacity(ids.len());
        for id in ids.iter().rev() {
            if let Some(f) = locations.get(id) {
                frames.extend(f.iter().cloned());
            }
        }
        if frames.len() > limits.max_frames {
            return Err(ProfileError::TooManyFrames {
                frames: frames.len(),
                max: limits.max_frames,
            });
        }
        let e = per_set[set].entry(frames).or_default();
        e.0 = e.0.saturating_add(n);
        e.1 = e.1.saturating_add(c);
    }
    let ts = if p.time_nanos == 0 {
        opt.now
    } else {
        p.time_nanos
    };
    let mut batches: Vec<ProfileBatch> = label_sets
        .into_iter()
        .zip(per_set)
        .map(|(labels, stacks)| {
            let mut samples: Vec<StackSample> = stacks
                .into_iter()
                .map(|(frames, (samples, cpu_ns))| StackSample {
                    frames,
                    samples,
                    cpu_ns,
                })
                .collect();
            samples.sort_by(|a, b| a.frames.cmp(&b.frames));
            ProfileBatch {
                ts,
                labels,
                samples,
            }
        })
        .collect();
    batches.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(batches)
}
