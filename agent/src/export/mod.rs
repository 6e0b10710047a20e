//! Delivery of finished events: the [`Exporter`] trait, the wire encodings, and the exporters
//! the SDK ships (sidecar socket, collector HTTP, in-memory, discard).
//!
//! Invariants: exporters run only on the export thread, never on a request path. An
//! exporter sends a batch whole or reports an error; the export thread retries retriable
//! errors a bounded number of times and then drops and counts the batch (the sidecar, not the
//! SDK, owns a disk spool). The encodings are the collector's: [`encode`] is shared with the
//! sidecar so both speak exactly the same bytes.

mod http;
pub(crate) use http::CollectorHttp;
mod memory;
mod unix;
pub(crate) mod worker;

pub use http::HttpExporter;
pub use memory::MemoryExporter;
pub use unix::UnixSocketExporter;

use profwatch_model::{ndjson, wire, RequestEvent};

pub use crate::error::ExportError;

/// Something that delivers batches of events.
pub trait Exporter: Send + 'static {
    /// Delivers `events` whole, or fails.
    fn export(&mut self, events: &[RequestEvent]) -> Result<(), ExportError>;
}

/// Throws every batch away.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardExporter;

impl Exporter for DiscardExporter {
    fn export(&mut self, _events: &[RequestEvent]) -> Result<(), ExportError> {
        Ok(())
    }
}

/// A body format the collector accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WireFormat {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// A `profwatch.v1.EventBatch` (`application/x-protobuf`).
    Protobuf,
}

impl WireFormat {
    /// Parses `ndjson` or `protobuf`.
    pub fn parse(s: &str) -> Option<WireFormat> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ndjson" | "json" => Some(WireFormat::Ndjson),
            "protobuf" | "proto" => Some(WireFormat::Protobuf),
            _ => None,
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            WireFormat::Ndjson => "application/x-ndjson",
            WireFormat::Protobuf => "application/x-protobuf",
        }
    }
}

/// Encodes a batch as the collector expects it in `format`.
pub fn encode(events: &[RequestEvent], format: WireFormat) -> Vec<u8> {
    match format {
        WireFormat::Ndjson => {
            let mut body = Vec::with_capacity(events.len() * 256);
            for event in events {
                body.extend_from_slice(ndjson::to_line(event, false).as_bytes());
            }
            body
        }
        WireFormat::Protobuf => wire::encode_batch(events),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> RequestEvent {
        RequestEvent {
            ts: profwatch_model::timefmt::now_ns(),
            service: "s".into(),
            endpoint: "GET /users/{id}".into(),
            build: "b".into(),
            dc: "d".into(),
            host: "h".into(),
            status: 200,
            cpu_ns: 10,
            instructions: None,
            wall_ns: 20,
            weight: 4.0,
            labels: [("flag".to_owned(), "on".to_owned())].into(),
        }
    }

    #[test]
    fn both_formats_round_trip_through_the_collectors_decoders() {
        let events = vec![event(), event()];
        let ndjson_body = encode(&events, WireFormat::Ndjson);
        assert_eq!(ndjson::parse_body(&ndjson_body).expect("ndjson"), events);
        let proto_body = encode(&events, WireFormat::Protobuf);
        assert_eq!(wire::decode_batch(&proto_body).expect("protobuf"), events);
    }
}
