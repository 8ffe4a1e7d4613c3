//! The server's opening handshake: parse a browser-like upgrade request, validate it, and
//! build the `101 Switching Protocols` answer.
//!
//! `cargo bench -p duplex-proto --bench handshake`

use criterion::{criterion_group, criterion_main, Criterion};
use duplex_proto::handshake::{
    accept_response, parse_request, validate_request, Accept, HandshakeLimits,
};
use std::hint::black_box;

const REQUEST: &[u8] = b"GET /app/key?protocol=7&client=js&version=8.4.0 HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:8080\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench(c: &mut Criterion) {
    let limits = HandshakeLimits::default();
    let mut group = c.benchmark_group("handshake");
    group.bench_function("parse_request", |b| {
        b.iter(|| parse_request(black_box(REQUEST), &limits))
    });
    group.bench_function("parse_validate_respond", |b| {
        b.iter(|| {
            let Ok(Some((request, _))) = parse_request(black_box(REQUEST), &limits) else {
                panic!("the benchmark request must parse");
            };
            let Ok(offer) = validate_request(&request) else {
                panic!("the benchmark request must be valid");
            };
            accept_response(&offer, &Accept::default())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
