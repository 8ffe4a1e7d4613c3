//! Chunked receive: messages handed on piece by piece as their bytes arrive.

use bytes::Bytes;
use duplex_proto::deflate::{
    client_offer, negotiate_client, negotiate_server, DeflateCodec, DeflateConfig,
};
use duplex_proto::frame::{encode_header, FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::{Config, Connection, Event, MessageKind, ProtocolError, Role};
use std::time::Instant;

fn masked(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key = [0xa1, 0xb2, 0xc3, 0xd4];
    let mut out = Vec::new();
    encode_header(
        &FrameHeader {
            fin,
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
    out
}

fn chunked_server(config: Config) -> Connection {
    Connection::new(
        Role::Server,
        Config {
            chunked_receive: true,
            ..config
        },
        Instant::now(),
    )
}

/// A received chunk: kind, bytes, fin.
type Chunk = (MessageKind, Bytes, bool);

/// Feeds `input` in pieces of `step` bytes; returns the chunks and the largest input backlog.
fn feed(
    conn: &mut Connection,
    input: &[u8],
    step: usize,
) -> Result<(Vec<Chunk>, usize), ProtocolError> {
    let mut chunks = Vec::new();
    let mut backlog = 0;
    for piece in input.chunks(step) {
        conn.receive_data(piece, Instant::now())?;
        backlog = backlog.max(conn.input_buffer().len());
        while let Some(event) = conn.poll_event() {
            if let Event::Chunk { kind, data, fin } = event {
                chunks.push((kind, data, fin));
            }
        }
    }
    Ok((chunks, backlog))
}

#[test]
fn a_large_frame_is_delivered_as_it_arrives_without_buffering_it() {
    let payload: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut s = chunked_server(Config::default());
    let (chunks, backlog) = feed(&mut s, &masked(true, OpCode::Binary, &payload), 65_536).unwrap();
    assert!(chunks.len() > 50, "{} chunks", chunks.len());
    assert!(backlog < 16, "input held back {backlog} bytes");
    let joined: Vec<u8> = chunks
        .iter()
        .flat_map(|(_, d, _)| d.iter().copied())
        .collect();
    assert_eq!(joined, payload);
    assert!(chunks.iter().rev().skip(1).all(|(_, _, fin)| !fin));
    assert!(chunks.last().unwrap().2, "last chunk has fin");
}

#[test]
fn frames_beyond_max_frame_size_need_a_raised_limit_but_no_memory() {
    let config = Config {
        max_frame_size: 1 << 30,
        max_message_size: 1 << 30,
        ..Config::default()
    };
    let mut s = chunked_server(config);
    let header = {
        let mut h = Vec::new();
        encode_header(
            &FrameHeader {
                fin: true,
                rsv: 0,
                opcode: OpCode::Binary,
                mask: Some([0; 4]),
                payload_len: 1 << 29,
            },
            &mut h,
        );
        h
    };
    s.receive_data(&header, Instant::now()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut total = 0;
    for _ in 0..8 {
        s.receive_data(&zeros, Instant::now()).unwrap();
        while let Some(Event::Chunk { data, .. }) = s.poll_event() {
            total += data.len();
        }
        assert!(s.input_buffer().capacity() <= 2 << 20);
    }
    assert_eq!(
        total,
        8 << 20,
        "512 MiB frame streams through in 1 MiB steps"
    );
}

#[test]
fn fragmented_text_with_a_split_code_point_concatenates_to_valid_text() {
    let text = "añb€c𝄞d".as_bytes();
    let mut input = masked(false, OpCode::Text, &text[..2]); // "a" + half of "ñ"
    input.extend(masked(true, OpCode::Ping, b"hi"));
    input.extend(masked(false, OpCode::Continuation, &text[2..7]));
    input.extend(masked(true, OpCode::Continuation, &text[7..]));
    let mut s = chunked_server(Config::default());
    let (chunks, _) = feed(&mut s, &input, 3).unwrap();
    assert!(chunks.iter().all(|(k, _, _)| *k == MessageKind::Text));
    let joined: Vec<u8> = chunks
        .iter()
        .flat_map(|(_, d, _)| d.iter().copied())
        .collect();
    assert_eq!(joined, text);
    assert_eq!(chunks.iter().filter(|(_, _, fin)| *fin).count(), 1);
}

#[test]
fn invalid_utf8_fails_before_the_message_ends() {
    let mut payload = b"valid so far ".to_vec();
    payload.extend([0xff]);
    payload.extend(vec![b'x'; 10_000]);
    let mut s = chunked_server(Config::default());
    let err = feed(&mut s, &masked(true, OpCode::Text, &payload), 100).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
}

#[test]
fn message_size_limit_still_applies_to_the_total() {
    let config = Config {
        max_message_size: 1000,
        ..Config::default()
    };
    let mut s = chunked_server(config);
    let mut input = masked(false, OpCode::Binary, &[1; 600]);
    input.extend(masked(true, OpCode::Continuation, &[2; 600]));
    assert_eq!(
        feed(&mut s, &input, 50).unwrap_err(),
        ProtocolError::MessageTooLarge { max: 1000 }
    );
}

#[test]
fn compressed_messages_are_inflated_piece_by_piece() {
    let cfg = DeflateConfig {
        enabled: true,
        ..DeflateConfig::default()
    };
    let (agreed_s, response) = negotiate_server(&[client_offer(&cfg)], &cfg).unwrap();
    let agreed_c = negotiate_client(&[response], &cfg).unwrap().unwrap();
    let mut client = Connection::new(Role::Client, Config::default(), Instant::now());
    client.set_deflate(DeflateCodec::new(agreed_c, &cfg));
    let mut server = chunked_server(Config::default());
    server.set_deflate(DeflateCodec::new(agreed_s, &cfg));
    let text = "streamed and compressed ".repeat(20_000);
    client.send_text(text.as_str()).unwrap();
    let mut wire = Vec::new();
    while let Some(c) = client.poll_transmit() {
        wire.extend_from_slice(&c);
    }
    assert!(wire.len() < text.len() / 20);
    let (chunks, _) = feed(&mut server, &wire, 512).unwrap();
    assert!(chunks.len() > 3);
    let joined: Vec<u8> = chunks
        .iter()
        .flat_map(|(_, d, _)| d.iter().copied())
        .collect();
    assert_eq!(joined, text.as_bytes());
}
