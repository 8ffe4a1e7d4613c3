//! The permessage-deflate payload transformation (RFC 7692 §6, §7.2).
//!
//! [`DeflateCodec::compress_message`] deflates one whole message with a sync flush and strips
//! the trailing `00 00 ff ff` (§7.2.1). [`DeflateCodec::decompress`] inflates a message frame
//! by frame, restores the tail after the final frame (§7.2.2), and never lets the output grow
//! past a caller-given limit.
//!
//! # Memory per connection (zlib-rs backend, measured with a counting allocator)
//!
//! | state          | window bits 15 | window bits 9 |
//! |----------------|---------------:|--------------:|
//! | compressor     | 371 KiB        | 245 KiB       |
//! | decompressor   | 46 KiB         | 46 KiB        |
//!
//! The compressor uses zlib's default memLevel 8 (the formula for C zlib,
//! `(1 << (windowBits + 2)) + (1 << (memLevel + 9))`, gives 256 KiB at 15 bits; zlib-rs
//! allocates more, mostly for its hash table). zlib-rs allocates the same inflate state
//! whatever the window size, so the decompressor always uses a 32 KiB window: that decodes
//! every window the peer may use, costs nothing extra, and lets `Decompress::reset` reset in
//! place (flate2 re-allocates on reset for other sizes).
//!
//! Both are created lazily, on the first message that needs them, so a connection that
//! never sends (or never receives) a compressed message never pays for them. A direction
//! without context takeover resets its state after every message; with
//! [`DeflateConfig::low_memory`] it frees it instead, so an idle connection holds nothing
//! (re-creating costs an allocation and initialisation per message).

use std::fmt;

use bytes::{BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::negotiate::{Agreed, DeflateConfig, MAX_WINDOW_BITS};

/// The empty stored block that ends a sync flush, removed by the sender and restored by the
/// receiver (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The most decompressed output reserved at a time while a message grows (until the
/// buffer's capacity doubles past it).
pub const OUTPUT_STEP: usize = 16 * 1024;

/// The first reservation for a frame's output, when its input is tiny.
const MIN_OUTPUT_CHUNK: usize = 512;

/// zlib cannot produce raw deflate with an 8-bit window; see the `deflate` module docs for
/// why its 9-bit window is still safe for a peer limited to 8.
const MIN_COMPRESSOR_WINDOW_BITS: u8 = 9;

/// The inflate window: always the largest (see the module docs).
const INFLATE_WINDOW_BITS: u8 = MAX_WINDOW_BITS;

/// Close code for a message whose decompressed size passes the limit (RFC 6455 §7.4.1).
pub const CLOSE_MESSAGE_TOO_BIG: u16 = 1009;
/// Close code for compressed data that does not inflate (RFC 6455 §7.4.1, "data within a
/// message that was not consistent with the type of the message").
pub const CLOSE_INVALID_PAYLOAD: u16 = 1007;
/// Close code for an unexpected failure of our own compressor (RFC 6455 §7.4.1).
pub const CLOSE_INTERNAL_ERROR: u16 = 1011;

/// A permessage-deflate transformation failed. After any of these the connection must be
/// failed: the compression contexts of both ends no longer agree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeflateError {
    /// The decompressed message would be larger than the limit given to
    /// [`DeflateCodec::decompress`].
    #[error("decompressed message exceeds the limit of {limit} bytes")]
    MessageTooBig {
        /// The limit that was hit.
        limit: usize,
    },
    /// The peer's compressed data is not a valid deflate stream (or refers back past the
    /// data we hold).
    #[error("corrupt compressed data: {reason}")]
    Corrupt {
        /// zlib's description, or ours.
        reason: String,
    },
    /// zlib failed on our side, not because of peer data.
    #[error("deflate internal error: {reason}")]
    Internal {
        /// zlib's description, or ours.
        reason: String,
    },
}

impl DeflateError {
    /// The WebSocket close code to fail the connection with.
    ///
    /// RFC 7692 does not name one for corrupt data; 1007 (invalid frame payload data) is used
    /// because the frames themselves are well-formed and it is their payload that is
    /// inconsistent, exactly as with invalid UTF-8 in a text message. A too-big message is
    /// 1009, our own failure 1011.
    pub fn close_code(&self) -> u16 {
        match self {
            DeflateError::MessageTooBig { .. } => CLOSE_MESSAGE_TOO_BIG,
            DeflateError::Corrupt { .. } => CLOSE_INVALID_PAYLOAD,
            DeflateError::Internal { .. } => CLOSE_INTERNAL_ERROR,
        }
    }

    fn corrupt(reason: impl Into<String>) -> Self {
        DeflateError::Corrupt {
            reason: reason.into(),
        }
    }

    fn internal(reason: impl Into<String>) -> Self {
        DeflateError::Internal {
            reason: reason.into(),
        }
    }
}

/// Bytes a zlib counter moved by; the counters only grow and never by more than a slice.
fn delta(before: u64, after: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

/// Per-connection permessage-deflate state: one compressor for what we send, one
/// decompressor for what we receive, both created on first use.
pub struct DeflateCodec {
    agreed: Agreed,
    level: Compression,
    min_compress_size: usize,
    low_memory: bool,
    compressor: Option<Compress>,
    decompressor: Option<Decompress>,
    /// No byte has gone into the current raw deflate stream yet (a new decompressor, a reset
    /// one, or one restarted after a block with BFINAL set).
    stream_fresh: bool,
    /// Compressed bytes received so far in the current incoming message.
    message_in: usize,
    /// Decompressed bytes produced so far in the current incoming message.
    message_out: usize,
}

impl fmt::Debug for DeflateCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeflateCodec")
            .field("agreed", &self.agreed)
            .field("level", &self.level.level())
            .field("min_compress_size", &self.min_compress_size)
            .field("low_memory", &self.low_memory)
            .field("has_compressor", &self.compressor.is_some())
            .field("has_decompressor", &self.decompressor.is_some())
            .finish()
    }
}

impl DeflateCodec {
    /// A codec for the negotiated settings (our role is in `agreed`), taking the compression
    /// level, the small-message threshold and the memory mode from `config`.
    pub fn new(agreed: Agreed, config: &DeflateConfig) -> Self {
        DeflateCodec {
            agreed,
            level: Compression::new(config.compression_level.min(9)),
            min_compress_size: config.min_compress_size,
            low_memory: config.low_memory,
            compressor: None,
            decompressor: None,
            stream_fresh: true,
            message_in: 0,
            message_out: 0,
        }
    }

    /// The negotiated settings this codec follows.
    pub fn agreed(&self) -> &Agreed {
        &self.agreed
    }

    /// Whether a message of `len` bytes is worth compressing (at least
    /// [`DeflateConfig::min_compress_size`]). A message that is not is sent as is, with
    /// RSV1 clear.
    pub fn should_compress(&self, len: usize) -> bool {
        len >= self.min_compress_size
    }

    /// Whether a compressor is currently allocated.
    pub fn has_compressor(&self) -> bool {
        self.compressor.is_some()
    }

    /// Whether a decompressor is currently allocated.
    pub fn has_decompressor(&self) -> bool {
        self.decompressor.is_some()
    }

    /// Compresses one whole message and appends the payload to send (with RSV1 set) to `out`.
    ///
    /// Deflates with a sync flush and removes the trailing `00 00 ff ff` (RFC 7692 §7.2.1).
    /// An empty message becomes the single byte `00` (an empty stored block's header). If our
    /// side has no context takeover, the compressor is reset (or freed, in low-memory mode)
    /// afterwards.
    pub fn compress_message(
        &mut self,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> Result<(), DeflateError> {
        let start = out.len();
        let result = self.deflate(payload, out);
        if result.is_err() {
            // The stream may be half-written; the connection is failing anyway.
            out.truncate(start);
            self.compressor = None;
        } else if self.agreed.outgoing.no_context_takeover {
            if self.low_memory {
                self.compressor = None;
            } else if let Some(c) = self.compressor.as_mut() {
                c.reset();
            }
        }
        result
    }

    fn deflate(&mut self, payload: &[u8], out: &mut BytesMut) -> Result<(), DeflateError> {
        let level = self.level;
        let bits = self
            .agreed
            .outgoing
            .max_window_bits
            .clamp(MIN_COMPRESSOR_WINDOW_BITS, MAX_WINDOW_BITS);
        let c = self
            .compressor
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let start = out.len();
        let mut input = payload;
        loop {
            // Enough for incompressible data plus stored-block headers in one pass; more
            // passes follow if not.
            let space = input.len() + (input.len() >> 10) + 64;
            let at = out.len();
            out.resize(at + space, 0);
            let (in0, out0) = (c.total_in(), c.total_out());
            let status = c.compress(input, &mut out[at..], FlushCompress::Sync);
            let produced = delta(out0, c.total_out());
            let consumed = delta(in0, c.total_in());
            out.truncate(at + produced);
            status.map_err(|e| DeflateError::internal(e.to_string()))?;
            input = input.get(consumed..).unwrap_or_default();
            // zlib: the flush is complete once a call leaves output space unused.
            if input.is_empty() && produced < space {
                break;
            }
            if consumed == 0 && produced == 0 {
                return Err(DeflateError::internal("compressor made no progress"));
            }
        }
        let written = out.len() - start;
        if written == 0 {
            // zlib refuses a second sync flush with no new input (an empty message after
            // another message) and writes nothing. The stream is byte-aligned after the
            // previous flush, so an empty stored block is valid here: its header byte is
            // all that remains once the tail is stripped.
            out.put_u8(0);
        } else if written > TAIL.len() && out.ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else {
            return Err(DeflateError::internal(
                "sync flush did not end with an empty stored block",
            ));
        }
        Ok(())
    }

    /// Decompresses one frame of a compressed message, appending the result to `out`.
    ///
    /// Call it for every frame of the message, in order, with the same `out` (it holds the
    /// message so far); `is_final_frame` on the last one restores the stripped `00 00 ff ff`
    /// (RFC 7692 §7.2.2) and, if the peer has no context takeover, resets (or frees) the
    /// decompressor.
    ///
    /// Fails with [`DeflateError::MessageTooBig`] as soon as `out.len()` would exceed
    /// `max_output`. Output space is reserved a little at a time, at most
    /// [`OUTPUT_STEP`] beyond what was produced or double the current capacity, and never
    /// beyond `max_output`: `out`'s capacity stays within `max(its capacity on entry,
    /// max_output)`, however much the input would inflate to.
    ///
    /// Deflate blocks with BFINAL set (RFC 7692 §7.2.3.4) are accepted: decoding continues
    /// with a new stream, primed with up to 32 KiB of the current message's output. Later
    /// back-references past the start of that message fail as [`DeflateError::Corrupt`];
    /// they are never decoded wrongly. A message with no compressed bytes at all is taken as
    /// empty.
    ///
    /// After an error the decompressor is discarded; the connection must be failed
    /// ([`DeflateError::close_code`]).
    pub fn decompress(
        &mut self,
        input: &[u8],
        is_final_frame: bool,
        out: &mut BytesMut,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        let result = self.inflate_frame(input, is_final_frame, out, max_output);
        if result.is_err() {
            self.decompressor = None;
            self.stream_fresh = true;
            self.message_in = 0;
            self.message_out = 0;
        } else if is_final_frame {
            self.finish_incoming_message();
        }
        result
    }

    fn inflate_frame(
        &mut self,
        input: &[u8],
        is_final_frame: bool,
        out: &mut BytesMut,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        self.message_in = self.message_in.saturating_add(input.len());
        self.feed(input, out, max_output)?;
        // Restore the tail unless there is nothing it could end: no compressed byte in the
        // whole message, or a message that ended right after a BFINAL block.
        if is_final_frame && self.message_in > 0 && !self.stream_fresh {
            self.feed(&TAIL, out, max_output)?;
        }
        Ok(())
    }

    fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut BytesMut,
        max_output: usize,
    ) -> Result<(), DeflateError> {
        while !input.is_empty() {
            let d = self.decompressor.get_or_insert_with(|| {
                Decompress::new_with_window_bits(false, INFLATE_WINDOW_BITS)
            });
            self.stream_fresh = false;
            let step = inflate_some(d, input, out, max_output)?;
            self.message_out = self.message_out.saturating_add(step.produced);
            input = input.get(step.consumed..).unwrap_or_default();
            if step.stream_end {
                restart_after_final_block(d, out, self.message_out)?;
                self.stream_fresh = true;
            }
        }
        Ok(())
    }

    fn finish_incoming_message(&mut self) {
        if self.agreed.incoming.no_context_takeover {
            if self.low_memory {
                self.decompressor = None;
            } else if let Some(d) = self.decompressor.as_mut() {
                d.reset(false);
            }
            self.stream_fresh = true;
        }
        self.message_in = 0;
        self.message_out = 0;
    }
}

/// What one [`inflate_some`] call did.
#[derive(Debug, Default)]
struct Step {
    consumed: usize,
    produced: usize,
    /// The raw stream ended (a block with BFINAL set); `consumed` stops right after it.
    stream_end: bool,
}

/// Inflates `input` into `out` until the input is used up or the stream ends, keeping
/// `out.len() <= max_output`.
fn inflate_some(
    d: &mut Decompress,
    input: &[u8],
    out: &mut BytesMut,
    max_output: usize,
) -> Result<Step, DeflateError> {
    let mut step = Step::default();
    loop {
        let rest = input.get(step.consumed..).unwrap_or_default();
        let room = max_output.saturating_sub(out.len());
        let (in0, out0) = (d.total_in(), d.total_out());
        let (status, space) = if room == 0 {
            // At the limit: one more byte of output means the message is too big.
            let mut probe = [0u8; 1];
            let status = d.decompress(rest, &mut probe, FlushDecompress::None);
            if d.total_out() != out0 {
                return Err(DeflateError::MessageTooBig { limit: max_output });
            }
            (status, probe.len())
        } else {
            let want = if step.produced == 0 {
                rest.len()
                    .saturating_mul(4)
                    .clamp(MIN_OUTPUT_CHUNK, OUTPUT_STEP)
            } else {
                OUTPUT_STEP
            };
            let chunk = room.min(want);
            reserve_within(out, chunk, max_output);
            let at = out.len();
            out.resize(at + chunk, 0);
            let status = d.decompress(rest, &mut out[at..], FlushDecompress::None);
            out.truncate(at + delta(out0, d.total_out()));
            (status, chunk)
        };
        let status = status
            .map_err(|e| DeflateError::corrupt(e.message().unwrap_or("invalid deflate data")))?;
        let consumed = delta(in0, d.total_in());
        let produced = delta(out0, d.total_out());
        step.consumed = step.consumed.saturating_add(consumed);
        step.produced = step.produced.saturating_add(produced);
        if status == Status::StreamEnd {
            step.stream_end = true;
            return Ok(step);
        }
        // zlib returns early only when it ran out of input or of output space.
        if step.consumed >= input.len() && produced < space {
            return Ok(step);
        }
        if consumed == 0 && produced == 0 {
            return Err(DeflateError::corrupt("inflate made no progress"));
        }
    }
}

/// Makes room for `additional` more bytes in `out`, growing geometrically but never past
/// `limit` (the caller guarantees `out.len() + additional <= limit`).
///
/// `BytesMut::reserve` may double the capacity beyond what was asked, which could reach
/// twice the message limit, and copying into a fresh buffer would hold old and new at once
/// (1.5x the limit). Growing the underlying `Vec` exactly lets the allocator extend a large
/// block in place (`mremap`), so the peak stays at the limit.
fn reserve_within(out: &mut BytesMut, additional: usize, limit: usize) {
    let needed = out.len().saturating_add(additional);
    if out.capacity() >= needed {
        return;
    }
    let target = out.capacity().saturating_mul(2).min(limit).max(needed);
    // Zero-copy when `out` owns its whole allocation (the usual case); a copy otherwise.
    let mut vec: Vec<u8> = std::mem::take(out).into();
    vec.reserve_exact(target - vec.len());
    *out = BytesMut::from(bytes::Bytes::from(vec));
}

/// Starts a new raw stream after a block with BFINAL set, primed with the current message's
/// last 32 KiB of output so that later blocks may still refer back into it.
fn restart_after_final_block(
    d: &mut Decompress,
    out: &BytesMut,
    message_out: usize,
) -> Result<(), DeflateError> {
    d.reset(false);
    let history = out
        .get(out.len().saturating_sub(message_out)..)
        .unwrap_or_default();
    let dictionary = history
        .get(history.len().saturating_sub(1 << INFLATE_WINDOW_BITS)..)
        .unwrap_or_default();
    if !dictionary.is_empty() {
        d.set_dictionary(dictionary)
            .map_err(|e| DeflateError::internal(format!("priming the decompressor failed: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::inspect::Inspector;
    use super::super::negotiate::DirectionParams;
    use super::*;
    use crate::Role;
    use proptest::prelude::*;

    const LIMIT: usize = 64 << 20;

    /// A small deterministic PRNG (xorshift64*), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| (self.next() >> 56) as u8).collect()
        }
    }

    fn random(n: usize) -> Vec<u8> {
        Rng(0x9e37_79b9_7f4a_7c15 ^ n as u64).bytes(n)
    }

    fn repetitive(n: usize) -> Vec<u8> {
        b"{\"op\":\"update\",\"channel\":\"prices\",\"data\":[1,2,3]} "
            .iter()
            .copied()
            .cycle()
            .take(n)
            .collect()
    }

    fn dir(bits: u8, no_context_takeover: bool) -> DirectionParams {
        DirectionParams {
            max_window_bits: bits,
            no_context_takeover,
        }
    }

    /// A client and a server codec for the given client→server and server→client settings.
    fn pair(
        c2s: DirectionParams,
        s2c: DirectionParams,
        config: &DeflateConfig,
    ) -> (DeflateCodec, DeflateCodec) {
        let client = Agreed {
            role: Role::Client,
            outgoing: c2s,
            incoming: s2c,
        };
        let server = Agreed {
            role: Role::Server,
            outgoing: s2c,
            incoming: c2s,
        };
        (
            DeflateCodec::new(client, config),
            DeflateCodec::new(server, config),
        )
    }

    fn default_pair() -> (DeflateCodec, DeflateCodec) {
        pair(
            DirectionParams::default(),
            DirectionParams::default(),
            &DeflateConfig::default(),
        )
    }

    fn compress(codec: &mut DeflateCodec, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        codec
            .compress_message(payload, &mut out)
            .expect("compresses");
        out.to_vec()
    }

    fn decompress(codec: &mut DeflateCodec, wire: &[u8]) -> Result<Vec<u8>, DeflateError> {
        let mut out = BytesMut::new();
        codec.decompress(wire, true, &mut out, LIMIT)?;
        Ok(out.to_vec())
    }

    fn round_trip(sender: &mut DeflateCodec, receiver: &mut DeflateCodec, payload: &[u8]) -> usize {
        let wire = compress(sender, payload);
        assert_eq!(decompress(receiver, &wire).expect("inflates"), payload);
        wire.len()
    }

    // ---- RFC 7692 §7.2.3 examples ----

    #[test]
    fn rfc_7_2_3_1_hello_in_one_compressed_block() {
        let (_, mut server) = default_pair();
        assert_eq!(
            decompress(&mut server, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc_7_2_3_1_our_compressor_produces_the_example_bytes() {
        let (mut client, _) = default_pair();
        assert_eq!(
            compress(&mut client, b"Hello"),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
    }

    #[test]
    fn rfc_7_2_3_1_hello_in_two_frames() {
        let (_, mut server) = default_pair();
        let mut out = BytesMut::new();
        server
            .decompress(&[0xf2, 0x48, 0xcd], false, &mut out, LIMIT)
            .unwrap();
        server
            .decompress(&[0xc9, 0xc9, 0x07, 0x00], true, &mut out, LIMIT)
            .unwrap();
        assert_eq!(&out[..], b"Hello");
    }

    #[test]
    fn rfc_7_2_3_2_sharing_the_sliding_window() {
        let (_, mut server) = default_pair();
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(decompress(&mut server, &hello).unwrap(), b"Hello");
        assert_eq!(
            decompress(&mut server, &[0xf2, 0x00, 0x11, 0x00, 0x00]).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn rfc_7_2_3_3_stored_block() {
        let (_, mut server) = default_pair();
        let wire = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(decompress(&mut server, &wire).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_4_block_with_bfinal_set_then_more_messages() {
        let (_, mut server) = default_pair();
        let wire = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(decompress(&mut server, &wire).unwrap(), b"Hello");
        // The stream goes on after the final block.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(decompress(&mut server, &hello).unwrap(), b"Hello");
        assert_eq!(decompress(&mut server, &hello).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_4_bfinal_without_trailing_byte_is_tolerated() {
        let (_, mut server) = default_pair();
        let wire = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(decompress(&mut server, &wire).unwrap(), b"Hello");
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(decompress(&mut server, &hello).unwrap(), b"Hello");
    }

    #[test]
    fn rfc_7_2_3_4_later_blocks_may_refer_back_past_a_final_block() {
        let text = b"context takeover survives a final block, context takeover survives".repeat(4);
        // Message 1: one BFINAL block, then the mandatory empty-stored-block header byte.
        let mut c = Compress::new(Compression::new(6), false);
        let mut m1 = Vec::with_capacity(text.len() + 64);
        c.compress_vec(&text, &mut m1, FlushCompress::Finish)
            .unwrap();
        m1.push(0x00);
        // Message 2: a new stream primed with message 1, as such a sender would continue.
        let mut c = Compress::new(Compression::new(6), false);
        c.set_dictionary(&text).unwrap();
        let mut m2 = Vec::with_capacity(text.len() + 64);
        c.compress_vec(&text, &mut m2, FlushCompress::Sync).unwrap();
        assert!(m2.ends_with(&TAIL));
        m2.truncate(m2.len() - TAIL.len());
        assert!(m2.len() < 20, "message 2 is back-references");

        let (_, mut server) = default_pair();
        assert_eq!(decompress(&mut server, &m1).unwrap(), text);
        assert_eq!(decompress(&mut server, &m2).unwrap(), text);
    }

    #[test]
    fn rfc_7_2_3_5_two_blocks_in_one_message() {
        let (_, mut server) = default_pair();
        let wire = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(decompress(&mut server, &wire).unwrap(), b"Hello");
    }

    // ---- round trips ----

    #[test]
    fn round_trips_many_sizes_both_directions() {
        for takeover in [true, false] {
            let d = dir(15, !takeover);
            let (mut client, mut server) = pair(d, d, &DeflateConfig::default());
            for n in [0usize, 1, 125, 126, 64 << 10, 1 << 20] {
                for data in [random(n), repetitive(n)] {
                    round_trip(&mut client, &mut server, &data);
                    round_trip(&mut server, &mut client, &data);
                }
            }
        }
    }

    #[test]
    fn round_trips_at_every_level() {
        for level in 0..=9 {
            let config = DeflateConfig {
                compression_level: level,
                ..DeflateConfig::default()
            };
            let (mut client, mut server) = pair(dir(15, false), dir(15, false), &config);
            for data in [random(3000), repetitive(70_000), Vec::new()] {
                round_trip(&mut client, &mut server, &data);
            }
        }
    }

    #[test]
    fn rfc_7_2_3_6_empty_message_is_a_single_zero_byte() {
        let (mut client, mut server) = default_pair();
        // First message of the stream, then again with that context (zlib writes nothing
        // for a repeated flush), then after a non-empty message.
        for payload in [&b""[..], b"", b"x", b"", b"after", b""] {
            let wire = compress(&mut client, payload);
            if payload.is_empty() {
                assert_eq!(wire, [0x00]);
            }
            assert_eq!(decompress(&mut server, &wire).unwrap(), payload);
        }
    }

    #[test]
    fn message_without_compressed_bytes_is_empty() {
        let (_, mut server) = default_pair();
        assert_eq!(decompress(&mut server, &[]).unwrap(), b"");
        assert_eq!(
            decompress(&mut server, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn context_takeover_makes_a_repeated_message_much_smaller() {
        let msg = random(2000);
        let (mut client, mut server) = default_pair();
        let first = round_trip(&mut client, &mut server, &msg);
        let second = round_trip(&mut client, &mut server, &msg);
        assert!(second * 20 < first, "{first} then {second}");
    }

    #[test]
    fn no_context_takeover_compresses_each_message_alone() {
        let msg = random(2000);
        let (mut client, mut server) =
            pair(dir(15, true), dir(15, true), &DeflateConfig::default());
        let first = round_trip(&mut client, &mut server, &msg);
        let second = round_trip(&mut client, &mut server, &msg);
        assert_eq!(first, second);
        assert!(client.has_compressor() && server.has_decompressor());
    }

    #[test]
    fn low_memory_frees_state_between_messages_without_context_takeover() {
        let config = DeflateConfig {
            low_memory: true,
            ..DeflateConfig::default()
        };
        let (mut client, mut server) = pair(dir(15, true), dir(15, false), &config);
        assert!(!client.has_compressor() && !client.has_decompressor());
        round_trip(&mut client, &mut server, &repetitive(500));
        assert!(
            !client.has_compressor(),
            "client→server has no context takeover"
        );
        assert!(!server.has_decompressor());
        round_trip(&mut server, &mut client, &repetitive(500));
        assert!(server.has_compressor(), "server→client keeps its context");
        assert!(client.has_decompressor());
        // And the freed side still works for the next message.
        round_trip(&mut client, &mut server, &repetitive(700));
    }

    #[test]
    fn every_window_bits_pairing_round_trips() {
        let data: Vec<u8> = {
            // Repeats at distances from 300 bytes to 20 KiB, so large windows get used.
            let mut v = random(20_000);
            let copy = v.clone();
            v.extend_from_slice(&copy[..5000]);
            v.extend_from_slice(&copy[19_700..]);
            v.extend_from_slice(&repetitive(3000));
            v
        };
        for client_bits in 9..=15u8 {
            for server_bits in 9..=15u8 {
                let (mut client, mut server) = pair(
                    dir(client_bits, false),
                    dir(server_bits, false),
                    &DeflateConfig::default(),
                );
                for _ in 0..2 {
                    round_trip(&mut client, &mut server, &data);
                    round_trip(&mut server, &mut client, &data);
                }
            }
        }
    }

    #[test]
    fn compressor_never_exceeds_the_negotiated_window() {
        // A window of 2^bits may only hold back-references up to 2^bits bytes; 8 is
        // compressed with zlib's 9, whose distances stay under 2^9 - 262 = 250.
        let data: Vec<u8> = [random(5000), repetitive(5000), random(100)].concat();
        let mut twice = data.clone();
        twice.extend_from_slice(&data);
        for bits in 8..=15u8 {
            for level in 0..=9 {
                let config = DeflateConfig {
                    compression_level: level,
                    ..DeflateConfig::default()
                };
                let (mut client, _) = pair(dir(bits, false), dir(15, false), &config);
                let mut inspector = Inspector::default();
                for payload in [&data, &twice, &data] {
                    let wire = compress(&mut client, payload);
                    assert_eq!(&inspector.message(&wire).expect("valid deflate"), payload);
                }
                if bits >= 14 && level > 0 {
                    // The data repeats 10,100 bytes back: a large window does get used, so
                    // the bound below is not met by accident.
                    assert!(inspector.max_distance > 1 << 12, "level {level}");
                }
                assert!(
                    inspector.max_distance <= 1 << bits,
                    "bits {bits} level {level}: distance {}",
                    inspector.max_distance
                );
            }
        }
    }

    #[test]
    fn compressed_message_split_at_every_offset() {
        let msg =
            b"A fragmented compressed message: fragmented, compressed, fragmented again.".repeat(3);
        let (mut client, _) = default_pair();
        let wire = compress(&mut client, &msg);
        for cut in 0..=wire.len() {
            let (_, mut server) = default_pair();
            let mut out = BytesMut::new();
            server
                .decompress(&wire[..cut], false, &mut out, LIMIT)
                .unwrap();
            server
                .decompress(&wire[cut..], true, &mut out, LIMIT)
                .unwrap();
            assert_eq!(&out[..], &msg[..], "cut at {cut}");
        }
        // Byte by byte, with an empty final frame.
        let (_, mut server) = default_pair();
        let mut out = BytesMut::new();
        for b in &wire {
            server
                .decompress(std::slice::from_ref(b), false, &mut out, LIMIT)
                .unwrap();
        }
        server.decompress(&[], true, &mut out, LIMIT).unwrap();
        assert_eq!(&out[..], &msg[..]);
    }

    #[test]
    fn bomb_fails_without_allocating_past_the_limit() {
        // Level 9 gets deflate's best ratio (~1000:1), as an attacker would.
        let config = DeflateConfig {
            compression_level: 9,
            ..DeflateConfig::default()
        };
        let (mut client, mut server) = pair(dir(15, false), dir(15, false), &config);
        let wire = compress(&mut client, &vec![0u8; 1 << 20]);
        assert!(wire.len() < 2048, "{}", wire.len());
        let max = 64 << 10;
        let mut out = BytesMut::new();
        let err = server.decompress(&wire, true, &mut out, max).unwrap_err();
        assert_eq!(err, DeflateError::MessageTooBig { limit: max });
        assert_eq!(err.close_code(), 1009);
        assert!(out.len() <= max);
        assert!(
            out.capacity() <= max + OUTPUT_STEP,
            "capacity {}",
            out.capacity()
        );
    }

    #[test]
    fn bomb_split_into_frames_fails_too() {
        let (mut client, mut server) = default_pair();
        let wire = compress(&mut client, &vec![7u8; 1 << 20]);
        let max = 100_000;
        let mut out = BytesMut::new();
        let mut result = Ok(());
        for chunk in wire.chunks(10) {
            result = server.decompress(chunk, false, &mut out, max);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(DeflateError::MessageTooBig { limit: max }));
        assert!(
            out.capacity() <= max + OUTPUT_STEP,
            "capacity {}",
            out.capacity()
        );
    }

    #[test]
    fn message_of_exactly_the_limit_passes_one_more_byte_fails() {
        let msg = repetitive(50_000);
        let (mut client, _) = default_pair();
        let wire = compress(&mut client, &msg);
        let (_, mut server) = default_pair();
        let mut out = BytesMut::new();
        server.decompress(&wire, true, &mut out, msg.len()).unwrap();
        assert_eq!(&out[..], &msg[..]);
        let (_, mut server) = default_pair();
        let mut out = BytesMut::new();
        assert_eq!(
            server.decompress(&wire, true, &mut out, msg.len() - 1),
            Err(DeflateError::MessageTooBig {
                limit: msg.len() - 1
            })
        );
    }

    #[test]
    fn corrupt_data_is_reported_with_close_code_1007() {
        let (_, mut server) = default_pair();
        // BTYPE 11 is reserved.
        let err = decompress(&mut server, &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, DeflateError::Corrupt { .. }), "{err:?}");
        assert_eq!(err.close_code(), 1007);
        // A back-reference before any output.
        let (_, mut server) = default_pair();
        assert!(matches!(
            decompress(&mut server, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
            Err(DeflateError::Corrupt { .. })
        ));
    }

    #[test]
    fn codec_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<DeflateCodec>();
    }

    #[test]
    fn should_compress_follows_the_threshold() {
        let (client, _) = default_pair();
        assert!(!client.should_compress(31));
        assert!(client.should_compress(32));
    }

    fn split_points(len: usize, cuts: &[usize]) -> Vec<usize> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (len + 1)).collect();
        points.push(0);
        points.push(len);
        points.sort_unstable();
        points
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn proptest_round_trip_with_random_splits(
            messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..4),
            repeat in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            bits in 8u8..=15,
            no_context_takeover in any::<bool>(),
            level in 0u32..=9,
        ) {
            let config = DeflateConfig { compression_level: level, ..DeflateConfig::default() };
            let d = dir(bits, no_context_takeover);
            let (mut client, mut server) = pair(d, d, &config);
            for msg in &messages {
                let msg = if repeat { msg.repeat(3) } else { msg.clone() };
                let wire = compress(&mut client, &msg);
                let points = split_points(wire.len(), &cuts);
                let mut out = BytesMut::new();
                for (i, w) in points.windows(2).enumerate() {
                    let last = i == points.len() - 2;
                    server.decompress(&wire[w[0]..w[1]], last, &mut out, LIMIT).unwrap();
                }
                prop_assert_eq!(&out[..], &msg[..]);
            }
        }
    }
}
