//! Errors of an established connection. Each protocol error names the rule it enforces and
//! maps to exactly one close code.

use crate::close::{CloseCode, InvalidClosePayload};
use crate::frame::HeaderError;
use std::time::Duration;

/// The peer broke RFC 6455 (or a configured limit), or the connection timed out. The
/// connection has failed: a close frame with [`close_code`](Self::close_code) is queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame used a reserved opcode (§5.2).
    #[error("frame uses reserved opcode {0:#x} (RFC 6455 §5.2)")]
    ReservedOpcode(u8),
    /// A 64-bit payload length had its most significant bit set (§5.2).
    #[error("frame length has the most significant bit set (RFC 6455 §5.2)")]
    LengthMsbSet,
    /// RSV bits were set that no negotiated extension defines (§5.2).
    #[error(
        "reserved bits {0:#05b} set without a negotiated extension defining them (RFC 6455 §5.2)"
    )]
    ReservedBits(u8),
    /// A client sent an unmasked frame (§5.1).
    #[error("client frame is not masked (RFC 6455 §5.1)")]
    UnmaskedFrame,
    /// A server sent a masked frame (§5.1).
    #[error("server frame is masked (RFC 6455 §5.1)")]
    MaskedFrame,
    /// A control frame had FIN clear (§5.5).
    #[error("control frame is fragmented (RFC 6455 §5.5)")]
    FragmentedControlFrame,
    /// A control frame payload exceeded 125 bytes (§5.5).
    #[error("control frame payload is {0} bytes; at most 125 allowed (RFC 6455 §5.5)")]
    ControlFrameTooLong(u64),
    /// A continuation frame arrived with no fragmented message in progress (§5.4).
    #[error("continuation frame without a message to continue (RFC 6455 §5.4)")]
    UnexpectedContinuation,
    /// A new text/binary frame arrived while a fragmented message was unfinished (§5.4).
    #[error("new data frame before the fragmented message in progress ended (RFC 6455 §5.4)")]
    ExpectedContinuation,
    /// A text message was not valid UTF-8 (§8.1).
    #[error("text message is not valid UTF-8 (RFC 6455 §8.1)")]
    InvalidUtf8,
    /// A compressed message is not a valid deflate stream (RFC 7692 §6.2).
    #[error("compressed message is not valid deflate data: {0}")]
    InvalidCompressedData(String),
    /// Our decompressor failed for a reason not caused by the peer's data.
    #[error("decompression failed: {0}")]
    DecompressionFailed(String),
    /// A close frame payload was malformed (§5.5.1, §7.4).
    #[error("invalid close frame: {0}")]
    InvalidClose(InvalidClosePayload),
    /// A frame was larger than `Config::max_frame_size`.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes (raise max_frame_size to accept it)")]
    FrameTooLarge {
        /// Announced payload length.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message was larger than `Config::max_message_size`.
    #[error("message exceeds the limit of {max} bytes (raise max_message_size to accept it)")]
    MessageTooLarge {
        /// The configured limit.
        max: usize,
    },
    /// No pong (or other traffic) arrived within the pong timeout after a heartbeat ping.
    #[error("no answer to a heartbeat ping within {0:?}")]
    PongTimeout(Duration),
    /// The peer did not complete the closing handshake in time.
    #[error("peer did not complete the closing handshake within {0:?}")]
    CloseTimeout(Duration),
    /// The transport ended before the closing handshake (close code 1006, reported locally).
    #[error("connection closed by the peer without a closing handshake")]
    UnexpectedEof,
}

impl ProtocolError {
    /// The close code this failure sends (RFC 6455 §7.4.1); `ABNORMAL` (1006, never sent) for
    /// failures of the transport rather than of the peer's frames.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCompressedData(_)
            | ProtocolError::InvalidClose(InvalidClosePayload::InvalidUtf8) => {
                CloseCode::INVALID_PAYLOAD
            }
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            ProtocolError::PongTimeout(_) | ProtocolError::DecompressionFailed(_) => {
                CloseCode::INTERNAL_ERROR
            }
            ProtocolError::CloseTimeout(_) | ProtocolError::UnexpectedEof => CloseCode::ABNORMAL,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl From<HeaderError> for ProtocolError {
    fn from(e: HeaderError) -> Self {
        match e {
            HeaderError::ReservedOpcode(op) => ProtocolError::ReservedOpcode(op),
            HeaderError::LengthMsbSet => ProtocolError::LengthMsbSet,
        }
    }
}

/// The application asked for something the protocol does not allow now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// A close frame was already sent (or the connection failed): no more data may be sent.
    #[error("the connection is closing; nothing more can be sent (RFC 6455 §5.5.1)")]
    Closing,
    /// Ping, pong and close payloads are limited to 125 bytes (§5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlPayloadTooLong(usize),
    /// The close code may not be sent (1005, 1006, 1015, unassigned ranges).
    #[error("close code {0} may not be sent; use 1000, 1001, 1008, 1011, 3000-4999 ...")]
    InvalidCloseCode(u16),
    /// Close reasons are limited to 123 bytes so the frame fits in 125.
    #[error("close reason of {0} bytes exceeds 123")]
    CloseReasonTooLong(usize),
    /// A message was started with `send_fragment` and not finished; finish it first.
    #[error("a fragmented message is in progress; finish it before sending another message")]
    FragmentedMessageInProgress,
    /// A fragment continued a message of another type.
    #[error("fragment type does not match the message in progress")]
    FragmentTypeMismatch,
    /// Our compressor failed (a zlib error, not caused by the peer).
    #[error("compression failed: {0}")]
    Compression(String),
    /// Fragments of a text message must together be valid UTF-8.
    #[error("text fragments are not valid UTF-8")]
    InvalidUtf8,
}
