//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use crate::message::Utf8Bytes;
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// A close status code (RFC 6455 §7.4).
///
/// ```
/// use duplex_proto::close::CloseCode;
/// assert!(CloseCode::NORMAL.is_valid_on_wire());
/// assert!(CloseCode(4000).is_valid_on_wire());
/// assert!(!CloseCode::NO_STATUS.is_valid_on_wire()); // 1005 is never sent
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept (e.g. binary to a text-only endpoint).
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Reported locally, never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a close frame. Reported locally, never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: message data was inconsistent with its type (e.g. invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected an extension the server did not negotiate.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later.
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway got an invalid response upstream.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: TLS handshake failure. Reported locally, never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Whether this code may appear in a close frame: 1000–1003, 1007–1014 (defined by RFC 6455
    /// and the IANA registry), 3000–3999 (registered) and 4000–4999 (private use).
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

/// The payload of a close frame: a status code and a UTF-8 reason of at most 123 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Why the connection closes.
    pub code: CloseCode,
    /// Human-readable detail; may be empty.
    pub reason: Utf8Bytes,
}

/// Longest reason that fits a control frame (125 bytes) after the 2-byte code.
pub const MAX_REASON_BYTES: usize = 123;

/// A close frame payload broke RFC 6455 §5.5.1 / §7.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClosePayload {
    /// A 1-byte payload cannot hold a status code.
    #[error("close frame payload is 1 byte long; a status code needs 2")]
    OneByte,
    /// The code is reserved, unassigned or local-only (1005, 1006, 1015).
    #[error("close code {0} is not allowed on the wire")]
    InvalidCode(u16),
    /// The reason is not valid UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidUtf8,
}

/// Parses a received close payload: `Ok(None)` for an empty payload (no status).
pub fn parse_close_payload(payload: Bytes) -> Result<Option<CloseFrame>, InvalidClosePayload> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(InvalidClosePayload::OneByte),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !CloseCode(code).is_valid_on_wire() {
                return Err(InvalidClosePayload::InvalidCode(code));
            }
            let reason = Utf8Bytes::try_from(payload.slice(2..))
                .map_err(|_| InvalidClosePayload::InvalidUtf8)?;
            Ok(Some(CloseFrame {
                code: CloseCode(code),
                reason,
            }))
        }
    }
}

/// Encodes a close payload (no code → empty payload). The caller checked code and length.
pub(crate) fn encode_close_payload(frame: Option<&CloseFrame>) -> Bytes {
    match frame {
        None => Bytes::new(),
        Some(f) => {
            let mut out = BytesMut::with_capacity(2 + f.reason.len());
            out.put_u16(f.code.0);
            out.extend_from_slice(f.reason.as_bytes());
            out.freeze()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_payload_means_no_status() {
        assert_eq!(parse_close_payload(Bytes::new()), Ok(None));
    }

    #[test]
    fn one_byte_payload_is_invalid() {
        assert_eq!(
            parse_close_payload(Bytes::from_static(&[3])),
            Err(InvalidClosePayload::OneByte)
        );
    }

    #[test]
    fn wire_validity_of_every_code_range() {
        for code in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ] {
            assert!(CloseCode(code).is_valid_on_wire(), "{code}");
        }
        // The codes Autobahn 7.9.x sends, plus the local-only ones.
        for code in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(code).is_valid_on_wire(), "{code}");
        }
    }

    #[test]
    fn reason_must_be_utf8() {
        let p = Bytes::from_static(&[0x03, 0xe8, 0xff]);
        assert_eq!(
            parse_close_payload(p),
            Err(InvalidClosePayload::InvalidUtf8)
        );
    }

    #[test]
    fn round_trip() {
        let f = CloseFrame {
            code: CloseCode(4001),
            reason: Utf8Bytes::from_static("bye"),
        };
        let p = encode_close_payload(Some(&f));
        assert_eq!(parse_close_payload(p), Ok(Some(f)));
    }
}
