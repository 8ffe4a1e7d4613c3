//! permessage-deflate cost per message size: compress and decompress, with and without
//! context takeover, on JSON-like text (what a hub sends) and on random bytes.
//!
//! `cargo bench -p duplex-proto --bench deflate`

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_proto::deflate::{Agreed, DeflateCodec, DeflateConfig, DirectionParams};
use duplex_proto::Role;
use std::hint::black_box;

fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("{{\"event\":\"price-update\",\"channel\":\"market-{}\",\"data\":{{\"bid\":{}.{},\"ask\":{}}}}}", i % 7, 1000 + i * 37 % 113, i % 100, 1001 + i * 41 % 97).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn random(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn codec(role: Role, no_context_takeover: bool) -> DeflateCodec {
    let dir = DirectionParams {
        max_window_bits: 15,
        no_context_takeover,
    };
    let config = DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    };
    DeflateCodec::new(
        Agreed {
            role,
            outgoing: dir,
            incoming: dir,
        },
        &config,
    )
}

fn bench(c: &mut Criterion) {
    for (data_name, make) in [
        ("json", json_like as fn(usize) -> Vec<u8>),
        ("random", random),
    ] {
        for takeover in [true, false] {
            let mode = if takeover { "takeover" } else { "no_takeover" };
            let mut group = c.benchmark_group(format!("deflate/{data_name}/{mode}"));
            for size in [64usize, 1024, 16 * 1024, 256 * 1024] {
                let payload = make(size);
                group.throughput(Throughput::Bytes(size as u64));
                group.bench_with_input(BenchmarkId::new("compress", size), &payload, |b, p| {
                    let mut tx = codec(Role::Server, !takeover);
                    let mut out = BytesMut::with_capacity(size + 64);
                    b.iter(|| {
                        out.clear();
                        tx.compress_message(black_box(p), &mut out).unwrap();
                    })
                });
                // Decompressing needs a stream the receiver can follow: without context
                // takeover every message is self-contained, so one compressed copy is reused;
                // with it, sender and receiver advance together.
                group.bench_with_input(BenchmarkId::new("decompress", size), &payload, |b, p| {
                    let mut tx = codec(Role::Server, !takeover);
                    let mut rx = codec(Role::Client, !takeover);
                    let mut wire = BytesMut::new();
                    let mut out = BytesMut::with_capacity(size + 64);
                    if takeover {
                        b.iter(|| {
                            wire.clear();
                            tx.compress_message(p, &mut wire).unwrap();
                            out.clear();
                            rx.decompress(black_box(&wire), true, &mut out, usize::MAX)
                                .unwrap();
                        })
                    } else {
                        tx.compress_message(p, &mut wire).unwrap();
                        b.iter(|| {
                            out.clear();
                            rx.decompress(black_box(&wire), true, &mut out, usize::MAX)
                                .unwrap();
                        })
                    }
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
