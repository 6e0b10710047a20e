//! The messages of Grafana Pyroscope's `push.v1.PusherService/Push` (`api/push/v1/push.proto`)
//! and the `types.v1.LabelPair` it uses, written with `prost`'s derive (no `protoc`).
//!
//! A request holds series; each series is a label set and raw pprof profiles (`raw_profile`,
//! gzipped or not) that all carry those labels.
//!
//! Invariant: [`decode_push`] counts series, labels and profiles before decoding, so a request
//! past [`MAX_SERIES`], [`MAX_SERIES_LABELS`] or [`MAX_PROFILES`] is refused before prost
//! allocates anything for it.

use profwatch_model::scan::{self, Repeated};
use prost::Message;

use super::error::ProfileError;

/// Series in one push request.
pub const MAX_SERIES: usize = 1024;
/// Labels of one series.
pub const MAX_SERIES_LABELS: usize = 64;
/// Raw profiles in one push request, all series together.
pub const MAX_PROFILES: usize = 1024;

/// Decodes a push request whose counts are within the caps.
pub fn decode_push(bytes: &[u8]) -> Result<PushRequest, ProfileError> {
    let too_many = |what, count, max| ProfileError::TooMany { what, count, max };
    let series = scan::count(bytes, 1, Repeated::Messages);
    if series > MAX_SERIES {
        return Err(too_many("series (push request)", series, MAX_SERIES));
    }
    let mut profiles = 0usize;
    for s in scan::fields(bytes)
        .map_while(Result::ok)
        .filter(|f| f.number == 1)
    {
        let labels = scan::count(s.payload, 1, Repeated::Messages);
        if labels > MAX_SERIES_LABELS {
            return Err(too_many("labels in one series", labels, MAX_SERIES_LABELS));
        }
        profiles += scan::count(s.payload, 2, Repeated::Messages);
    }
    if profiles > MAX_PROFILES {
        return Err(too_many("profiles (push request)", profiles, MAX_PROFILES));
    }
    PushRequest::decode(bytes).map_err(ProfileError::PushProtobuf)
}

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

    #[test]
    fn counts_are_capped_before_decoding() {
        let label = LabelPair {
            name: "k".into(),
            value: "v".into(),
        };
        let wide = PushRequest {
            series: vec![RawProfileSeries {
                labels: vec![label; MAX_SERIES_LABELS + 1],
                samples: Vec::new(),
            }],
        };
        assert!(matches!(
            decode_push(&wide.encode_to_vec()),
            Err(ProfileError::TooMany { count: 65, .. })
        ));
        let many = PushRequest {
            series: vec![RawProfileSeries::default(); MAX_SERIES + 1],
        };
        assert!(matches!(
            decode_push(&many.encode_to_vec()),
            Err(ProfileError::TooMany { count: 1025, .. })
        ));
        let fine = PushRequest {
            series: vec![RawProfileSeries::default(); 3],
        };
        assert_eq!(
            decode_push(&fine.encode_to_vec())
                .expect("fits")
                .series
                .len(),
            3
        );
    }

    mod properties {
        use super::*;
        use profwatch_testkit::alloc::within;
        use proptest::prelude::*;

        /// Whatever `decode_push` accepts is within every cap.
        fn within_caps(r: &PushRequest) -> bool {
            r.series.len() <= MAX_SERIES
                && r.series.iter().all(|s| s.labels.len() <= MAX_SERIES_LABELS)
                && r.series.iter().map(|s| s.samples.len()).sum::<usize>() <= MAX_PROFILES
        }

        fn request() -> impl Strategy<Value = PushRequest> {
            let label =
                ("[a-z_]{0,8}", "[ -~]{0,12}").prop_map(|(name, value)| LabelPair { name, value });
            let sample = (
                proptest::collection::vec(any::<u8>(), 0..64),
                "[a-z0-9]{0,8}",
            )
                .prop_map(|(raw_profile, id)| RawSample { raw_profile, id });
            let series = (
                proptest::collection::vec(label, 0..6),
                proptest::collection::vec(sample, 0..4),
            )
                .prop_map(|(labels, samples)| RawProfileSeries { labels, samples });
            proptest::collection::vec(series, 0..6).prop_map(|series| PushRequest { series })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Any bytes: no panic, and an accepted request is within the caps.
            #[test]
            fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
                let decoded = within("a push decode", 16 * 1024 + 16 * bytes.len(), || decode_push(&bytes))
                    .map_err(TestCaseError::fail)?;
                if let Ok(r) = decoded {
                    prop_assert!(within_caps(&r));
                }
            }

            /// A request within the caps comes back whole; with one byte changed, no panic and
            /// still within the caps.
            #[test]
            fn a_request_round_trips_and_survives_a_changed_byte(
                r in request(),
                at in any::<prop::sample::Index>(),
                xor in 1u8..=255,
            ) {
                let mut bytes = r.encode_to_vec();
                prop_assert_eq!(decode_push(&bytes).expect("within the caps"), r);
                if !bytes.is_empty() {
                    let i = at.index(bytes.len());
                    bytes[i] ^= xor;
                    let decoded = within("a push decode", 16 * 1024 + 16 * bytes.len(), || decode_push(&bytes))
                        .map_err(TestCaseError::fail)?;
                    if let Ok(changed) = decoded {
                        prop_assert!(within_caps(&changed));
                    }
                }
            }
        }
    }
}
