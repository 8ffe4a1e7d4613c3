//! Arbitrary bytes from the peer into a server and a client `Connection`, fed in chunks whose
//! sizes come from the input, with events and transmits drained after every chunk.
//!
//! Input layout: `[flags, s0, s1, s2, s3, wire bytes...]`
//! * `flags & 3`: limits (0: defaults, 1: frame 16 / message 40, 2: frame 1000 / message
//!   3000, 3: frame 125 / message 200);
//! * `flags & 4`: `auto_pong` off;
//! * `flags & 8`: `receive_eof` at the end; `flags & 16`: `handle_timeout` far in the future;
//! * `flags & 32`: permessage-deflate negotiated (RSV1 allowed, compressed messages inflated;
//!   `flags & 64`: without context takeover; `flags & 128`: chunked receive).
//! * `s0..s3`: chunk sizes, used in turn (0: everything that is left); odd-sized chunks are
//!   appended to `input_buffer()` and processed with `handle_input`, the others are given to
//!   `receive_data`.
//!
//! Besides "never panics", this checks invariants that must hold for *any* input:
//! * `receive_data` / `handle_input` return `Err` at most once, and then `error()` is that error; once the
//!   events before the failure (or the peer's close) are taken, nothing ever yields an event;
//! * state only moves forward (Open → Closing → Closed);
//! * events respect the limits: messages ≤ `max_message_size`, text is UTF-8, control
//!   payloads ≤ 125 bytes, close codes valid on the wire;
//! * the input buffer holds at most one incomplete frame (≤ max(max_frame_size, 125) bytes);
//! * output is bounded by input: every byte we write answers bytes the peer sent (auto-pong:
//!   at most 3 bytes out per byte in, for a client's masked pong to an empty unmasked ping)
//!   plus one close frame (≤ 131 bytes);
//! * output is a valid frame stream for our role: masked iff client, no RSV, only pongs (one
//!   per ping event, same payload, in order) and at most one close frame, last; after a
//!   failure it carries the error's close code, after the peer's close it echoes its code.
#![no_main]

use duplex_proto::close::parse_close_payload;
use duplex_proto::deflate::{Agreed, DeflateCodec, DeflateConfig, DirectionParams};
use duplex_proto::frame::{parse_header, OpCode};
use duplex_proto::{CloseCode, Config, Connection, Event, Message, ProtocolError, Role, State};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, Instant};

/// Largest close frame we can write: 2-byte header, 4-byte mask, 125-byte payload.
const MAX_CLOSE_FRAME: usize = 2 + 4 + 125;

fuzz_target!(|data: &[u8]| {
    let Some((head, wire)) = data.split_first_chunk::<5>() else {
        return;
    };
    for role in [Role::Server, Role::Client] {
        run(role, head[0], &head[1..], wire);
    }
});

fn config(flags: u8) -> Config {
    let (frame, message) = match flags & 3 {
        0 => {
            let d = Config::default();
            (d.max_frame_size, d.max_message_size)
        }
        1 => (16, 40),
        2 => (1000, 3000),
        _ => (125, 200),
    };
    Config {
        max_frame_size: frame,
        max_message_size: message,
        auto_pong: flags & 4 == 0,
        ..Config::default()
    }
}

fn rank(s: State) -> u8 {
    match s {
        State::Open => 0,
        State::Closing => 1,
        State::Closed => 2,
    }
}

/// A codec as a real negotiation would produce it for `role`.
fn deflate_codec(role: Role, no_context_takeover: bool) -> DeflateCodec {
    let cfg = DeflateConfig {
        enabled: true,
        server_no_context_takeover: no_context_takeover,
        client_no_context_takeover: no_context_takeover,
        ..DeflateConfig::default()
    };
    let direction = DirectionParams {
        max_window_bits: 15,
        no_context_takeover,
    };
    let agreed = Agreed {
        role,
        outgoing: direction,
        incoming: direction,
    };
    DeflateCodec::new(agreed, &cfg)
}

fn run(role: Role, flags: u8, sizes: &[u8], mut wire: &[u8]) {
    let now = Instant::now();
    let mut config = config(flags);
    config.chunked_receive = flags & 128 != 0;
    let mut conn = Connection::new(role, config.clone(), now);
    if flags & 32 != 0 {
        conn.set_deflate(deflate_codec(role, flags & 64 != 0));
    }

    let mut fed = 0usize;
    let mut out: Vec<u8> = Vec::new();
    let mut pings: Vec<Vec<u8>> = Vec::new();
    let mut close_event: Option<Option<(CloseCode, usize)>> = None;
    let mut error: Option<ProtocolError> = None;
    // No event may come any more: the failure or the peer's close was reached and drained.
    let mut ended = false;
    let mut state = conn.state();
    let max_buffered = config.max_frame_size.max(125).max(14);

    let mut turn = 0;
    while !wire.is_empty() {
        let size = usize::from(sizes[turn % sizes.len()]);
        turn += 1;
        let n = if size == 0 {
            wire.len()
        } else {
            size.min(wire.len())
        };
        let (chunk, rest) = wire.split_at(n);
        wire = rest;
        fed += n;

        // Odd sizes go through the zero-copy path the tokio layer uses.
        let result = if size % 2 == 1 {
            conn.input_buffer().extend_from_slice(chunk);
            conn.handle_input(now)
        } else {
            conn.receive_data(chunk, now)
        };
        match result {
            Ok(()) => {}
            Err(e) => {
                assert!(error.is_none(), "second error {e:?} after {error:?}");
                assert!(!ended, "error {e:?} after the end");
                assert_eq!(conn.error(), Some(&e));
                error = Some(e);
            }
        }
        assert!(
            conn.input_buffer().len() <= max_buffered,
            "{} bytes buffered with max_frame_size {}",
            conn.input_buffer().len(),
            config.max_frame_size
        );

        while let Some(event) = conn.poll_event() {
            assert!(!ended, "event after the end: {event:?}");
            match event {
                Event::Message(m) => {
                    assert!(m.len() <= config.max_message_size);
                    if let Message::Text(t) = &m {
                        assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    }
                }
                Event::Ping(p) => {
                    assert!(p.len() <= 125);
                    pings.push(p.to_vec());
                }
                Event::Pong(p) => assert!(p.len() <= 125),
                Event::Close(c) => {
                    if let Some(f) = &c {
                        assert!(f.code.is_valid_on_wire());
                        assert!(f.reason.len() <= 123);
                    }
                    assert!(conn.close_received().is_some());
                    close_event = Some(c.map(|f| (f.code, f.reason.len())));
                    ended = true;
                }
                _ => {}
            }
        }
        if error.is_some() {
            ended = true;
        }
        while let Some(bytes) = conn.poll_transmit() {
            out.extend_from_slice(&bytes);
        }
        assert_eq!(conn.pending_transmit(), 0);
        let factor = match role {
            Role::Server => 1,
            Role::Client => 3,
        };
        assert!(
            out.len() <= factor * fed + MAX_CLOSE_FRAME,
            "{} bytes written for {fed} read",
            out.len()
        );
        let now_state = conn.state();
        assert!(rank(now_state) >= rank(state), "{state:?} -> {now_state:?}");
        state = now_state;
    }

    check_output(
        role,
        &config,
        &out,
        &pings,
        error.as_ref(),
        close_event,
        state,
    );

    if flags & 8 != 0 {
        let clean = conn.close_received().is_some() || conn.error().is_some();
        let r = conn.receive_eof();
        assert_eq!(r.is_ok(), clean, "{r:?}");
        assert_eq!(conn.state(), State::Closed);
        assert!(conn.should_close_transport());
        assert!(conn.error().is_some() || conn.close_received().is_some());
        assert!(conn.receive_data(b"\x89\x00", now).is_ok());
        assert_eq!(conn.poll_event(), None);
    }
    if flags & 16 != 0 {
        let before = conn.state();
        let _ = conn.handle_timeout(now + Duration::from_secs(86_400));
        if before != State::Open {
            assert_eq!(conn.state(), State::Closed);
            assert!(conn.should_close_transport());
            assert_eq!(conn.poll_timeout(), None);
        }
    }
    assert_eq!(conn.poll_event(), None, "event after eof/timeout");
}

fn check_output(
    role: Role,
    config: &Config,
    out: &[u8],
    pings: &[Vec<u8>],
    error: Option<&ProtocolError>,
    close_event: Option<Option<(CloseCode, usize)>>,
    state: State,
) {
    let mut rest = out;
    let mut pongs: Vec<Vec<u8>> = Vec::new();
    let mut close: Option<Option<CloseCode>> = None;
    while !rest.is_empty() {
        let (h, hl) = parse_header(rest)
            .expect("we wrote an invalid header")
            .expect("we wrote a truncated header");
        assert!(close.is_none(), "frame after our close frame: {h:?}");
        assert_eq!(h.mask.is_some(), role == Role::Client, "{h:?}");
        assert!(h.fin && h.rsv == 0 && h.payload_len <= 125, "{h:?}");
        let len = h.payload_len as usize;
        assert!(rest.len() >= hl + len, "we wrote a truncated frame");
        let mut payload = rest[hl..hl + len].to_vec();
        if let Some(key) = h.mask {
            duplex_proto::mask::apply_mask(&mut payload, key, 0);
        }
        rest = &rest[hl + len..];
        match h.opcode {
            OpCode::Pong => pongs.push(payload),
            OpCode::Close => {
                let f = parse_close_payload(payload.into()).expect("we wrote a bad close payload");
                close = Some(f.map(|f| f.code));
            }
            op => panic!("we wrote a {op:?} frame nobody asked for"),
        }
    }

    // Pongs answer pings, in order, with the same payload; all of them while we stay open.
    if !config.auto_pong {
        assert!(pongs.is_empty());
    }
    let mut remaining = pings.iter();
    for pong in &pongs {
        assert!(
            remaining.any(|p| p == pong),
            "pong {pong:?} answers no ping in {pings:?}"
        );
    }
    if config.auto_pong && state == State::Open {
        assert_eq!(pongs.len(), pings.len());
    }

    // Our close frame: the error's code after a failure, an echo after the peer's close.
    match (error, close_event) {
        (Some(e), _) => {
            assert_eq!(
                close,
                Some(Some(e.close_code())),
                "failure {e:?} not reported"
            );
        }
        (None, Some(peer)) => {
            assert_eq!(close, Some(peer.map(|(code, _)| code)), "close not echoed");
        }
        (None, None) => assert_eq!(close, None, "close frame without a reason"),
    }
}
