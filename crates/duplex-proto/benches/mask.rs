//! Masking throughput (RFC 6455 §5.3) from 16 B to 1 MiB, on a 16-byte-aligned buffer and one
//! starting 1 byte past alignment, with the key at offset 0 and 3; the bytewise reference
//! for comparison at the small sizes.
//!
//! `cargo bench -p duplex-proto --bench mask`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_proto::mask::{apply_mask, apply_mask_bytewise};
use std::hint::black_box;

const SIZES: [usize; 7] = [16, 125, 1024, 4096, 16 * 1024, 64 * 1024, 1 << 20];
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A buffer whose slice `[start..start + len]` starts `misalign` bytes past a 64-byte boundary.
struct Aligned {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize, misalign: usize) -> Self {
        let storage = vec![0x5a; len + 128];
        let base = storage.as_ptr() as usize;
        let start = (64 - base % 64) % 64 + misalign;
        Aligned {
            storage,
            start,
            len,
        }
    }
    fn slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

fn bench(c: &mut Criterion) {
    for (name, misalign) in [("aligned", 0usize), ("unaligned", 1)] {
        let mut group = c.benchmark_group(format!("mask/{name}"));
        for size in SIZES {
            group.throughput(Throughput::Bytes(size as u64));
            let mut buf = Aligned::new(size, misalign);
            group.bench_with_input(BenchmarkId::new("offset0", size), &size, |b, _| {
                b.iter(|| apply_mask(black_box(buf.slice()), black_box(KEY), black_box(0)))
            });
            group.bench_with_input(BenchmarkId::new("offset3", size), &size, |b, _| {
                b.iter(|| apply_mask(black_box(buf.slice()), black_box(KEY), black_box(3)))
            });
            if size <= 4096 {
                group.bench_with_input(BenchmarkId::new("bytewise", size), &size, |b, _| {
                    b.iter(|| {
                        apply_mask_bytewise(black_box(buf.slice()), black_box(KEY), black_box(0))
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
