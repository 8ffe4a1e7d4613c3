//! Whole messages through the sans-IO [`Connection`]: a server receiving masked frames (parse,
//! unmask, validate, hand out the message) and a server sending (encode into the transmit
//! queue and drain it), for the payload sizes of the echo workloads.
//!
//! `cargo bench -p duplex-proto --bench connection`

use bytes::{Buf, Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duplex_proto::frame::{encode_header, FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::{Config, Connection, Event, Message, Role};
use std::hint::black_box;
use std::time::Instant;

const SIZES: [usize; 4] = [20, 1024, 16 * 1024, 1 << 20];

/// One masked client frame carrying `payload`.
fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = BytesMut::new();
    encode_header(
        &FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        },
        &mut out,
    );
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key, 0);
    out.to_vec()
}

fn text(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let config = Config {
        max_frame_size: 64 << 20,
        max_message_size: 64 << 20,
        ..Config::default()
    };
    let mut group = c.benchmark_group("connection");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        for (name, opcode) in [("recv_binary", OpCode::Binary), ("recv_text", OpCode::Text)] {
            let frame = masked_frame(opcode, &text(size));
            let mut conn = Connection::new(Role::Server, config.clone(), now);
            group.bench_with_input(BenchmarkId::new(name, size), &frame, |b, frame| {
                b.iter(|| {
                    // Read straight into the input buffer, as the tokio driver does.
                    conn.input_buffer().extend_from_slice(black_box(frame));
                    let _ = conn.handle_input(now);
                    match conn.poll_event() {
                        Some(Event::Message(m)) => black_box(m),
                        other => panic!("expected a message, got {other:?}"),
                    };
                })
            });
        }
        let payload = Bytes::from(text(size));
        let mut conn = Connection::new(Role::Server, config.clone(), now);
        group.bench_with_input(BenchmarkId::new("send_binary", size), &payload, |b, p| {
            b.iter(|| {
                let _ = conn.send(Message::Binary(p.clone()));
                let queue = conn.transmit_queue();
                let n = queue.remaining();
                // Stands in for the write: the bytes leave the queue.
                queue.advance(n);
                black_box(n)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
