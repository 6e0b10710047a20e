//! OTLP/JSON → the protobuf of the same message, transcoded while the JSON is read, so that
//! JSON bodies go through the one protobuf conversion with all its caps.
//!
//! The JSON mapping is protobuf's, with OTLP's differences: field names in lowerCamelCase (the
//! proto names are accepted too), 64-bit integers as strings or numbers, `bytes` in base64,
//! and `traceId`/`spanId` in hex (base64 is accepted as well: the lengths tell them apart).
//! `null` is a field left at its default. There are no enums in these messages.
//!
//! Invariants: nothing is built but the protobuf output, one buffer whose every growth is
//! granted by the request's [`Allowance`] and which stops at `max` bytes; a nested message's
//! length is written as a fixed 5-byte varint and patched when the message ends (protobuf
//! readers accept the padding), so nothing is copied. An unknown field name is an error, not
//! skipped: a field renamed between releases of this development format (v1.10.0 renamed
//! every `*_ref` to `*_strindex`) must not be silently lost. serde_json's recursion limit
//! bounds nesting.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::OtlpError;
use crate::compress::{Allowance, Refusal};
use crate::error::ProfileError;
use schema::{FieldDesc, Kind, Msg, REQUEST};

mod schema;

/// Bytes a nested message's length takes: a padded varint, patched once the message ends.
const LEN_BYTES: usize = 5;

/// The growth step of the output buffer.
const STEP: usize = 1 << 20;

/// The protobuf being written, within `max` bytes and the allowance.
struct Out<'a> {
    buf: Vec<u8>,
    max: usize,
    allowance: &'a mut dyn Allowance,
    /// Why writing stopped, when it was not the JSON's fault.
    failure: Option<OtlpError>,
}

impl Out<'_> {
    /// Makes room for `n` more bytes.
    fn room(&mut self, n: usize) -> Result<(), String> {
        let needed = self.buf.len().saturating_add(n);
        if needed > self.max {
            self.failure = Some(ProfileError::Decompressed { max: self.max }.into());
            return Err("too large".into());
        }
        if needed > self.buf.capacity() {
            let grow = STEP
                .max(needed - self.buf.capacity())
                .min(self.max - self.buf.capacity());
            if let Err(why) = self.allowance.grant(grow) {
                self.failure = Some(
                    match why {
                        Refusal::Busy => ProfileError::Busy,
                        Refusal::TooLarge { limit } => ProfileError::OverBudget { limit },
                    }
                    .into(),
                );
                return Err("no allowance".into());
            }
            self.buf.reserve_exact(grow);
        }
        Ok(())
    }

    fn varint(&mut self, mut v: u64) -> Result<(), String> {
        self.room(10)?;
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
        Ok(())
    }

    fn key(&mut self, number: u32, wire: u8) -> Result<(), String> {
        self.varint(u64::from(number) << 3 | u64::from(wire))
    }

    fn bytes(&mut self, number: u32, bytes: &[u8]) -> Result<(), String> {
        self.key(number, 2)?;
        self.varint(bytes.len() as u64)?;
        self.room(bytes.len())?;
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    fn fixed64(&mut self, number: u32, v: u64) -> Result<(), String> {
        self.key(number, 1)?;
        self.room(8)?;
        self.buf.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    /// Starts a nested message: its key and a length to patch; returns where it starts.
    fn open(&mut self, number: u32) -> Result<usize, String> {
        self.key(number, 2)?;
        self.room(LEN_BYTES)?;
        self.buf.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0]);
        Ok(self.buf.len())
    }

    /// Ends the nested message that started at `start`, writing its length.
    fn close(&mut self, start: usize) -> Result<(), String> {
        let len = self.buf.len() - start;
        if len >= 1 << 35 {
            return Err("a message longer than protobuf allows".into());
        }
        let at = start - LEN_BYTES;
        for i in 0..LEN_BYTES {
            let bits = ((len >> (7 * i)) & 0x7f) as u8;
            self.buf[at + i] = if i + 1 < LEN_BYTES { bits | 0x80 } else { bits };
        }
        Ok(())
    }
}

/// Transcodes an OTLP/JSON `ExportProfilesServiceRequest` to protobuf: at most `max` bytes,
/// every growth granted by `allowance`.
pub fn to_protobuf(
    json: &[u8],
    max: usize,
    allowance: &mut dyn Allowance,
) -> Result<Vec<u8>, OtlpError> {
    let mut out = Out {
        buf: Vec::new(),
        max,
        allowance,
        failure: None,
    };
    let mut de = serde_json::Deserializer::from_slice(json);
    let result = MsgSeed {
        msg: &REQUEST,
        out: &mut out,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (result, out.failure.take()) {
        (_, Some(failure)) => Err(failure),
        (Err(e), None) => Err(OtlpError::Json(e.to_string())),
        (Ok(()), None) => Ok(out.buf),
    }
}

/// A message: a JSON object (or null, the empty message).
struct MsgSeed<'o, 'a> {
    msg: &'static Msg,
    out: &'o mut Out<'a>,
}

impl<'de> DeserializeSeed<'de> for MsgSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MsgSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object for {}", self.msg.name)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key_seed(FieldName(self.msg))? {
            map.next_value_seed(FieldSeed {
                field,
                out: &mut *self.out,
            })?;
        }
        Ok(())
    }
}

/// A field name, looked up in the message.
struct FieldName(&'static Msg);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = &'static FieldDesc;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for FieldName {
    type Value = &'static FieldDesc;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a field of {}", self.0.name)
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Self::Value, E> {
        self.0
            .fields
            .iter()
            .find(|f| f.json == name || f.proto == name)
            .ok_or_else(|| {
                E::custom(format!(
                    "unknown field {name:?} in {} (its fields are {})",
                    self.0.name,
                    self.0
                        .fields
                        .iter()
                        .map(|f| f.json)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })
    }
}

/// A field's value: one, or a JSON array of them when repeated (null: absent).
struct FieldSeed<'o, 'a> {
    field: &'static FieldDesc,
    out: &'o mut Out<'a>,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.field.repeated {
            d.deserialize_any(self)
        } else {
            OneValue {
                field: self.field,
                out: self.out,
            }
            .deserialize(d)
        }
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON array for {}", self.field.json)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(OneValue {
                field: self.field,
                out: &mut *self.out,
            })?
            .is_some()
        {}
        Ok(())
    }
}

/// One value of a field, written with its key.
struct OneValue<'o, 'a> {
    field: &'static FieldDesc,
    out: &'o mut Out<'a>,
}

impl<'de> DeserializeSeed<'de> for OneValue<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let (n, out) = (self.field.number, self.out);
        match self.field.kind {
            Kind::Message(msg) => {
                let start = out.open(n).map_err(de::Error::custom)?;
                MsgSeed {
                    msg,
                    out: &mut *out,
                }
                .deserialize(d)?;
                out.close(start).map_err(de::Error::custom)
            }
            Kind::String => {
                let s: Option<std::borrow::Cow<'de, str>> = serde::Deserialize::deserialize(d)?;
                match s {
                    Some(s) => out.bytes(n, s.as_bytes()).map_err(de::Error::custom),
                    None => Ok(()),
                }
            }
            Kind::Bytes | Kind::Id => {
                let s: Option<std::borrow::Cow<'de, str>> = serde::Deserialize::deserialize(d)?;
                let Some(s) = s else { return Ok(()) };
                let bytes = match self.field.kind {
                    Kind::Id => id_bytes(&s),
                    _ => base64_bytes(&s),
                }
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "{}: {s:?} is not {}",
                        self.field.json,
                        match self.field.kind {
                            Kind::Id => "hex (or base64)",
                            _ => "base64",
                        }
                    ))
                })?;
                out.bytes(n, &bytes).map_err(de::Error::custom)
            }
            Kind::Bool => {
                let b: Option<bool> = serde::Deserialize::deserialize(d)?;
                let Some(b) = b else { return Ok(()) };
                out.key(n, 0)
                    .and_then(|()| out.varint(u64::from(b)))
                    .map_err(de::Error::custom)
            }
            Kind::Double => {
                let Some(v) = d.deserialize_any(DoubleVisitor)? else {
                    return Ok(());
                };
                out.fixed64(n, v.to_bits()).map_err(de::Error::custom)
            }
            Kind::Int32 | Kind::Int64 | Kind::Uint64 | Kind::Fixed64 => {
                let kind = self.field.kind;
                let Some(v) = d.deserialize_any(IntVisitor(self.field.json))? else {
                    return Ok(());
                };
                let (lo, hi) = match kind {
                    Kind::Int32 => (i128::from(i32::MIN), i128::from(i32::MAX)),
                    Kind::Int64 => (i128::from(i64::MIN), i128::from(i64::MAX)),
                    _ => (0, i128::from(u64::MAX)),
                };
                if v < lo || v > hi {
                    return Err(de::Error::custom(format!(
                        "{}: {v} is out of range",
                        self.field.json
                    )));
                }
                let bits = if v < 0 { v as i64 as u64 } else { v as u64 };
                match kind {
                    Kind::Fixed64 => out.fixed64(n, bits),
                    _ => out.key(n, 0).and_then(|()| out.varint(bits)),
                }
                .map_err(de::Error::custom)
            }
        }
    }
}

/// An integer: a JSON number, or a string holding one.
struct IntVisitor(&'static str);

impl Visitor<'_> for IntVisitor {
    type Value = Option<i128>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer (or a string holding one) for {}", self.0)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i128>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<i128>, E> {
        Ok(Some(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<i128>, E> {
        Ok(Some(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<i128>, E> {
        if v.fract() == 0.0 && v.abs() < 1.9e19 {
            return Ok(Some(v as i128));
        }
        Err(E::custom(format!("{}: {v} is not an integer", self.0)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<i128>, E> {
        v.trim()
            .parse::<i128>()
            .map(Some)
            .map_err(|_| E::custom(format!("{}: {v:?} is not an integer", self.0)))
    }
}

/// A double: a JSON number, or a string holding one (or NaN, Infinity, -Infinity).
struct DoubleVisitor;

impl Visitor<'_> for DoubleVisitor {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Option<f64>, E> {
        Ok(Some(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Option<f64>, E> {
        Ok(Some(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Option<f64>, E> {
        Ok(Some(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<f64>, E> {
        match v {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => v
                .parse()
                .map(Some)
                .map_err(|_| E::custom(format!("{v:?} is not a number"))),
        }
    }
}

/// base64, standard or URL-safe, padded or not.
fn base64_bytes(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

/// A trace or span id: hex as OTLP/JSON writes it, or base64 as protobuf's JSON mapping does
/// (a 16- or 8-byte id is 32 or 16 hex digits, but 24 or 12 base64 characters).
fn id_bytes(s: &str) -> Option<Vec<u8>> {
    if s.len().is_multiple_of(2) && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
            .collect();
    }
    base64_bytes(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Unmetered;
    use crate::otlp::proto::{ExportProfilesServiceRequest, Value};
    use prost::Message;

    fn transcode(json: &str) -> Result<ExportProfilesServiceRequest, OtlpError> {
        let bytes = to_protobuf(json.as_bytes(), 1 << 20, &mut Unmetered)?;
        Ok(ExportProfilesServiceRequest::decode(&bytes[..]).expect("valid protobuf"))
    }

    #[test]
    fn every_kind_of_field() {
        let req = transcode(
            r#"{
              "resourceProfiles": [{
                "resource": {"attributes": [
                  {"key": "service.name", "value": {"stringValue": "shop"}},
                  {"key": "n", "value": {"intValue": "-7"}},
                  {"key": "d", "value": {"doubleValue": "Infinity"}},
                  {"key": "b", "value": {"bytesValue": "AQI="}},
                  {"key": "a", "value": {"arrayValue": {"values": [{"boolValue": true}]}}}
                ]},
                "scopeProfiles": [{"profiles": [{
                  "sampleType": {"typeStrindex": 1, "unitStrindex": 2},
                  "time_unix_nano": "18446744073709551615",
                  "period": 10000000, "durationNano": null, "profileId": null,
                  "samples": [{"stackIndex": 1, "values": ["3", 4],
                               "timestampsUnixNano": [1, "2"]}]
                }]}]
              }],
              "dictionary": {
                "stringTable": ["", "samples", "count"],
                "linkTable": [{}, {"traceId": "0102030405060708090a0b0c0d0e0f10",
                                   "spanId": "AQIDBAUGBwg="}],
                "stackTable": [{}, {"locationIndices": [1, 2]}]
              }
            }"#,
        )
        .expect("transcodes");
        let attrs = &req.resource_profiles[0]
            .resource
            .as_ref()
            .expect("resource")
            .attributes;
        let value = |i: usize| attrs[i].value.as_ref().and_then(|v| v.value.clone());
        assert_eq!(value(0), Some(Value::StringValue("shop".into())));
        assert_eq!(value(1), Some(Value::IntValue(-7)));
        assert_eq!(value(2), Some(Value::DoubleValue(f64::INFINITY)));
        assert_eq!(value(3), Some(Value::BytesValue(vec![1, 2])));
        let p = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        assert_eq!(p.time_unix_nano, u64::MAX);
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.samples[0].values, vec![3, 4]);
        assert_eq!(p.samples[0].timestamps_unix_nano, vec![1, 2]);
        let d = req.dictionary.expect("dictionary");
        assert_eq!(d.link_table[1].trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(d.link_table[1].span_id, (1..=8).collect::<Vec<u8>>());
        assert_eq!(d.stack_table[1].location_indices, vec![1, 2]);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        for (json, needle) in [
            (
                r#"{"resourceProfiles": [{"foo": 1}]}"#,
                "unknown field \"foo\"",
            ),
            (
                r#"{"dictionary": {"attributeTable": [{"keyRef": 1}]}}"#,
                "unknown field \"keyRef\"",
            ),
            (
                r#"{"dictionary": {"stackTable": [{"locationIndices": [4294967296]}]}}"#,
                "out of range",
            ),
            (
                r#"{"dictionary": {"linkTable": [{"traceId": "zz"}]}}"#,
                "hex",
            ),
            (r#"{"resourceProfiles": 3}"#, "JSON array"),
            ("{", "EOF"),
        ] {
            let err = transcode(json).expect_err(json);
            assert!(err.to_string().contains(needle), "{json}: {err}");
        }
    }

    #[test]
    fn the_output_is_capped() {
        let json = format!(
            r#"{{"dictionary": {{"stringTable": [{}]}}}}"#,
            vec!["\"abc\""; 1000].join(",")
        );
        assert!(matches!(
            to_protobuf(json.as_bytes(), 100, &mut Unmetered),
            Err(OtlpError::Profile(ProfileError::Decompressed { max: 100 }))
        ));
    }
}
