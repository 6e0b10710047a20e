//! [`StackProfile`] → pprof (`profile.proto`), the form `go tool pprof` reads.
//!
//! Invariants: `string_table[0]` is `""`; one `Function` and one `Location` (one `Line`) per
//! distinct frame name, with equal non-zero ids; each row becomes one `Sample` whose locations
//! are leaf-first and whose values are `[samples/count, cpu/nanoseconds]`; the row's labels
//! become string labels (`service`, `endpoint`, `build`, `dc`, `host` when not empty, then the
//! extra labels), so [`super::decode`] reads back the same rows.

use std::collections::HashMap;

use profwatch_model::profile::StackProfile;
use prost::Message;

use super::compress::gzip;
use super::pprof::{Function, Label, Line, Location, Profile, Sample, ValueType};

/// Interns strings into a pprof string table.
#[derive(Debug, Default)]
struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, i64>,
}

impl StringTable {
    fn new() -> Self {
        let mut t = StringTable::default();
        t.intern("");
        t
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = i64::try_from(self.strings.len()).unwrap_or(i64::MAX);
        self.strings.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// The time span a profile covers, for `time_nanos` and `duration_nanos`.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub from: i64,
    pub to: i64,
}

/// Builds the profile message.
pub fn to_pprof(profile: &StackProfile, span: Span) -> Profile {
    let mut strings = StringTable::new();
    let mut functions: Vec<Function> = Vec::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut frame_ids: HashMap<&str, u64> = HashMap::new();
    let mut samples = Vec::with_capacity(profile.rows.len());
    let (mut total_n, mut total_cpu) = (0u64, 0u64);
    for row in &profile.rows {
        let mut ids = Vec::with_capacity(row.frames.len());
        for frame in row.frames.iter().rev() {
            let id = match frame_ids.get(frame.as_str()) {
                Some(id) => *id,
                None => {
                    let id = functions.len() as u64 + 1;
                    let name = strings.intern(frame);
                    functions.push(Function {
                        id,
                        name,
                        system_name: name,
                        filename: 0,
                        start_line: 0,
                    });
                    locations.push(Location {
                        id,
                        mapping_id: 0,
                        address: 0,
                        line: vec![Line {
                            function_id: id,
                            line: 0,
                            column: 0,
                        }],
                        is_folded: false,
                    });
                    frame_ids.insert(frame, id);
                    id
                }
            };
            ids.push(id);
        }
        let l = &row.labels;
        let mut label = Vec::new();
        let fixed = [
            ("service", &l.service),
            ("endpoint", &l.endpoint),
            ("build", &l.build),
            ("dc", &l.dc),
            ("host", &l.host),
        ];
        for (k, v) in fixed
            .into_iter()
            .chain(l.extra.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if !v.is_empty() {
                label.push(Label {
                    key: strings.intern(k),
                    str: strings.intern(v),
                    num: 0,
                    num_unit: 0,
                });
            }
        }
        total_n = total_n.saturating_add(row.samples);
        total_cpu = total_cpu.saturating_add(row.cpu_ns);
        samples.push(Sample {
            location_id: ids,
            value: vec![clamp(row.samples), clamp(row.cpu_ns)],
            label,
        });
    }
    let samples_t = ValueType {
        r#type: strings.intern("samples"),
        unit: strings.intern("count"),
    };
    let cpu_t = ValueType {
        r#type: strings.intern("cpu"),
        unit: strings.intern("nanoseconds"),
    };
    Profile {
        sample_type: vec![samples_t, cpu_t],
        sample: samples,
        mapping: Vec::new(),
        location: locations,
        function: functions,
        string_table: strings.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: span.from,
        duration_nanos: span.to.saturating_sub(span.from).max(0),
        period_type: Some(cpu_t),
        period: total_cpu.checked_div(total_n).map_or(0, clamp),
        comment: Vec::new(),
        default_sample_type: cpu_t.r#type,
        doc_url: 0,
    }
}

/// The profile as gzipped protobuf bytes (`.pb.gz`).
pub fn to_pprof_gz(profile: &StackProfile, span: Span) -> Vec<u8> {
    gzip(&to_pprof(profile, span).encode_to_vec())
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
