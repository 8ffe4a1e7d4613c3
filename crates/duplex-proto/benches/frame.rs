//! Frame header parse and encode (RFC 6455 §5.2) for the three length encodings, masked (what a
//! server parses) and unmasked (what a server encodes).
//!
//! `cargo bench -p duplex-proto --bench frame`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use duplex_proto::frame::{encode_header, parse_header, FrameHeader, OpCode};
use std::hint::black_box;

fn header(len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
    FrameHeader {
        fin: true,
        rsv: 0,
        opcode: OpCode::Binary,
        mask,
        payload_len: len,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for len in [20u64, 16 * 1024, 1 << 20] {
        let mut masked = BytesMut::new();
        encode_header(&header(len, Some([1, 2, 3, 4])), &mut masked);
        group.bench_with_input(BenchmarkId::new("parse_masked", len), &masked, |b, buf| {
            b.iter(|| parse_header(black_box(buf)))
        });
        let h = header(len, None);
        let mut out = BytesMut::with_capacity(64);
        group.bench_with_input(BenchmarkId::new("encode", len), &h, |b, h| {
            b.iter(|| {
                out.clear();
                encode_header(black_box(h), &mut out);
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
