//! The messages of Grafana Pyroscope's `push.v1.PusherService/Push` (`api/push/v1/push.proto`)
//! and the `types.v1.LabelPair` it uses, written with `prost`'s derive (no `protoc`).
//!
//! A request holds series; each series is a label set and raw pprof profiles (`raw_profile`,
//! gzipped or not) that all carry those labels.

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.PushResponse` (empty).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct PushResponse {}

/// `push.v1.RawProfileSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `push.v1.RawSample`: one pprof profile.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct RawSample {
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    #[prost(string, tag = "2")]
    pub id: String,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct LabelPair {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_push_proto() {
        // series(1) { labels(1) { name(1) "a" value(2) "b" } samples(2) { raw_profile(1) "p" id(2) "i" } }
        let bytes = [
            0x0a, 16, 0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b', 0x12, 6, 0x0a, 1, b'p', 0x12, 1, b'i',
        ];
        let r = PushRequest::decode(&bytes[..]).expect("decode");
        assert_eq!(r.series[0].labels[0].name, "a");
        assert_eq!(r.series[0].labels[0].value, "b");
        assert_eq!(r.series[0].samples[0].raw_profile, b"p");
        assert_eq!(r.series[0].samples[0].id, "i");
    }
}
