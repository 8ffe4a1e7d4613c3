//! Frame headers (RFC 6455 §5.2): parsing and encoding, nothing else.
//!
//! Whether a well-formed header is acceptable in the current state (masking per role, RSV bits
//! per extension, continuation rules, size limits) is decided by the connection, which knows
//! that state.

use bytes::BufMut;

/// A frame opcode (RFC 6455 §5.2, §11.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: first frame of a text message.
    Text,
    /// 0x2: first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes a 4-bit opcode; `None` for the reserved values 0x3–0x7 and 0xB–0xF.
    pub fn from_u8(value: u8) -> Option<OpCode> {
        Some(match value {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// The 4-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong are control frames (§5.5).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// RSV1, the bit permessage-deflate uses to mark a compressed message (RFC 7692 §6).
pub const RSV1: u8 = 0b100;
/// RSV2.
pub const RSV2: u8 = 0b010;
/// RSV3.
pub const RSV3: u8 = 0b001;

/// The fields of a frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// The three reserved bits as `RSV1 | RSV2 | RSV3`.
    pub rsv: u8,
    /// What the frame carries.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// Largest header: 2 bytes + 8-byte length + 4-byte key.
pub const MAX_HEADER_LEN: usize = 14;

/// A header that no state could accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The opcode is reserved (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A 64-bit length must have its most significant bit clear (§5.2).
    #[error("64-bit payload length has its most significant bit set")]
    LengthMsbSet,
}

/// Parses a header from the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// header and its length in bytes.
///
/// Non-minimal length encodings are accepted: the minimal-encoding rule binds the sender, and
/// refusing them would protect nothing.
///
/// ```
/// use duplex_proto::frame::{parse_header, OpCode};
/// let (h, len) = parse_header(&[0x81, 0x05, b'H']).unwrap().unwrap();
/// assert_eq!((h.opcode, h.fin, h.payload_len, len), (OpCode::Text, true, 5, 2));
/// assert_eq!(parse_header(&[0x81]).unwrap(), None);
/// ```
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, HeaderError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(HeaderError::ReservedOpcode(b0 & 0x0f))?;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut pos) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(HeaderError::LengthMsbSet);
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        match buf.get(pos..pos + 4) {
            Some(&[a, b, c, d]) => {
                pos += 4;
                Some([a, b, c, d])
            }
            _ => return Ok(None),
        }
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x07,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// Appends the encoded header to `out`, using the minimal length encoding.
pub fn encode_header(header: &FrameHeader, out: &mut impl BufMut) {
    let b0 = (u8::from(header.fin) << 7) | ((header.rsv & 0x07) << 4) | header.opcode.as_u8();
    let mask_bit = if header.mask.is_some() { 0x80 } else { 0 };
    out.put_u8(b0);
    match header.payload_len {
        n @ 0..=125 => out.put_u8(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n);
        }
    }
    if let Some(key) = header.mask {
        out.put_slice(&key);
    }
}

/// Encoded length of a header with this payload length and masking.
pub fn header_len(payload_len: u64, masked: bool) -> usize {
    let base = match payload_len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    };
    base + if masked { 4 } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opcode() -> impl Strategy<Value = OpCode> {
        prop_oneof![
            Just(OpCode::Continuation),
            Just(OpCode::Text),
            Just(OpCode::Binary),
            Just(OpCode::Close),
            Just(OpCode::Ping),
            Just(OpCode::Pong),
        ]
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in (0x3..=0x7).chain(0xb..=0xf) {
            assert_eq!(
                parse_header(&[0x80 | op, 0]),
                Err(HeaderError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn sixty_four_bit_length_msb_must_be_clear() {
        let buf = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(parse_header(&buf), Err(HeaderError::LengthMsbSet));
    }

    #[test]
    fn length_encodings_at_their_boundaries() {
        for (len, hlen) in [(125u64, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = Vec::new();
            let h = FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: None,
                payload_len: len,
            };
            encode_header(&h, &mut out);
            assert_eq!(out.len(), hlen);
            assert_eq!(header_len(len, false), hlen);
            assert_eq!(parse_header(&out).unwrap(), Some((h, hlen)));
        }
    }

    #[test]
    fn non_minimal_length_is_accepted() {
        let buf = [0x82, 126, 0, 5];
        assert_eq!(parse_header(&buf).unwrap().unwrap().0.payload_len, 5);
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(fin in any::<bool>(), rsv in 0u8..8, op in opcode(),
                                   mask in any::<Option<[u8; 4]>>(), len in 0u64..(1 << 63)) {
            let h = FrameHeader { fin, rsv, opcode: op, mask, payload_len: len };
            let mut out = Vec::new();
            encode_header(&h, &mut out);
            prop_assert_eq!(out.len(), header_len(len, mask.is_some()));
            prop_assert_eq!(parse_header(&out).unwrap(), Some((h, out.len())));
            // Every strict prefix asks for more bytes.
            for cut in 0..out.len() {
                prop_assert_eq!(parse_header(&out[..cut]).unwrap(), None);
            }
        }

        #[test]
        fn parse_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = parse_header(&buf);
        }
    }
}
