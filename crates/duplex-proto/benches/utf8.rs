//! UTF-8 validation of text payloads: a whole message in one call, and the same message fed in
//! pieces that cut code points (as TCP segments do), for ASCII and for multi-byte text.
//!
//! `cargo bench -p duplex-proto --bench utf8`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_proto::utf8::Utf8Validator;
use std::hint::black_box;

const SIZES: [usize; 5] = [20, 1024, 16 * 1024, 64 * 1024, 1 << 20];

fn ascii(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Mixed 1-, 2-, 3- and 4-byte code points, cut at a char boundary at or below `len`.
fn multibyte(len: usize) -> Vec<u8> {
    let pattern = "aé€𝄞κόσμε ";
    let mut s = String::with_capacity(len + 8);
    while s.len() < len {
        s.push_str(pattern);
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.into_bytes()
}

fn bench(c: &mut Criterion) {
    for (name, make) in [
        ("ascii", ascii as fn(usize) -> Vec<u8>),
        ("multibyte", multibyte),
    ] {
        let mut group = c.benchmark_group(format!("utf8/{name}"));
        for size in SIZES {
            let data = make(size);
            group.throughput(Throughput::Bytes(data.len() as u64));
            group.bench_with_input(BenchmarkId::new("whole", size), &data, |b, data| {
                b.iter(|| {
                    let mut v = Utf8Validator::default();
                    v.feed(black_box(data)).is_ok() && v.finish().is_ok()
                })
            });
            // Pieces of 1397 bytes (an odd size, so cuts land inside code points).
            group.bench_with_input(BenchmarkId::new("split1397", size), &data, |b, data| {
                b.iter(|| {
                    let mut v = Utf8Validator::default();
                    let ok = black_box(data)
                        .chunks(1397)
                        .all(|piece| v.feed(piece).is_ok());
                    ok && v.finish().is_ok()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
