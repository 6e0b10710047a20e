//! The conversion end to end on requests built with the message types: mapping, values,
//! links, every refusal, and properties (arbitrary and damaged bytes never panic).

use prost::Message;

use super::proto::*;
use super::*;
use crate::compress::Unmetered;
use crate::limits::ProfileLimits;
use profwatch_model::Limits;

/// Strings of [`request`]'s dictionary.
const STRINGS: &[&str] = &[
    "",
    "samples",
    "count",
    "cpu",
    "nanoseconds",
    "main",
    "handle",
    "parse",
    "http.route",
    "/users/{id}",
    "http.request.method",
    "GET",
    "thread.name",
    "worker-1",
];

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

fn strindex_attr(key: i32, value: i32) -> KeyValueAndUnit {
    KeyValueAndUnit {
        key_strindex: key,
        value: Some(AnyValue {
            value: Some(Value::StringValueStrindex(value)),
        }),
        unit_strindex: 0,
    }
}

fn sample(stack: i32, attrs: Vec<i32>, link: i32, values: Vec<i64>) -> Sample {
    Sample {
        stack_index: stack,
        attribute_indices: attrs,
        link_index: link,
        values,
        timestamps_unix_nano: Vec::new(),
    }
}

/// One resource (shop, build 812, host h1, zone eu-1a), one `samples/count` profile with a
/// period of 10 ms of CPU: main → handle (GET /users/{id}, thread worker-1, a trace link) ×3,
/// main → handle → parse ×2 (parse inlined into handle at one address), main alone ×1.
fn request() -> ExportProfilesServiceRequest {
    let function = |name| Function {
        name_strindex: name,
        ..Function::default()
    };
    let line = |f| Line {
        function_index: f,
        line: 0,
        column: 0,
    };
    let location = |lines: Vec<Line>| Location {
        mapping_index: 0,
        address: 0x1000,
        lines,
        attribute_indices: Vec::new(),
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "shop"),
                    kv("service.version", "812"),
                    kv("host.name", "h1"),
                    kv("cloud.region", "eu"),
                    kv("cloud.availability_zone", "eu-1a"),
                    kv("os.type", "linux"),
                ],
                ..Resource::default()
            }),
            scope_profiles: vec![ScopeProfiles {
                profiles: vec![Profile {
                    sample_type: Some(ValueType {
                        type_strindex: 1,
                        unit_strindex: 2,
                    }),
                    period_type: Some(ValueType {
                        type_strindex: 3,
                        unit_strindex: 4,
                    }),
                    period: 10_000_000,
                    time_unix_nano: 1_700_000_000_000_000_000,
                    samples: vec![
                        sample(1, vec![1, 2, 3], 1, vec![3]),
                        sample(2, vec![], 0, vec![1, 1]),
                        sample(3, vec![], 0, vec![1]),
                    ],
                    ..Profile::default()
                }],
                ..ScopeProfiles::default()
            }],
            ..ResourceProfiles::default()
        }],
        dictionary: Some(ProfilesDictionary {
            mapping_table: vec![Mapping::default()],
            location_table: vec![
                Location::default(),
                location(vec![line(1)]),
                location(vec![line(2)]),
                location(vec![line(3), line(2)]),
            ],
            function_table: vec![Function::default(), function(5), function(6), function(7)],
            link_table: vec![
                Link::default(),
                Link {
                    trace_id: (1..=16).collect(),
                    span_id: (1..=8).collect(),
                },
            ],
            string_table: STRINGS.iter().map(|s| (*s).to_owned()).collect(),
            attribute_table: vec![
                KeyValueAndUnit::default(),
                strindex_attr(8, 9),
                strindex_attr(10, 11),
                strindex_attr(12, 13),
            ],
            stack_table: vec![
                Stack::default(),
                Stack {
                    location_indices: vec![2, 1],
                },
                Stack {
                    location_indices: vec![3, 1],
                },
                Stack {
                    location_indices: vec![1],
                },
            ],
        }),
    }
}

fn convert_with(bytes: &[u8], limits: &ProfileLimits) -> Result<Converted, OtlpError> {
    convert(
        bytes,
        &OtlpOptions {
            limits,
            otlp: &OtlpLimits::default(),
            label_limits: &Limits::default(),
            now: 5,
        },
    )
}

fn run(req: &ExportProfilesServiceRequest) -> Result<Converted, OtlpError> {
    convert_with(&req.encode_to_vec(), &ProfileLimits::default())
}

fn frames(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn a_profile_converts_with_its_labels_values_and_link() {
    let c = run(&request()).expect("converts");
    assert_eq!((c.profiles, c.rejected.len()), (1, 0));
    assert_eq!(c.partial_success(), None);
    assert_eq!(c.batches.len(), 2);
    let plain = &c.batches[0];
    assert_eq!(plain.ts, 1_700_000_000_000_000_000);
    let l = &plain.labels;
    assert_eq!(
        (&*l.service, &*l.build, &*l.host, &*l.dc, &*l.endpoint),
        ("shop", "812", "h1", "eu-1a", "")
    );
    assert_eq!(l.extra.get("os.type").map(String::as_str), Some("linux"));
    let got: Vec<(Vec<String>, u64, u64)> = plain
        .samples
        .iter()
        .map(|s| (s.frames.clone(), s.samples, s.cpu_ns))
        .collect();
    assert_eq!(
        got,
        vec![
            (frames(&["main"]), 1, 10_000_000),
            (frames(&["main", "handle", "parse"]), 2, 20_000_000),
        ]
    );
    let linked = &c.batches[1];
    assert_eq!(linked.labels.endpoint, "GET /users/{id}");
    assert_eq!(
        linked.labels.extra.get("thread.name").map(String::as_str),
        Some("worker-1")
    );
    assert_eq!(
        linked.labels.extra.get("trace_id").map(String::as_str),
        Some("0102030405060708090a0b0c0d0e0f10")
    );
    assert_eq!(
        linked.labels.extra.get("span_id").map(String::as_str),
        Some("0102030405060708")
    );
    assert_eq!(linked.samples[0].frames, frames(&["main", "handle"]));
    assert_eq!(
        (linked.samples[0].samples, linked.samples[0].cpu_ns),
        (3, 30_000_000)
    );
}

#[test]
fn cpu_profiles_and_timestamps() {
    let mut req = request();
    let p = &mut req.resource_profiles[0].scope_profiles[0].profiles[0];
    p.sample_type = Some(ValueType {
        type_strindex: 3,
        unit_strindex: 4,
    });
    p.time_unix_nano = 0;
    p.samples = vec![
        // 25 ms at a 10 ms period: 3 samples (rounded), at the earliest timestamp.
        Sample {
            values: vec![15_000_000, 10_000_000],
            timestamps_unix_nano: vec![900, 800],
            ..sample(3, vec![], 0, vec![])
        },
        // Timestamps alone: one per observation, 1 ns each.
        Sample {
            timestamps_unix_nano: vec![1000, 1001],
            ..sample(1, vec![], 0, vec![])
        },
    ];
    let c = run(&req).expect("converts");
    let b = &c.batches[0];
    assert_eq!(b.ts, 800);
    let got: Vec<(u64, u64)> = b.samples.iter().map(|s| (s.samples, s.cpu_ns)).collect();
    assert_eq!(got, vec![(3, 25_000_000), (1, 2)]);
}

#[test]
fn other_sample_types_are_rejected_one_by_one() {
    let mut req = request();
    let mut alloc = req.resource_profiles[0].scope_profiles[0].profiles[0].clone();
    alloc.sample_type = Some(ValueType {
        type_strindex: 7,
        unit_strindex: 2,
    });
    req.resource_profiles[0].scope_profiles[0]
        .profiles
        .push(alloc);
    let c = run(&req).expect("converts");
    assert_eq!(c.profiles, 1);
    let (rejected, message) = c.partial_success().expect("partial success");
    assert_eq!(rejected, 1);
    assert!(message.contains("profile 1 (parse/count)"), "{message}");
}

#[test]
fn labels_past_the_limits_are_dropped_and_named() {
    let mut req = request();
    let resource = req.resource_profiles[0]
        .resource
        .as_mut()
        .expect("resource");
    resource
        .attributes
        .push(kv("process.command_line", &"x".repeat(200)));
    let c = run(&req).expect("converts");
    let (rejected, message) = c.partial_success().expect("a warning");
    assert_eq!(rejected, 0);
    assert!(message.contains("\"process.command_line\""), "{message}");
    assert!(c.batches[0].labels.extra.contains_key("os.type"));
}

#[test]
fn json_and_protobuf_convert_alike() {
    let json = r#"{
      "resourceProfiles": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "shop"}}]},
        "scopeProfiles": [{"profiles": [{
          "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
          "timeUnixNano": "1700000000000000000",
          "samples": [{"stackIndex": 1, "values": ["4"]}]
        }]}]
      }],
      "dictionary": {
        "mappingTable": [{}], "locationTable": [{}, {"lines": [{"functionIndex": 1}]}],
        "functionTable": [{}, {"nameStrindex": 3}], "linkTable": [{}],
        "stringTable": ["", "samples", "count", "main"], "attributeTable": [{}],
        "stackTable": [{}, {"locationIndices": [1]}]
      }
    }"#;
    let bytes = json::to_protobuf(json.as_bytes(), 1 << 20, &mut Unmetered).expect("json");
    let c = convert_with(&bytes, &ProfileLimits::default()).expect("converts");
    assert_eq!(c.batches[0].labels.service, "shop");
    assert_eq!(c.batches[0].samples[0].frames, frames(&["main"]));
    assert_eq!(c.batches[0].samples[0].samples, 4);
}

/// Each bad request, and the error it gets.
#[test]
fn bad_requests_are_refused_with_what_to_fix() {
    type Break = fn(&mut ExportProfilesServiceRequest);
    fn dict(r: &mut ExportProfilesServiceRequest) -> &mut ProfilesDictionary {
        r.dictionary.get_or_insert_with(Default::default)
    }
    fn first(r: &mut ExportProfilesServiceRequest) -> &mut Profile {
        &mut r.resource_profiles[0].scope_profiles[0].profiles[0]
    }
    let cases: [(Break, &str); 14] = [
        (
            |r| first(r).samples[0].stack_index = 9,
            "stack_index is 9, but dictionary.stack_table has 4",
        ),
        (|r| first(r).samples[0].link_index = -1, "link_index is -1"),
        (
            |r| first(r).samples[0].attribute_indices = vec![4],
            "attribute_indices is 4",
        ),
        (
            |r| dict(r).stack_table[1].location_indices = vec![7],
            "location_indices is 7",
        ),
        (
            |r| dict(r).location_table[1].lines[0].function_index = 4,
            "function_index is 4",
        ),
        (
            |r| dict(r).location_table[1].mapping_index = 1,
            "mapping_index is 1",
        ),
        (
            |r| dict(r).function_table[1].name_strindex = 99,
            "name_strindex is 99",
        ),
        (
            |r| dict(r).mapping_table.clear(),
            "mapping_table[0] must be the zero value (index 0 means unset), but it is missing",
        ),
        (
            |r| dict(r).link_table[0].span_id = vec![1],
            "link_table[0] must be the zero value",
        ),
        (
            |r| dict(r).string_table[0] = "x".into(),
            "string_table[0] must be the zero value",
        ),
        (
            |r| dict(r).stack_table[1].location_indices = vec![0],
            "lists location 0",
        ),
        (
            |r| dict(r).link_table[1].trace_id = vec![1; 3],
            "trace_id is 3 bytes; it must be 16",
        ),
        (
            |r| first(r).samples[0].values.clear(),
            "has 0 values and 0 timestamps",
        ),
        (|r| first(r).samples[0].values = vec![-1], "negative"),
    ];
    for (break_it, needle) in cases {
        let mut req = request();
        break_it(&mut req);
        let err = run(&req).expect_err(needle);
        assert!(!err.is_too_large(), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

/// An attribute value nesting arrays deeper than the cap is refused; the schema has no
/// references back up its tables, so that is the only unbounded shape ("cycles" cannot be
/// written), and a recursive stack (one location many times) is bounded by the frame cap.
#[test]
fn deep_values_and_recursive_stacks_are_bounded() {
    let mut req = request();
    let mut v = AnyValue {
        value: Some(Value::IntValue(1)),
    };
    for _ in 0..20 {
        v = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue { values: vec![v] })),
        };
    }
    req.dictionary.as_mut().expect("dict").attribute_table[1].value = Some(v);
    assert!(matches!(run(&req), Err(OtlpError::Nesting { max: 16 })));

    let mut req = request();
    req.dictionary.as_mut().expect("dict").stack_table[1].location_indices = vec![1; 2049];
    assert!(matches!(
        run(&req),
        Err(OtlpError::Profile(crate::ProfileError::TooManyFrames {
            frames: 2049,
            ..
        }))
    ));
    let mut req = request();
    req.dictionary.as_mut().expect("dict").stack_table[1].location_indices = vec![2, 1, 2, 1];
    let c = run(&req).expect("a recursive stack is a stack");
    assert_eq!(
        c.batches[1].samples[0].frames,
        frames(&["main", "handle", "main", "handle"])
    );
}

#[test]
fn each_count_has_its_cap() {
    let bytes = request().encode_to_vec();
    type Tighten = fn(&mut ProfileLimits);
    let cases: [(Tighten, &str); 4] = [
        (|l| l.max_samples = 2, "3 samples"),
        (
            |l| l.max_locations = 3,
            "4 entries in dictionary.location_table",
        ),
        (
            |l| l.max_strings = 10,
            "14 entries in dictionary.string_table",
        ),
        (|l| l.max_frame_bytes = 10, "bytes of frames"),
    ];
    for (tighten, needle) in cases {
        let mut limits = ProfileLimits::default();
        tighten(&mut limits);
        let err = convert_with(&bytes, &limits).expect_err(needle);
        assert!(err.is_too_large(), "{needle}: {err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
}

/// A field sent with another wire type than v1.10.0's (here `Profile.time_unix_nano`, a
/// `uint64` varint before v1.9, a `fixed64` now) is refused, not misread.
#[test]
fn another_release_of_the_format_is_refused_not_misread() {
    let mut p = Vec::new();
    // Profile { field 3 as a varint = 5 }.
    p.extend_from_slice(&[0x18, 5]);
    let mut scope = vec![0x12, p.len() as u8];
    scope.extend_from_slice(&p);
    let mut resource = vec![0x12, scope.len() as u8];
    resource.extend_from_slice(&scope);
    let mut req = vec![0x0a, resource.len() as u8];
    req.extend_from_slice(&resource);
    let dict = request().dictionary.expect("dictionary").encode_to_vec();
    req.push(0x12);
    prost::encoding::encode_varint(dict.len() as u64, &mut req);
    req.extend_from_slice(&dict);
    let err = convert_with(&req, &ProfileLimits::default()).expect_err("wire type");
    assert!(
        matches!(
            err,
            OtlpError::Protobuf {
                what: "a profile",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("v1.10.0"), "{err}");
}

#[test]
fn an_empty_request_is_nothing() {
    let c = convert_with(&[], &ProfileLimits::default()).expect("empty");
    assert!(c.batches.is_empty());
    assert_eq!(c.profiles, 0);
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
            max_strings: 32,
            max_frame_bytes: 4096,
            ..ProfileLimits::default()
        }
    }

    fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
        let l = limits();
        // A small multiple of the input and of the frame bytes allowed.
        let bound = 64 * 1024 + 16 * bytes.len() + 4 * l.max_frame_bytes;
        let converted = within("an OTLP decode", bound, || convert_with(bytes, &l))
            .map_err(TestCaseError::fail)?;
        if let Ok(c) = converted {
            for s in c.batches.iter().flat_map(|b| &b.samples) {
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

        /// A valid request with bytes overwritten or cut never panics the decoder, and what
        /// it accepts stays within the caps.
        #[test]
        fn damaged_requests(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = request().encode_to_vec();
            for (at, b) in edits {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            bytes.truncate(bytes.len() - cut % 8);
            check(&bytes)?;
        }

        /// Arbitrary JSON-ish text never panics the transcoder or the conversion after it.
        #[test]
        fn damaged_json(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        ) {
            let mut text = br#"{"resourceProfiles":[{"scopeProfiles":[{"profiles":[{"sampleType":{"typeStrindex":1,"unitStrindex":2},"samples":[{"stackIndex":1,"values":["4"]}]}]}]}],"dictionary":{"mappingTable":[{}],"locationTable":[{},{"lines":[{"functionIndex":1}]}],"functionTable":[{},{"nameStrindex":3}],"linkTable":[{}],"stringTable":["","samples","count","main"],"attributeTable":[{}],"stackTable":[{},{"locationIndices":[1]}]}}"#.to_vec();
            for (at, b) in edits {
                let i = at % text.len();
                text[i] = b;
            }
            if let Ok(bytes) = json::to_protobuf(&text, 1 << 16, &mut Unmetered) {
                check(&bytes)?;
            }
        }
    }
}
