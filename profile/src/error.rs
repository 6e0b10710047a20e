//! Why a profile could not be read, converted or rendered. Every variant tells the sender what
//! is wrong with its input; [`ProfileError::is_too_large`] separates "too big" (413) from
//! "malformed" (400).

/// A profile that cannot be taken or produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The protobuf is truncated or not a `profile.proto` message.
    #[error("the pprof profile is not valid protobuf: {0}")]
    Protobuf(#[source] prost::DecodeError),
    /// A message inside a Pyroscope push request is not valid protobuf.
    #[error("the push request is not valid protobuf: {0}")]
    PushProtobuf(#[source] prost::DecodeError),
    /// gzip data that does not inflate.
    #[error("the gzip data is corrupt: {0}")]
    Gzip(#[source] std::io::Error),
    /// Decompressed data past the cap.
    #[error("the profile decompresses to more than {max} bytes")]
    Decompressed { max: usize },
    /// A sample refers to location id 0, which `profile.proto` reserves.
    #[error("sample {sample} refers to location id 0; location ids start at 1")]
    LocationIdZero { sample: usize },
    /// A sample refers to a location the profile does not define.
    #[error("sample {sample} refers to location id {id}, which the profile does not define")]
    UnknownLocation { sample: usize, id: u64 },
    /// A line refers to a function the profile does not define.
    #[error("location {location} refers to function id {id}, which the profile does not define")]
    UnknownFunction { location: u64, id: u64 },
    /// A string index past the end of `string_table` (or negative).
    #[error("{what} uses string index {index}, but the string table has {len} entries")]
    StringIndex {
        what: &'static str,
        index: i64,
        len: usize,
    },
    /// `string_table[0]` must be the empty string.
    #[error("string_table[0] must be the empty string")]
    StringTableStart,
    /// The profile has no value that can be read as samples or CPU time.
    #[error("the profile has no sample types; expected samples/count or cpu/nanoseconds")]
    NoSampleType,
    /// A sample has fewer values than `sample_type` names.
    #[error("sample {sample} has {values} values but the profile has {types} sample types")]
    ValueCount {
        sample: usize,
        values: usize,
        types: usize,
    },
    /// A negative sample value.
    #[error("sample {sample} has a negative value")]
    NegativeValue { sample: usize },
    /// A stack deeper than the limit.
    #[error("a stack has {frames} frames; the limit is {max}")]
    TooManyFrames { frames: usize, max: usize },
    /// More samples in one profile than the limit.
    #[error("the profile has {samples} samples; the limit is {max} per profile")]
    TooManySamples { samples: usize, max: usize },
    /// More of something in one profile than its cap allows.
    #[error("the profile has {count} {what}; the limit is {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// A location with more lines (inlined functions) than the limit.
    #[error("location {location} has {lines} lines; the limit is {max} per location")]
    TooManyLines {
        location: u64,
        lines: usize,
        max: usize,
    },
    /// A sample with more labels or values than the limit.
    #[error("sample {sample} has {count} {what}; the limit is {max} per sample")]
    SampleTooLarge {
        sample: usize,
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// The converted stacks would hold more bytes of frames than the limit.
    #[error(
        "the profile's stacks expand to more than {max} bytes of frames (each frame counts its \
         name plus 32 bytes); the limit is {max}"
    )]
    FrameBytes { max: usize },
    /// A multipart boundary longer than RFC 2046 allows.
    #[error("the multipart boundary is {len} bytes; RFC 2046 allows 1 to {max}")]
    Boundary { len: usize, max: usize },
    /// The server's budget for decompressed bytes in flight is spent (by all requests
    /// together); this input may fit later.
    #[error("the server is decompressing too much at once; retry later")]
    Busy,
    /// This input alone needs more than the server's whole budget of bytes in flight.
    #[error("the request needs more than the server's {limit} bytes of bodies in flight")]
    OverBudget { limit: usize },
    /// A frame name longer than the limit.
    #[error("a frame name is {len} bytes; the limit is {max}")]
    FrameTooLong { len: usize, max: usize },
    /// No service: neither a parameter nor a label names it.
    #[error("no service: give `service` (or a `service_name` label)")]
    NoService,
    /// A label set the model refuses (too long, too many, bad key).
    #[error("labels: {0}")]
    Labels(#[from] profwatch_model::ValidationError),
    /// A line of folded stacks that cannot be read.
    #[error("folded line {line}: {detail}")]
    Folded { line: usize, detail: String },
    /// Input that is not valid UTF-8 where text was expected.
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: &'static str },
    /// `perf script` output that inferno could not collapse.
    #[error("could not collapse the perf script output: {0}")]
    Collapse(#[source] std::io::Error),
    /// A flame graph could not be drawn.
    #[error("could not render the flame graph: {0}")]
    Render(#[source] std::io::Error),
}

/// A pprof message that does not decode.
impl From<prost::DecodeError> for ProfileError {
    fn from(e: prost::DecodeError) -> Self {
        ProfileError::Protobuf(e)
    }
}

impl ProfileError {
    /// Whether the input was refused for its size rather than its content (HTTP 413).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            ProfileError::Decompressed { .. }
                | ProfileError::TooManySamples { .. }
                | ProfileError::TooMany { .. }
                | ProfileError::FrameBytes { .. }
                | ProfileError::OverBudget { .. }
        )
    }
}
