//! A compressed message that inflates to 1 GiB is refused with 1009 while memory stays near
//! the configured message limit. Peak heap use is measured with a counting allocator.

use bytes::BytesMut;
use duplex_proto::deflate::{client_offer, negotiate_server, DeflateCodec, DeflateConfig};
use duplex_proto::frame::{encode_header, FrameHeader, OpCode, RSV1};
use duplex_proto::{CloseCode, Config, Connection, ProtocolError, Role};
use flate2::{Compress, Compression, FlushCompress};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Growth is counted as the difference: large blocks grow in place (mremap).
        if new_size >= layout.size() {
            let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GIB: usize = 1 << 30;
const LIMIT: usize = 1 << 20;

/// Raw deflate of 1 GiB of zeros with a sync flush, the 00 00 ff ff tail removed (RFC 7692).
fn gigabyte_bomb() -> Vec<u8> {
    let mut deflate = Compress::new(Compression::best(), false);
    let zeros = vec![0u8; 1 << 20];
    let mut out = Vec::with_capacity(2 << 20);
    for i in 0..GIB / zeros.len() {
        let flush = if i + 1 == GIB / zeros.len() {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        let mut input = &zeros[..];
        loop {
            if out.capacity() - out.len() < 64 * 1024 {
                out.reserve(1 << 20);
            }
            let before = deflate.total_in();
            deflate
                .compress_vec(input, &mut out, flush)
                .expect("deflate");
            input = &input[(deflate.total_in() - before) as usize..];
            if input.is_empty() && (flush == FlushCompress::None || out.capacity() > out.len()) {
                break;
            }
        }
    }
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

#[test]
fn gigabyte_bomb_is_refused_with_1009_within_the_limit() {
    let bomb = gigabyte_bomb();
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let ratio = GIB / bomb.len();
    assert!(ratio > 500, "inflates {ratio}x");

    let cfg = DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    };
    let (agreed, _) = negotiate_server(&[client_offer(&cfg)], &cfg).unwrap();
    let config = Config {
        max_message_size: LIMIT,
        max_frame_size: 4 << 20,
        ..Config::default()
    };
    let mut server = Connection::new(Role::Server, config, Instant::now());
    server.set_deflate(DeflateCodec::new(agreed, &cfg));

    // The frame goes straight into the input buffer, so only what inflation allocates counts.
    let key = [7, 7, 7, 7];
    let input = server.input_buffer();
    encode_header(
        &FrameHeader {
            fin: true,
            rsv: RSV1,
            opcode: OpCode::Binary,
            mask: Some(key),
            payload_len: bomb.len() as u64,
        },
        input,
    );
    let start = input.len();
    input.extend_from_slice(&bomb);
    duplex_proto::mask::apply_mask(&mut input[start..], key, 0);
    drop(bomb);

    let baseline = CURRENT.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let err = server.handle_input(Instant::now()).unwrap_err();
    let grew = PEAK.load(Ordering::Relaxed) - baseline;
    eprintln!("1 GiB bomb ({ratio}x): peak growth {grew} bytes for a {LIMIT}-byte limit");

    assert_eq!(err, ProtocolError::MessageTooLarge { max: LIMIT });
    assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    // Output buffer (≤ limit) + the inflater's state (~50 KiB) + one output step; far below 1 GiB.
    assert!(
        grew < LIMIT + 256 * 1024,
        "inflation allocated {grew} bytes for a {LIMIT}-byte limit"
    );
    let mut sent = BytesMut::new();
    while let Some(c) = server.poll_transmit() {
        sent.extend_from_slice(&c);
    }
    assert_eq!(
        &sent[..4],
        &[0x88, sent[1], 0x03, 0xf1],
        "close frame with 1009"
    );
}
