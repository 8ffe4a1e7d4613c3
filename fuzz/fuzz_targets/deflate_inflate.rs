//! permessage-deflate decompression of arbitrary bytes with a 64 KiB message limit, frame by
//! frame; and, in round-trip mode, compress-then-decompress of the input.
//!
//! Input layout: `[flags, frame_size, bytes...]`
//! * `flags & 7`: the peer's window bits - 8; `flags & 8`: the peer has no context takeover;
//!   `flags & 16`: low-memory mode; `flags & 32`: every frame is a whole message;
//!   `flags & 64`: round-trip mode (the bytes are plaintext to compress).
//! * `frame_size`: bytes per frame (0: one frame).
//!
//! Invariants: no panic; after every call `out.len() <= max_output` and `out.capacity()`
//! stays within `max_output` (it starts empty), as `decompress` documents, whatever the input
//! inflates to; in round-trip mode what we compress decompresses to the same bytes.
#![no_main]

use bytes::BytesMut;
use duplex_proto::deflate::{Agreed, DeflateCodec, DeflateConfig, DirectionParams};
use duplex_proto::Role;
use libfuzzer_sys::fuzz_target;

const MAX_OUTPUT: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let [flags, frame_size, rest @ ..] = data else {
        return;
    };
    let peer = DirectionParams {
        max_window_bits: 8 + (flags & 7),
        no_context_takeover: flags & 8 != 0,
    };
    let ours = DirectionParams {
        max_window_bits: 15,
        no_context_takeover: false,
    };
    let config = DeflateConfig {
        enabled: true,
        low_memory: flags & 16 != 0,
        min_compress_size: 0,
        ..DeflateConfig::default()
    };
    let mut receiver = DeflateCodec::new(
        Agreed {
            role: Role::Server,
            outgoing: ours,
            incoming: peer,
        },
        &config,
    );
    let frame_size = match *frame_size {
        0 => rest.len().max(1),
        n => usize::from(n),
    };
    let whole_messages = flags & 32 != 0;

    if flags & 64 == 0 {
        let frames: Vec<&[u8]> = rest.chunks(frame_size).collect();
        let mut out = BytesMut::new();
        for (i, frame) in frames.iter().enumerate() {
            let last = whole_messages || i + 1 == frames.len();
            let result = receiver.decompress(frame, last, &mut out, MAX_OUTPUT);
            assert!(out.len() <= MAX_OUTPUT, "{} > {MAX_OUTPUT}", out.len());
            assert!(out.capacity() <= MAX_OUTPUT, "capacity {}", out.capacity());
            if result.is_err() {
                // The connection would be failed here.
                return;
            }
            if last {
                out = BytesMut::new();
            }
        }
        return;
    }

    // Round trip: the peer (a client) compresses each message, we decompress it.
    let mut sender = DeflateCodec::new(
        Agreed {
            role: Role::Client,
            outgoing: peer,
            incoming: ours,
        },
        &config,
    );
    let messages: Vec<&[u8]> = if whole_messages {
        rest.chunks(frame_size).collect()
    } else {
        vec![rest]
    };
    for message in messages {
        let mut wire = BytesMut::new();
        sender
            .compress_message(message, &mut wire)
            .expect("compressing never fails");
        let mut out = BytesMut::new();
        // Deliver the compressed message in frames of `frame_size` bytes.
        let frames: Vec<&[u8]> = wire.chunks(frame_size).collect();
        for (i, frame) in frames.iter().enumerate() {
            let last = i + 1 == frames.len();
            let result = receiver.decompress(frame, last, &mut out, MAX_OUTPUT);
            if message.len() <= MAX_OUTPUT {
                result.expect("our own compressed data decompresses");
            } else if result.is_err() {
                return;
            }
        }
        assert_eq!(&out[..], message, "round trip changed the message");
    }
});
