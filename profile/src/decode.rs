//! pprof (`profile.proto`, gzipped or not) → [`ProfileBatch`]es, one per distinct label set.
//!
//! Invariants:
//! - The profile is never decoded whole. One scan of its top-level fields keeps borrowed
//!   slices of them and counts each repeated field against its cap as it goes ([`Scan`]);
//!   locations and samples are counted inside (lines, location ids, values, labels) before
//!   prost decodes each of them alone. So memory follows the caps of [`ProfileLimits`], never
//!   how far a short input expands (a line bomb is refused at its line count).
//! - Frames are interned: a location holds indices of its functions, a stack holds location
//!   ids; names are copied only into the converted stacks, whose total size
//!   (`max_frame_bytes`) is counted as each distinct stack is first met, before it is built.
//! - Every index and id is checked, so a malformed profile is an error, never a panic.
//! - Frames come out root-first: a sample's locations are leaf-first, and within a location the
//!   last line is the caller, so both are walked backwards.
//!
//! Values: the `samples/count` type gives `samples` (else any `count` unit); the `cpu/nanoseconds`
//! type gives `cpu_ns` (else any `nanoseconds` unit). When only one is present the other is
//! derived from `period` if `period_type` is in nanoseconds (`cpu_ns = samples × period`,
//! `samples = round(cpu_ns / period)`), else left at 0 (`cpu_ns`) or taken as 1 per non-zero
//! sample (`samples`).

use std::collections::HashMap;

use profwatch_model::profile::{ProfileBatch, SampleLabels, StackSample};
use profwatch_model::scan::{self, Repeated};
use profwatch_model::Limits;
use prost::encoding::{check_wire_type, WireType};
use prost::Message;

use super::compress::{maybe_gunzip, maybe_gunzip_within, Allowance, Unmetered};
use super::error::ProfileError;
use super::labels;
use super::limits::{ProfileLimits, FRAME_OVERHEAD};
use super::pprof::{Function, Location, Profile, Sample, ValueType};

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
    pprof_to_batches_within(bytes, opt, &mut Unmetered)
}

/// As [`pprof_to_batches`], with the inflated bytes paid for by `allowance`.
pub fn pprof_to_batches_within(
    bytes: &[u8],
    opt: &DecodeOptions<'_>,
    allowance: &mut dyn Allowance,
) -> Result<Vec<ProfileBatch>, ProfileError> {
    let raw = maybe_gunzip_within(bytes, opt.limits.max_decompressed, allowance)?;
    convert_raw(&raw, opt)
}

/// Inflates if needed, checks every count, and decodes the whole message. For tools and tests:
/// ingest never holds a decoded [`Profile`].
pub fn decode_profile(bytes: &[u8], limits: &ProfileLimits) -> Result<Profile, ProfileError> {
    let raw = maybe_gunzip(bytes, limits.max_decompressed)?;
    Scan::of(&raw, limits)?;
    Profile::decode(raw.as_ref()).map_err(ProfileError::Protobuf)
}

/// Converts a decoded profile: it is encoded again and read like any other, so there is one
/// conversion.
pub fn convert(p: &Profile, opt: &DecodeOptions<'_>) -> Result<Vec<ProfileBatch>, ProfileError> {
    convert_raw(&p.encode_to_vec(), opt)
}

/// Items kept up to a cap; past it only counted, so that the error gives the real count.
struct Capped<T> {
    items: Vec<T>,
    count: usize,
    max: usize,
    what: &'static str,
    /// The error for `(what, count, max)`.
    too_many: fn(&'static str, usize, usize) -> ProfileError,
}

impl<T> Capped<T> {
    /// A cap whose error is [`ProfileError::TooMany`] of `what`.
    fn new(what: &'static str, max: usize) -> Self {
        Capped {
            items: Vec::new(),
            count: 0,
            max,
            what,
            too_many: |what, count, max| ProfileError::TooMany { what, count, max },
        }
    }

    fn push(&mut self, item: T) {
        self.count += 1;
        if self.count <= self.max {
            self.items.push(item);
        }
    }

    fn done(self) -> Result<Vec<T>, ProfileError> {
        if self.count > self.max {
            return Err((self.too_many)(self.what, self.count, self.max));
        }
        Ok(self.items)
    }
}

/// The top-level fields of a profile, borrowed, each repeated field within its cap.
struct Scan<'a> {
    sample_types: Vec<ValueType>,
    samples: Vec<&'a [u8]>,
    locations: Vec<&'a [u8]>,
    functions: Vec<&'a [u8]>,
    strings: Vec<&'a str>,
    period_type: Option<ValueType>,
    period: i64,
    time_nanos: i64,
}

impl<'a> Scan<'a> {
    fn of(raw: &'a [u8], limits: &ProfileLimits) -> Result<Scan<'a>, ProfileError> {
        let mut types = Capped::new("sample types", limits.max_sample_types);
        let mut samples = Capped::new("samples", limits.max_samples);
        samples.too_many = |_, samples, max| ProfileError::TooManySamples { samples, max };
        let mut locations = Capped::new("locations", limits.max_locations);
        let mut functions = Capped::new("functions", limits.max_functions);
        let mut strings = Capped::new("strings in its string table", limits.max_strings);
        let (mut period_type, mut period, mut time_nanos) = (None, 0, 0);
        for field in scan::fields(raw) {
            let f = field.map_err(ProfileError::Protobuf)?;
            let wire = |expected| check_wire_type(expected, f.wire_type);
            match f.number {
                1 => {
                    wire(WireType::LengthDelimited)?;
                    types.push(ValueType::decode(f.payload)?);
                }
                2 | 4 | 5 => {
                    wire(WireType::LengthDelimited)?;
                    match f.number {
                        2 => samples.push(f.payload),
                        4 => locations.push(f.payload),
                        _ => functions.push(f.payload),
                    }
                }
                6 => {
                    wire(WireType::LengthDelimited)?;
                    let s = std::str::from_utf8(f.payload).map_err(|_| ProfileError::Utf8 {
                        what: "a string of the string table",
                    })?;
                    strings.push(s);
                }
                9 | 12 => {
                    wire(WireType::Varint)?;
                    if f.number == 9 {
                        time_nanos = f.varint as i64;
                    } else {
                        period = f.varint as i64;
                    }
                }
                11 => {
                    wire(WireType::LengthDelimited)?;
                    let mut pt: ValueType = period_type.unwrap_or_default();
                    pt.merge(f.payload)?;
                    period_type = Some(pt);
                }
                3 => wire(WireType::LengthDelimited)?,
                7 | 8 | 10 | 14 | 15 => wire(WireType::Varint)?,
                13 if f.wire_type != WireType::LengthDelimited => wire(WireType::Varint)?,
                _ => {}
            }
        }
        Ok(Scan {
            sample_types: types.done()?,
            samples: samples.done()?,
            locations: locations.done()?,
            functions: functions.done()?,
            strings: strings.done()?,
            period_type,
            period,
            time_nanos,
        })
    }
}

/// Looks up strings by index with a useful error.
struct Strings<'s, 'a>(&'s [&'a str]);

impl<'a> Strings<'_, 'a> {
    fn get(&self, index: i64, what: &'static str) -> Result<&'a str, ProfileError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.0.get(i))
            .copied()
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

fn pick_values(p: &Scan<'_>, s: &Strings<'_, '_>) -> Result<ValuePick, ProfileError> {
    let mut types = Vec::with_capacity(p.sample_types.len());
    for vt in &p.sample_types {
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

/// A line whose function has no name: the location's address names the frame.
const ADDRESS: u32 = u32::MAX;

/// One location: its frames (a run of `Frames::lines`), address, and what its frames cost.
#[derive(Debug, Clone, Copy)]
struct Loc {
    start: u32,
    len: u32,
    address: u64,
    /// Bytes its frames add to a converted stack (names plus [`FRAME_OVERHEAD`] each).
    cost: usize,
}

/// Every location's frames, root-first, as indices into `names`: nothing is copied.
struct Frames<'a> {
    /// Function names, by function index.
    names: Vec<&'a str>,
    /// Function indices (or [`ADDRESS`]) of all locations, root-first within each.
    lines: Vec<u32>,
    locations: HashMap<u64, Loc>,
}

/// The length of `0x{address:x}`.
fn address_len(address: u64) -> usize {
    2 + (64 - address.leading_zeros() as usize).div_ceil(4).max(1)
}

impl<'a> Frames<'a> {
    fn build(
        p: &Scan<'a>,
        s: &Strings<'_, 'a>,
        limits: &ProfileLimits,
    ) -> Result<Frames<'a>, ProfileError> {
        let mut names = Vec::with_capacity(p.functions.len());
        let mut by_id: HashMap<u64, u32> = HashMap::with_capacity(p.functions.len());
        for bytes in &p.functions {
            let f = Function::decode(*bytes)?;
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
            by_id.insert(f.id, names.len() as u32);
            names.push(name);
        }
        let lines = count_lines(&p.locations, limits)?;
        let mut frames = Frames {
            names,
            lines: Vec::with_capacity(lines),
            locations: HashMap::with_capacity(p.locations.len()),
        };
        for bytes in &p.locations {
            frames.add_location(bytes, &by_id)?;
        }
        Ok(frames)
    }

    /// Adds a location whose line count [`count_lines`] has checked.
    fn add_location(
        &mut self,
        bytes: &[u8],
        by_id: &HashMap<u64, u32>,
    ) -> Result<(), ProfileError> {
        let loc = Location::decode(bytes)?;
        let start = self.lines.len();
        let mut cost = 0usize;
        let addr_cost = address_len(loc.address) + FRAME_OVERHEAD;
        if loc.line.is_empty() {
            self.lines.push(ADDRESS);
            cost = addr_cost;
        }
        for line in loc.line.iter().rev() {
            let f = *by_id
                .get(&line.function_id)
                .ok_or(ProfileError::UnknownFunction {
                    location: loc.id,
                    id: line.function_id,
                })?;
            let name = self.names[f as usize];
            if name.is_empty() {
                self.lines.push(ADDRESS);
                cost += addr_cost;
            } else {
                self.lines.push(f);
                cost += name.len() + FRAME_OVERHEAD;
            }
        }
        let entry = Loc {
            start: start as u32,
            len: (self.lines.len() - start) as u32,
            address: loc.address,
            cost,
        };
        self.locations.insert(loc.id, entry);
        Ok(())
    }

    /// Appends the names of location `id`'s frames, root-first.
    fn push_names(&self, id: u64, out: &mut Vec<String>) {
        let Some(loc) = self.locations.get(&id) else {
            return;
        };
        let run = self
            .lines
            .get(loc.start as usize..(loc.start + loc.len) as usize)
            .unwrap_or_default();
        for &f in run {
            match self.names.get(f as usize) {
                Some(name) if f != ADDRESS => out.push((*name).to_owned()),
                _ => out.push(format!("0x{:x}", loc.address)),
            }
        }
    }
}

/// Counts the lines of every location against the caps, without decoding; returns the total.
fn count_lines(locations: &[&[u8]], limits: &ProfileLimits) -> Result<usize, ProfileError> {
    let mut total = 0usize;
    for bytes in locations {
        let lines = scan::count(bytes, 4, Repeated::Messages);
        if lines > limits.max_lines_per_location {
            let location = scan::fields(bytes)
                .map_while(Result::ok)
                .filter(|f| f.number == 1)
                .last()
                .map_or(0, |f| f.varint);
            return Err(ProfileError::TooManyLines {
                location,
                lines,
                max: limits.max_lines_per_location,
            });
        }
        total = total.saturating_add(lines.max(1));
    }
    if total > limits.max_lines {
        return Err(ProfileError::TooMany {
            what: "lines in all its locations",
            count: total,
            max: limits.max_lines,
        });
    }
    Ok(total)
}

/// The parts of one sample the conversion uses, checked against the caps before decoding.
fn decode_sample(
    bytes: &[u8],
    index: usize,
    limits: &ProfileLimits,
) -> Result<Sample, ProfileError> {
    let too_large = |what, count, max| ProfileError::SampleTooLarge {
        sample: index,
        what,
        count,
        max,
    };
    let frames = scan::count(bytes, 1, Repeated::Varints);
    if frames > limits.max_frames {
        return Err(ProfileError::TooManyFrames {
            frames,
            max: limits.max_frames,
        });
    }
    let values = scan::count(bytes, 2, Repeated::Varints);
    if values > limits.max_sample_types {
        return Err(too_large("values", values, limits.max_sample_types));
    }
    let labels = scan::count(bytes, 3, Repeated::Messages);
    if labels > limits.max_sample_labels {
        return Err(too_large("labels", labels, limits.max_sample_labels));
    }
    Ok(Sample::decode(bytes)?)
}

/// Samples and CPU time of a sample, per [`ValuePick`]; `None` for a sample of no weight.
fn weigh(
    sample: &Sample,
    index: usize,
    pick: ValuePick,
    types: usize,
) -> Result<Option<(u64, u64)>, ProfileError> {
    if sample.value.len() < types {
        return Err(ProfileError::ValueCount {
            sample: index,
            values: sample.value.len(),
            types,
        });
    }
    let value = |idx: Option<usize>| -> Result<Option<u64>, ProfileError> {
        idx.and_then(|k| sample.value.get(k))
            .map(|v| u64::try_from(*v))
            .transpose()
            .map_err(|_| ProfileError::NegativeValue { sample: index })
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
    Ok((samples != 0 || cpu != 0).then_some((samples, cpu)))
}

/// Distinct label sets, and per (label set, location ids) the summed samples and CPU time.
#[derive(Default)]
struct Grouped {
    label_sets: Vec<SampleLabels>,
    label_index: HashMap<Vec<(i64, i64)>, usize>,
    stacks: HashMap<(usize, Vec<u64>), (u64, u64)>,
    /// What the distinct stacks will cost once converted (see `max_frame_bytes`).
    frame_bytes: usize,
}

impl Grouped {
    fn label_set(
        &mut self,
        sample: &Sample,
        s: &Strings<'_, '_>,
        opt: &DecodeOptions<'_>,
    ) -> Result<usize, ProfileError> {
        let mut key: Vec<(i64, i64)> = sample
            .label
            .iter()
            .filter(|l| l.str != 0)
            .map(|l| (l.key, l.str))
            .collect();
        key.sort_unstable();
        if let Some(k) = self.label_index.get(&key) {
            return Ok(*k);
        }
        let mut labels = opt.base.clone();
        for (k, v) in &key {
            labels.apply(s.get(*k, "label.key")?, s.get(*v, "label.str")?);
        }
        labels::validate(&labels, opt.label_limits)?;
        self.label_sets.push(labels);
        self.label_index.insert(key, self.label_sets.len() - 1);
        Ok(self.label_sets.len() - 1)
    }

    /// Adds a stack's weight; a stack met for the first time is checked for depth and paid for
    /// in frame bytes before it is kept.
    fn add(
        &mut self,
        key: (usize, Vec<u64>),
        weight: (u64, u64),
        frames: &Frames<'_>,
        limits: &ProfileLimits,
    ) -> Result<(), ProfileError> {
        if !self.stacks.contains_key(&key) {
            let (mut depth, mut cost) = (0usize, 0usize);
            for id in &key.1 {
                if let Some(loc) = frames.locations.get(id) {
                    depth += loc.len as usize;
                    cost = cost.saturating_add(loc.cost);
                }
            }
            if depth > limits.max_frames {
                return Err(ProfileError::TooManyFrames {
                    frames: depth,
                    max: limits.max_frames,
                });
            }
            self.frame_bytes = self.frame_bytes.saturating_add(cost);
            if self.frame_bytes > limits.max_frame_bytes {
                return Err(ProfileError::FrameBytes {
                    max: limits.max_frame_bytes,
                });
            }
        }
        let e = self.stacks.entry(key).or_default();
        e.0 = e.0.saturating_add(weight.0);
        e.1 = e.1.saturating_add(weight.1);
        Ok(())
    }
}

/// Converts the bytes of a `Profile` message.
fn convert_raw(raw: &[u8], opt: &DecodeOptions<'_>) -> Result<Vec<ProfileBatch>, ProfileError> {
    let limits = opt.limits;
    let p = Scan::of(raw, limits)?;
    if p.strings.first().is_some_and(|s| !s.is_empty()) {
        return Err(ProfileError::StringTableStart);
    }
    let s = Strings(&p.strings);
    let pick = pick_values(&p, &s)?;
    let frames = Frames::build(&p, &s, limits)?;
    let mut grouped = Grouped::default();
    for (i, bytes) in p.samples.iter().enumerate() {
        let sample = decode_sample(bytes, i, limits)?;
        let Some(weight) = weigh(&sample, i, pick, p.sample_types.len())? else {
            continue;
        };
        for id in &sample.location_id {
            if *id == 0 {
                return Err(ProfileError::LocationIdZero { sample: i });
            }
            if !frames.locations.contains_key(id) {
                return Err(ProfileError::UnknownLocation { sample: i, id: *id });
            }
        }
        let set = grouped.label_set(&sample, &s, opt)?;
        grouped.add((set, sample.location_id), weight, &frames, limits)?;
    }
    let ts = if p.time_nanos == 0 {
        opt.now
    } else {
        p.time_nanos
    };
    Ok(batches(grouped, &frames, ts))
}

/// The converted batches: frames named, stacks merged by frames, sorted.
fn batches(grouped: Grouped, frames: &Frames<'_>, ts: i64) -> Vec<ProfileBatch> {
    let mut per_set: Vec<HashMap<Vec<String>, (u64, u64)>> =
        vec![HashMap::new(); grouped.label_sets.len()];
    for ((set, ids), (n, c)) in grouped.stacks {
        let mut names = Vec::with_capacity(ids.len());
        for id in ids.iter().rev() {
            frames.push_names(*id, &mut names);
        }
        if let Some(stacks) = per_set.get_mut(set) {
            let e = stacks.entry(names).or_default();
            e.0 = e.0.saturating_add(n);
            e.1 = e.1.saturating_add(c);
        }
    }
    let mut out: Vec<ProfileBatch> = grouped
        .label_sets
        .into_iter()
        .zip(per_set)
        .map(|(labels, stacks)| batch(ts, labels, stacks))
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    out
}

/// One label set's stacks at `ts` as a batch, with `(samples, cpu_ns)` per stack and the samples
/// sorted by frames (every decoder's output has that order).
pub(crate) fn batch(
    ts: i64,
    labels: SampleLabels,
    stacks: impl IntoIterator<Item = (Vec<String>, (u64, u64))>,
) -> ProfileBatch {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::{Line, ValueType};

    /// A profile of `locations` locations, each of `lines` lines naming one function, and one
    /// sample through all the locations.
    fn profile(name: &str, locations: u64, lines: usize) -> Profile {
        Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            sample: vec![Sample {
                location_id: (1..=locations).collect(),
                value: vec![3],
                label: Vec::new(),
            }],
            location: (1..=locations)
                .map(|id| Location {
                    id,
                    line: vec![
                        Line {
                            function_id: 1,
                            line: 0,
                            column: 0,
                        };
                        lines
                    ],
                    ..Location::default()
                })
                .collect(),
            function: vec![Function {
                id: 1,
                name: 3,
                ..Function::default()
            }],
            string_table: ["", "samples", "count", name].map(str::to_owned).to_vec(),
            ..Profile::default()
        }
    }

    fn convert_with(
        p: &Profile,
        limits: &ProfileLimits,
    ) -> Result<Vec<ProfileBatch>, ProfileError> {
        convert_with_bytes(&p.encode_to_vec(), limits)
    }

    fn convert_with_bytes(
        bytes: &[u8],
        limits: &ProfileLimits,
    ) -> Result<Vec<ProfileBatch>, ProfileError> {
        let base = SampleLabels {
            service: "s".into(),
            ..SampleLabels::default()
        };
        let label_limits = Limits::default();
        let opt = DecodeOptions {
            base: &base,
            limits,
            label_limits: &label_limits,
            now: 1,
        };
        pprof_to_batches(bytes, &opt)
    }

    /// Regression (issue 11): one location listing a 1 KiB name 600,000 times took the server
    /// to 1.2 GB before it was refused; it is now refused by its line count, before decoding.
    #[test]
    fn a_line_bomb_is_refused_by_its_line_count() {
        let bomb = profile(&"f".repeat(1024), 1, 600_000);
        assert!(matches!(
            convert_with(&bomb, &ProfileLimits::default()),
            Err(ProfileError::TooManyLines {
                location: 1,
                lines: 600_000,
                max: 128
            })
        ));
    }

    #[test]
    fn each_count_has_its_cap() {
        let p = profile("work", 3, 2);
        let ok = convert_with(&p, &ProfileLimits::default()).expect("fits");
        assert_eq!(ok[0].samples[0].frames, vec!["work".to_owned(); 6]);
        type Tighten = fn(&mut ProfileLimits);
        let cases: [(Tighten, &str); 5] = [
            (|l| l.max_locations = 2, "3 locations"),
            (|l| l.max_lines = 5, "6 lines in all its locations"),
            (|l| l.max_strings = 3, "4 strings"),
            (|l| l.max_functions = 0, "1 functions"),
            (
                |l| l.max_frame_bytes = 6 * (4 + FRAME_OVERHEAD) - 1,
                "bytes of frames",
            ),
        ];
        for (tighten, needle) in cases {
            let mut limits = ProfileLimits::default();
            tighten(&mut limits);
            let err = convert_with(&p, &limits).expect_err(needle);
            assert!(err.is_too_large(), "{needle}: {err}");
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
        let mut deep = p.clone();
        deep.sample[0].location_id = vec![1; 1025];
        assert!(matches!(
            convert_with(&deep, &ProfileLimits::default()),
            Err(ProfileError::TooManyFrames { frames: 2050, .. })
        ));
        let mut labelled = p;
        labelled.sample[0].label = vec![Default::default(); 65];
        assert!(matches!(
            convert_with(&labelled, &ProfileLimits::default()),
            Err(ProfileError::SampleTooLarge { count: 65, .. })
        ));
    }

    mod properties {
        use super::*;
        use profwatch_testkit::alloc::within;
        use proptest::prelude::*;

        fn limits() -> ProfileLimits {
            ProfileLimits {
                max_frames: 16,
                max_samples: 16,
                max_locations: 16,
                max_lines_per_location: 4,
                max_lines: 32,
                max_functions: 16,
                max_strings: 16,
                max_frame_bytes: 4096,
                ..ProfileLimits::default()
            }
        }

        /// The heap a decode of `bytes` may hold at once: a small multiple of its input and of
        /// the frame bytes the limits allow, never of what the input expands to.
        fn bound(bytes: &[u8], l: &ProfileLimits) -> usize {
            64 * 1024 + 16 * bytes.len() + 4 * l.max_frame_bytes
        }

        fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
            let l = limits();
            let decoded = within("a pprof decode", bound(bytes, &l), || {
                convert_with_bytes(bytes, &l)
            })
            .map_err(TestCaseError::fail)?;
            if let Ok(batches) = decoded {
                for s in batches.iter().flat_map(|b| &b.samples) {
                    prop_assert!(s.frames.len() <= l.max_frames);
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Arbitrary bytes never panic the decoder.
            #[test]
            fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
                check(&bytes)?;
            }

            /// A valid profile with bytes overwritten or cut never panics the decoder, and what
            /// it accepts stays within the caps.
            #[test]
            fn damaged_profiles(
                edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
                cut in any::<usize>(),
                locations in 1u64..6,
                lines in 1usize..4,
            ) {
                let mut bytes = profile("fn", locations, lines).encode_to_vec();
                for (at, b) in edits {
                    let i = at % bytes.len();
                    bytes[i] = b;
                }
                bytes.truncate(bytes.len() - cut % 4);
                check(&bytes)?;
            }

            /// One location listing a long function name many times (the line bomb) is refused
            /// or taken within the bound, whatever its expansion (`lines × name`) would be.
            #[test]
            fn line_bombs_stay_within_the_bound(
                lines in 1usize..20_000,
                name_len in 1usize..4096,
                locations in 1u64..3,
            ) {
                let bytes = profile(&"x".repeat(name_len), locations, lines).encode_to_vec();
                check(&bytes)?;
                // Room for every line; only the frame bytes cap can refuse it.
                let roomy = ProfileLimits {
                    max_frames: 100_000,
                    max_lines_per_location: 100_000,
                    max_lines: 100_000,
                    max_frame_bytes: 64 * 1024,
                    ..ProfileLimits::default()
                };
                let decoded = within("a line bomb's decode", bound(&bytes, &roomy), || {
                    convert_with_bytes(&bytes, &roomy)
                })
                .map_err(TestCaseError::fail)?;
                if let Ok(batches) = decoded {
                    let frame_bytes: usize = batches
                        .iter()
                        .flat_map(|b| &b.samples)
                        .flat_map(|s| &s.frames)
                        .map(|f| f.len())
                        .sum();
                    prop_assert!(frame_bytes <= roomy.max_frame_bytes);
                }
            }
        }
    }
}
