//! Protobuf messages read field by field, without decoding them: decoders use this to count
//! repeated fields and refuse a message past a limit before allocating anything for it, and to
//! keep borrowed slices of sub-messages instead of owned copies.
//!
//! Invariants: nothing here allocates or copies; every error is prost's own [`DecodeError`],
//! so a caller reports a malformed message exactly as a full decode would; a count never reads
//! past the message and stops quietly at the first malformed field (the decode that follows
//! reports it).

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::DecodeError;

/// One field of a message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub number: u32,
    pub wire_type: WireType,
    /// The value of a varint field (0 for the other wire types).
    pub varint: u64,
    /// The content of a length-delimited field (without its length), the raw bytes of a
    /// fixed-width one, empty for a varint.
    pub payload: &'a [u8],
}

/// The top-level fields of a message, in order; ends after the first error.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    buf: &'a [u8],
}

/// Iterates the fields of `msg`.
pub fn fields(msg: &[u8]) -> Fields<'_> {
    Fields { buf: msg }
}

impl<'a> Fields<'a> {
    fn step(&mut self) -> Result<Field<'a>, DecodeError> {
        let (number, wire_type) = decode_key(&mut self.buf)?;
        let mut varint = 0;
        let before = self.buf;
        if wire_type == WireType::Varint {
            varint = decode_varint(&mut self.buf)?;
        } else {
            skip_field(wire_type, number, &mut self.buf, DecodeContext::default())?;
        }
        let mut payload = &before[..before.len() - self.buf.len()];
        match wire_type {
            WireType::LengthDelimited => {
                decode_varint(&mut payload)?;
            }
            WireType::Varint => payload = &[],
            _ => {}
        }
        Ok(Field {
            number,
            wire_type,
            varint,
            payload,
        })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let field = self.step();
        if field.is_err() {
            self.buf = &[];
        }
        Some(field)
    }
}

/// What a repeated field holds, which decides how a length-delimited occurrence counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeated {
    /// Messages, strings or bytes: each occurrence is one value.
    Messages,
    /// Varint scalars: an occurrence is one value, or a packed run of them.
    Varints,
}

/// How many values the repeated field `number` of `msg` holds. Stops quietly at malformed
/// input, so the count is at most what the message holds.
pub fn count(msg: &[u8], number: u32, kind: Repeated) -> usize {
    let mut n = 0usize;
    for field in fields(msg) {
        let Ok(field) = field else { break };
        if field.number != number {
            continue;
        }
        n = n.saturating_add(match (kind, field.wire_type) {
            (Repeated::Varints, WireType::LengthDelimited) => {
                field.payload.iter().filter(|b| **b < 0x80).count()
            }
            _ => 1,
        });
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_packed_and_unpacked_varints() {
        // field 1 packed [1, 300, 2], field 1 unpacked 7, field 3 message {}, field 3 "ab".
        let msg = [
            0x0a, 4, 1, 0xac, 0x02, 2, 0x08, 7, 0x1a, 0, 0x1a, 2, b'a', b'b',
        ];
        assert_eq!(count(&msg, 1, Repeated::Varints), 4);
        assert_eq!(count(&msg, 3, Repeated::Messages), 2);
        assert_eq!(count(&msg, 2, Repeated::Messages), 0);
        let all: Vec<Field<'_>> = fields(&msg).map(|f| f.expect("valid")).collect();
        assert_eq!(all.len(), 4);
        assert_eq!(all[1].varint, 7);
        assert_eq!(all[3].payload, b"ab");
    }

    #[test]
    fn malformed_input_is_prosts_error_and_ends_the_scan() {
        // A length-delimited field announcing 100 bytes with 1 present.
        let msg = [0x08, 1, 0x12, 100, 1];
        let mut it = fields(&msg);
        assert!(it.next().is_some_and(|f| f.is_ok()));
        assert!(it.next().is_some_and(|f| f.is_err()));
        assert!(it.next().is_none());
        assert_eq!(count(&msg, 2, Repeated::Messages), 0);
    }
}
