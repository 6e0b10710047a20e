//! The hello frame of the sidecar's local protocol (`agent/PROTOCOL.md`): how an SDK registers
//! its process with the sidecar, so the sidecar watches its memory.
//!
//! On the stream a hello is [`HELLO_MARKER`], the payload's length as a big-endian `u32`, then
//! the payload: one JSON object, at most [`MAX_HELLO_BYTES`], such as
//! `{"pid":1234,"service":"checkout","build":"812","dc":"eu1"}`. Every field is optional.
//!
//! Invariants: [`Hello::parse`] accepts a payload whole or refuses it whole; an accepted hello's
//! labels pass the collector's checks of an event's (1 to 128 bytes, no control characters), so
//! a sample labelled by it is never refused for them. Fields this version does not know are
//! ignored, so a newer SDK's hello still registers with an older sidecar. The claimed `pid` is
//! only a claim: the sidecar takes the pid from the socket's peer credentials.

use serde::{Deserialize, Serialize};

use crate::event::{check_name, Limits, ValidationError};

/// The byte that starts a hello frame (never the first byte of a JSON text).
pub const HELLO_MARKER: u8 = 0x02;
/// The largest hello payload the sidecar reads.
pub const MAX_HELLO_BYTES: usize = 4096;

/// What a process says about itself when it connects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The process's own id, as it sees it (informative: the sidecar trusts the socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
}

/// Why a hello payload was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    #[error("a {len}-byte hello; the limit is {MAX_HELLO_BYTES}")]
    TooLong { len: usize },
    #[error("the hello is not a JSON object")]
    NotAnObject,
    #[error("the hello is not a JSON object of the expected fields: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the hello's {0}")]
    Label(#[from] ValidationError),
}

impl Hello {
    /// Parses and checks one hello payload (the bytes after the marker and length).
    pub fn parse(payload: &[u8]) -> Result<Hello, HelloError> {
        if payload.len() > MAX_HELLO_BYTES {
            return Err(HelloError::TooLong { len: payload.len() });
        }
        // serde reads a struct from a JSON array too; a hello is an object only.
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(HelloError::NotAnObject);
        }
        let hello: Hello = serde_json::from_slice(payload)?;
        let max = Limits::default().max_name_len;
        for (field, value) in [
            ("service", &hello.service),
            ("build", &hello.build),
            ("dc", &hello.dc),
        ] {
            if let Some(value) = value {
                check_name(field, value, max, false)?;
            }
        }
        Ok(hello)
    }

    /// The whole frame: marker, length, JSON payload.
    pub fn frame(&self) -> Vec<u8> {
        let payload = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(HELLO_MARKER);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_parses_back() {
        let hello = Hello {
            pid: Some(1234),
            service: Some("checkout".into()),
            build: Some("812".into()),
            dc: None,
        };
        let frame = hello.frame();
        assert_eq!(frame[0], HELLO_MARKER);
        let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
        assert_eq!(len, frame.len() - 5);
        assert_eq!(
            &frame[5..],
            br#"{"pid":1234,"service":"checkout","build":"812"}"#
        );
        assert_eq!(Hello::parse(&frame[5..]).expect("parses"), hello);
        assert_eq!(Hello::parse(b"{}").expect("empty"), Hello::default());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let got = Hello::parse(br#"{"service":"s","runtime":"cpython","v":[1,2]}"#).expect("ok");
        assert_eq!(got.service.as_deref(), Some("s"));
    }

    #[test]
    fn bad_hellos_are_refused_whole() {
        let long = format!(r#"{{"service":"s","x":"{}"}}"#, "a".repeat(MAX_HELLO_BYTES));
        assert!(matches!(
            Hello::parse(long.as_bytes()),
            Err(HelloError::TooLong { .. })
        ));
        for bad in [
            &b"{not json"[..],
            br#"{"pid":-1}"#,
            br#"{"pid":"12"}"#,
            br#"{"service":5}"#,
            br#"{"service":"a","service":"b"}"#,
            br#"{"service":"s"} trailing"#,
        ] {
            assert!(
                matches!(Hello::parse(bad), Err(HelloError::Json(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [&b"[]"[..], b"\"s\"", b"", b"  [{}]"] {
            assert!(matches!(Hello::parse(bad), Err(HelloError::NotAnObject)));
        }
        let too_long = format!(r#"{{"build":"{}"}}"#, "b".repeat(129));
        for bad in [
            r#"{"service":""}"#,
            r#"{"dc":"eu\u0001"}"#,
            too_long.as_str(),
        ] {
            assert!(
                matches!(Hello::parse(bad.as_bytes()), Err(HelloError::Label(_))),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any bytes: no panic, and an accepted hello's labels are ones the collector accepts.
        #[test]
        fn any_payload_parses_or_is_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            prefix in proptest::sample::select(vec!["", "{\"service\":\"", "{\"pid\":", "{\"dc\":\"x\",\"build\":\""]),
        ) {
            let mut payload = prefix.as_bytes().to_vec();
            payload.extend_from_slice(&bytes);
            if let Ok(hello) = Hello::parse(&payload) {
                for value in [hello.service, hello.build, hello.dc].into_iter().flatten() {
                    proptest::prop_assert!(!value.is_empty() && value.len() <= 128);
                    proptest::prop_assert!(!value.contains(char::is_control));
                }
            }
        }
    }
}
