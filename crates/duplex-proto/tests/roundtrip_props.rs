//! Property tests: what one `Connection` sends, the other receives exactly, whatever the
//! content, the fragmentation and where the transport splits the bytes; the closing handshake
//! works from either side; and garbage behind a valid prefix never panics nor produces events
//! after the failure.
//!
//! Case counts are kept moderate so the file runs in a few seconds in debug mode. Failing
//! cases are not persisted to disk (`failure_persistence: None`): proptest prints the minimal
//! failing input, which belongs in a named regression test below.

use bytes::Bytes;
use duplex_proto::close::CloseFrame;
use duplex_proto::frame::{parse_header, FrameHeader, OpCode};
use duplex_proto::mask::apply_mask;
use duplex_proto::message::Utf8Bytes;
use duplex_proto::{
    CloseCode, Config, Connection, Event, Message, MessageKind, ProtocolError, Role, State,
};
use proptest::prelude::*;
use proptest::sample::Index;
use std::time::Instant;

// ---- generators ---------------------------------------------------------------------------

/// xorshift64*: large payloads are generated from a seed, which is much faster than one
/// proptest value per byte and still shrinks (by size and seed).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn seeded_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    (0..len).map(|_| (rng.next() >> 56) as u8).collect()
}

/// Exactly `len` bytes of arbitrary Unicode: 1-, 2-, 3- and 4-byte scalar values in equal
/// measure (surrogates excluded), topped up with ASCII to reach the length exactly.
fn seeded_text(seed: u64, len: usize) -> String {
    let mut rng = Rng::new(seed);
    let mut s = String::with_capacity(len);
    loop {
        let r = rng.next();
        let v = (r >> 8) as u32;
        let c = match r % 4 {
            0 => char::from_u32(v % 0x80),
            1 => char::from_u32(0x80 + v % (0x800 - 0x80)),
            2 => char::from_u32(0x800 + v % (0x1_0000 - 0x800)),
            _ => char::from_u32(0x1_0000 + v % (0x11_0000 - 0x1_0000)),
        }
        .unwrap_or('\u{fffd}');
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push('~');
    }
    s
}

/// A message payload and its type.
#[derive(Debug, Clone)]
enum Payload {
    Text(String),
    Binary(Vec<u8>),
}

impl Payload {
    fn kind(&self) -> MessageKind {
        match self {
            Payload::Text(_) => MessageKind::Text,
            Payload::Binary(_) => MessageKind::Binary,
        }
    }
    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Text(t) => t.as_bytes(),
            Payload::Binary(b) => b,
        }
    }
    fn message(&self) -> Message {
        match self {
            Payload::Text(t) => Message::Text(t.clone().into()),
            Payload::Binary(b) => Message::Binary(Bytes::from(b.clone())),
        }
    }
}

/// Sizes around the length encodings (7-bit, 16-bit, 64-bit) and anywhere up to 70 000.
fn large_size() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(125usize),
        Just(126),
        Just(65_535),
        Just(65_536),
        0usize..70_000,
    ]
}

/// Short arbitrary Unicode: any scalar value, control characters included.
fn small_text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..100).prop_map(String::from_iter)
}

fn payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        6 => small_text().prop_map(Payload::Text),
        6 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Binary),
        1 => (large_size(), any::<u64>()).prop_map(|(n, s)| Payload::Text(seeded_text(s, n))),
        1 => (large_size(), any::<u64>()).prop_map(|(n, s)| Payload::Binary(seeded_bytes(s, n))),
    ]
}

fn ping_payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=125)
}

/// What the sending application does.
#[derive(Debug, Clone)]
enum Op {
    /// A message in one frame (`send`).
    Whole(Payload),
    /// A message in pieces (`send_fragment`), cut at arbitrary byte offsets (text too: a code
    /// point may be split across fragments), with pings sent between some fragments.
    Fragmented {
        payload: Payload,
        cuts: Vec<(Index, Option<Vec<u8>>)>,
    },
    Ping(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => payload().prop_map(Op::Whole),
        2 => (
            payload(),
            prop::collection::vec((any::<Index>(), prop::option::weighted(0.3, ping_payload())), 0..5)
        )
            .prop_map(|(payload, cuts)| Op::Fragmented { payload, cuts }),
        1 => ping_payload().prop_map(Op::Ping),
    ]
}

/// Read sizes used in turn: tiny reads (every split point inside headers and code points),
/// medium ones, and large ones that hold several frames.
fn read_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![1usize..16, 16usize..2_000, 2_000usize..100_000],
        1..6,
    )
}

fn wire_close_code() -> impl Strategy<Value = u16> {
    prop_oneof![1000u16..=1003, 1007u16..=1014, 3000u16..=4999]
}

/// Arbitrary Unicode of at most 123 bytes (the longest close reason).
fn close_reason() -> impl Strategy<Value = String> {
    small_text().prop_map(|s| {
        let mut end = s.len().min(123);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_owned()
    })
}

// ---- driving two connections ----------------------------------------------------------------

fn peer_of(role: Role) -> Role {
    match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    }
}

fn pair(sender: Role) -> (Connection, Connection, Instant) {
    let now = Instant::now();
    (
        Connection::new(sender, Config::default(), now),
        Connection::new(peer_of(sender), Config::default(), now),
        now,
    )
}

fn take_transmit(conn: &mut Connection) -> Vec<u8> {
    let mut wire = Vec::new();
    while let Some(chunk) = conn.poll_transmit() {
        wire.extend_from_slice(&chunk);
    }
    wire
}

/// Feeds `wire` to `to` in reads of `sizes` (in turn), taking events after every read; every
/// read must succeed.
fn feed_valid(
    to: &mut Connection,
    wire: &[u8],
    sizes: &[usize],
    now: Instant,
) -> Result<Vec<Event>, TestCaseError> {
    let mut events = Vec::new();
    let mut rest = wire;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        if let Err(e) = to.receive_data(read, now) {
            return Err(TestCaseError::fail(format!(
                "{:?} failed on a valid stream: {e}",
                to.role()
            )));
        }
        events.extend(std::iter::from_fn(|| to.poll_event()));
    }
    Ok(events)
}

/// Everything `from` queued, delivered to `to`.
fn transfer(
    from: &mut Connection,
    to: &mut Connection,
    sizes: &[usize],
    now: Instant,
) -> Result<Vec<Event>, TestCaseError> {
    let wire = take_transmit(from);
    feed_valid(to, &wire, sizes, now)
}

/// A short description of an event, for failure messages (payloads can be 70 KB).
fn describe(e: &Event) -> String {
    let head = |b: &[u8]| format!("{} bytes {:02x?}", b.len(), &b[..b.len().min(8)]);
    match e {
        Event::Message(Message::Text(t)) => format!("Text({})", head(t.as_bytes())),
        Event::Message(Message::Binary(b)) => format!("Binary({})", head(b)),
        Event::Ping(p) => format!("Ping({})", head(p)),
        Event::Pong(p) => format!("Pong({})", head(p)),
        other => format!("{other:?}"),
    }
}

fn same_events(got: &[Event], want: &[Event]) -> Result<(), TestCaseError> {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            g == w,
            "event {i}: got {}, want {}",
            describe(g),
            describe(w)
        );
    }
    prop_assert_eq!(got.len(), want.len(), "number of events");
    Ok(())
}

/// Has `sender` perform `ops`; returns the events its peer must see, in order.
fn perform(sender: &mut Connection, ops: &[Op]) -> Result<Vec<Event>, TestCaseError> {
    let mut expected = Vec::new();
    for op in ops {
        match op {
            Op::Whole(p) => {
                sender.send(p.message()).expect("send");
                expected.push(Event::Message(p.message()));
            }
            Op::Ping(p) => {
                sender.send_ping(p.clone()).expect("send_ping");
                expected.push(Event::Ping(Bytes::from(p.clone())));
            }
            Op::Fragmented { payload, cuts } => {
                let bytes = payload.bytes();
                let mut cuts: Vec<(usize, Option<&Vec<u8>>)> = cuts
                    .iter()
                    .map(|(at, ping)| (at.index(bytes.len() + 1), ping.as_ref()))
                    .collect();
                cuts.sort_by_key(|(at, _)| *at);
                let mut start = 0;
                for (at, ping) in cuts {
                    sender
                        .send_fragment(
                            payload.kind(),
                            Bytes::copy_from_slice(&bytes[start..at]),
                            false,
                        )
                        .expect("send_fragment");
                    start = at;
                    if let Some(ping) = ping {
                        sender.send_ping(ping.clone()).expect("send_ping");
                        expected.push(Event::Ping(Bytes::from(ping.clone())));
                    }
                }
                sender
                    .send_fragment(
                        payload.kind(),
                        Bytes::copy_from_slice(&bytes[start..]),
                        true,
                    )
                    .expect("last send_fragment");
                expected.push(Event::Message(payload.message()));
            }
        }
    }
    Ok(expected)
}

fn check_round_trip(sender_role: Role, ops: &[Op], sizes: &[usize]) -> Result<(), TestCaseError> {
    let (mut sender, mut receiver, now) = pair(sender_role);
    let expected = perform(&mut sender, ops)?;
    let got = transfer(&mut sender, &mut receiver, sizes, now)?;
    same_events(&got, &expected)?;

    // Every ping was answered automatically, with its payload, in order.
    let pongs = transfer(&mut receiver, &mut sender, sizes, now)?;
    let want_pongs: Vec<Event> = expected
        .iter()
        .filter_map(|e| match e {
            Event::Ping(p) => Some(Event::Pong(p.clone())),
            _ => None,
        })
        .collect();
    same_events(&pongs, &want_pongs)?;

    for conn in [&sender, &receiver] {
        prop_assert_eq!(conn.state(), State::Open);
        prop_assert_eq!(conn.error(), None);
        prop_assert_eq!(conn.pending_transmit(), 0);
        prop_assert!(!conn.should_close_transport());
    }
    Ok(())
}

fn check_close(
    closer_role: Role,
    before: &[Op],
    code: u16,
    reason: &str,
    sizes: &[usize],
) -> Result<(), TestCaseError> {
    let (mut closer, mut peer, now) = pair(closer_role);
    let mut expected = perform(&mut closer, before)?;
    closer
        .close(CloseCode(code), reason, now)
        .expect("a valid code and reason");
    prop_assert_eq!(closer.state(), State::Closing);
    expected.push(Event::Close(Some(CloseFrame {
        code: CloseCode(code),
        reason: Utf8Bytes::from(reason),
    })));
    let got = transfer(&mut closer, &mut peer, sizes, now)?;
    same_events(&got, &expected)?;
    prop_assert_eq!(peer.state(), State::Closed);
    // RFC 6455 §7.1.1: the server closes TCP first.
    prop_assert_eq!(peer.should_close_transport(), peer.role() == Role::Server);

    // The peer's answer (pongs, then its close frame echoing the code) ends the handshake.
    let answer = transfer(&mut peer, &mut closer, sizes, now)?;
    let last = answer.last().cloned();
    prop_assert_eq!(
        last,
        Some(Event::Close(Some(CloseFrame {
            code: CloseCode(code),
            reason: Utf8Bytes::default(),
        })))
    );
    prop_assert!(answer[..answer.len() - 1]
        .iter()
        .all(|e| matches!(e, Event::Pong(_))));
    prop_assert_eq!(closer.state(), State::Closed);
    prop_assert_eq!(closer.error(), None);
    prop_assert_eq!(peer.error(), None);
    prop_assert_eq!(closer.pending_transmit(), 0);
    prop_assert_eq!(peer.pending_transmit(), 0);
    prop_assert_eq!(
        closer.should_close_transport(),
        closer.role() == Role::Server
    );
    // The transport ending now is clean for both.
    prop_assert_eq!(closer.receive_eof(), Ok(()));
    prop_assert_eq!(peer.receive_eof(), Ok(()));
    Ok(())
}

// ---- garbage --------------------------------------------------------------------------------

/// A frame with arbitrary header bits (any opcode, RSV, FIN, mask or not, any length
/// encoding, possibly lying about the length), or raw bytes.
#[derive(Debug, Clone)]
enum Junk {
    Frame {
        b0: u8,
        key: Option<[u8; 4]>,
        /// 0: 7-bit (if it fits), 1: 16-bit, 2: 64-bit encoding of the length.
        encoding: u8,
        declared: Option<u64>,
        payload: Vec<u8>,
    },
    Raw(Vec<u8>),
}

/// First header byte: mostly a known opcode with RSV clear (FIN either way), so that junk
/// gets past the first checks; sometimes anything.
fn junk_b0() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => (any::<bool>(), prop::sample::select(vec![0x0u8, 0x1, 0x2, 0x8, 0x9, 0xa]))
            .prop_map(|(fin, op)| (u8::from(fin) << 7) | op),
        1 => any::<u8>(),
    ]
}

/// Junk for a receiver of `role`: frames are mostly masked the way that role expects.
fn junk(role: Role) -> impl Strategy<Value = Junk> {
    let expect_mask = role == Role::Server;
    let key = prop_oneof![
        3 => any::<[u8; 4]>().prop_map(move |k| expect_mask.then_some(k)),
        1 => any::<Option<[u8; 4]>>(),
    ];
    prop_oneof![
        4 => (
            junk_b0(),
            key,
            0u8..3,
            prop::option::weighted(0.2, prop_oneof![any::<u64>(), 0u64..200_000]),
            prop::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(b0, key, encoding, declared, payload)| Junk::Frame {
                b0,
                key,
                encoding,
                declared,
                payload,
            }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Junk::Raw),
    ]
}

fn encode_junk(j: &Junk, out: &mut Vec<u8>) {
    match j {
        Junk::Raw(bytes) => out.extend_from_slice(bytes),
        Junk::Frame {
            b0,
            key,
            encoding,
            declared,
            payload,
        } => {
            let len = declared.unwrap_or(payload.len() as u64);
            let mask_bit = if key.is_some() { 0x80 } else { 0 };
            out.push(*b0);
            match encoding {
                0 if len <= 125 => out.push(mask_bit | len as u8),
                0 | 1 if len <= 0xffff => {
                    out.push(mask_bit | 126);
                    out.extend_from_slice(&(len as u16).to_be_bytes());
                }
                _ => {
                    out.push(mask_bit | 127);
                    out.extend_from_slice(&len.to_be_bytes());
                }
            }
            let start = out.len();
            if let Some(k) = key {
                out.extend_from_slice(k);
            }
            out.extend_from_slice(payload);
            if let Some(k) = key {
                apply_mask(&mut out[start + 4..], *k, 0);
            }
        }
    }
}

/// Feeds `wire` in reads of `sizes`, checking after each read the invariants that hold for any
/// input. Returns every event, in order.
fn feed_anything(
    conn: &mut Connection,
    wire: &[u8],
    sizes: &[usize],
    now: Instant,
) -> Result<Vec<Event>, TestCaseError> {
    let mut events = Vec::new();
    let mut error: Option<ProtocolError> = None;
    // Reached once the events before a failure or the peer's close have been taken.
    let mut ended = false;
    let mut fed = 0usize;
    let mut written = 0usize;
    let mut rest = wire;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (read, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        fed += read.len();
        match conn.receive_data(read, now) {
            Ok(()) => {}
            Err(e) => {
                prop_assert!(error.is_none(), "second error {:?} after {:?}", e, error);
                prop_assert!(!ended, "error {:?} after the end", e);
                prop_assert_eq!(conn.error(), Some(&e));
                error = Some(e);
            }
        }
        while let Some(event) = conn.poll_event() {
            prop_assert!(!ended, "event after the end: {}", describe(&event));
            if matches!(event, Event::Close(_)) {
                ended = true;
            }
            events.push(event);
        }
        if error.is_some() {
            ended = true;
            prop_assert!(conn.state() != State::Open);
        }
        // Output only answers input: pongs (at most 3 bytes per byte read, for a client's
        // masked pong to an empty unmasked ping) plus one close frame of at most 131 bytes.
        written += take_transmit(conn).len();
        prop_assert!(
            written <= 3 * fed + 131,
            "{} bytes written for {} read",
            written,
            fed
        );
    }
    if ended {
        // Anything more is discarded.
        prop_assert_eq!(conn.receive_data(&[0x89, 0x80, 0, 0, 0, 0], now), Ok(()));
        prop_assert_eq!(conn.poll_event(), None);
    }
    Ok(events)
}

fn check_garbage(
    receiver_role: Role,
    prefix: &[Payload],
    junk: &[Junk],
    sizes: &[usize],
) -> Result<(), TestCaseError> {
    let (mut sender, mut receiver, now) = pair(peer_of(receiver_role));
    let mut expected = Vec::new();
    for p in prefix {
        sender.send(p.message()).expect("send");
        expected.push(Event::Message(p.message()));
    }
    let mut wire = take_transmit(&mut sender);
    for j in junk {
        encode_junk(j, &mut wire);
    }
    let events = feed_anything(&mut receiver, &wire, sizes, now)?;
    prop_assert!(events.len() >= expected.len());
    same_events(&events[..expected.len()], &expected)?;
    if receiver.error().is_some() {
        prop_assert!(receiver.state() != State::Open);
    }
    Ok(())
}

// ---- the properties -------------------------------------------------------------------------

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn client_to_server_messages_arrive_intact(
        ops in prop::collection::vec(op(), 0..8),
        sizes in read_sizes(),
    ) {
        check_round_trip(Role::Client, &ops, &sizes)?;
    }

    #[test]
    fn server_to_client_messages_arrive_intact(
        ops in prop::collection::vec(op(), 0..8),
        sizes in read_sizes(),
    ) {
        check_round_trip(Role::Server, &ops, &sizes)?;
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn client_close_is_answered_and_ends_both(
        before in prop::collection::vec(op(), 0..3),
        code in wire_close_code(),
        reason in close_reason(),
        sizes in read_sizes(),
    ) {
        check_close(Role::Client, &before, code, &reason, &sizes)?;
    }

    #[test]
    fn server_close_is_answered_and_ends_both(
        before in prop::collection::vec(op(), 0..3),
        code in wire_close_code(),
        reason in close_reason(),
        sizes in read_sizes(),
    ) {
        check_close(Role::Server, &before, code, &reason, &sizes)?;
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn garbage_after_a_valid_prefix_server(
        prefix in prop::collection::vec(
            prop_oneof![
                small_text().prop_map(Payload::Text),
                prop::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Binary),
            ],
            0..4,
        ),
        junk in prop::collection::vec(junk(Role::Server), 1..8),
        sizes in prop::collection::vec(1usize..64, 1..6),
    ) {
        check_garbage(Role::Server, &prefix, &junk, &sizes)?;
    }

    #[test]
    fn garbage_after_a_valid_prefix_client(
        prefix in prop::collection::vec(
            prop_oneof![
                small_text().prop_map(Payload::Text),
                prop::collection::vec(any::<u8>(), 0..300).prop_map(Payload::Binary),
            ],
            0..4,
        ),
        junk in prop::collection::vec(junk(Role::Client), 1..8),
        sizes in prop::collection::vec(1usize..64, 1..6),
    ) {
        check_garbage(Role::Client, &prefix, &junk, &sizes)?;
    }
}

// ---- fixed cases --------------------------------------------------------------------------

/// The generators reach the length-encoding boundaries exactly.
#[test]
fn seeded_text_has_the_requested_length() {
    for n in [0, 1, 2, 3, 125, 126, 65_535, 65_536] {
        assert_eq!(seeded_text(n as u64, n).len(), n);
    }
}

/// The junk generator writes the header it describes (here a non-minimal 64-bit length).
#[test]
fn junk_frames_parse_as_written() {
    let j = Junk::Frame {
        b0: 0x82,
        key: Some([1, 2, 3, 4]),
        encoding: 2,
        declared: None,
        payload: vec![9; 10],
    };
    let mut out = Vec::new();
    encode_junk(&j, &mut out);
    let (h, hl) = parse_header(&out).unwrap().unwrap();
    assert_eq!(
        h,
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some([1, 2, 3, 4]),
            payload_len: 10,
        }
    );
    assert_eq!(hl, 14);
    let mut payload = out[hl..].to_vec();
    apply_mask(&mut payload, [1, 2, 3, 4], 0);
    assert_eq!(payload, vec![9; 10]);
}
