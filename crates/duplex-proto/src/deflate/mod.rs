//! permessage-deflate (RFC 7692): negotiation and the per-message codec.
//!
//! * [`negotiate`]: parsing and deciding `Sec-WebSocket-Extensions` parameters, for the
//!   server ([`negotiate_server`]) and the client ([`client_offer`], [`negotiate_client`]),
//!   producing the [`Agreed`] settings.
//! * [`codec`]: [`DeflateCodec`] compresses outgoing messages and inflates incoming ones,
//!   frame by frame, within a size limit.
//!
//! The frame layer owns RSV1 (RFC 7692 §6: set on the first frame of a compressed message,
//! never on control frames or continuations); this module only transforms payloads.
//!
//! # Window size 8
//!
//! RFC 7692 allows windows of 2^8..=2^15 bytes, but zlib (and zlib-rs) cannot deflate raw
//! streams with an 8-bit window: asked for 8, they use 9 (zlib rejects 8 for raw deflate
//! since 1.2.9; zlib-rs likewise, and flate2 only accepts 9..=15). A 512-byte window would
//! allow distances of 512, too far for a peer limited to 256 bytes. But zlib never emits a
//! distance above `MAX_DIST = window_size - MIN_LOOKAHEAD`, with
//! `MIN_LOOKAHEAD = 258 + 3 + 1 = 262`: with a 9-bit window no back-reference is longer than
//! 250 bytes, within an 8-bit window. zlib-rs keeps that bound in every strategy (stored,
//! quick, fast, medium, slow, rle, huffman-only). So we accept 8 in every position and
//! compress with 9; the test `compressor_never_exceeds_the_negotiated_window` decodes our
//! output with an independent inflater at every level and asserts the largest distance stays
//! within 2^bits for every negotiated size, so a backend change that broke this would be
//! caught. Decompression always uses a 32 KiB window, which decodes any smaller one.
//!
//! # Close codes
//!
//! [`DeflateError::close_code`]: 1009 for a message over the size limit, 1007 for corrupt
//! compressed data (RFC 7692 names no code; the frames are well-formed and only their
//! payload is inconsistent, as with invalid UTF-8), 1011 for our own compressor failing.

pub mod codec;
#[cfg(test)]
mod inspect;
pub mod negotiate;

pub use codec::{DeflateCodec, DeflateError};
pub use negotiate::{
    client_offer, negotiate_client, negotiate_server, Agreed, ClientBits, DeflateConfig,
    DeflateNegotiationError, DeflateParams, DirectionParams, InvalidParams, PERMESSAGE_DEFLATE,
};
