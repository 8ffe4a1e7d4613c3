//! permessage-deflate inside the connection: negotiated pairs exchanging messages.

use bytes::{Bytes, BytesMut};
use duplex_proto::deflate::{
    client_offer, negotiate_client, negotiate_server, DeflateCodec, DeflateConfig,
};
use duplex_proto::frame::{encode_header, parse_header, FrameHeader, OpCode, RSV1};
use duplex_proto::prepared::PreparedMessage;
use duplex_proto::{Compression, Config, Connection, Event, Message, ProtocolError, Role};
use std::time::Instant;

fn pair(server_cfg: &DeflateConfig, client_cfg: &DeflateConfig) -> (Connection, Connection) {
    let now = Instant::now();
    let offer = client_offer(client_cfg);
    let (server_agreed, response) = negotiate_server(&[offer], server_cfg).expect("server accepts");
    let client_agreed = negotiate_client(&[response], client_cfg)
        .unwrap()
        .expect("client accepts");
    let mut server = Connection::new(Role::Server, Config::default(), now);
    server.set_deflate(DeflateCodec::new(server_agreed, server_cfg));
    let mut client = Connection::new(Role::Client, Config::default(), now);
    client.set_deflate(DeflateCodec::new(client_agreed, client_cfg));
    (server, client)
}

fn enabled() -> DeflateConfig {
    DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    }
}

fn wire(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(c) = conn.poll_transmit() {
        out.extend_from_slice(&c);
    }
    out
}

fn deliver(from: &mut Connection, to: &mut Connection) -> Vec<Event> {
    let bytes = wire(from);
    to.receive_data(&bytes, Instant::now()).unwrap();
    std::iter::from_fn(|| to.poll_event()).collect()
}

fn first_header(bytes: &[u8]) -> FrameHeader {
    parse_header(bytes).unwrap().unwrap().0
}

#[test]
fn compressed_messages_round_trip_both_ways_with_rsv1_on_the_wire() {
    let (mut server, mut client) = pair(&enabled(), &enabled());
    let text = "the quick brown fox jumps over the lazy dog ".repeat(100);
    client.send_text(text.as_str()).unwrap();
    let bytes = wire(&mut client);
    let h = first_header(&bytes);
    assert_eq!(h.rsv, RSV1, "first frame marked compressed");
    assert!(
        bytes.len() < text.len() / 5,
        "actually compressed: {} bytes",
        bytes.len()
    );
    server.receive_data(&bytes, Instant::now()).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(Event::Message(Message::Text(text.as_str().into())))
    );

    server.send_binary(Bytes::from(vec![7u8; 100_000])).unwrap();
    assert_eq!(
        deliver(&mut server, &mut client),
        vec![Event::Message(Message::Binary(vec![7u8; 100_000].into()))]
    );
}

#[test]
fn small_messages_and_never_are_sent_uncompressed() {
    let (mut server, mut client) = pair(&enabled(), &enabled());
    server.send_text("hi").unwrap();
    server
        .send_with(Message::from("x".repeat(500)), Compression::Never)
        .unwrap();
    server
        .send_with(Message::from("y"), Compression::Always)
        .unwrap();
    let bytes = wire(&mut server);
    let (h1, l1) = parse_header(&bytes).unwrap().unwrap();
    assert_eq!(h1.rsv, 0);
    let rest = &bytes[l1 + 2..];
    let (h2, l2) = parse_header(rest).unwrap().unwrap();
    assert_eq!(h2.rsv, 0);
    let h3 = first_header(&rest[l2 + 500..]);
    assert_eq!(h3.rsv, RSV1);
    client.receive_data(&bytes, Instant::now()).unwrap();
    let got: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(got.len(), 3);
}

#[test]
fn prepared_message_shares_compressed_bytes_with_no_context_takeover_peers() {
    let cfg = DeflateConfig {
        enabled: true,
        server_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    let message = Message::from("{\"event\":\"price\",\"data\":1234.5} ".repeat(300));
    let prepared = PreparedMessage::with_deflate(&message, &cfg, 15).unwrap();
    let mut frames = Vec::new();
    for _ in 0..3 {
        let (mut server, mut client) = pair(&cfg, &enabled());
        server.send_prepared(&prepared).unwrap();
        let bytes = wire(&mut server);
        assert_eq!(first_header(&bytes).rsv, RSV1);
        client.receive_data(&bytes, Instant::now()).unwrap();
        assert_eq!(client.poll_event(), Some(Event::Message(message.clone())));
        frames.push(bytes);
    }
    assert!(
        frames.windows(2).all(|w| w[0] == w[1]),
        "the same bytes for every subscriber"
    );
}

#[test]
fn prepared_message_falls_back_when_the_peer_keeps_context() {
    let message = Message::from("abcabcabc".repeat(100));
    let prepared = PreparedMessage::with_deflate(&message, &enabled(), 15).unwrap();
    let (mut server, mut client) = pair(&enabled(), &enabled());
    // Twice: the second message must be decoded with the first one's context.
    for _ in 0..2 {
        server.send_prepared(&prepared).unwrap();
        assert_eq!(
            deliver(&mut server, &mut client),
            vec![Event::Message(message.clone())]
        );
    }
}

#[test]
fn prepared_message_without_deflate_is_the_plain_frame() {
    let now = Instant::now();
    let prepared = PreparedMessage::new(&Message::Binary(Bytes::from(vec![1u8; 10_000])));
    let mut a = Connection::new(Role::Server, Config::default(), now);
    a.send_prepared(&prepared).unwrap();
    let head = a.poll_transmit().unwrap();
    assert_eq!(&head[..4], &[0x82, 126, 0x27, 0x10]);
}

fn masked_frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut out = BytesMut::new();
    encode_header(
        &FrameHeader {
            fin,
            rsv,
            opcode,
            mask: Some(key),
            payload_len: payload.len() as u64,
        },
        &mut out,
    );
    let start = out.len();
    out.extend_from_slice(payload);
    duplex_proto::mask::apply_mask(&mut out[start..], key, 0);
    out.to_vec()
}

fn compress(bytes: &[u8]) -> Vec<u8> {
    let (mut server, _client) = pair(&enabled(), &enabled());
    server
        .send_with(
            Message::Binary(Bytes::copy_from_slice(bytes)),
            Compression::Always,
        )
        .unwrap();
    let frame = wire(&mut server);
    let (_, hl) = parse_header(&frame).unwrap().unwrap();
    frame[hl..].to_vec()
}

#[test]
fn compressed_text_must_inflate_to_utf8_else_1007() {
    let (mut server, _) = pair(&enabled(), &enabled());
    let payload = compress(&[b'a', 0xff, b'b']);
    let err = server
        .receive_data(
            &masked_frame(true, RSV1, OpCode::Text, &payload),
            Instant::now(),
        )
        .unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
}

#[test]
fn corrupt_compressed_data_fails_with_1007() {
    let (mut server, _) = pair(&enabled(), &enabled());
    let err = server
        .receive_data(
            &masked_frame(true, RSV1, OpCode::Binary, &[0xff, 0xff, 0xff]),
            Instant::now(),
        )
        .unwrap_err();
    assert!(
        matches!(err, ProtocolError::InvalidCompressedData(_)),
        "{err:?}"
    );
    assert_eq!(err.close_code().0, 1007);
}

#[test]
fn rsv1_on_a_continuation_frame_fails_with_1002() {
    let (mut server, _) = pair(&enabled(), &enabled());
    let payload = compress(b"hello hello hello");
    let mut input = masked_frame(false, RSV1, OpCode::Text, &payload[..3]);
    input.extend(masked_frame(
        true,
        RSV1,
        OpCode::Continuation,
        &payload[3..],
    ));
    assert_eq!(
        server.receive_data(&input, Instant::now()).unwrap_err(),
        ProtocolError::ReservedBits(RSV1)
    );
}

#[test]
fn fragmented_compressed_message_with_interleaved_ping() {
    let (mut server, _) = pair(&enabled(), &enabled());
    let text = "fragment me ".repeat(50);
    let payload = compress(text.as_bytes());
    let mut input = masked_frame(false, RSV1, OpCode::Text, &payload[..5]);
    input.extend(masked_frame(true, 0, OpCode::Ping, b"p"));
    input.extend(masked_frame(true, 0, OpCode::Continuation, &payload[5..]));
    server.receive_data(&input, Instant::now()).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(Event::Ping(Bytes::from_static(b"p")))
    );
    assert_eq!(
        server.poll_event(),
        Some(Event::Message(Message::Text(text.as_str().into())))
    );
}
