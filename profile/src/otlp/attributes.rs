//! Attribute values as text, and OTLP attributes → our label fields.
//!
//! | OTLP attribute | field |
//! |---|---|
//! | `service.name` | service (missing: `unknown_service`, or `unknown_service:<process.executable.name>`, as the OTel SDKs name it) |
//! | `service.version` | build |
//! | `http.route`, prefixed with `http.request.method` and a space when present | endpoint |
//! | `host.name` | host |
//! | `cloud.availability_zone`, else `cloud.region` | dc |
//! | a sample's link | extra labels `trace_id` and `span_id` (lowercase hex) |
//! | any other resource, profile or sample attribute | an extra label of the same key |
//!
//! A sample's attributes win over its profile's, which win over its resource's. Extra labels
//! are kept within the label limits: those whose key or value the limits refuse, and those past
//! the count (the link first, then sample, profile and resource attributes, each by key), are
//! dropped and named in the answer's `partial_success.error_message`. The mapped fields are
//! checked like every other ingest's (too long is a 400).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use profwatch_model::event::check_labels;
use profwatch_model::profile::SampleLabels;
use profwatch_model::{Labels, Limits, ValidationError};

use super::dictionary::hex;
use super::proto::{AnyValue, Value};
use super::OtlpError;
use crate::labels;

/// Bytes of an attribute value kept as text; a longer value is only measured (up to this).
pub const MAX_TEXT: usize = 4096;

/// An attribute value as text, or its length once past [`MAX_TEXT`].
pub type Text = Result<String, usize>;

/// `v` as text: strings as they are, numbers and booleans as written in JSON, bytes in hex,
/// arrays and key-value lists as JSON. String indices resolve in `strings` (checked before).
pub fn text(v: &AnyValue, strings: &[&str]) -> Text {
    let mut out = String::new();
    match &v.value {
        Some(Value::StringValue(s)) => out.push_str(s),
        Some(Value::StringValueStrindex(i)) => out.push_str(string(strings, *i)),
        _ => write_value(&mut out, v, strings),
    }
    if out.len() > MAX_TEXT {
        return Err(out.len());
    }
    Ok(out)
}

fn string<'a>(strings: &[&'a str], i: i32) -> &'a str {
    usize::try_from(i)
        .ok()
        .and_then(|i| strings.get(i))
        .copied()
        .unwrap_or("")
}

/// Writes `v` as JSON, stopping once `out` is past [`MAX_TEXT`].
fn write_value(out: &mut String, v: &AnyValue, strings: &[&str]) {
    if out.len() > MAX_TEXT {
        return;
    }
    match &v.value {
        None => out.push_str("null"),
        Some(Value::StringValue(s)) => write_json_string(out, s),
        Some(Value::StringValueStrindex(i)) => write_json_string(out, string(strings, *i)),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(n)) => {
            let _ = write!(out, "{n}");
        }
        Some(Value::DoubleValue(d)) => {
            let _ = write!(out, "{d:?}");
        }
        Some(Value::BytesValue(b)) => out.push_str(&hex(&b[..b.len().min(MAX_TEXT)])),
        Some(Value::ArrayValue(a)) => {
            out.push('[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, v, strings);
                if out.len() > MAX_TEXT {
                    return;
                }
            }
            out.push(']');
        }
        Some(Value::KvlistValue(kvs)) => {
            out.push('{');
            for (i, kv) in kvs.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let key = if kv.key.is_empty() {
                    string(strings, kv.key_strindex)
                } else {
                    &kv.key
                };
                write_json_string(out, key);
                out.push(':');
                match &kv.value {
                    Some(v) => write_value(out, v, strings),
                    None => out.push_str("null"),
                }
                if out.len() > MAX_TEXT {
                    return;
                }
            }
            out.push('}');
        }
    }
}

fn write_json_string(out: &mut String, s: &str) {
    let s = &s[..floor_char_boundary(s, MAX_TEXT + 1)];
    out.push_str(&serde_json::Value::from(s).to_string());
}

fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0)
}

/// Where an attribute was attached; later levels win over earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Resource,
    Profile,
    Sample,
    Link,
}

/// One attribute, as text.
#[derive(Debug, Clone)]
pub struct Attr {
    pub level: Level,
    pub key: String,
    pub value: Text,
}

/// Why an extra label was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its key or value is past the label limits, or not allowed in a label.
    Invalid,
    /// The sample already has as many labels as the limit allows.
    TooMany,
    /// Its key is one of our own fields (`service`, `endpoint`, `build`, `dc`, `host`).
    Reserved,
}

/// The labels of a set of attributes, and the extra labels left out.
pub fn labels(
    attrs: &[Attr],
    limits: &Limits,
    dropped: &mut BTreeMap<String, Dropped>,
) -> Result<SampleLabels, OtlpError> {
    let mut sorted: Vec<&Attr> = attrs.iter().collect();
    sorted.sort_by_key(|a| a.level);
    let mut fields: BTreeMap<&str, &Text> = BTreeMap::new();
    let mut extras: BTreeMap<&str, (Level, &Text)> = BTreeMap::new();
    for a in sorted {
        match a.key.as_str() {
            k @ ("service.name"
            | "service.version"
            | "http.route"
            | "http.request.method"
            | "host.name"
            | "cloud.availability_zone"
            | "cloud.region") => {
                fields.insert(k, &a.value);
            }
            k => {
                extras.insert(k, (a.level, &a.value));
            }
        }
    }
    let field = |key: &str, name: &'static str, max: usize| -> Result<String, OtlpError> {
        match fields.get(key) {
            None => Ok(String::new()),
            Some(Ok(v)) => Ok(v.clone()),
            Some(Err(len)) => Err(too_long(name, *len, max)),
        }
    };
    let mut l = SampleLabels {
        service: field("service.name", "service", limits.max_name_len)?,
        build: field("service.version", "build", limits.max_name_len)?,
        host: field("host.name", "host", limits.max_name_len)?,
        ..SampleLabels::default()
    };
    let route = field("http.route", "endpoint", limits.max_endpoint_len)?;
    let method = field("http.request.method", "endpoint", limits.max_endpoint_len)?;
    if !route.is_empty() {
        l.endpoint = if method.is_empty() {
            route
        } else {
            format!("{method} {route}")
        };
    }
    l.dc = field("cloud.availability_zone", "dc", limits.max_name_len)?;
    if l.dc.is_empty() {
        l.dc = field("cloud.region", "dc", limits.max_name_len)?;
    }
    if l.service.is_empty() {
        l.service = match extras.get("process.executable.name") {
            Some((_, Ok(exe))) if !exe.is_empty() => format!("unknown_service:{exe}"),
            _ => "unknown_service".to_owned(),
        };
    }
    l.extra = extras_within(extras, limits, dropped);
    labels::validate(&l, limits)?;
    Ok(l)
}

fn too_long(field: &'static str, len: usize, max: usize) -> OtlpError {
    crate::ProfileError::Labels(ValidationError::TooLong { field, len, max }).into()
}

/// The extra labels the limits allow: the link first, then sample, profile and resource
/// attributes, each level by key.
fn extras_within(
    extras: BTreeMap<&str, (Level, &Text)>,
    limits: &Limits,
    dropped: &mut BTreeMap<String, Dropped>,
) -> Labels {
    /// Dropped keys named in the answer, at most.
    const NAMED: usize = 64;
    let mut drop = |key: &str, why| {
        if dropped.len() < NAMED || dropped.contains_key(key) {
            dropped.insert(key.to_owned(), why);
        }
    };
    let mut order: Vec<(&str, Level, &Text)> =
        extras.into_iter().map(|(k, (l, v))| (k, l, v)).collect();
    order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut out = Labels::new();
    for (key, _, value) in order {
        if matches!(key, "service" | "endpoint" | "build" | "dc" | "host") {
            drop(key, Dropped::Reserved);
            continue;
        }
        let Ok(value) = value else {
            drop(key, Dropped::Invalid);
            continue;
        };
        let one = Labels::from([(key.to_owned(), value.clone())]);
        if check_labels(&one, limits).is_err() {
            drop(key, Dropped::Invalid);
            continue;
        }
        if out.len() == limits.max_labels {
            drop(key, Dropped::TooMany);
            continue;
        }
        out.extend(one);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::proto::{ArrayValue, KeyValue, KeyValueList};

    fn s(v: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(v.to_owned())),
        }
    }

    fn attr(level: Level, key: &str, value: &str) -> Attr {
        Attr {
            level,
            key: key.to_owned(),
            value: Ok(value.to_owned()),
        }
    }

    #[test]
    fn every_value_type_has_a_text() {
        let strings = ["", "idx"];
        let v = |value| AnyValue { value: Some(value) };
        let cases = [
            (v(Value::StringValueStrindex(1)), "idx"),
            (v(Value::BoolValue(true)), "true"),
            (v(Value::IntValue(-42)), "-42"),
            (v(Value::DoubleValue(1.5)), "1.5"),
            (v(Value::BytesValue(vec![0xab, 1])), "ab01"),
            (
                v(Value::ArrayValue(ArrayValue {
                    values: vec![s("a\"b"), v(Value::IntValue(1))],
                })),
                r#"["a\"b",1]"#,
            ),
            (
                v(Value::KvlistValue(KeyValueList {
                    values: vec![KeyValue {
                        key: String::new(),
                        key_strindex: 1,
                        value: Some(v(Value::BoolValue(false))),
                    }],
                })),
                r#"{"idx":false}"#,
            ),
            (AnyValue { value: None }, "null"),
        ];
        for (value, want) in cases {
            assert_eq!(text(&value, &strings), Ok(want.to_owned()));
        }
        assert_eq!(
            text(&s(&"x".repeat(MAX_TEXT + 5)), &strings),
            Err(MAX_TEXT + 5)
        );
    }

    #[test]
    fn mapping_precedence_and_limits() {
        let limits = Limits {
            max_labels: 3,
            ..Limits::default()
        };
        let attrs = [
            attr(Level::Resource, "service.name", "shop"),
            attr(Level::Resource, "service.version", "812"),
            attr(Level::Resource, "host.name", "h1"),
            attr(Level::Resource, "cloud.region", "eu"),
            attr(Level::Resource, "cloud.availability_zone", "eu-1a"),
            attr(Level::Sample, "http.route", "/users/{id}"),
            attr(Level::Sample, "http.request.method", "GET"),
            attr(Level::Resource, "os.type", "linux"),
            attr(Level::Profile, "os.type", "freebsd"),
            attr(Level::Sample, "thread.name", "worker"),
            attr(Level::Link, "trace_id", "ab"),
            attr(Level::Resource, "zz", "past the count"),
            attr(Level::Resource, "bad key!", "x"),
            attr(Level::Resource, "host", "reserved"),
        ];
        let mut dropped = BTreeMap::new();
        let l = labels(&attrs, &limits, &mut dropped).expect("labels");
        assert_eq!(
            (&*l.service, &*l.build, &*l.host, &*l.dc, &*l.endpoint),
            ("shop", "812", "h1", "eu-1a", "GET /users/{id}")
        );
        let extra: Vec<(&str, &str)> = l
            .extra
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            extra,
            [
                ("os.type", "freebsd"),
                ("thread.name", "worker"),
                ("trace_id", "ab")
            ]
        );
        assert_eq!(dropped.get("zz"), Some(&Dropped::TooMany));
        assert_eq!(dropped.get("bad key!"), Some(&Dropped::Invalid));
        assert_eq!(dropped.get("host"), Some(&Dropped::Reserved));
    }

    #[test]
    fn a_missing_service_is_unknown_and_a_long_one_is_refused() {
        let mut dropped = BTreeMap::new();
        let l = labels(
            &[attr(Level::Resource, "process.executable.name", "nginx")],
            &Limits::default(),
            &mut dropped,
        )
        .expect("labels");
        assert_eq!(l.service, "unknown_service:nginx");
        let long = [attr(Level::Resource, "service.name", &"s".repeat(200))];
        assert!(matches!(
            labels(&long, &Limits::default(), &mut dropped),
            Err(OtlpError::Profile(crate::ProfileError::Labels(_)))
        ));
    }
}
