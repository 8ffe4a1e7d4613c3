//! flate2 backends side by side on hub-like JSON: level 1, 15-bit window, context takeover,
//! a sync flush per message (what permessage-deflate does). Build once per backend:
//! `cargo run --release --features rs` (zlib-rs) and `--features sys` (system zlib via libz-sys).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::time::Instant;
fn json(len: usize) -> Vec<u8> {
    let mut out = Vec::new(); let mut i = 0u64;
    while out.len() < len { out.extend_from_slice(format!("{{\"event\":\"price-update\",\"channel\":\"market-{}\",\"data\":{{\"bid\":{}.{},\"ask\":{}}}}}", i % 7, 1000 + i * 37 % 113, i % 100, 1001 + i * 41 % 97).as_bytes()); i += 1; }
    out.truncate(len); out
}
fn main() {
    for (size, iters) in [(64usize, 200_000u32), (1024, 100_000), (16384, 10_000), (262144, 500)] {
        let msg = json(size);
        // context takeover, 15-bit window, level 1: compress then decompress each message
        let mut c = Compress::new_with_window_bits(Compression::new(1), false, 15);
        let mut d = Decompress::new_with_window_bits(false, 15);
        let mut buf = vec![0u8; size * 2 + 64];
        let mut out = vec![0u8; size + 64];
        let t = Instant::now();
        let mut ctime = 0f64;
        for _ in 0..iters {
            let t0 = Instant::now();
            let before = c.total_out();
            c.compress(&msg, &mut buf, FlushCompress::Sync).unwrap();
            let n = (c.total_out() - before) as usize;
            ctime += t0.elapsed().as_secs_f64();
            let before = d.total_out();
            d.decompress(&buf[..n], &mut out, FlushDecompress::Sync).unwrap();
            assert_eq!((d.total_out() - before) as usize, size);
        }
        let total = t.elapsed().as_secs_f64();
        println!("{size:>7} B: compress {:>8.2} us/msg  decompress {:>8.2} us/msg", ctime / iters as f64 * 1e6, (total - ctime) / iters as f64 * 1e6);
    }
}
