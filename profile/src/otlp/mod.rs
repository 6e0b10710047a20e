//! OTLP profiles (`opentelemetry.proto.profiles.v1development`, as of opentelemetry-proto
//! v1.10.0) → [`ProfileBatch`](profwatch_model::profile::ProfileBatch)es.
//!
//! | file | concept |
//! |---|---|
//! | [`proto`] | the messages (prost derive, no `protoc`) |
//! | [`json`] | OTLP/JSON, transcoded to the same protobuf while it is read (its schema in `json/schema.rs`) |
//! | [`dictionary`] | the request's shared tables, counted, checked and interned |
//! | [`attributes`] | attribute values as text, and attributes → our label fields |
//! | [`convert`] | the request: resources, profiles, samples → batches |
//!
//! Invariants, as for pprof (`decode`): a request is never decoded whole; every repeated field
//! is counted against its cap ([`ProfileLimits`](crate::ProfileLimits), [`OtlpLimits`]) before
//! anything is built for it; every index is checked, so a malformed request is an
//! [`OtlpError`], never a panic; a field whose wire type is not v1.10.0's is an error (a
//! sender on another release of this development format is refused, never misread).

pub mod attributes;
pub mod convert;
pub mod dictionary;
pub mod json;
pub mod proto;

pub use convert::{convert, Converted, OtlpOptions};

use crate::error::ProfileError;

/// The release of opentelemetry-proto whose profiles messages this module reads.
pub const PROTO_VERSION: &str = "opentelemetry-proto v1.10.0";

/// Caps of the OTLP shapes pprof has no equivalent of. The caps shared with pprof (frames per
/// stack, samples, locations, lines, functions, strings, frame names, attributes per sample,
/// frame bytes, decompressed bytes) are [`ProfileLimits`](crate::ProfileLimits)'s, and apply to
/// a whole request: its profiles share one dictionary.
#[derive(Debug, Clone)]
pub struct OtlpLimits {
    /// Profiles in one request, over all resources and scopes (413).
    pub max_profiles: usize,
    /// Entries of `mapping_table` (413).
    pub max_mappings: usize,
    /// Entries of `link_table` (413).
    pub max_links: usize,
    /// Entries of `attribute_table` (413).
    pub max_attributes: usize,
    /// Entries of `stack_table` (413).
    pub max_stacks: usize,
    /// Location indices in all of `stack_table` together (413).
    pub max_stack_locations: usize,
    /// Attributes of one resource (400).
    pub max_resource_attributes: usize,
    /// How deep arrays and key-value lists may nest in one attribute value (400).
    pub max_value_depth: usize,
}

impl Default for OtlpLimits {
    fn default() -> Self {
        OtlpLimits {
            max_profiles: 10_000,
            max_mappings: 100_000,
            max_links: 1_000_000,
            max_attributes: 1_000_000,
            max_stacks: 1_000_000,
            max_stack_locations: 4_000_000,
            max_resource_attributes: 1024,
            max_value_depth: 16,
        }
    }
}

/// Why an OTLP request was refused. [`OtlpError::is_too_large`] separates 413 from 400.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpError {
    /// A cap or rule shared with pprof (sizes, counts, labels, negative values, gzip).
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// Bytes that are not the v1.10.0 messages: truncated, or a field of another wire type (a
    /// sender on another release of the development format).
    #[error(
        "{what} is not valid {PROTO_VERSION} protobuf ({source}); profiles v1development \
         changes between releases, so the sender must use the same release"
    )]
    Protobuf {
        what: &'static str,
        source: prost::DecodeError,
    },
    /// A packed `fixed64` field whose length is not a multiple of 8.
    #[error("{what} holds a packed fixed64 field of {len} bytes, not a multiple of 8")]
    PackedFixed64 { what: &'static str, len: usize },
    /// An OTLP/JSON body that cannot be read (with serde_json's line and column).
    #[error("the OTLP/JSON body is not valid for {PROTO_VERSION}: {0}")]
    Json(String),
    /// An index past the end of its table (or negative).
    #[error("{what} is {index}, but dictionary.{table} has {len} entries")]
    Index {
        what: &'static str,
        index: i64,
        table: &'static str,
        len: usize,
    },
    /// A dictionary table without its zero value at index 0.
    #[error(
        "dictionary.{table}[0] must be the zero value (index 0 means unset), but it is {found}"
    )]
    ZeroElement {
        table: &'static str,
        found: &'static str,
    },
    /// A stack that lists location 0, which only means "unset".
    #[error("dictionary.stack_table[{stack}] lists location 0, the null location")]
    NullLocation { stack: usize },
    /// A sample whose values and timestamps do not pair up.
    #[error(
        "sample {sample} has {values} values and {timestamps} timestamps; a sample needs \
         values, timestamps, or as many of each"
    )]
    Observations {
        sample: usize,
        values: usize,
        timestamps: usize,
    },
    /// A link whose ids are not 16 and 8 bytes.
    #[error("dictionary.link_table[{link}].{field} is {len} bytes; it must be {expected}")]
    LinkId {
        link: usize,
        field: &'static str,
        len: usize,
        expected: usize,
    },
    /// An attribute value nested deeper than the cap.
    #[error("an attribute value nests arrays or key-value lists more than {max} deep")]
    Nesting { max: usize },
}

impl OtlpError {
    /// Whether the request was refused for its size rather than its content (HTTP 413).
    pub fn is_too_large(&self) -> bool {
        matches!(self, OtlpError::Profile(e) if e.is_too_large())
    }

    /// A malformed message of kind `what`.
    pub(crate) fn protobuf(what: &'static str) -> impl Fn(prost::DecodeError) -> OtlpError {
        move |source| OtlpError::Protobuf { what, source }
    }
}

#[cfg(test)]
mod tests;
