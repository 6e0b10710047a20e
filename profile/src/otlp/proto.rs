//! The OTLP profiles messages, written with `prost`'s derive so that building needs no `protoc`.
//!
//! Field numbers and types follow opentelemetry-proto **v1.10.0** (`proto/opentelemetry/` in
//! this repository, vendored with its licence): packages `opentelemetry.proto.profiles.
//! v1development`, `opentelemetry.proto.collector.profiles.v1development`,
//! `opentelemetry.proto.common.v1` and `opentelemetry.proto.resource.v1`. PyPI's
//! `opentelemetry-proto` 1.45.x is generated from the same release; the end-to-end tests send
//! with it, and `field_numbers_match_v1_10` below pins a message encoded by hand.
//!
//! Ingest never decodes a request whole (see `decode`): these types are decoded one small
//! message at a time, after the fields around them were counted. The whole-message types
//! ([`ExportProfilesServiceRequest`] and below) are for tests and tools.

/// `opentelemetry.proto.collector.profiles.v1development.ExportProfilesServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportProfilesServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_profiles: Vec<ResourceProfiles>,
    #[prost(message, optional, tag = "2")]
    pub dictionary: Option<ProfilesDictionary>,
}

/// `...collector.profiles.v1development.ExportProfilesServiceResponse`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ExportProfilesServiceResponse {
    #[prost(message, optional, tag = "1")]
    pub partial_success: Option<ExportProfilesPartialSuccess>,
}

/// `...collector.profiles.v1development.ExportProfilesPartialSuccess`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ExportProfilesPartialSuccess {
    #[prost(int64, tag = "1")]
    pub rejected_profiles: i64,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// `...profiles.v1development.ProfilesDictionary`: the tables every index points into. Each
/// table's element 0 is its zero value, so that index 0 means "unset".
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProfilesDictionary {
    #[prost(message, repeated, tag = "1")]
    pub mapping_table: Vec<Mapping>,
    #[prost(message, repeated, tag = "2")]
    pub location_table: Vec<Location>,
    #[prost(message, repeated, tag = "3")]
    pub function_table: Vec<Function>,
    #[prost(message, repeated, tag = "4")]
    pub link_table: Vec<Link>,
    #[prost(string, repeated, tag = "5")]
    pub string_table: Vec<String>,
    #[prost(message, repeated, tag = "6")]
    pub attribute_table: Vec<KeyValueAndUnit>,
    #[prost(message, repeated, tag = "7")]
    pub stack_table: Vec<Stack>,
}

/// `...profiles.v1development.ResourceProfiles`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceProfiles {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_profiles: Vec<ScopeProfiles>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `...profiles.v1development.ScopeProfiles`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeProfiles {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub profiles: Vec<Profile>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `...profiles.v1development.Profile`: one sample type, and samples of it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    #[prost(message, optional, tag = "1")]
    pub sample_type: Option<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    #[prost(uint64, tag = "4")]
    pub duration_nano: u64,
    #[prost(message, optional, tag = "5")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "6")]
    pub period: i64,
    #[prost(bytes = "vec", tag = "7")]
    pub profile_id: Vec<u8>,
    #[prost(uint32, tag = "8")]
    pub dropped_attributes_count: u32,
    #[prost(string, tag = "9")]
    pub original_payload_format: String,
    #[prost(bytes = "vec", tag = "10")]
    pub original_payload: Vec<u8>,
    #[prost(int32, repeated, tag = "11")]
    pub attribute_indices: Vec<i32>,
}

/// `...profiles.v1development.Link`: the span a sample was taken in.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Link {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
}

/// `...profiles.v1development.ValueType`: type and unit, as string indices.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ValueType {
    #[prost(int32, tag = "1")]
    pub type_strindex: i32,
    #[prost(int32, tag = "2")]
    pub unit_strindex: i32,
}

/// `...profiles.v1development.Sample`: a stack, attributes, a link, and observations (values,
/// timestamps, or both of equal length).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Sample {
    #[prost(int32, tag = "1")]
    pub stack_index: i32,
    #[prost(int32, repeated, tag = "2")]
    pub attribute_indices: Vec<i32>,
    #[prost(int32, tag = "3")]
    pub link_index: i32,
    #[prost(int64, repeated, tag = "4")]
    pub values: Vec<i64>,
    #[prost(fixed64, repeated, tag = "5")]
    pub timestamps_unix_nano: Vec<u64>,
}

/// `...profiles.v1development.Mapping`: a mapped binary.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub memory_start: u64,
    #[prost(uint64, tag = "2")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "3")]
    pub file_offset: u64,
    #[prost(int32, tag = "4")]
    pub filename_strindex: i32,
    #[prost(int32, repeated, tag = "5")]
    pub attribute_indices: Vec<i32>,
}

/// `...profiles.v1development.Stack`: location indices, leaf first.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Stack {
    #[prost(int32, repeated, tag = "1")]
    pub location_indices: Vec<i32>,
}

/// `...profiles.v1development.Location`: an address and the functions at it; `lines[0]` is the
/// innermost inlined function, the last line the caller it was inlined into.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Location {
    #[prost(int32, tag = "1")]
    pub mapping_index: i32,
    #[prost(uint64, tag = "2")]
    pub address: u64,
    #[prost(message, repeated, tag = "3")]
    pub lines: Vec<Line>,
    #[prost(int32, repeated, tag = "4")]
    pub attribute_indices: Vec<i32>,
}

/// `...profiles.v1development.Line`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Line {
    #[prost(int32, tag = "1")]
    pub function_index: i32,
    #[prost(int64, tag = "2")]
    pub line: i64,
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// `...profiles.v1development.Function`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Function {
    #[prost(int32, tag = "1")]
    pub name_strindex: i32,
    #[prost(int32, tag = "2")]
    pub system_name_strindex: i32,
    #[prost(int32, tag = "3")]
    pub filename_strindex: i32,
    #[prost(int64, tag = "4")]
    pub start_line: i64,
}

/// `...profiles.v1development.KeyValueAndUnit`: an entry of the attribute table.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueAndUnit {
    #[prost(int32, tag = "1")]
    pub key_strindex: i32,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    #[prost(int32, tag = "3")]
    pub unit_strindex: i32,
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
    #[prost(message, repeated, tag = "3")]
    pub entity_refs: Vec<EntityRef>,
}

/// `opentelemetry.proto.common.v1.EntityRef`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct EntityRef {
    #[prost(string, tag = "1")]
    pub schema_url: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(string, repeated, tag = "3")]
    pub id_keys: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub description_keys: Vec<String>,
}

/// `opentelemetry.proto.common.v1.InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(message, repeated, tag = "3")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "4")]
    pub dropped_attributes_count: u32,
}

/// `opentelemetry.proto.common.v1.KeyValue`: the key is `key`, or in profiles messages a
/// string-table index (`key_strindex`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    #[prost(int32, tag = "3")]
    pub key_strindex: i32,
}

/// `opentelemetry.proto.common.v1.AnyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<Value>,
}

/// The `value` oneof of [`AnyValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    ArrayValue(ArrayValue),
    #[prost(message, tag = "6")]
    KvlistValue(KeyValueList),
    #[prost(bytes = "vec", tag = "7")]
    BytesValue(Vec<u8>),
    /// A string-table index, in profiles messages.
    #[prost(int32, tag = "8")]
    StringValueStrindex(i32),
}

/// `opentelemetry.proto.common.v1.ArrayValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

/// `opentelemetry.proto.common.v1.KeyValueList`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

/// `google.rpc.Status`: the body of an OTLP/HTTP error (its `details` are never sent).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Encodes by hand with v1.10.0's field numbers and wire types, so a wrong tag or type above
    /// fails here.
    #[test]
    fn field_numbers_match_v1_10() {
        // Profile { sample_type(1) = {type(1)=1, unit(2)=2}, samples(2) = { stack_index(1)=3,
        //   attribute_indices(2)=[4], link_index(3)=5, values(4)=[6],
        //   timestamps_unix_nano(5)=[7] (fixed64) }, time_unix_nano(3)=9 (fixed64), period(6)=8,
        //   attribute_indices(11)=[10] }
        let mut sample = vec![0x08, 3, 0x12, 1, 4, 0x18, 5, 0x22, 1, 6, 0x2a, 8];
        sample.extend_from_slice(&7u64.to_le_bytes());
        let mut bytes = vec![0x0a, 4, 0x08, 1, 0x10, 2, 0x12, sample.len() as u8];
        bytes.extend_from_slice(&sample);
        bytes.push(0x19);
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(&[0x30, 8, 0x5a, 1, 10]);
        let p = Profile::decode(&bytes[..]).expect("decode");
        assert_eq!(
            p.sample_type,
            Some(ValueType {
                type_strindex: 1,
                unit_strindex: 2
            })
        );
        let s = &p.samples[0];
        assert_eq!(
            (
                s.stack_index,
                s.link_index,
                &s.values[..],
                &s.timestamps_unix_nano[..]
            ),
            (3, 5, &[6][..], &[7][..])
        );
        assert_eq!(s.attribute_indices, vec![4]);
        assert_eq!((p.time_unix_nano, p.period), (9, 8));
        assert_eq!(p.attribute_indices, vec![10]);

        // ProfilesDictionary { string_table(5) = "", stack_table(7) = { location_indices(1) =
        //   [1, 2] }, attribute_table(6) = { key_strindex(1) = 1, value(2) = {
        //   string_value_strindex(8) = 2 } } }
        let bytes = [
            0x2a, 0, 0x3a, 4, 0x0a, 2, 1, 2, 0x32, 6, 0x08, 1, 0x12, 2, 0x40, 2,
        ];
        let d = ProfilesDictionary::decode(&bytes[..]).expect("decode");
        assert_eq!(d.stack_table[0].location_indices, vec![1, 2]);
        let kv = &d.attribute_table[0];
        assert_eq!(kv.key_strindex, 1);
        assert_eq!(
            kv.value.as_ref().and_then(|v| v.value.clone()),
            Some(Value::StringValueStrindex(2))
        );
    }
}
