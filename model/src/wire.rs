//! The protobuf wire types, mirroring `proto/profwatch/v1/events.proto` field for field.
//!
//! The structs are written with `prost`'s derive rather than generated, so building needs no
//! `protoc`; the test below encodes a message by hand with the `.proto`'s field numbers to keep
//! the two in step.

use std::collections::BTreeMap;

use crate::event::{RequestEvent, MAX_LABELS};
use crate::scan::{self, Repeated};
use crate::timefmt::now_ns;

/// `profwatch.v1.EventBatch`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EventBatch {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<WireEvent>,
}

/// `profwatch.v1.RequestEvent`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireEvent {
    #[prost(int64, tag = "1")]
    pub ts_unix_nano: i64,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "3")]
    pub endpoint: String,
    #[prost(string, tag = "4")]
    pub build: String,
    #[prost(string, tag = "5")]
    pub dc: String,
    #[prost(string, tag = "6")]
    pub host: String,
    #[prost(uint32, tag = "7")]
    pub status: u32,
    #[prost(uint64, tag = "8")]
    pub cpu_ns: u64,
    #[prost(uint64, optional, tag = "9")]
    pub instructions: Option<u64>,
    #[prost(uint64, tag = "10")]
    pub wall_ns: u64,
    #[prost(double, tag = "11")]
    pub weight: f64,
    #[prost(btree_map = "string, string", tag = "12")]
    pub labels: BTreeMap<String, String>,
}

/// A wire event whose `status` does not fit the model; the only conversion that can fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `status` is {0}; it must be 0..=999")]
pub struct StatusOutOfRange(pub u32);

impl WireEvent {
    /// Converts to the model. `ts == 0` becomes `now`, `weight == 0` becomes 1.
    pub fn into_event(self, now: i64) -> Result<RequestEvent, StatusOutOfRange> {
        let status = u16::try_from(self.status)
            .ok()
            .filter(|s| *s <= 999)
            .ok_or(StatusOutOfRange(self.status))?;
        Ok(RequestEvent {
            ts: if self.ts_unix_nano == 0 {
                now
            } else {
                self.ts_unix_nano
            },
            service: self.service,
            endpoint: self.endpoint,
            build: self.build,
            dc: self.dc,
            host: self.host,
            status,
            cpu_ns: self.cpu_ns,
            instructions: self.instructions,
            wall_ns: self.wall_ns,
            weight: if self.weight == 0.0 { 1.0 } else { self.weight },
            labels: self.labels,
        })
    }
}

impl From<&RequestEvent> for WireEvent {
    fn from(e: &RequestEvent) -> Self {
        WireEvent {
            ts_unix_nano: e.ts,
            service: e.service.clone(),
            endpoint: e.endpoint.clone(),
            build: e.build.clone(),
            dc: e.dc.clone(),
            host: e.host.clone(),
            status: u32::from(e.status),
            cpu_ns: e.cpu_ns,
            instructions: e.instructions,
            wall_ns: e.wall_ns,
            weight: e.weight,
            labels: e.labels.clone(),
        }
    }
}

/// Encodes events as a protobuf `EventBatch`.
pub fn encode_batch(events: &[RequestEvent]) -> Vec<u8> {
    use prost::Message;
    EventBatch {
        events: events.iter().map(WireEvent::from).collect(),
    }
    .encode_to_vec()
}

/// Decodes a protobuf `EventBatch` into model events (not yet validated).
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<RequestEvent>, DecodeBatchError> {
    decode_batch_capped(bytes, usize::MAX)
}

/// As [`decode_batch`], but counts the events, and the labels of each, before decoding: a
/// batch of more than `max_events` events, or an event of more than [`MAX_LABELS`] labels, is
/// refused without being decoded.
pub fn decode_batch_capped(
    bytes: &[u8],
    max_events: usize,
) -> Result<Vec<RequestEvent>, DecodeBatchError> {
    use prost::Message;
    let count = scan::count(bytes, 1, Repeated::Messages);
    if count > max_events {
        return Err(DecodeBatchError::TooManyEvents {
            count,
            max: max_events,
        });
    }
    let events = scan::fields(bytes)
        .map_while(Result::ok)
        .filter(|f| f.number == 1);
    for (index, event) in events.enumerate() {
        let labels = scan::count(event.payload, 12, Repeated::Messages);
        if labels > MAX_LABELS {
            return Err(DecodeBatchError::Labels {
                index,
                count: labels,
                max: MAX_LABELS,
            });
        }
    }
    let batch = EventBatch::decode(bytes).map_err(DecodeBatchError::Protobuf)?;
    let now = now_ns();
    batch
        .events
        .into_iter()
        .enumerate()
        .map(|(index, e)| {
            e.into_event(now)
                .map_err(|source| DecodeBatchError::Event { index, source })
        })
        .collect()
}

/// Why a protobuf batch could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeBatchError {
    #[error("body is not a valid profwatch.v1.EventBatch protobuf: {0}")]
    Protobuf(prost::DecodeError),
    #[error("event {index}: {source}")]
    Event {
        index: usize,
        source: StatusOutOfRange,
    },
    /// More events than one batch may carry (counted before decoding).
    #[error("{count} events in one request; the limit is {max}")]
    TooManyEvents { count: usize, max: usize },
    /// An event with more labels than any server accepts (counted before decoding).
    #[error("event {index}: {count} labels; the limit is {max} per event")]
    Labels {
        index: usize,
        count: usize,
        max: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Encodes one event with the field numbers and wire types of `events.proto`, by hand.
    #[test]
    fn field_numbers_match_the_proto_file() {
        fn varint(mut v: u64, out: &mut Vec<u8>) {
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
        fn string(tag: u64, s: &str, out: &mut Vec<u8>) {
            varint(tag << 3 | 2, out);
            varint(s.len() as u64, out);
            out.extend_from_slice(s.as_bytes());
        }
        let mut ev = Vec::new();
        varint(1 << 3, &mut ev);
        varint(42, &mut ev);
        for (tag, s) in [(2, "svc"), (3, "GET /"), (4, "b1"), (5, "dc1"), (6, "h1")] {
            string(tag, s, &mut ev);
        }
        for (tag, v) in [(7, 200), (8, 1000), (9, 5000), (10, 3000)] {
            varint(tag << 3, &mut ev);
            varint(v, &mut ev);
        }
        varint(11 << 3 | 1, &mut ev);
        ev.extend_from_slice(&2.0f64.to_le_bytes());
        let mut entry = Vec::new();
        string(1, "flag", &mut entry);
        string(2, "on", &mut entry);
        varint(12 << 3 | 2, &mut ev);
        varint(entry.len() as u64, &mut ev);
        ev.extend_from_slice(&entry);
        let mut batch = Vec::new();
        varint(1 << 3 | 2, &mut batch);
        varint(ev.len() as u64, &mut batch);
        batch.extend_from_slice(&ev);

        let decoded = EventBatch::decode(batch.as_slice()).expect("decodes");
        let e = &decoded.events[0];
        assert_eq!(e.ts_unix_nano, 42);
        assert_eq!(
            (
                e.service.as_str(),
                e.endpoint.as_str(),
                e.build.as_str(),
                e.dc.as_str(),
                e.host.as_str()
            ),
            ("svc", "GET /", "b1", "dc1", "h1")
        );
        assert_eq!(
            (e.status, e.cpu_ns, e.instructions, e.wall_ns),
            (200, 1000, Some(5000), 3000)
        );
        assert_eq!(e.weight, 2.0);
        assert_eq!(e.labels.get("flag").map(String::as_str), Some("on"));
    }

    #[test]
    fn round_trip_and_defaults() {
        let wire = WireEvent {
            service: "s".into(),
            endpoint: "e".into(),
            ..Default::default()
        };
        let e = wire.into_event(7).expect("valid status");
        assert_eq!((e.ts, e.weight, e.instructions), (7, 1.0, None));
        let back = decode_batch(&encode_batch(std::slice::from_ref(&e))).expect("round trip");
        assert_eq!(back[0], e);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_batch(&[0x0a, 0xff, 0xff, 0xff]).is_err());
        let bad_status = EventBatch {
            events: vec![WireEvent {
                status: 70_000,
                ..Default::default()
            }],
        };
        assert!(decode_batch(&bad_status.encode_to_vec()).is_err());
    }

    #[test]
    fn counts_are_checked_before_decoding() {
        let e = WireEvent {
            service: "s".into(),
            endpoint: "e".into(),
            ..Default::default()
        };
        let batch = EventBatch {
            events: vec![e.clone(); 3],
        }
        .encode_to_vec();
        assert!(matches!(
            decode_batch_capped(&batch, 2),
            Err(DecodeBatchError::TooManyEvents { count: 3, max: 2 })
        ));
        assert_eq!(
            decode_batch_capped(&batch, 3).map(|v| v.len()).ok(),
            Some(3)
        );
        let mut many = e;
        for i in 0..17 {
            many.labels.insert(format!("k{i}"), "v".into());
        }
        let batch = EventBatch { events: vec![many] }.encode_to_vec();
        assert!(matches!(
            decode_batch(&batch),
            Err(DecodeBatchError::Labels {
                index: 0,
                count: 17,
                ..
            })
        ));
    }

    mod props {
        use super::*;
        use profwatch_testkit::alloc::within;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any bytes: no panic, and never more events than the cap or than the bytes could
            /// hold (an event takes at least two bytes: its field's tag and length).
            #[test]
            fn any_bytes_decode_without_panic_within_the_cap(
                bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                cap in 0usize..64,
            ) {
                let decoded = within("a protobuf batch decode", 16 * 1024 + 64 * bytes.len(), || {
                    decode_batch_capped(&bytes, cap)
                })
                .map_err(TestCaseError::fail)?;
                if let Ok(events) = decoded {
                    prop_assert!(events.len() <= cap && 2 * events.len() <= bytes.len());
                }
            }

            /// A valid batch with bytes appended or cut decodes or errs, never panics.
            #[test]
            fn damaged_batches_decode_without_panic(
                n in 0usize..20,
                tail in proptest::collection::vec(any::<u8>(), 0..64),
                cut in any::<prop::sample::Index>(),
            ) {
                let events: Vec<RequestEvent> = (0..n)
                    .map(|i| RequestEvent {
                        ts: 1_700_000_000_000_000_000,
                        service: "s".into(),
                        endpoint: format!("GET /{i}"),
                        build: "b".into(),
                        dc: String::new(),
                        host: String::new(),
                        status: 200,
                        cpu_ns: i as u64,
                        instructions: None,
                        wall_ns: 0,
                        weight: 1.0,
                        labels: Default::default(),
                    })
                    .collect();
                let mut bytes = encode_batch(&events);
                prop_assert_eq!(decode_batch(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?, events);
                let short = &bytes[..cut.index(bytes.len() + 1)];
                let _ = decode_batch_capped(short, 100);
                bytes.extend_from_slice(&tail);
                let _ = decode_batch_capped(&bytes, 100);
            }
        }
    }
}
