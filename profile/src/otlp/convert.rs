//! An `ExportProfilesServiceRequest` (protobuf, inflated) → [`ProfileBatch`]es, one per
//! (time, label set).
//!
//! Invariants:
//! - The request is scanned, not decoded: resources, scopes and profiles are borrowed slices,
//!   counted against `max_profiles`; samples are counted against `max_samples` across the whole
//!   request, and each sample is read field by field (values summed as they are read), so a
//!   request costs what its caps allow, never what it expands to.
//! - The dictionary is read and checked once ([`Dictionary`]); every index a profile or sample
//!   holds is checked against it; a field with another wire type than v1.10.0's is an error.
//! - Only CPU profiles are stored (sample type `cpu`/`nanoseconds` or `samples`/`count`); the
//!   others are rejected one by one (`partial_success.rejected_profiles`), the request is not.
//! - Distinct stacks are checked for depth and paid for in `max_frame_bytes` when first met,
//!   as in pprof, with one allowance for the whole request.
//!
//! Values: `samples`/`count` gives samples, and CPU time `samples × period` when the period is
//! in nanoseconds; `cpu`/`nanoseconds` gives CPU time, and samples `round(cpu / period)` (at
//! least 1) when the period is in nanoseconds, else one per observation. A sample's value is
//! the sum of its `values`, or the number of its `timestamps` when it has no values. A batch's
//! time is its profile's `time_unix_nano`, else its earliest sample timestamp, else now.

use std::collections::{BTreeMap, HashMap};

use profwatch_model::profile::{ProfileBatch, SampleLabels};
use profwatch_model::scan::{self, Field, Repeated};
use profwatch_model::Limits;
use prost::encoding::{check_wire_type, decode_varint, WireType};
use prost::Message;

use super::attributes::{self, Attr, Dropped, Level};
use super::dictionary::{each_int32, index, Dictionary};
use super::proto::{KeyValueAndUnit, Resource, ValueType};
use super::{OtlpError, OtlpLimits};
use crate::error::ProfileError;
use crate::limits::ProfileLimits;

/// What a conversion needs besides the bytes.
#[derive(Debug, Clone)]
pub struct OtlpOptions<'a> {
    pub limits: &'a ProfileLimits,
    pub otlp: &'a OtlpLimits,
    pub label_limits: &'a Limits,
    /// The time of profiles that carry none.
    pub now: i64,
}

/// A converted request.
#[derive(Debug, Default)]
pub struct Converted {
    pub batches: Vec<ProfileBatch>,
    /// Profiles converted (possibly with no samples).
    pub profiles: usize,
    /// Profiles left out, and why.
    pub rejected: Vec<Rejected>,
    /// Extra labels left out (by key, up to 64 keys), and why.
    pub dropped: BTreeMap<String, Dropped>,
}

/// A profile left out of an accepted request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Its position in the request (resources, scopes, profiles in order, from 0).
    pub profile: usize,
    /// Its sample type as `type/unit`.
    pub sample_type: String,
}

impl Converted {
    /// `partial_success`: how many profiles were rejected and a message saying what was left
    /// out (rejected profiles, dropped labels), or `None` when nothing was.
    pub fn partial_success(&self) -> Option<(i64, String)> {
        if self.rejected.is_empty() && self.dropped.is_empty() {
            return None;
        }
        let mut parts = Vec::new();
        if !self.rejected.is_empty() {
            let named: Vec<String> = self
                .rejected
                .iter()
                .take(8)
                .map(|r| format!("profile {} ({})", r.profile, r.sample_type))
                .collect();
            let more = self.rejected.len().saturating_sub(named.len());
            parts.push(format!(
                "profiles not stored ({}): this server stores CPU profiles only (sample type \
                 cpu/nanoseconds or samples/count): {}{}",
                self.rejected.len(),
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        if !self.dropped.is_empty() {
            let named: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, why)| {
                    let why = match why {
                        Dropped::Invalid => "key or value past the label limits",
                        Dropped::TooMany => "more labels than the limit",
                        Dropped::Reserved => "a profwatch field name",
                    };
                    format!("{k:?} ({why})")
                })
                .collect();
            parts.push(format!(
                "attributes not kept as labels: {}",
                named.join(", ")
            ));
        }
        Some((self.rejected.len() as i64, parts.join("; ")))
    }
}

/// Converts an inflated `ExportProfilesServiceRequest` (or `ProfilesData`: the same fields).
pub fn convert(raw: &[u8], opt: &OtlpOptions<'_>) -> Result<Converted, OtlpError> {
    let request = Request::scan(raw, opt)?;
    let dict = Dictionary::read(
        &request.dictionary,
        !request.profiles.is_empty(),
        opt.limits,
        opt.otlp,
    )?;
    let mut resources = Vec::with_capacity(request.resources.len());
    for parts in &request.resources {
        resources.push(resource_attrs(parts, &dict, opt.otlp)?);
    }
    let mut c = Conversion {
        dict: &dict,
        opt,
        rendered: HashMap::new(),
        sets: Vec::new(),
        set_index: HashMap::new(),
        stacks: HashMap::new(),
        frame_bytes: 0,
        samples: 0,
        times: vec![opt.now; request.profiles.len()],
        out: Converted::default(),
    };
    for (n, (resource, bytes)) in request.profiles.iter().enumerate() {
        c.profile(n, &resources[*resource], bytes)?;
    }
    Ok(c.finish())
}

/// The request's slices: each resource's `resource` fields, the profiles with the resource
/// they belong to, and the dictionary's pieces.
struct Request<'a> {
    resources: Vec<Vec<&'a [u8]>>,
    profiles: Vec<(usize, &'a [u8])>,
    dictionary: Vec<&'a [u8]>,
}

fn fields<'a>(
    msg: &'a [u8],
    what: &'static str,
) -> impl Iterator<Item = Result<Field<'a>, OtlpError>> {
    scan::fields(msg).map(move |f| f.map_err(OtlpError::protobuf(what)))
}

fn wire(f: &Field<'_>, expected: WireType, what: &'static str) -> Result<(), OtlpError> {
    check_wire_type(expected, f.wire_type).map_err(OtlpError::protobuf(what))
}

impl<'a> Request<'a> {
    fn scan(raw: &'a [u8], opt: &OtlpOptions<'_>) -> Result<Request<'a>, OtlpError> {
        const WHAT: &str = "the request";
        let max = opt.otlp.max_profiles;
        let mut r = Request {
            resources: Vec::new(),
            profiles: Vec::new(),
            dictionary: Vec::new(),
        };
        let mut profiles = 0usize;
        for field in fields(raw, WHAT) {
            let f = field?;
            match f.number {
                1 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    let at = r.resources.len();
                    if at >= max {
                        return Err(too_many_profiles(at + 1, max));
                    }
                    r.resources.push(Vec::new());
                    r.scan_resource(f.payload, at, &mut profiles, max)?;
                }
                2 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    r.dictionary.push(f.payload);
                }
                _ => {}
            }
        }
        Ok(r)
    }

    fn scan_resource(
        &mut self,
        msg: &'a [u8],
        at: usize,
        profiles: &mut usize,
        max: usize,
    ) -> Result<(), OtlpError> {
        const WHAT: &str = "a ResourceProfiles";
        for field in fields(msg, WHAT) {
            let f = field?;
            match f.number {
                1 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    self.resources[at].push(f.payload);
                }
                2 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    for field in fields(f.payload, "a ScopeProfiles") {
                        let p = field?;
                        match p.number {
                            2 => {
                                wire(&p, WireType::LengthDelimited, "a ScopeProfiles")?;
                                *profiles += 1;
                                if *profiles > max {
                                    return Err(too_many_profiles(*profiles, max));
                                }
                                self.profiles.push((at, p.payload));
                            }
                            1 | 3 => wire(&p, WireType::LengthDelimited, "a ScopeProfiles")?,
                            _ => {}
                        }
                    }
                }
                3 => wire(&f, WireType::LengthDelimited, WHAT)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn too_many_profiles(count: usize, max: usize) -> OtlpError {
    ProfileError::TooMany {
        what: "profiles (or resources) in one request",
        count,
        max,
    }
    .into()
}

/// The attributes of a resource (its `resource` occurrences merged, as protobuf does).
fn resource_attrs(
    parts: &[&[u8]],
    dict: &Dictionary<'_>,
    otlp: &OtlpLimits,
) -> Result<Vec<Attr>, OtlpError> {
    let count: usize = parts
        .iter()
        .map(|p| scan::count(p, 1, Repeated::Messages))
        .sum();
    if count > otlp.max_resource_attributes {
        return Err(ProfileError::TooMany {
            what: "attributes of one resource",
            count,
            max: otlp.max_resource_attributes,
        }
        .into());
    }
    let mut resource = Resource::default();
    for p in parts {
        resource
            .merge(*p)
            .map_err(OtlpError::protobuf("a resource"))?;
    }
    let mut out = Vec::with_capacity(resource.attributes.len());
    for kv in &resource.attributes {
        let key = if kv.key.is_empty() {
            dict.string(
                kv.key_strindex.into(),
                "a resource attribute's key_strindex",
            )?
        } else {
            kv.key.as_str()
        };
        let value = match &kv.value {
            Some(v) => {
                dict.check_value(v, 0, otlp.max_value_depth)?;
                attributes::text(v, &dict.strings)
            }
            None => Ok(String::new()),
        };
        out.push(Attr {
            level: Level::Resource,
            key: key.to_owned(),
            value,
        });
    }
    Ok(out)
}

/// What a profile's values mean.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `samples`/`count`.
    Samples,
    /// `cpu`/`nanoseconds`.
    Cpu,
}

/// One sample, read field by field.
#[derive(Debug, Default)]
struct SampleFields {
    stack: i32,
    attributes: Vec<i32>,
    link: i32,
    sum: u64,
    values: usize,
    timestamps: usize,
    earliest: Option<u64>,
}

/// A label set: the profile it came from (for its time) and the labels.
struct Set {
    profile: usize,
    labels: SampleLabels,
}

/// The state of one request's conversion.
struct Conversion<'d, 'a, 'o> {
    dict: &'d Dictionary<'a>,
    opt: &'o OtlpOptions<'o>,
    /// Attribute-table entries met so far, as text.
    rendered: HashMap<usize, Attr>,
    sets: Vec<Set>,
    /// (profile, sample attribute indices sorted, link index) → label set.
    set_index: HashMap<(usize, Vec<i32>, i32), usize>,
    /// Per (label set, stack index): samples and CPU time.
    stacks: HashMap<(usize, u32), (u64, u64)>,
    /// What the distinct stacks will cost once converted (see `max_frame_bytes`).
    frame_bytes: usize,
    /// Samples met so far in the request.
    samples: usize,
    /// Per profile: the time of its batches.
    times: Vec<i64>,
    out: Converted,
}

/// A fixed64 from its 8 little-endian bytes (the scanner checked the width).
fn fixed64(payload: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = payload.len().min(8);
    b[..n].copy_from_slice(&payload[..n]);
    u64::from_le_bytes(b)
}

/// Samples and CPU time of a sample, per its profile's kind; `None` for a sample of no weight.
fn weigh(s: &SampleFields, kind: Kind, period_ns: Option<u64>) -> Option<(u64, u64)> {
    let value = if s.values > 0 {
        s.sum
    } else {
        s.timestamps as u64
    };
    let observations = s.values.max(s.timestamps) as u64;
    let (samples, cpu) = match kind {
        Kind::Samples => (value, period_ns.map_or(0, |p| value.saturating_mul(p))),
        Kind::Cpu => {
            let n = match period_ns {
                Some(p) => value.saturating_add(p / 2) / p,
                None => observations,
            };
            (if n == 0 && value > 0 { 1 } else { n }, value)
        }
    };
    (samples != 0 || cpu != 0).then_some((samples, cpu))
}

impl Conversion<'_, '_, '_> {
    /// The attribute at `i` of the attribute table (checked before), as text.
    fn attribute(&mut self, i: usize, level: Level) -> Result<Attr, OtlpError> {
        if let Some(a) = self.rendered.get(&i) {
            return Ok(Attr { level, ..a.clone() });
        }
        let bytes = self.dict.attributes.get(i).copied().unwrap_or_default();
        let kv = KeyValueAndUnit::decode(bytes).map_err(OtlpError::protobuf("an attribute"))?;
        let key = self
            .dict
            .string(kv.key_strindex.into(), "attribute_table[].key_strindex")?;
        let value = match &kv.value {
            Some(v) => attributes::text(v, &self.dict.strings),
            None => Ok(String::new()),
        };
        let a = Attr {
            level,
            key: key.to_owned(),
            value,
        };
        self.rendered.insert(i, a.clone());
        Ok(a)
    }

    fn profile(&mut self, n: usize, resource: &[Attr], msg: &[u8]) -> Result<(), OtlpError> {
        const WHAT: &str = "a profile";
        let (mut sample_type, mut period_type) = (ValueType::default(), ValueType::default());
        let (mut time, mut period) = (0u64, 0i64);
        let mut samples = Vec::new();
        let mut attrs = Vec::new();
        let max_attrs = self.opt.limits.max_sample_labels;
        for field in fields(msg, WHAT) {
            let f = field?;
            match f.number {
                1 | 5 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    let vt = if f.number == 1 {
                        &mut sample_type
                    } else {
                        &mut period_type
                    };
                    vt.merge(f.payload).map_err(OtlpError::protobuf(WHAT))?;
                }
                2 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    self.samples += 1;
                    if self.samples > self.opt.limits.max_samples {
                        return Err(ProfileError::TooManySamples {
                            samples: self.samples,
                            max: self.opt.limits.max_samples,
                        }
                        .into());
                    }
                    samples.push(f.payload);
                }
                3 => {
                    wire(&f, WireType::SixtyFourBit, WHAT)?;
                    time = fixed64(f.payload);
                }
                4 | 8 => wire(&f, WireType::Varint, WHAT)?,
                6 => {
                    wire(&f, WireType::Varint, WHAT)?;
                    period = f.varint as i64;
                }
                7 | 10 => wire(&f, WireType::LengthDelimited, WHAT)?,
                9 => {
                    wire(&f, WireType::LengthDelimited, WHAT)?;
                    std::str::from_utf8(f.payload).map_err(|_| ProfileError::Utf8 {
                        what: "a profile's original_payload_format",
                    })?;
                }
                11 => each_int32(&f, WHAT, |i| {
                    attrs.push(i);
                    if attrs.len() > max_attrs {
                        return Err(ProfileError::TooMany {
                            what: "attributes on one profile",
                            count: attrs.len(),
                            max: max_attrs,
                        }
                        .into());
                    }
                    Ok(())
                })?,
                _ => {}
            }
        }
        let d = self.dict;
        let ty = d.string(
            sample_type.type_strindex.into(),
            "sample_type.type_strindex",
        )?;
        let unit = d.string(
            sample_type.unit_strindex.into(),
            "sample_type.unit_strindex",
        )?;
        d.string(
            period_type.type_strindex.into(),
            "period_type.type_strindex",
        )?;
        let period_unit = d.string(
            period_type.unit_strindex.into(),
            "period_type.unit_strindex",
        )?;
        d.check_attribute_indices(&attrs, "a profile's attribute_indices")?;
        let kind = match (ty, unit) {
            ("samples", "count") => Kind::Samples,
            ("cpu", "nanoseconds") => Kind::Cpu,
            _ => {
                self.out.rejected.push(Rejected {
                    profile: n,
                    sample_type: format!("{ty}/{unit}"),
                });
                return Ok(());
            }
        };
        let period_ns = (period_unit == "nanoseconds" && period > 0).then_some(period as u64);
        let mut base = resource.to_vec();
        for i in attrs.iter().filter(|i| **i != 0) {
            base.push(self.attribute(*i as usize, Level::Profile)?);
        }
        let mut earliest: Option<u64> = None;
        for bytes in samples {
            let s = self.read_sample(bytes)?;
            earliest = match (earliest, s.earliest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(weight) = weigh(&s, kind, period_ns) else {
                continue;
            };
            let set = self.label_set(n, &base, &s)?;
            self.add(set, s.stack as u32, weight)?;
        }
        self.out.profiles += 1;
        if let Some(t) = Some(time).filter(|t| *t > 0).or(earliest) {
            self.times[n] = i64::try_from(t).unwrap_or(i64::MAX);
        }
        Ok(())
    }

    /// Reads a sample field by field, counting its attributes and observations, and checks
    /// its indices.
    fn read_sample(&self, msg: &[u8]) -> Result<SampleFields, OtlpError> {
        const WHAT: &str = "a sample";
        let sample = self.samples;
        let max_attrs = self.opt.limits.max_sample_labels;
        let mut s = SampleFields::default();
        for field in fields(msg, WHAT) {
            let f = field?;
            match f.number {
                1 | 3 => {
                    wire(&f, WireType::Varint, WHAT)?;
                    if f.number == 1 {
                        s.stack = f.varint as i32;
                    } else {
                        s.link = f.varint as i32;
                    }
                }
                2 => each_int32(&f, WHAT, |i| {
                    s.attributes.push(i);
                    if s.attributes.len() > max_attrs {
                        return Err(ProfileError::SampleTooLarge {
                            sample,
                            what: "attributes",
                            count: s.attributes.len(),
                            max: max_attrs,
                        }
                        .into());
                    }
                    Ok(())
                })?,
                4 => each_varint(&f, WHAT, |v| {
                    let v = u64::try_from(v as i64)
                        .map_err(|_| ProfileError::NegativeValue { sample })?;
                    s.sum = s.sum.saturating_add(v);
                    s.values += 1;
                    Ok(())
                })?,
                5 => each_fixed64(&f, WHAT, |t| {
                    s.timestamps += 1;
                    s.earliest = Some(s.earliest.map_or(t, |e| e.min(t)));
                })?,
                _ => {}
            }
        }
        if (s.values == 0 && s.timestamps == 0)
            || (s.values > 0 && s.timestamps > 0 && s.values != s.timestamps)
        {
            return Err(OtlpError::Observations {
                sample,
                values: s.values,
                timestamps: s.timestamps,
            });
        }
        let d = self.dict;
        index(
            s.stack.into(),
            d.stacks(),
            "a sample's stack_index",
            "stack_table",
        )?;
        index(
            s.link.into(),
            d.links(),
            "a sample's link_index",
            "link_table",
        )?;
        d.check_attribute_indices(&s.attributes, "a sample's attribute_indices")?;
        s.attributes.sort_unstable();
        s.attributes.dedup();
        Ok(s)
    }

    /// The label set of a sample of profile `n`, made the first time it is met.
    fn label_set(&mut self, n: usize, base: &[Attr], s: &SampleFields) -> Result<usize, OtlpError> {
        let key = (n, s.attributes.clone(), s.link);
        if let Some(set) = self.set_index.get(&key) {
            return Ok(*set);
        }
        let mut attrs = base.to_vec();
        for i in &s.attributes {
            if *i != 0 {
                attrs.push(self.attribute(*i as usize, Level::Sample)?);
            }
        }
        if let Some((trace, span)) = self.dict.link(s.link)? {
            for (key, value) in [("trace_id", trace), ("span_id", span)] {
                attrs.push(Attr {
                    level: Level::Link,
                    key: key.to_owned(),
                    value: Ok(value),
                });
            }
        }
        let labels = attributes::labels(&attrs, self.opt.label_limits, &mut self.out.dropped)?;
        self.sets.push(Set { profile: n, labels });
        self.set_index.insert(key, self.sets.len() - 1);
        Ok(self.sets.len() - 1)
    }

    /// Adds a stack's weight; a stack met for the first time in a label set is checked for
    /// depth and paid for in frame bytes before it is kept.
    fn add(&mut self, set: usize, stack: u32, weight: (u64, u64)) -> Result<(), OtlpError> {
        let limits = self.opt.limits;
        if !self.stacks.contains_key(&(set, stack)) {
            let (depth, cost) = self.dict.depth_and_cost(stack as usize);
            if depth > limits.max_frames {
                return Err(ProfileError::TooManyFrames {
                    frames: depth,
                    max: limits.max_frames,
                }
                .into());
            }
            self.frame_bytes = self.frame_bytes.saturating_add(cost);
            if self.frame_bytes > limits.max_frame_bytes {
                return Err(ProfileError::FrameBytes {
                    max: limits.max_frame_bytes,
                }
                .into());
            }
        }
        let e = self.stacks.entry((set, stack)).or_default();
        e.0 = e.0.saturating_add(weight.0);
        e.1 = e.1.saturating_add(weight.1);
        Ok(())
    }

    /// The batches: frames named, stacks merged by frames and batches by (time, labels), sorted.
    fn finish(mut self) -> Converted {
        type Stacks = HashMap<Vec<String>, (u64, u64)>;
        let mut per_set: Vec<Stacks> = vec![HashMap::new(); self.sets.len()];
        for ((set, stack), (n, c)) in std::mem::take(&mut self.stacks) {
            let frames = self.dict.frames(stack as usize);
            if let Some(stacks) = per_set.get_mut(set) {
                let e = stacks.entry(frames).or_default();
                e.0 = e.0.saturating_add(n);
                e.1 = e.1.saturating_add(c);
            }
        }
        let mut merged: BTreeMap<(i64, SampleLabels), Stacks> = BTreeMap::new();
        for (set, stacks) in std::mem::take(&mut self.sets).into_iter().zip(per_set) {
            if stacks.is_empty() {
                continue;
            }
            let ts = self.times.get(set.profile).copied().unwrap_or(self.opt.now);
            let into = merged.entry((ts, set.labels)).or_default();
            for (frames, (n, c)) in stacks {
                let e = into.entry(frames).or_default();
                e.0 = e.0.saturating_add(n);
                e.1 = e.1.saturating_add(c);
            }
        }
        self.out.batches = merged
            .into_iter()
            .map(|((ts, labels), stacks)| crate::decode::batch(ts, labels, stacks))
            .collect();
        self.out
    }
}

/// Calls `f` with each value of the repeated varint field `f` holds, packed or not.
fn each_varint(
    field: &Field<'_>,
    what: &'static str,
    mut f: impl FnMut(u64) -> Result<(), OtlpError>,
) -> Result<(), OtlpError> {
    match field.wire_type {
        WireType::Varint => f(field.varint),
        WireType::LengthDelimited => {
            let mut buf = field.payload;
            while !buf.is_empty() {
                f(decode_varint(&mut buf).map_err(OtlpError::protobuf(what))?)?;
            }
            Ok(())
        }
        other => check_wire_type(WireType::Varint, other).map_err(OtlpError::protobuf(what)),
    }
}

/// Calls `f` with each value of the repeated fixed64 field `f` holds, packed or not.
fn each_fixed64(
    field: &Field<'_>,
    what: &'static str,
    mut f: impl FnMut(u64),
) -> Result<(), OtlpError> {
    match field.wire_type {
        WireType::SixtyFourBit => f(fixed64(field.payload)),
        WireType::LengthDelimited => {
            if !field.payload.len().is_multiple_of(8) {
                return Err(OtlpError::PackedFixed64 {
                    what,
                    len: field.payload.len(),
                });
            }
            for chunk in field.payload.chunks_exact(8) {
                f(fixed64(chunk));
            }
        }
        other => {
            check_wire_type(WireType::SixtyFourBit, other).map_err(OtlpError::protobuf(what))?
        }
    }
    Ok(())
}
