//! Messages framed (and compressed) once and written to many connections: the broadcast path.
//!
//! A server frame is not masked, so the same bytes can go to every subscriber. With
//! permessage-deflate the compressed bytes can be shared too, but only with connections whose
//! compressor starts every message from an empty context (`server_no_context_takeover`) and
//! whose negotiated window is at least the one the shared copy was compressed with; any other
//! connection compresses the message itself, as a plain send would.

use crate::deflate::{Agreed, DeflateCodec, DeflateConfig, DeflateError, DirectionParams};
use crate::frame::{encode_header, FrameHeader, OpCode, RSV1};
use crate::message::Message;
use crate::Role;
use bytes::{Bytes, BytesMut};

/// A message encoded once for many server connections.
///
/// ```
/// use duplex_proto::prepared::PreparedMessage;
/// use duplex_proto::{Config, Connection, Message, Role};
/// use std::time::Instant;
/// let prepared = PreparedMessage::new(&Message::from("tick"));
/// let mut subscribers: Vec<Connection> =
///     (0..3).map(|_| Connection::new(Role::Server, Config::default(), Instant::now())).collect();
/// for conn in &mut subscribers {
///     conn.send_prepared(&prepared).unwrap();
///     assert_eq!(&conn.poll_transmit().unwrap()[..], b"\x81\x04tick");
/// }
/// ```
#[derive(Debug, Clone)]
pub struct PreparedMessage {
    message: Message,
    /// Header and payload of the uncompressed frame.
    plain: Bytes,
    /// Frame compressed without context, and the window (bits) it needs at most.
    compressed: Option<(Bytes, u8)>,
}

impl PreparedMessage {
    /// Frames `message` for connections without permessage-deflate (or that will compress it
    /// themselves).
    pub fn new(message: &Message) -> Self {
        PreparedMessage {
            message: message.clone(),
            plain: encode_frame(message, 0, message.as_bytes()),
            compressed: None,
        }
    }

    /// Also compresses `message` once, with an empty context and `window_bits` (9..=15), for
    /// every subscriber that negotiated `server_no_context_takeover` and a window of at least
    /// `window_bits`. Messages below `config.min_compress_size` are not compressed.
    pub fn with_deflate(
        message: &Message,
        config: &DeflateConfig,
        window_bits: u8,
    ) -> Result<Self, DeflateError> {
        let mut prepared = Self::new(message);
        if message.len() < config.min_compress_size {
            return Ok(prepared);
        }
        let bits = window_bits.clamp(9, 15);
        let direction = DirectionParams {
            max_window_bits: bits,
            no_context_takeover: true,
        };
        let mut codec = DeflateCodec::new(
            Agreed {
                role: Role::Server,
                outgoing: direction,
                incoming: direction,
            },
            config,
        );
        let mut payload = BytesMut::new();
        codec.compress_message(message.as_bytes(), &mut payload)?;
        prepared.compressed = Some((encode_frame(message, RSV1, &payload), bits));
        Ok(prepared)
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The encoded frame for a connection with these deflate settings, if a shared copy fits
    /// it; `None` means the connection must encode the message itself.
    pub(crate) fn frame_for(&self, deflate: Option<&Agreed>) -> Option<&Bytes> {
        match deflate {
            None => Some(&self.plain),
            Some(agreed) => {
                let out = &agreed.outgoing;
                match &self.compressed {
                    Some((frame, bits))
                        if out.no_context_takeover && *bits <= out.max_window_bits.max(9) =>
                    {
                        Some(frame)
                    }
                    _ => None,
                }
            }
        }
    }
}

fn encode_frame(message: &Message, rsv: u8, payload: &[u8]) -> Bytes {
    let opcode = match message {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
    };
    let header = FrameHeader {
        fin: true,
        rsv,
        opcode,
        mask: None,
        payload_len: payload.len() as u64,
    };
    let mut out = BytesMut::with_capacity(
        crate::frame::header_len(header.payload_len, false) + payload.len(),
    );
    encode_header(&header, &mut out);
    out.extend_from_slice(payload);
    out.freeze()
}
