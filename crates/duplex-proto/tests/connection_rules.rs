//! One test per RFC 6455 rule the connection enforces, driven with bytes only (no sockets).

use bytes::Bytes;
use duplex_proto::frame::{encode_header, FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::{
    CloseCode, Config, Connection, Event, Message, MessageKind, ProtocolError, Role, SendError,
    State,
};
use std::time::{Duration, Instant};

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

/// A frame as a client would send it (masked).
fn client_frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    frame(fin, rsv, opcode, payload, Some(KEY))
}

fn frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(
        &FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        },
        &mut out,
    );
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
    out
}

fn server() -> (Connection, Instant) {
    let now = Instant::now();
    (Connection::new(Role::Server, Config::default(), now), now)
}

fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn sent(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// The close code in the (unmasked, server-sent) close frame at the end of `bytes`.
fn sent_close_code(bytes: &[u8]) -> Option<u16> {
    let mut rest = bytes;
    let mut last = None;
    while let Ok(Some((h, hl))) = duplex_proto::frame::parse_header(rest) {
        let len = h.payload_len as usize;
        let payload = &rest[hl..hl + len];
        if h.opcode == OpCode::Close {
            last = Some(if len >= 2 {
                u16::from_be_bytes([payload[0], payload[1]])
            } else {
                0
            });
        }
        rest = &rest[hl + len..];
    }
    last
}

fn assert_fails_with(input: &[u8], expected: ProtocolError, code: u16) {
    let (mut s, now) = server();
    let err = s.receive_data(input, now).unwrap_err();
    assert_eq!(err, expected);
    assert_eq!(err.close_code(), CloseCode(code));
    assert_eq!(sent_close_code(&sent(&mut s)), Some(code));
    assert!(
        s.should_close_transport(),
        "server closes TCP after failing"
    );
}

#[test]
fn text_and_binary_messages_are_delivered() {
    let (mut s, now) = server();
    let mut input = client_frame(true, 0, OpCode::Text, "héllo".as_bytes());
    input.extend(client_frame(true, 0, OpCode::Binary, &[0, 255]));
    s.receive_data(&input, now).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::Message(Message::Text("héllo".into())),
            Event::Message(Message::Binary(Bytes::from_static(&[0, 255]))),
        ]
    );
}

#[test]
fn bytes_arriving_one_at_a_time_give_the_same_messages() {
    let (mut s, now) = server();
    let payload = vec![b'x'; 70_000];
    let mut input = client_frame(false, 0, OpCode::Text, &payload[..1000]);
    input.extend(client_frame(true, 0, OpCode::Ping, b"p"));
    input.extend(client_frame(
        true,
        0,
        OpCode::Continuation,
        &payload[1000..],
    ));
    for byte in &input {
        s.receive_data(std::slice::from_ref(byte), now).unwrap();
    }
    let ev = events(&mut s);
    assert_eq!(ev[0], Event::Ping(Bytes::from_static(b"p")));
    assert_eq!(
        ev[1],
        Event::Message(Message::Text(String::from_utf8(payload).unwrap().into()))
    );
}

#[test]
fn server_rejects_unmasked_frames() {
    assert_fails_with(
        &frame(true, 0, OpCode::Text, b"hi", None),
        ProtocolError::UnmaskedFrame,
        1002,
    );
}

#[test]
fn client_rejects_masked_frames() {
    let now = Instant::now();
    let mut c = Connection::new(Role::Client, Config::default(), now);
    let err = c
        .receive_data(&client_frame(true, 0, OpCode::Text, b"hi"), now)
        .unwrap_err();
    assert_eq!(err, ProtocolError::MaskedFrame);
    assert!(
        !c.should_close_transport(),
        "a client waits for the server to close TCP"
    );
}

#[test]
fn reserved_bits_fail_without_an_extension() {
    for rsv in 1..8 {
        assert_fails_with(
            &client_frame(true, rsv, OpCode::Text, b"x"),
            ProtocolError::ReservedBits(rsv),
            1002,
        );
    }
}

#[test]
fn reserved_opcodes_fail() {
    for op in [3u8, 7, 0xb, 0xf] {
        let mut input = client_frame(true, 0, OpCode::Text, b"");
        input[0] = 0x80 | op;
        assert_fails_with(&input, ProtocolError::ReservedOpcode(op), 1002);
    }
}

#[test]
fn control_frames_must_not_be_fragmented() {
    assert_fails_with(
        &client_frame(false, 0, OpCode::Ping, b"x"),
        ProtocolError::FragmentedControlFrame,
        1002,
    );
}

#[test]
fn control_frames_are_at_most_125_bytes() {
    assert_fails_with(
        &client_frame(true, 0, OpCode::Ping, &[0; 126]),
        ProtocolError::ControlFrameTooLong(126),
        1002,
    );
}

#[test]
fn continuation_without_a_message_fails() {
    assert_fails_with(
        &client_frame(true, 0, OpCode::Continuation, b"x"),
        ProtocolError::UnexpectedContinuation,
        1002,
    );
}

#[test]
fn new_message_inside_a_fragmented_one_fails() {
    let mut input = client_frame(false, 0, OpCode::Text, b"a");
    input.extend(client_frame(true, 0, OpCode::Text, b"b"));
    assert_fails_with(&input, ProtocolError::ExpectedContinuation, 1002);
}

#[test]
fn control_frames_may_interleave_fragments() {
    let (mut s, now) = server();
    let mut input = client_frame(false, 0, OpCode::Binary, b"a");
    input.extend(client_frame(true, 0, OpCode::Ping, b"1"));
    input.extend(client_frame(false, 0, OpCode::Continuation, b"b"));
    input.extend(client_frame(true, 0, OpCode::Pong, b"2"));
    input.extend(client_frame(true, 0, OpCode::Continuation, b"c"));
    s.receive_data(&input, now).unwrap();
    assert_eq!(
        events(&mut s),
        vec![
            Event::Ping(Bytes::from_static(b"1")),
            Event::Pong(Bytes::from_static(b"2")),
            Event::Message(Message::Binary(Bytes::from_static(b"abc"))),
        ]
    );
    assert_eq!(
        sent(&mut s),
        vec![0x8a, 1, b'1'],
        "ping answered with its payload"
    );
}

#[test]
fn invalid_utf8_fails_fast_before_the_frame_ends() {
    let (mut s, now) = server();
    // Frame of 100 bytes announced; the first 4 bytes already contain an impossible sequence.
    let mut payload = vec![b'a'; 100];
    payload[2] = 0xed;
    payload[3] = 0xa0; // surrogate half
    let input = client_frame(true, 0, OpCode::Text, &payload);
    let err = s.receive_data(&input[..6 + 4], now).unwrap_err();
    assert_eq!(err, ProtocolError::InvalidUtf8);
    assert_eq!(sent_close_code(&sent(&mut s)), Some(1007));
}

#[test]
fn invalid_utf8_across_fragments_fails_at_the_bad_fragment() {
    let (mut s, now) = server();
    let mut input = client_frame(false, 0, OpCode::Text, &[0xce, 0xba]);
    input.extend(client_frame(false, 0, OpCode::Continuation, &[0xf4, 0x90]));
    assert_eq!(
        s.receive_data(&input, now).unwrap_err(),
        ProtocolError::InvalidUtf8
    );
}

#[test]
fn text_ending_in_a_partial_code_point_fails() {
    assert_fails_with(
        &client_frame(true, 0, OpCode::Text, &[b'a', 0xe2, 0x82]),
        ProtocolError::InvalidUtf8,
        1007,
    );
}

#[test]
fn frame_larger_than_limit_fails_with_1009_on_its_header() {
    let now = Instant::now();
    let config = Config {
        max_frame_size: 1000,
        ..Config::default()
    };
    let mut s = Connection::new(Role::Server, config, now);
    let input = client_frame(true, 0, OpCode::Binary, &[0; 1001]);
    let err = s.receive_data(&input[..8], now).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::FrameTooLarge {
            size: 1001,
            max: 1000
        }
    );
    assert_eq!(sent_close_code(&sent(&mut s)), Some(1009));
}

#[test]
fn message_larger_than_limit_fails_with_1009() {
    let now = Instant::now();
    let config = Config {
        max_message_size: 10,
        ..Config::default()
    };
    let mut s = Connection::new(Role::Server, config, now);
    let mut input = client_frame(false, 0, OpCode::Binary, &[0; 6]);
    input.extend(client_frame(true, 0, OpCode::Continuation, &[0; 6]));
    assert_eq!(
        s.receive_data(&input, now).unwrap_err(),
        ProtocolError::MessageTooLarge { max: 10 }
    );
}

#[test]
fn peer_close_is_echoed_with_its_code_and_ends_the_connection() {
    let (mut s, now) = server();
    let mut input = client_frame(true, 0, OpCode::Close, &[0x0f, 0xa0, b'b', b'y', b'e']); // 4000
    input.extend(client_frame(true, 0, OpCode::Text, b"after close"));
    s.receive_data(&input, now).unwrap();
    let ev = events(&mut s);
    assert_eq!(
        ev.len(),
        1,
        "nothing after the close frame is processed: {ev:?}"
    );
    match &ev[0] {
        Event::Close(Some(f)) => assert_eq!((f.code, f.reason.as_str()), (CloseCode(4000), "bye")),
        other => panic!("{other:?}"),
    }
    assert_eq!(sent(&mut s), vec![0x88, 2, 0x0f, 0xa0]);
    assert_eq!(s.state(), State::Closed);
    assert!(s.should_close_transport());
    assert_eq!(s.send_text("late"), Err(SendError::Closing));
}

#[test]
fn empty_close_is_answered_with_an_empty_close() {
    let (mut s, now) = server();
    s.receive_data(&client_frame(true, 0, OpCode::Close, b""), now)
        .unwrap();
    assert_eq!(events(&mut s), vec![Event::Close(None)]);
    assert_eq!(sent(&mut s), vec![0x88, 0]);
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    let (mut s, now) = server();
    let err = s
        .receive_data(&client_frame(true, 0, OpCode::Close, &[3]), now)
        .unwrap_err();
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    assert_eq!(sent_close_code(&sent(&mut s)), Some(1002));
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
    ] {
        let (mut s, now) = server();
        let payload = code.to_be_bytes();
        assert!(
            s.receive_data(&client_frame(true, 0, OpCode::Close, &payload), now)
                .is_err(),
            "{code}"
        );
        assert_eq!(sent_close_code(&sent(&mut s)), Some(1002), "{code}");
    }
}

#[test]
fn close_reason_must_be_utf8_else_1007() {
    let (mut s, now) = server();
    s.receive_data(
        &client_frame(
            true,
            0,
            OpCode::Close,
            &[0x03, 0xe8, 0xce, 0xba, 0xed, 0xa0],
        ),
        now,
    )
    .unwrap_err();
    assert_eq!(sent_close_code(&sent(&mut s)), Some(1007));
}

#[test]
fn our_close_waits_for_the_peer_then_times_out() {
    let (mut s, now) = server();
    s.close(CloseCode::NORMAL, "done", now).unwrap();
    assert_eq!(s.state(), State::Closing);
    assert_eq!(s.send_binary(vec![1]), Err(SendError::Closing));
    // Data the peer sent before seeing our close is still delivered.
    s.receive_data(&client_frame(true, 0, OpCode::Text, b"in flight"), now)
        .unwrap();
    assert_eq!(
        events(&mut s),
        vec![Event::Message(Message::Text("in flight".into()))]
    );
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, now + Config::default().close_timeout);
    assert!(!s.should_close_transport());
    assert!(matches!(
        s.handle_timeout(deadline),
        Err(ProtocolError::CloseTimeout(_))
    ));
    assert!(s.should_close_transport());
}

#[test]
fn our_close_then_peer_close_completes_the_handshake() {
    let (mut s, now) = server();
    s.close(CloseCode(3000), "", now).unwrap();
    let bytes = sent(&mut s);
    assert_eq!(bytes, vec![0x88, 2, 0x0b, 0xb8]);
    s.receive_data(&client_frame(true, 0, OpCode::Close, &[0x0b, 0xb8]), now)
        .unwrap();
    assert_eq!(s.state(), State::Closed);
    assert!(sent(&mut s).is_empty(), "no second close frame");
    assert!(s.error().is_none());
}

#[test]
fn close_codes_that_may_not_be_sent_are_refused() {
    let (mut s, now) = server();
    assert_eq!(
        s.close(CloseCode::NO_STATUS, "", now),
        Err(SendError::InvalidCloseCode(1005))
    );
    assert_eq!(
        s.close(CloseCode::NORMAL, &"x".repeat(124), now),
        Err(SendError::CloseReasonTooLong(124))
    );
}

#[test]
fn eof_before_close_is_abnormal() {
    let (mut s, _) = server();
    assert_eq!(s.receive_eof(), Err(ProtocolError::UnexpectedEof));
    assert_eq!(
        ProtocolError::UnexpectedEof.close_code(),
        CloseCode::ABNORMAL
    );
    assert!(s.should_close_transport());
}

#[test]
fn client_waits_for_server_eof_after_close_handshake() {
    let now = Instant::now();
    let mut c = Connection::new(Role::Client, Config::default(), now);
    c.receive_data(&frame(true, 0, OpCode::Close, &[0x03, 0xe8], None), now)
        .unwrap();
    assert_eq!(c.state(), State::Closed);
    assert!(!c.should_close_transport());
    c.receive_eof().unwrap();
    assert!(c.should_close_transport());
}

#[test]
fn client_frames_are_masked_with_fresh_keys() {
    let now = Instant::now();
    let mut c = Connection::new(Role::Client, Config::default(), now);
    c.send_text("hello").unwrap();
    c.send_text("hello").unwrap();
    let bytes = sent(&mut c);
    let (h1, l1) = duplex_proto::frame::parse_header(&bytes).unwrap().unwrap();
    let (h2, _) = duplex_proto::frame::parse_header(&bytes[l1 + 5..])
        .unwrap()
        .unwrap();
    assert!(h1.mask.is_some() && h2.mask.is_some());
    let mut payload = bytes[l1..l1 + 5].to_vec();
    apply_mask(&mut payload, h1.mask.unwrap(), 0);
    assert_eq!(payload, b"hello");
    assert_ne!(
        h1.mask, h2.mask,
        "keys are random per frame (may collide with p=2^-32)"
    );
}

#[test]
fn fragmented_send_produces_continuations_and_checks_utf8() {
    let (mut s, _) = server();
    s.send_fragment(MessageKind::Text, "€".as_bytes()[..1].to_vec(), false)
        .unwrap();
    assert_eq!(
        s.send_text("x"),
        Err(SendError::FragmentedMessageInProgress)
    );
    s.send_ping(Bytes::new()).unwrap();
    assert_eq!(
        s.send_fragment(MessageKind::Binary, vec![], true),
        Err(SendError::FragmentTypeMismatch)
    );
    s.send_fragment(MessageKind::Text, "€".as_bytes()[1..].to_vec(), true)
        .unwrap();
    assert_eq!(
        sent(&mut s),
        vec![0x01, 1, 0xe2, 0x89, 0, 0x80, 2, 0x82, 0xac]
    );
    assert_eq!(
        s.send_fragment(MessageKind::Text, vec![0xff], true),
        Err(SendError::InvalidUtf8)
    );
}

#[test]
fn heartbeat_pings_when_idle_and_fails_with_1011_without_answer() {
    let now = Instant::now();
    let config = Config {
        ping_interval: Some(Duration::from_secs(5)),
        pong_timeout: Duration::from_secs(3),
        ..Config::default()
    };
    let mut s = Connection::new(Role::Server, config, now);
    let t1 = s.poll_timeout().unwrap();
    assert_eq!(t1, now + Duration::from_secs(5));
    s.handle_timeout(t1).unwrap();
    assert_eq!(sent(&mut s), vec![0x89, 0], "heartbeat ping");
    let t2 = s.poll_timeout().unwrap();
    assert_eq!(t2, t1 + Duration::from_secs(3));
    let err = s.handle_timeout(t2).unwrap_err();
    assert_eq!(err, ProtocolError::PongTimeout(Duration::from_secs(3)));
    assert_eq!(sent_close_code(&sent(&mut s)), Some(1011));
}

#[test]
fn heartbeat_is_satisfied_by_any_traffic() {
    let now = Instant::now();
    let config = Config {
        ping_interval: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let mut s = Connection::new(Role::Server, config, now);
    let t1 = s.poll_timeout().unwrap();
    s.handle_timeout(t1).unwrap();
    let later = t1 + Duration::from_secs(1);
    s.receive_data(&client_frame(true, 0, OpCode::Pong, b""), later)
        .unwrap();
    assert_eq!(
        s.poll_timeout(),
        Some(later + Duration::from_secs(5)),
        "next ping re-armed, pong deadline gone"
    );
}

#[test]
fn nothing_is_processed_after_a_failure() {
    let (mut s, now) = server();
    let mut input = client_frame(true, 0, OpCode::Text, b"ok");
    input.extend(client_frame(true, 4, OpCode::Text, b"bad rsv"));
    input.extend(client_frame(true, 0, OpCode::Ping, b"never answered"));
    assert!(s.receive_data(&input, now).is_err());
    assert_eq!(
        events(&mut s),
        vec![Event::Message(Message::Text("ok".into()))]
    );
    s.receive_data(&client_frame(true, 0, OpCode::Text, b"more"), now)
        .unwrap();
    assert!(events(&mut s).is_empty());
}

#[test]
fn a_message_before_a_bad_frame_can_still_be_answered() {
    // Autobahn 4.1.4 / 5.15: valid message and bad frame in one read; the echo must go out
    // before the close frame.
    let (mut s, now) = server();
    let mut input = client_frame(true, 0, OpCode::Text, b"first");
    input.extend(client_frame(true, 2, OpCode::Text, b"bad"));
    assert_eq!(
        s.receive_data(&input, now).unwrap_err(),
        ProtocolError::ReservedBits(2)
    );
    assert!(
        !s.should_close_transport(),
        "failure waits for the earlier event"
    );
    let Some(Event::Message(m)) = s.poll_event() else {
        panic!("message first")
    };
    s.send(m).unwrap();
    assert_eq!(s.poll_event(), None);
    let bytes = sent(&mut s);
    assert_eq!(&bytes[..7], &[0x81, 5, b'f', b'i', b'r', b's', b't']);
    assert_eq!(sent_close_code(&bytes), Some(1002));
    assert!(s.should_close_transport());
}

#[test]
fn a_message_before_the_peer_close_can_still_be_answered() {
    let (mut s, now) = server();
    let mut input = client_frame(true, 0, OpCode::Binary, b"x");
    input.extend(client_frame(true, 0, OpCode::Close, &[0x03, 0xe8]));
    s.receive_data(&input, now).unwrap();
    let Some(Event::Message(m)) = s.poll_event() else {
        panic!("message first")
    };
    s.send(m).unwrap();
    assert!(matches!(s.poll_event(), Some(Event::Close(Some(_)))));
    assert_eq!(sent(&mut s), vec![0x82, 1, b'x', 0x88, 2, 0x03, 0xe8]);
}

#[test]
fn ping_flood_from_a_peer_that_never_reads_keeps_output_bounded() {
    let (mut s, now) = server();
    // Fill the output as a peer that never reads would leave it.
    for _ in 0..20 {
        s.send_binary(vec![0u8; 4096]).unwrap();
    }
    let backlog = s.pending_transmit();
    for i in 0..100_000u32 {
        s.receive_data(&client_frame(true, 0, OpCode::Ping, &i.to_be_bytes()), now)
            .unwrap();
        while s.poll_event().is_some() {}
    }
    assert!(
        s.pending_transmit() <= backlog + 64 * 1024,
        "output grew to {}",
        s.pending_transmit()
    );
    // Once the peer reads, the latest ping is answered.
    let bytes = sent(&mut s);
    let tail = &bytes[bytes.len() - 6..];
    assert_eq!(tail, &[0x8a, 4, 0, 1, 0x86, 0x9f], "pong for ping 99999");
}

#[test]
fn every_ping_is_answered_when_the_peer_reads() {
    let (mut s, now) = server();
    let mut pongs = 0;
    for i in 0..10u8 {
        s.receive_data(&client_frame(true, 0, OpCode::Ping, &[i]), now)
            .unwrap();
        let bytes = sent(&mut s);
        assert_eq!(bytes, vec![0x8a, 1, i]);
        pongs += 1;
    }
    assert_eq!(pongs, 10);
}

#[test]
fn idle_timeout_closes_with_1001() {
    let now = Instant::now();
    let config = Config {
        idle_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    };
    let mut s = Connection::new(Role::Server, config, now);
    let later = now + Duration::from_secs(20);
    s.receive_data(&client_frame(true, 0, OpCode::Text, b"hi"), later)
        .unwrap();
    assert_eq!(
        s.poll_timeout(),
        Some(later + Duration::from_secs(30)),
        "a received message re-arms it"
    );
    // Pings do not count as activity.
    s.receive_data(
        &client_frame(true, 0, OpCode::Ping, b""),
        later + Duration::from_secs(29),
    )
    .unwrap();
    let deadline = s.poll_timeout().unwrap();
    assert_eq!(deadline, later + Duration::from_secs(30));
    s.handle_timeout(deadline).unwrap();
    assert_eq!(s.state(), State::Closing);
    assert_eq!(sent_close_code(&sent(&mut s)), Some(1001));
}

#[test]
fn idle_timeout_counts_sent_messages() {
    let now = Instant::now();
    let config = Config {
        idle_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    };
    let mut s = Connection::new(Role::Server, config, now);
    s.send_text("still here").unwrap();
    let first = s.poll_timeout().unwrap();
    s.handle_timeout(first).unwrap();
    assert_eq!(
        s.state(),
        State::Open,
        "a send since the last check keeps it open"
    );
    let second = s.poll_timeout().unwrap();
    assert_eq!(second, first + Duration::from_secs(30));
    s.handle_timeout(second).unwrap();
    assert_eq!(s.state(), State::Closing);
}
