//! The NDJSON form of request events: one JSON object per line, with the field names of
//! [`RequestEvent`]. `ts` is unix nanoseconds or an RFC 3339 string and defaults to "now";
//! `weight` defaults to 1; `instructions` and `labels` may be absent. Unknown fields are refused,
//! so a typo never silently drops data; `tenant` in particular is refused because the tenant
//! comes from the bearer token.
//!
//! Invariant: the documented maxima of [`Limits`](crate::Limits) (string lengths, labels per
//! event, label key and value lengths) and the events-per-body cap are enforced while parsing,
//! before anything past them is allocated, so a line of any size costs at most a small multiple
//! of its own length; [`RequestEvent::validate`] then applies a server's own limits.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::event::{
    truncate_for_message, valid_label_key, Labels, RequestEvent, ValidationError, MAX_ENDPOINT_LEN,
    MAX_LABELS, MAX_LABEL_KEY_LEN, MAX_LABEL_VALUE_LEN, MAX_NAME_LEN,
};
use crate::timefmt::{format_rfc3339, now_ns, parse_rfc3339_ns};

/// A line that could not be read. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Why an NDJSON body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A line that could not be read.
    #[error(transparent)]
    Line(#[from] LineError),
    /// More events than one body may carry; counted while parsing, so parsing stopped there.
    #[error("more than {max} events in one request; the limit is {max}")]
    TooManyEvents { max: usize },
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
enum JsonTs {
    Nanos(i64),
    Text(String),
}

/// One event as JSON. Written with serde's derive; read by [`EventSeed`], which bounds every
/// field while parsing and tells a missing or unknown field from any other error by its type.
#[derive(Debug, Serialize)]
struct JsonEvent {
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<JsonTs>,
    service: String,
    endpoint: String,
    build: String,
    dc: String,
    host: String,
    status: u16,
    cpu_ns: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<u64>,
    wall_ns: u64,
    weight: f64,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    labels: Labels,
}

/// The fields of [`JsonEvent`], as an unknown field's message lists them.
const FIELDS: &[&str] = &[
    "ts",
    "service",
    "endpoint",
    "build",
    "dc",
    "host",
    "status",
    "cpu_ns",
    "instructions",
    "wall_ns",
    "weight",
    "labels",
];

/// Why one JSON event could not be read: what kind of problem, and the message for the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EventError {
    pub kind: EventErrorKind,
    pub message: String,
}

/// The kinds of [`EventError`], for counting refusals by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventErrorKind {
    /// Not JSON, a value of the wrong type, a duplicate field or a value over a limit.
    Invalid,
    /// A required field (`service`, `endpoint`, `cpu_ns`) is absent.
    MissingField,
    /// A field the format does not have: refused, so that a typo never drops data.
    UnknownField,
    /// `tenant` in the body: the tenant comes from the bearer token.
    Tenant,
}

/// Reads one [`JsonEvent`], noting in `kind` why it failed when it does.
struct EventSeed<'k> {
    kind: &'k Cell<EventErrorKind>,
}

impl<'de> DeserializeSeed<'de> for EventSeed<'_> {
    type Value = JsonEvent;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<JsonEvent, D::Error> {
        d.deserialize_map(self)
    }
}

/// Fills `slot` once; a second value for the field is an error.
fn once<T, E: de::Error>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(field)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// A field every event must have.
fn required<T, E: de::Error>(
    slot: Option<T>,
    field: &'static str,
    kind: &Cell<EventErrorKind>,
) -> Result<T, E> {
    slot.ok_or_else(|| {
        kind.set(EventErrorKind::MissingField);
        E::missing_field(field)
    })
}

/// The longest field name read (the longest known one is far shorter).
const MAX_FIELD_NAME: usize = 64;

impl<'de> Visitor<'de> for EventSeed<'_> {
    type Value = JsonEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object, one request event")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonEvent, A::Error> {
        let name = |field| Bounded {
            field,
            max: MAX_NAME_LEN,
        };
        let (mut ts, mut service, mut endpoint, mut build, mut dc, mut host) =
            (None, None, None, None, None, None);
        let (mut status, mut cpu_ns, mut instructions, mut wall_ns, mut weight, mut labels) =
            (None, None, None, None, None, None);
        let field_name = Bounded {
            field: "a field name",
            max: MAX_FIELD_NAME,
        };
        while let Some(key) = map.next_key_seed(field_name)? {
            match key.as_str() {
                "ts" => once(&mut ts, "ts", map.next_value::<Option<JsonTs>>()?)?,
                "service" => once(
                    &mut service,
                    "service",
                    map.next_value_seed(name("service"))?,
                )?,
                "endpoint" => {
                    let bound = Bounded {
                        field: "endpoint",
                        max: MAX_ENDPOINT_LEN,
                    };
                    once(&mut endpoint, "endpoint", map.next_value_seed(bound)?)?
                }
                "build" => once(&mut build, "build", map.next_value_seed(name("build"))?)?,
                "dc" => once(&mut dc, "dc", map.next_value_seed(name("dc"))?)?,
                "host" => once(&mut host, "host", map.next_value_seed(name("host"))?)?,
                "status" => once(&mut status, "status", map.next_value::<u16>()?)?,
                "cpu_ns" => once(&mut cpu_ns, "cpu_ns", map.next_value::<u64>()?)?,
                "instructions" => once(
                    &mut instructions,
                    "instructions",
                    map.next_value::<Option<u64>>()?,
                )?,
                "wall_ns" => once(&mut wall_ns, "wall_ns", map.next_value::<u64>()?)?,
                "weight" => once(&mut weight, "weight", map.next_value::<f64>()?)?,
                "labels" => once(&mut labels, "labels", map.next_value_seed(LabelMap)?)?,
                other => {
                    self.kind.set(match other {
                        "tenant" => EventErrorKind::Tenant,
                        _ => EventErrorKind::UnknownField,
                    });
                    return Err(de::Error::unknown_field(other, FIELDS));
                }
            }
        }
        Ok(JsonEvent {
            ts: ts.flatten(),
            service: required(service, "service", self.kind)?,
            endpoint: required(endpoint, "endpoint", self.kind)?,
            build: build.unwrap_or_default(),
            dc: dc.unwrap_or_default(),
            host: host.unwrap_or_default(),
            status: status.unwrap_or(0),
            cpu_ns: required(cpu_ns, "cpu_ns", self.kind)?,
            instructions: instructions.flatten(),
            wall_ns: wall_ns.unwrap_or(0),
            weight: weight.unwrap_or(1.0),
            labels: labels.unwrap_or_default(),
        })
    }
}

/// A string of at most `max` bytes, refused before it is copied.
#[derive(Debug, Clone, Copy)]
struct Bounded {
    field: &'static str,
    max: usize,
}

impl<'de> Visitor<'de> for Bounded {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of at most {} bytes", self.max)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > self.max {
            return Err(E::custom(ValidationError::TooLong {
                field: self.field,
                len: v.len(),
                max: self.max,
            }));
        }
        Ok(v.to_owned())
    }
}

impl<'de> DeserializeSeed<'de> for Bounded {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

/// A label key, checked before it is copied.
#[derive(Debug, Clone, Copy)]
struct LabelKey;

impl<'de> Visitor<'de> for LabelKey {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a label key of at most {MAX_LABEL_KEY_LEN} bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if !valid_label_key(v, MAX_LABEL_KEY_LEN) {
            return Err(E::custom(ValidationError::LabelKey {
                key: truncate_for_message(v),
                max: MAX_LABEL_KEY_LEN,
            }));
        }
        Ok(v.to_owned())
    }
}

impl<'de> DeserializeSeed<'de> for LabelKey {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

/// The value of label `key`, checked before it is copied.
#[derive(Debug, Clone, Copy)]
struct LabelValue<'k> {
    key: &'k str,
}

impl<'de> Visitor<'de> for LabelValue<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a label value of at most {MAX_LABEL_VALUE_LEN} bytes")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > MAX_LABEL_VALUE_LEN {
            return Err(E::custom(ValidationError::LabelValueTooLong {
                key: self.key.to_owned(),
                len: v.len(),
                max: MAX_LABEL_VALUE_LEN,
            }));
        }
        Ok(v.to_owned())
    }
}

impl<'de> DeserializeSeed<'de> for LabelValue<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

/// The `labels` object, refused at its first label past [`MAX_LABELS`].
#[derive(Debug, Clone, Copy)]
struct LabelMap;

impl<'de> Visitor<'de> for LabelMap {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object of at most {MAX_LABELS} string labels")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let mut out = Labels::new();
        while let Some(key) = map.next_key_seed(LabelKey)? {
            let value = map.next_value_seed(LabelValue { key: &key })?;
            out.insert(key, value);
            if out.len() > MAX_LABELS {
                return Err(de::Error::custom(format_args!(
                    "more than {MAX_LABELS} labels; the limit is {MAX_LABELS} per event"
                )));
            }
        }
        Ok(out)
    }
}

impl<'de> DeserializeSeed<'de> for LabelMap {
    type Value = Labels;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Labels, D::Error> {
        d.deserialize_map(self)
    }
}

/// Parses one JSON object into an event (not yet validated). `now` fills a missing `ts`.
pub fn parse_event(text: &str, now: i64) -> Result<RequestEvent, EventError> {
    let kind = Cell::new(EventErrorKind::Invalid);
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = EventSeed { kind: &kind }
        .deserialize(&mut de)
        .and_then(|raw| de.end().map(|()| raw))
        .map_err(|e| {
            let kind = kind.get();
            let message = match kind {
                EventErrorKind::Tenant => "field `tenant` is not accepted in the body; the tenant \
                                           comes from the bearer token"
                    .to_owned(),
                _ => e.to_string(),
            };
            EventError { kind, message }
        })?;
    let ts = match raw.ts {
        None => now,
        Some(JsonTs::Nanos(ns)) => ns,
        Some(JsonTs::Text(s)) => parse_rfc3339_ns(&s).ok_or_else(|| EventError {
            kind: EventErrorKind::Invalid,
            message: format!("field `ts`: {s:?} is neither unix nanoseconds nor an RFC 3339 time"),
        })?,
    };
    Ok(RequestEvent {
        ts,
        service: raw.service,
        endpoint: raw.endpoint,
        build: raw.build,
        dc: raw.dc,
        host: raw.host,
        status: raw.status,
        cpu_ns: raw.cpu_ns,
        instructions: raw.instructions,
        wall_ns: raw.wall_ns,
        weight: raw.weight,
        labels: raw.labels,
    })
}

/// Parses an NDJSON body. Blank lines are skipped. The first bad line fails the whole body, so
/// a batch is stored whole or not at all.
pub fn parse_body(body: &[u8]) -> Result<Vec<RequestEvent>, LineError> {
    parse_body_capped(body, usize::MAX).map_err(|e| match e {
        BodyError::Line(line) => line,
        BodyError::TooManyEvents { max } => LineError {
            line: max,
            message: e.to_string(),
        },
    })
}

/// As [`parse_body`], refusing the body at its event number `max_events + 1`, before parsing
/// further.
pub fn parse_body_capped(body: &[u8], max_events: usize) -> Result<Vec<RequestEvent>, BodyError> {
    let now = now_ns();
    let mut events = Vec::with_capacity((body.len() / 200 + 1).min(max_events.saturating_add(1)));
    for (i, raw_line) in body.split(|b| *b == b'\n').enumerate() {
        let line = i + 1;
        let text = std::str::from_utf8(raw_line).map_err(|e| LineError {
            line,
            message: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        })?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        if events.len() == max_events {
            return Err(BodyError::TooManyEvents { max: max_events });
        }
        events.push(parse_event(text, now).map_err(|e| LineError {
            line,
            message: e.message,
        })?);
    }
    Ok(events)
}

/// Writes one event as a JSON line (with `ts` as RFC 3339 when `rfc3339_ts`), newline included.
pub fn to_line(e: &RequestEvent, rfc3339_ts: bool) -> String {
    let raw = JsonEvent {
        ts: Some(if rfc3339_ts {
            JsonTs::Text(format_rfc3339(e.ts))
        } else {
            JsonTs::Nanos(e.ts)
        }),
        service: e.service.clone(),
        endpoint: e.endpoint.clone(),
        build: e.build.clone(),
        dc: e.dc.clone(),
        host: e.host.clone(),
        status: e.status,
        cpu_ns: e.cpu_ns,
        instructions: e.instructions,
        wall_ns: e.wall_ns,
        weight: e.weight,
        labels: e.labels.clone(),
    };
    let mut s = serde_json::to_string(&raw).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_time_forms_and_defaults() {
        let body = br#"{"ts": 5, "service": "s", "endpoint": "GET /", "cpu_ns": 10}

{"ts": "2026-01-01T00:00:00Z", "service": "s", "endpoint": "GET /", "cpu_ns": 10, "instructions": 99, "labels": {"f": "on"}}
"#;
        let events = parse_body(body).expect("valid");
        assert_eq!(events.len(), 2);
        assert_eq!(
            (events[0].ts, events[0].weight, events[0].instructions),
            (5, 1.0, None)
        );
        assert_eq!(events[1].ts, 1_767_225_600_000_000_000);
        assert_eq!(events[1].labels["f"], "on");
        assert_eq!(
            parse_body(to_line(&events[1], true).as_bytes()).expect("round trip")[0],
            events[1]
        );
    }

    #[test]
    fn names_the_bad_line_and_field() {
        let body = b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1}\n{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":\"x\"}\n";
        let err = parse_body(body).expect_err("wrong type");
        assert_eq!(err.line, 2);
        assert!(err.message.contains("invalid type"), "{}", err.message);

        let err = parse_body(b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":-1}")
            .expect_err("negative");
        assert!(err.message.contains("-1"), "{}", err.message);
        let err = parse_body(b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1e400}")
            .expect_err("overflow");
        assert_eq!(err.line, 1);
        let err =
            parse_body(b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1,\"tenant\":\"t\"}")
                .expect_err("tenant");
        assert!(err.message.contains("bearer token"));
        let err = parse_body(b"{\"service\":\"\xff\"}").expect_err("utf8");
        assert!(err.message.contains("UTF-8"));
    }

    /// Regression (issue 11): one line with 3M labels reached 490 MB before the label limit
    /// refused it, because limits were checked after parsing.
    #[test]
    fn limits_hold_while_parsing() {
        let mut line = String::from(r#"{"service":"s","endpoint":"e","cpu_ns":1,"labels":{"#);
        for i in 0..100_000 {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&format!("\"k{i}\":\"v\""));
        }
        line.push_str("}}");
        let err = parse_body(line.as_bytes()).expect_err("too many labels");
        assert!(
            err.message.contains("more than 16 labels"),
            "{}",
            err.message
        );

        let cases = [
            (
                format!(
                    r#"{{"service":"{}","endpoint":"e","cpu_ns":1}}"#,
                    "s".repeat(129)
                ),
                "`service` is 129 bytes",
            ),
            (
                format!(
                    r#"{{"service":"s","endpoint":"{}","cpu_ns":1}}"#,
                    "e".repeat(257)
                ),
                "`endpoint` is 257 bytes",
            ),
            (
                r#"{"service":"s","endpoint":"e","cpu_ns":1,"labels":{"9k":"v"}}"#.to_owned(),
                "label key \"9k\"",
            ),
            (
                format!(
                    r#"{{"service":"s","endpoint":"e","cpu_ns":1,"labels":{{"k":"{}"}}}}"#,
                    "v".repeat(129)
                ),
                "label \"k\": value is 129 bytes",
            ),
        ];
        for (line, needle) in cases {
            let err = parse_body(line.as_bytes()).expect_err(needle);
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }

        let body = "{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1}\n\n".repeat(3);
        assert_eq!(
            parse_body_capped(body.as_bytes(), 2),
            Err(BodyError::TooManyEvents { max: 2 })
        );
        assert_eq!(
            parse_body_capped(body.as_bytes(), 3).map(|e| e.len()),
            Ok(3)
        );
    }

    mod properties {
        use super::super::*;
        use crate::event::Labels;
        use profwatch_testkit::alloc::within;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            proptest::string::string_regex("[ -~\u{80}-\u{2fff}]{0,40}").expect("regex")
        }

        fn event() -> impl Strategy<Value = RequestEvent> {
            (
                (any::<i64>(), text(), text(), text(), any::<u16>()),
                (
                    any::<u64>(),
                    proptest::option::of(any::<u64>()),
                    1u32..4_000_000,
                ),
                proptest::collection::btree_map("[a-z_][a-z0-9_.-]{0,20}", text(), 0..16),
            )
                .prop_map(
                    |((ts, service, endpoint, build, status), (cpu, ins, w), labels)| {
                        RequestEvent {
                            ts,
                            service,
                            endpoint,
                            build,
                            dc: String::new(),
                            host: "h".into(),
                            status,
                            cpu_ns: cpu,
                            instructions: ins,
                            wall_ns: cpu / 2,
                            weight: f64::from(w) / 4.0,
                            labels: labels.into_iter().collect::<Labels>(),
                        }
                    },
                )
        }

        /// Fragments of event lines, so that arbitrary mixes reach deep into the parser.
        fn fragments() -> impl Strategy<Value = Vec<u8>> {
            let piece = prop_oneof![
                Just(&b"{\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1"[..]),
                Just(&b",\"labels\":{\"a\":\"b\""[..]),
                Just(&b"}"[..]),
                Just(&b"\n"[..]),
                Just(&b"\\u00"[..]),
                Just(&b"\""[..]),
                Just(&b",\"ts\":\"2026-01-01T00:00:00Z\""[..]),
                Just(&b"\xff"[..]),
            ];
            proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic_and_respect_the_caps(
                raw in proptest::collection::vec(any::<u8>(), 0..512),
                built in fragments(),
            ) {
                for body in [&raw, &built] {
                    let parsed = within("an NDJSON parse", 16 * 1024 + 16 * body.len(), || {
                        parse_body_capped(body, 4)
                    })
                    .map_err(TestCaseError::fail)?;
                    if let Ok(events) = parsed {
                        prop_assert!(events.len() <= 4);
                        for e in events {
                            prop_assert!(e.labels.len() <= MAX_LABELS);
                            prop_assert!(e.service.len() <= MAX_NAME_LEN);
                        }
                    }
                }
            }

            /// A line with thousands of labels (the label bomb) is refused as it is read,
            /// holding a small multiple of the line, never a map of every label.
            #[test]
            fn label_bombs_are_refused_within_a_bound(n in (MAX_LABELS + 1)..20_000) {
                let fields: Vec<String> = (0..n).map(|i| format!("\"k{i}\":\"v\"")).collect();
                let line = format!(
                    "{{\"ts\":1,\"service\":\"s\",\"endpoint\":\"e\",\"cpu_ns\":1,\"labels\":{{{}}}}}\n",
                    fields.join(",")
                );
                let parsed = within("a label bomb's parse", 16 * 1024 + 4 * line.len(), || {
                    parse_body(line.as_bytes())
                })
                .map_err(TestCaseError::fail)?;
                prop_assert!(parsed.is_err());
            }

            #[test]
            fn events_within_the_limits_round_trip(e in event()) {
                let line = to_line(&e, false);
                prop_assert_eq!(parse_body(line.as_bytes()).map(|v| v.len()), Ok(1));
                let back = parse_body(line.as_bytes()).expect("parses")[0].clone();
                prop_assert_eq!(back, e);
            }
        }
    }
}
