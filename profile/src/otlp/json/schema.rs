//! The messages OTLP/JSON may hold, as the transcoder reads them: for each field its JSON
//! (lowerCamelCase) and proto names, number and kind. Field for field the messages of
//! `super::super::proto`, opentelemetry-proto v1.10.0.

/// What a field holds.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Int32,
    Int64,
    Uint64,
    Fixed64,
    Double,
    Bool,
    String,
    Bytes,
    /// A trace or span id: hex (OTLP/JSON) or base64.
    Id,
    Message(&'static Msg),
}

/// One field of a message.
#[derive(Debug)]
pub(super) struct FieldDesc {
    pub json: &'static str,
    pub proto: &'static str,
    pub number: u32,
    pub kind: Kind,
    pub repeated: bool,
}

/// A message: its name (for errors) and fields.
#[derive(Debug)]
pub(super) struct Msg {
    pub name: &'static str,
    pub fields: &'static [FieldDesc],
}

macro_rules! field {
    ($json:literal, $proto:literal, $n:literal, $kind:expr) => {
        FieldDesc {
            json: $json,
            proto: $proto,
            number: $n,
            kind: $kind,
            repeated: false,
        }
    };
    ($json:literal, $proto:literal, $n:literal, $kind:expr, repeated) => {
        FieldDesc {
            json: $json,
            proto: $proto,
            number: $n,
            kind: $kind,
            repeated: true,
        }
    };
}

use Kind::{Bool, Bytes, Double, Fixed64, Id, Int32, Int64, Message, Uint64};

pub(super) static REQUEST: Msg = Msg {
    name: "ExportProfilesServiceRequest",
    fields: &[
        field!(
            "resourceProfiles",
            "resource_profiles",
            1,
            Message(&RESOURCE_PROFILES),
            repeated
        ),
        field!("dictionary", "dictionary", 2, Message(&DICTIONARY)),
    ],
};
static RESOURCE_PROFILES: Msg = Msg {
    name: "ResourceProfiles",
    fields: &[
        field!("resource", "resource", 1, Message(&RESOURCE)),
        field!(
            "scopeProfiles",
            "scope_profiles",
            2,
            Message(&SCOPE_PROFILES),
            repeated
        ),
        field!("schemaUrl", "schema_url", 3, Kind::String),
    ],
};
static RESOURCE: Msg = Msg {
    name: "Resource",
    fields: &[
        field!("attributes", "attributes", 1, Message(&KEY_VALUE), repeated),
        field!(
            "droppedAttributesCount",
            "dropped_attributes_count",
            2,
            Uint64
        ),
        field!(
            "entityRefs",
            "entity_refs",
            3,
            Message(&ENTITY_REF),
            repeated
        ),
    ],
};
static ENTITY_REF: Msg = Msg {
    name: "EntityRef",
    fields: &[
        field!("schemaUrl", "schema_url", 1, Kind::String),
        field!("type", "type", 2, Kind::String),
        field!("idKeys", "id_keys", 3, Kind::String, repeated),
        field!(
            "descriptionKeys",
            "description_keys",
            4,
            Kind::String,
            repeated
        ),
    ],
};
static SCOPE_PROFILES: Msg = Msg {
    name: "ScopeProfiles",
    fields: &[
        field!("scope", "scope", 1, Message(&SCOPE)),
        field!("profiles", "profiles", 2, Message(&PROFILE), repeated),
        field!("schemaUrl", "schema_url", 3, Kind::String),
    ],
};
static SCOPE: Msg = Msg {
    name: "InstrumentationScope",
    fields: &[
        field!("name", "name", 1, Kind::String),
        field!("version", "version", 2, Kind::String),
        field!("attributes", "attributes", 3, Message(&KEY_VALUE), repeated),
        field!(
            "droppedAttributesCount",
            "dropped_attributes_count",
            4,
            Uint64
        ),
    ],
};
static PROFILE: Msg = Msg {
    name: "Profile",
    fields: &[
        field!("sampleType", "sample_type", 1, Message(&VALUE_TYPE)),
        field!("samples", "samples", 2, Message(&SAMPLE), repeated),
        field!("timeUnixNano", "time_unix_nano", 3, Fixed64),
        field!("durationNano", "duration_nano", 4, Uint64),
        field!("periodType", "period_type", 5, Message(&VALUE_TYPE)),
        field!("period", "period", 6, Int64),
        field!("profileId", "profile_id", 7, Bytes),
        field!(
            "droppedAttributesCount",
            "dropped_attributes_count",
            8,
            Uint64
        ),
        field!(
            "originalPayloadFormat",
            "original_payload_format",
            9,
            Kind::String
        ),
        field!("originalPayload", "original_payload", 10, Bytes),
        field!("attributeIndices", "attribute_indices", 11, Int32, repeated),
    ],
};
static VALUE_TYPE: Msg = Msg {
    name: "ValueType",
    fields: &[
        field!("typeStrindex", "type_strindex", 1, Int32),
        field!("unitStrindex", "unit_strindex", 2, Int32),
    ],
};
static SAMPLE: Msg = Msg {
    name: "Sample",
    fields: &[
        field!("stackIndex", "stack_index", 1, Int32),
        field!("attributeIndices", "attribute_indices", 2, Int32, repeated),
        field!("linkIndex", "link_index", 3, Int32),
        field!("values", "values", 4, Int64, repeated),
        field!(
            "timestampsUnixNano",
            "timestamps_unix_nano",
            5,
            Fixed64,
            repeated
        ),
    ],
};
static DICTIONARY: Msg = Msg {
    name: "ProfilesDictionary",
    fields: &[
        field!(
            "mappingTable",
            "mapping_table",
            1,
            Message(&MAPPING),
            repeated
        ),
        field!(
            "locationTable",
            "location_table",
            2,
            Message(&LOCATION),
            repeated
        ),
        field!(
            "functionTable",
            "function_table",
            3,
            Message(&FUNCTION),
            repeated
        ),
        field!("linkTable", "link_table", 4, Message(&LINK), repeated),
        field!("stringTable", "string_table", 5, Kind::String, repeated),
        field!(
            "attributeTable",
            "attribute_table",
            6,
            Message(&KEY_VALUE_AND_UNIT),
            repeated
        ),
        field!("stackTable", "stack_table", 7, Message(&STACK), repeated),
    ],
};
static MAPPING: Msg = Msg {
    name: "Mapping",
    fields: &[
        field!("memoryStart", "memory_start", 1, Uint64),
        field!("memoryLimit", "memory_limit", 2, Uint64),
        field!("fileOffset", "file_offset", 3, Uint64),
        field!("filenameStrindex", "filename_strindex", 4, Int32),
        field!("attributeIndices", "attribute_indices", 5, Int32, repeated),
    ],
};
static LOCATION: Msg = Msg {
    name: "Location",
    fields: &[
        field!("mappingIndex", "mapping_index", 1, Int32),
        field!("address", "address", 2, Uint64),
        field!("lines", "lines", 3, Message(&LINE), repeated),
        field!("attributeIndices", "attribute_indices", 4, Int32, repeated),
    ],
};
static LINE: Msg = Msg {
    name: "Line",
    fields: &[
        field!("functionIndex", "function_index", 1, Int32),
        field!("line", "line", 2, Int64),
        field!("column", "column", 3, Int64),
    ],
};
static FUNCTION: Msg = Msg {
    name: "Function",
    fields: &[
        field!("nameStrindex", "name_strindex", 1, Int32),
        field!("systemNameStrindex", "system_name_strindex", 2, Int32),
        field!("filenameStrindex", "filename_strindex", 3, Int32),
        field!("startLine", "start_line", 4, Int64),
    ],
};
static LINK: Msg = Msg {
    name: "Link",
    fields: &[
        field!("traceId", "trace_id", 1, Id),
        field!("spanId", "span_id", 2, Id),
    ],
};
static STACK: Msg = Msg {
    name: "Stack",
    fields: &[field!(
        "locationIndices",
        "location_indices",
        1,
        Int32,
        repeated
    )],
};
static KEY_VALUE_AND_UNIT: Msg = Msg {
    name: "KeyValueAndUnit",
    fields: &[
        field!("keyStrindex", "key_strindex", 1, Int32),
        field!("value", "value", 2, Message(&ANY_VALUE)),
        field!("unitStrindex", "unit_strindex", 3, Int32),
    ],
};
static KEY_VALUE: Msg = Msg {
    name: "KeyValue",
    fields: &[
        field!("key", "key", 1, Kind::String),
        field!("value", "value", 2, Message(&ANY_VALUE)),
        field!("keyStrindex", "key_strindex", 3, Int32),
    ],
};
static ANY_VALUE: Msg = Msg {
    name: "AnyValue",
    fields: &[
        field!("stringValue", "string_value", 1, Kind::String),
        field!("boolValue", "bool_value", 2, Bool),
        field!("intValue", "int_value", 3, Int64),
        field!("doubleValue", "double_value", 4, Double),
        field!("arrayValue", "array_value", 5, Message(&ARRAY_VALUE)),
        field!("kvlistValue", "kvlist_value", 6, Message(&KEY_VALUE_LIST)),
        field!("bytesValue", "bytes_value", 7, Bytes),
        field!("stringValueStrindex", "string_value_strindex", 8, Int32),
    ],
};
static ARRAY_VALUE: Msg = Msg {
    name: "ArrayValue",
    fields: &[field!("values", "values", 1, Message(&ANY_VALUE), repeated)],
};
static KEY_VALUE_LIST: Msg = Msg {
    name: "KeyValueList",
    fields: &[field!("values", "values", 1, Message(&KEY_VALUE), repeated)],
};
