//! The request's `ProfilesDictionary`: the tables every index of its profiles points into.
//!
//! Invariants:
//! - Each table is counted against its cap while the dictionary is scanned, keeping borrowed
//!   slices; an entry is decoded alone, and a location's lines and a stack's locations are
//!   counted before they are decoded.
//! - When the request holds a profile, every table has its zero value at index 0 (a missing or
//!   non-zero element 0 is refused, as the spec requires), and every index in every entry is
//!   checked against its table once, here; the conversion then trusts them.
//! - Frames are interned as in pprof: a location is a run of function indices (or
//!   [`ADDRESS`]), a stack a run of location indices; names are copied only into converted
//!   stacks. A dictionary that arrives in several pieces (protobuf merges repeated
//!   occurrences of a message field) is read as their concatenation.

use profwatch_model::scan::{self, Field, Repeated};
use prost::encoding::{check_wire_type, decode_varint, WireType};
use prost::Message;

use super::proto::{AnyValue, Function, KeyValueAndUnit, Link, Location, Mapping, Value};
use super::{OtlpError, OtlpLimits};
use crate::error::ProfileError;
use crate::limits::{ProfileLimits, FRAME_OVERHEAD};

/// A line whose function has no name: the location's address names the frame.
pub const ADDRESS: u32 = u32::MAX;

/// One location: its frames (a run of `Dictionary::lines`), address, and what its frames cost
/// in a converted stack (names plus [`FRAME_OVERHEAD`] each).
#[derive(Debug, Clone, Copy, Default)]
struct Loc {
    start: u32,
    len: u32,
    address: u64,
    cost: usize,
}

/// The checked tables.
#[derive(Debug)]
pub struct Dictionary<'a> {
    pub strings: Vec<&'a str>,
    /// Per function: its name, else its system name (possibly empty).
    names: Vec<&'a str>,
    /// Function indices (or [`ADDRESS`]) of all locations, root-first within each.
    lines: Vec<u32>,
    locations: Vec<Loc>,
    /// Per stack: a run of `stack_locations`, leaf first as sent.
    stacks: Vec<(u32, u32)>,
    stack_locations: Vec<u32>,
    links: Vec<&'a [u8]>,
    /// `KeyValueAndUnit` messages, each checked.
    pub attributes: Vec<&'a [u8]>,
}

/// Slices kept up to a cap; past it only counted, so that the error gives the real count.
struct Table<'a> {
    items: Vec<&'a [u8]>,
    count: usize,
    max: usize,
    what: &'static str,
}

impl<'a> Table<'a> {
    fn new(what: &'static str, max: usize) -> Self {
        Table {
            items: Vec::new(),
            count: 0,
            max,
            what,
        }
    }

    fn push(&mut self, item: &'a [u8]) {
        self.count += 1;
        if self.count <= self.max {
            self.items.push(item);
        }
    }

    fn done(self) -> Result<Vec<&'a [u8]>, OtlpError> {
        if self.count > self.max {
            return Err(ProfileError::TooMany {
                what: self.what,
                count: self.count,
                max: self.max,
            }
            .into());
        }
        Ok(self.items)
    }
}

/// `index` as a position in a table of `len`, or the error naming both.
pub fn index(
    index: i64,
    len: usize,
    what: &'static str,
    table: &'static str,
) -> Result<usize, OtlpError> {
    usize::try_from(index)
        .ok()
        .filter(|i| *i < len)
        .ok_or(OtlpError::Index {
            what,
            index,
            table,
            len,
        })
}

/// Calls `f` with each value of the repeated varint field `f` holds, packed or not, as protobuf
/// reads an `int32` (the low 32 bits, sign included).
pub fn each_int32(
    field: &Field<'_>,
    what: &'static str,
    mut f: impl FnMut(i32) -> Result<(), OtlpError>,
) -> Result<(), OtlpError> {
    match field.wire_type {
        WireType::Varint => f(field.varint as i32),
        WireType::LengthDelimited => {
            let mut buf = field.payload;
            while !buf.is_empty() {
                let v = decode_varint(&mut buf).map_err(OtlpError::protobuf(what))?;
                f(v as i32)?;
            }
            Ok(())
        }
        other => check_wire_type(WireType::Varint, other).map_err(OtlpError::protobuf(what)),
    }
}

/// The length of `0x{address:x}`.
fn address_len(address: u64) -> usize {
    2 + (64 - address.leading_zeros() as usize).div_ceil(4).max(1)
}

/// Element 0 of `table`, which must decode to `T`'s zero value.
fn zero<T: Message + Default + PartialEq>(
    items: &[&[u8]],
    table: &'static str,
    what: &'static str,
) -> Result<(), OtlpError> {
    let first = items.first().ok_or(OtlpError::ZeroElement {
        table,
        found: "missing",
    })?;
    if T::decode(*first).map_err(OtlpError::protobuf(what))? != T::default() {
        return Err(OtlpError::ZeroElement {
            table,
            found: "not the zero value",
        });
    }
    Ok(())
}

impl<'a> Dictionary<'a> {
    /// Scans, counts and checks the dictionary (the concatenation of `parts`). With
    /// `required`, every table must hold its zero element.
    pub fn read(
        parts: &[&'a [u8]],
        required: bool,
        limits: &ProfileLimits,
        otlp: &OtlpLimits,
    ) -> Result<Dictionary<'a>, OtlpError> {
        let mut mappings = Table::new("entries in dictionary.mapping_table", otlp.max_mappings);
        let mut locations =
            Table::new("entries in dictionary.location_table", limits.max_locations);
        let mut functions =
            Table::new("entries in dictionary.function_table", limits.max_functions);
        let mut links = Table::new("entries in dictionary.link_table", otlp.max_links);
        let mut strings = Table::new("entries in dictionary.string_table", limits.max_strings);
        let mut attributes =
            Table::new("entries in dictionary.attribute_table", otlp.max_attributes);
        let mut stacks = Table::new("entries in dictionary.stack_table", otlp.max_stacks);
        for part in parts {
            for field in scan::fields(part) {
                let f = field.map_err(OtlpError::protobuf("the dictionary"))?;
                let table = match f.number {
                    1 => &mut mappings,
                    2 => &mut locations,
                    3 => &mut functions,
                    4 => &mut links,
                    5 => &mut strings,
                    6 => &mut attributes,
                    7 => &mut stacks,
                    _ => continue,
                };
                check_wire_type(WireType::LengthDelimited, f.wire_type)
                    .map_err(OtlpError::protobuf("the dictionary"))?;
                table.push(f.payload);
            }
        }
        let strings = strings
            .done()?
            .into_iter()
            .map(|s| {
                std::str::from_utf8(s).map_err(|_| {
                    ProfileError::Utf8 {
                        what: "a string of dictionary.string_table",
                    }
                    .into()
                })
            })
            .collect::<Result<Vec<&str>, OtlpError>>()?;
        let mut d = Dictionary {
            strings,
            names: Vec::new(),
            lines: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::new(),
            stack_locations: Vec::new(),
            links: links.done()?,
            attributes: attributes.done()?,
        };
        let (mappings, functions) = (mappings.done()?, functions.done()?);
        let (locations, stacks) = (locations.done()?, stacks.done()?);
        if required {
            if d.strings.first().is_none_or(|s| !s.is_empty()) {
                return Err(OtlpError::ZeroElement {
                    table: "string_table",
                    found: if d.strings.is_empty() {
                        "missing"
                    } else {
                        "not the empty string"
                    },
                });
            }
            zero::<Mapping>(&mappings, "mapping_table", "a mapping")?;
            zero::<Location>(&locations, "location_table", "a location")?;
            zero::<Function>(&functions, "function_table", "a function")?;
            zero::<Link>(&d.links, "link_table", "a link")?;
            zero::<KeyValueAndUnit>(&d.attributes, "attribute_table", "an attribute")?;
            zero::<super::proto::Stack>(&stacks, "stack_table", "a stack")?;
        }
        d.check_attributes(otlp)?;
        d.check_links()?;
        d.check_mappings(&mappings)?;
        d.read_functions(&functions, limits)?;
        d.read_locations(&locations, mappings.len(), limits)?;
        d.read_stacks(&stacks, limits, otlp)?;
        Ok(d)
    }

    /// The string at `i`.
    pub fn string(&self, i: i64, what: &'static str) -> Result<&'a str, OtlpError> {
        Ok(self.strings[index(i, self.strings.len(), what, "string_table")?])
    }

    /// Checks attribute indices against the table.
    pub fn check_attribute_indices(
        &self,
        indices: &[i32],
        what: &'static str,
    ) -> Result<(), OtlpError> {
        for i in indices {
            index(
                i64::from(*i),
                self.attributes.len(),
                what,
                "attribute_table",
            )?;
        }
        Ok(())
    }

    /// Every attribute decodes, and its indices and nesting are within bounds.
    fn check_attributes(&self, otlp: &OtlpLimits) -> Result<(), OtlpError> {
        for bytes in &self.attributes {
            let kv =
                KeyValueAndUnit::decode(*bytes).map_err(OtlpError::protobuf("an attribute"))?;
            self.string(kv.key_strindex.into(), "attribute_table[].key_strindex")?;
            self.string(kv.unit_strindex.into(), "attribute_table[].unit_strindex")?;
            if let Some(v) = &kv.value {
                self.check_value(v, 0, otlp.max_value_depth)?;
            }
        }
        Ok(())
    }

    /// String indices inside `v` are in range and it nests at most `max` deep.
    pub fn check_value(&self, v: &AnyValue, depth: usize, max: usize) -> Result<(), OtlpError> {
        if depth > max {
            return Err(OtlpError::Nesting { max });
        }
        match &v.value {
            Some(Value::StringValueStrindex(i)) => {
                self.string((*i).into(), "an attribute's string_value_strindex")?;
            }
            Some(Value::ArrayValue(a)) => {
                for v in &a.values {
                    self.check_value(v, depth + 1, max)?;
                }
            }
            Some(Value::KvlistValue(kvs)) => {
                for kv in &kvs.values {
                    self.string(kv.key_strindex.into(), "an attribute's key_strindex")?;
                    if let Some(v) = &kv.value {
                        self.check_value(v, depth + 1, max)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn check_links(&self) -> Result<(), OtlpError> {
        for (i, bytes) in self.links.iter().enumerate().skip(1) {
            let l = Link::decode(*bytes).map_err(OtlpError::protobuf("a link"))?;
            for (field, len, expected) in [
                ("trace_id", l.trace_id.len(), 16),
                ("span_id", l.span_id.len(), 8),
            ] {
                if len != expected {
                    return Err(OtlpError::LinkId {
                        link: i,
                        field,
                        len,
                        expected,
                    });
                }
            }
        }
        Ok(())
    }

    /// The trace and span ids of link `i` in hex, `None` for link 0 (no link).
    pub fn link(&self, i: i32) -> Result<Option<(String, String)>, OtlpError> {
        let at = index(
            i.into(),
            self.links.len(),
            "a sample's link_index",
            "link_table",
        )?;
        if at == 0 {
            return Ok(None);
        }
        let l = Link::decode(self.links[at]).map_err(OtlpError::protobuf("a link"))?;
        Ok(Some((hex(&l.trace_id), hex(&l.span_id))))
    }

    fn check_mappings(&self, mappings: &[&[u8]]) -> Result<(), OtlpError> {
        for bytes in mappings {
            let m = Mapping::decode(*bytes).map_err(OtlpError::protobuf("a mapping"))?;
            self.string(
                m.filename_strindex.into(),
                "mapping_table[].filename_strindex",
            )?;
            self.check_attribute_indices(
                &m.attribute_indices,
                "mapping_table[].attribute_indices",
            )?;
        }
        Ok(())
    }

    fn read_functions(
        &mut self,
        functions: &[&[u8]],
        limits: &ProfileLimits,
    ) -> Result<(), OtlpError> {
        self.names.reserve_exact(functions.len());
        for bytes in functions {
            let f = Function::decode(*bytes).map_err(OtlpError::protobuf("a function"))?;
            let mut name = self.string(f.name_strindex.into(), "function_table[].name_strindex")?;
            let system = self.string(
                f.system_name_strindex.into(),
                "function_table[].system_name_strindex",
            )?;
            self.string(
                f.filename_strindex.into(),
                "function_table[].filename_strindex",
            )?;
            if name.is_empty() {
                name = system;
            }
            if name.len() > limits.max_frame_len {
                return Err(ProfileError::FrameTooLong {
                    len: name.len(),
                    max: limits.max_frame_len,
                }
                .into());
            }
            self.names.push(name);
        }
        Ok(())
    }

    fn read_locations(
        &mut self,
        locations: &[&[u8]],
        mappings: usize,
        limits: &ProfileLimits,
    ) -> Result<(), OtlpError> {
        let mut total = 0usize;
        for (i, bytes) in locations.iter().enumerate() {
            let lines = scan::count(bytes, 3, Repeated::Messages);
            if lines > limits.max_lines_per_location {
                return Err(ProfileError::TooManyLines {
                    location: i as u64,
                    lines,
                    max: limits.max_lines_per_location,
                }
                .into());
            }
            total = total.saturating_add(lines.max(1));
        }
        if total > limits.max_lines {
            return Err(ProfileError::TooMany {
                what: "lines in all its locations",
                count: total,
                max: limits.max_lines,
            }
            .into());
        }
        self.lines.reserve_exact(total);
        self.locations.reserve_exact(locations.len());
        for bytes in locations {
            let loc = Location::decode(*bytes).map_err(OtlpError::protobuf("a location"))?;
            index(
                loc.mapping_index.into(),
                mappings,
                "location_table[].mapping_index",
                "mapping_table",
            )?;
            self.check_attribute_indices(
                &loc.attribute_indices,
                "location_table[].attribute_indices",
            )?;
            let start = self.lines.len();
            let addr_cost = address_len(loc.address) + FRAME_OVERHEAD;
            let mut cost = 0usize;
            if loc.lines.is_empty() {
                self.lines.push(ADDRESS);
                cost = addr_cost;
            }
            for line in loc.lines.iter().rev() {
                let f = index(
                    line.function_index.into(),
                    self.names.len(),
                    "location_table[].lines[].function_index",
                    "function_table",
                )?;
                let name = self.names[f];
                if name.is_empty() {
                    self.lines.push(ADDRESS);
                    cost += addr_cost;
                } else {
                    self.lines.push(f as u32);
                    cost += name.len() + FRAME_OVERHEAD;
                }
            }
            self.locations.push(Loc {
                start: start as u32,
                len: (self.lines.len() - start) as u32,
                address: loc.address,
                cost,
            });
        }
        Ok(())
    }

    fn read_stacks(
        &mut self,
        stacks: &[&[u8]],
        limits: &ProfileLimits,
        otlp: &OtlpLimits,
    ) -> Result<(), OtlpError> {
        let mut total = 0usize;
        for bytes in stacks {
            let n = scan::count(bytes, 1, Repeated::Varints);
            if n > limits.max_frames {
                return Err(ProfileError::TooManyFrames {
                    frames: n,
                    max: limits.max_frames,
                }
                .into());
            }
            total = total.saturating_add(n);
        }
        if total > otlp.max_stack_locations {
            return Err(ProfileError::TooMany {
                what: "location indices in dictionary.stack_table",
                count: total,
                max: otlp.max_stack_locations,
            }
            .into());
        }
        self.stack_locations.reserve_exact(total);
        self.stacks.reserve_exact(stacks.len());
        let locations = self.locations.len();
        for (s, bytes) in stacks.iter().enumerate() {
            let start = self.stack_locations.len();
            for field in scan::fields(bytes) {
                let f = field.map_err(OtlpError::protobuf("a stack"))?;
                if f.number != 1 {
                    continue;
                }
                each_int32(&f, "a stack", |i| {
                    let at = index(
                        i.into(),
                        locations,
                        "stack_table[].location_indices",
                        "location_table",
                    )?;
                    if at == 0 {
                        return Err(OtlpError::NullLocation { stack: s });
                    }
                    self.stack_locations.push(at as u32);
                    Ok(())
                })?;
                if self.stack_locations.len() - start > limits.max_frames {
                    return Err(ProfileError::TooManyFrames {
                        frames: self.stack_locations.len() - start,
                        max: limits.max_frames,
                    }
                    .into());
                }
            }
            self.stacks
                .push((start as u32, (self.stack_locations.len() - start) as u32));
        }
        Ok(())
    }

    /// Entries of `stack_table`.
    pub fn stacks(&self) -> usize {
        self.stacks.len()
    }

    /// Entries of `link_table`.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    fn stack_run(&self, stack: usize) -> &[u32] {
        let (start, len) = self.stacks.get(stack).copied().unwrap_or_default();
        self.stack_locations
            .get(start as usize..(start + len) as usize)
            .unwrap_or_default()
    }

    /// Frames in stack `stack` (inlined functions count), and what they cost converted.
    pub fn depth_and_cost(&self, stack: usize) -> (usize, usize) {
        let (mut depth, mut cost) = (0usize, 0usize);
        for l in self.stack_run(stack) {
            if let Some(loc) = self.locations.get(*l as usize) {
                depth += loc.len as usize;
                cost = cost.saturating_add(loc.cost);
            }
        }
        (depth, cost)
    }

    /// The names of stack `stack`'s frames, root-first.
    pub fn frames(&self, stack: usize) -> Vec<String> {
        let run = self.stack_run(stack);
        let mut out = Vec::with_capacity(self.depth_and_cost(stack).0);
        for l in run.iter().rev() {
            let Some(loc) = self.locations.get(*l as usize) else {
                continue;
            };
            let lines = self
                .lines
                .get(loc.start as usize..(loc.start + loc.len) as usize)
                .unwrap_or_default();
            for &f in lines {
                match self.names.get(f as usize) {
                    Some(name) if f != ADDRESS => out.push((*name).to_owned()),
                    _ => out.push(format!("0x{:x}", loc.address)),
                }
            }
        }
        out
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
