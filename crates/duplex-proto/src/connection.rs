//! The state machine of an established connection (after the opening handshake).
//!
//! ## Driving it
//! 1. Feed bytes read from the transport with [`Connection::receive_data`] (or read straight
//!    into [`Connection::input_buffer`] and call [`Connection::handle_input`]), and the end of
//!    the stream with [`Connection::receive_eof`].
//! 2. Take what happened with [`Connection::poll_event`] until it returns `None`.
//! 3. Write what [`Connection::poll_transmit`] (or the [`TransmitQueue`] behind
//!    [`Connection::transmit_queue`]) holds.
//! 4. Sleep until [`Connection::poll_timeout`], then call [`Connection::handle_timeout`].
//! 5. When [`Connection::should_close_transport`] is true, flush what is queued and close the
//!    transport (a server half-closes first and drains the rest of its input for a short while).
//!
//! Protocol errors never panic: the first one fails the connection, queues a close frame with
//! the code it maps to, and is returned once (and kept in [`Connection::error`]); input after it
//! is discarded.

use crate::close::{
    encode_close_payload, parse_close_payload, CloseCode, CloseFrame, MAX_REASON_BYTES,
};
use crate::config::Config;
use crate::deflate::{DeflateCodec, DeflateError};
use crate::error::{ProtocolError, SendError};
use crate::frame::{parse_header, FrameHeader, OpCode, RSV1};
use crate::mask::apply_mask;
use crate::message::{Message, Utf8Bytes};
use crate::prepared::PreparedMessage;
use crate::transmit::TransmitQueue;
use crate::utf8::Utf8Validator;
use crate::Role;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// Something the peer did, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A complete text or binary message.
    Message(Message),
    /// A ping; it has already been answered when `Config::auto_pong` is on.
    Ping(Bytes),
    /// A pong (an answer to our ping, or unsolicited).
    Pong(Bytes),
    /// The peer's close frame (`None`: it carried no status code). If we had not sent one, our
    /// answering close frame is already queued.
    Close(Option<CloseFrame>),
    /// A piece of a data message, with `Config::chunked_receive` on: the pieces of one message
    /// arrive in order, the last with `fin`. Text is validated as it arrives, but a piece may
    /// end inside a code point: only the concatenation is guaranteed to be UTF-8.
    Chunk {
        /// Text or binary.
        kind: MessageKind,
        /// The bytes (inflated if the message was compressed).
        data: Bytes,
        /// Last piece of the message.
        fin: bool,
    },
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Data flows both ways.
    Open,
    /// We sent a close frame (or failed the connection) and wait for the peer's.
    Closing,
    /// The closing handshake is over (or the connection failed or the transport ended).
    Closed,
}

/// The type of a data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Text: the payload must be valid UTF-8.
    Text,
    /// Binary: any bytes.
    Binary,
}

/// Whether to compress a message sent on a connection with permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Compress when the message is at least the configured threshold (`min_compress_size`).
    #[default]
    Auto,
    /// Compress whatever the size.
    Always,
    /// Send uncompressed (e.g. data that is already compressed, or secrets next to
    /// attacker-chosen text).
    Never,
}

/// Frame being received: what of its header is still needed, whether its message is
/// compressed, and how much of its payload (at the start of the input buffer) was already
/// unmasked and validated. Not a whole `FrameHeader`: its length duplicates `len` and its RSV
/// bits are checked once, and every connection carries this field.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    /// Payload bytes not yet taken out of the input buffer.
    len: usize,
    /// Of those, how many (at the start of the input buffer) are unmasked and validated.
    checked: usize,
    /// Payload bytes already taken (chunked receive), for the masking key's position.
    offset: usize,
    /// Message bytes already delivered from this frame (chunked receive, after inflation).
    delivered: usize,
    compressed: bool,
}

/// What the input produced, in stream order. A failure or the peer's close takes effect only
/// when the application has taken every event before it, so that it can still answer those
/// (e.g. echo a message that arrived in the same read as a bad frame).
#[derive(Debug)]
enum Queued {
    Event(Event),
    Fail(ProtocolError, Instant),
    PeerClose(Option<CloseFrame>, Instant),
}

/// Fragmented message being assembled.
#[derive(Debug)]
struct InMessage {
    kind: MessageKind,
    compressed: bool,
    /// The message so far (inflated, if compressed); empty with chunked receive.
    data: BytesMut,
    /// Bytes already delivered as chunks (chunked receive).
    delivered: usize,
}

/// A WebSocket connection for one role, without I/O.
///
/// ```
/// use duplex_proto::{Connection, Config, Event, Role, Message};
/// use std::time::Instant;
/// let now = Instant::now();
/// let mut server = Connection::new(Role::Server, Config::default(), now);
/// // A masked text frame "Hello" (RFC 6455 §5.7).
/// server.receive_data(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58], now).unwrap();
/// assert_eq!(server.poll_event(), Some(Event::Message(Message::Text("Hello".into()))));
/// server.send_text("Hi").unwrap();
/// assert_eq!(&server.poll_transmit().unwrap()[..], &[0x81, 0x02, b'H', b'i']);
/// ```
///
/// Memory: a server holds one of these per connection, and most connections are idle most of
/// the time, so state that only some connections ever use lives behind a box allocated on
/// first use (closing and failure, held-back pongs, fragmented messages, heartbeat and idle
/// timers), and the settings are shared (`Arc`) rather than copied into each connection.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    /// Input after a failure or after the peer's close is discarded.
    discard_input: bool,
    /// A failure took effect: our close frame (if any) is queued.
    failed: bool,
    eof_received: bool,
    close_timed_out: bool,
    /// A message was sent since the last timer check (sends take no `now`).
    sent_since_timer: bool,
    /// Type of the fragmented message we are sending, if any.
    sending: Option<MessageKind>,
    /// RSV bits a negotiated extension lets the first frame of a data message carry.
    data_rsv_allowed: u8,
    utf8: Utf8Validator,
    config: Arc<Config>,
    input: BytesMut,
    frame: Option<InFrame>,
    queue: VecDeque<Queued>,
    out: TransmitQueue,
    /// permessage-deflate state, when negotiated (boxed: most connections go without).
    deflate: Option<Box<DeflateCodec>>,
    /// Heartbeat and idle timers, present when `ping_interval` or `idle_timeout` is set.
    timers: Option<Box<Timers>>,
    /// State of rare events, allocated at the first of them (a close, a failure, a held-back
    /// pong, a fragmented message either way) and kept: most connections never need it.
    rare: Option<Box<Rare>>,
}

/// Timer state of a connection with heartbeats or an idle timeout.
#[derive(Debug)]
struct Timers {
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    /// When a message was last received (for `idle_timeout`).
    last_message_at: Instant,
}

/// See `Connection::rare`.
#[derive(Debug, Default)]
struct Rare {
    /// Fragmented message being received.
    message: Option<InMessage>,
    /// Validates the text of the fragmented message we are sending.
    send_utf8: Utf8Validator,
    error: Option<ProtocolError>,
    close_received: Option<Option<CloseFrame>>,
    close_deadline: Option<Instant>,
    /// Answer to the latest ping, held back while the peer is not reading what we send.
    pending_pong: Option<Bytes>,
}

/// While more than this many bytes wait to be written, pings are answered only once (for the
/// latest ping, RFC 6455 §5.5.3), so a peer that floods pings and never reads cannot grow our
/// output without bound.
const PONG_BACKLOG_LIMIT: usize = 64 * 1024;

/// Input buffers that grew past this while holding a large frame are released once empty, so an
/// idle connection does not keep the memory of its largest message.
const KEEP_INPUT_CAPACITY: usize = 64 * 1024;

/// Event slots an idle connection keeps (the first allocation of the queue), so that
/// receiving a message does not allocate them each time.
const KEEP_EVENTS: usize = 4;

/// Most buffer capacity an idle connection keeps after
/// [`Connection::release_idle_buffers`]: a few event slots and a small output buffer.
pub const IDLE_BUFFER_BOUND: usize =
    KEEP_EVENTS * std::mem::size_of::<Queued>() + crate::transmit::IDLE_KEEP_CAPACITY;

impl Connection {
    /// A connection that just completed its opening handshake. Bytes the peer sent after its
    /// handshake must be fed with [`receive_data`](Self::receive_data).
    ///
    /// `config` is a [`Config`] or an `Arc<Config>`: connections made from one `Arc` share it
    /// instead of each holding a copy (a server with many connections should do so).
    pub fn new(role: Role, config: impl Into<Arc<Config>>, now: Instant) -> Self {
        let config = config.into();
        let timers = (config.ping_interval.is_some() || config.idle_timeout.is_some()).then(|| {
            Box::new(Timers {
                next_ping: config.ping_interval.map(|i| now + i),
                pong_deadline: None,
                last_message_at: now,
            })
        });
        Connection {
            role,
            state: State::Open,
            discard_input: false,
            failed: false,
            eof_received: false,
            close_timed_out: false,
            sent_since_timer: false,
            sending: None,
            data_rsv_allowed: 0,
            utf8: Utf8Validator::default(),
            config,
            input: BytesMut::new(),
            frame: None,
            queue: VecDeque::new(),
            out: TransmitQueue::default(),
            deflate: None,
            timers,
            rare: None,
        }
    }

    // ---- getters -------------------------------------------------------------------------

    /// This end's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// The error that failed the connection, if any.
    pub fn error(&self) -> Option<&ProtocolError> {
        self.rare.as_ref()?.error.as_ref()
    }

    /// The peer's close frame once received (`Some(None)`: it carried no status code).
    pub fn close_received(&self) -> Option<&Option<CloseFrame>> {
        self.rare.as_ref()?.close_received.as_ref()
    }

    /// Whether the transport should now be closed, once the transmit queue is flushed.
    ///
    /// A server closes TCP as soon as the closing handshake ends or the connection fails
    /// (RFC 6455 §7.1.1); a client waits for the server to do so, up to `close_timeout`.
    pub fn should_close_transport(&self) -> bool {
        if self.eof_received || self.close_timed_out {
            return true;
        }
        match self.role {
            Role::Server => self.state == State::Closed || self.failed,
            Role::Client => false,
        }
    }

    // ---- input ---------------------------------------------------------------------------

    /// Feeds bytes read from the transport and processes every complete frame in them.
    ///
    /// Returns the protocol error that failed the connection during this call, if any (once);
    /// events that came before it are still delivered by [`poll_event`](Self::poll_event).
    pub fn receive_data(&mut self, data: &[u8], now: Instant) -> Result<(), ProtocolError> {
        if self.discard_input {
            return Ok(());
        }
        self.input.extend_from_slice(data);
        self.handle_input(now)
    }

    /// The buffer [`receive_data`](Self::receive_data) appends to, for runtimes that read into
    /// it directly (saving a copy); call [`handle_input`](Self::handle_input) afterwards.
    pub fn input_buffer(&mut self) -> &mut BytesMut {
        &mut self.input
    }

    /// Processes what was appended to [`input_buffer`](Self::input_buffer).
    pub fn handle_input(&mut self, now: Instant) -> Result<(), ProtocolError> {
        if !self.input.is_empty() {
            self.saw_traffic(now);
        }
        let result = self.process_input(now);
        if self.discard_input {
            self.input.clear();
        }
        if self.input.is_empty() && self.input.capacity() > KEEP_INPUT_CAPACITY {
            self.input = BytesMut::new();
        }
        result
    }

    /// The transport reached end of stream. Before the closing handshake this is an abnormal
    /// closure (1006), returned as [`ProtocolError::UnexpectedEof`].
    pub fn receive_eof(&mut self) -> Result<(), ProtocolError> {
        self.eof_received = true;
        self.discard_input = true;
        self.input.clear();
        let clean = self.close_received().is_some() || self.error().is_some();
        self.state = State::Closed;
        if clean {
            Ok(())
        } else {
            self.rare_mut().error = Some(ProtocolError::UnexpectedEof);
            Err(ProtocolError::UnexpectedEof)
        }
    }

    /// The next event, in the order things arrived.
    ///
    /// A protocol failure or the peer's close frame takes effect here, once every event that
    /// arrived before it has been taken: until then the application may still send.
    pub fn poll_event(&mut self) -> Option<Event> {
        loop {
            match self.queue.pop_front()? {
                Queued::Event(event) => return Some(event),
                Queued::Fail(error, now) => self.apply_failure(error, now),
                Queued::PeerClose(close, now) => {
                    self.apply_peer_close(close.clone(), now);
                    return Some(Event::Close(close));
                }
            }
        }
    }

    fn push_event(&mut self, event: Event) {
        self.queue.push_back(Queued::Event(event));
    }

    // ---- output --------------------------------------------------------------------------

    /// The next chunk of bytes to write, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.release_pong();
        self.out.pop_chunk()
    }

    /// Everything waiting to be written, as a [`Buf`] for vectored writes.
    pub fn transmit_queue(&mut self) -> &mut TransmitQueue {
        self.release_pong();
        &mut self.out
    }

    /// Bytes waiting to be written (for backpressure).
    pub fn pending_transmit(&self) -> usize {
        self.out.len()
    }

    /// Queues the held-back pong once the output has room for it.
    fn release_pong(&mut self) {
        if self.out.len() < PONG_BACKLOG_LIMIT {
            if let Some(payload) = self.rare.as_mut().and_then(|r| r.pending_pong.take()) {
                if self.state == State::Open {
                    self.push_frame(OpCode::Pong, true, payload);
                }
            }
        }
    }

    /// The rare state, allocated on first use.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The fragmented message being received, if any.
    fn in_message(&self) -> Option<&InMessage> {
        self.rare.as_ref()?.message.as_ref()
    }

    /// Takes the fragmented message being received, if any.
    fn take_message(&mut self) -> Option<InMessage> {
        self.rare.as_mut()?.message.take()
    }

    /// When the close timeout expires, if it is running.
    fn close_deadline(&self) -> Option<Instant> {
        self.rare.as_ref()?.close_deadline
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: impl Into<Utf8Bytes>) -> Result<(), SendError> {
        self.send(Message::Text(text.into()))
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: impl Into<Bytes>) -> Result<(), SendError> {
        self.send(Message::Binary(data.into()))
    }

    /// Queues a message as one frame, compressed if permessage-deflate is on and the message
    /// reaches the size threshold.
    pub fn send(&mut self, message: Message) -> Result<(), SendError> {
        self.send_with(message, Compression::Auto)
    }

    /// Queues a message as one frame, choosing whether to compress it.
    pub fn send_with(
        &mut self,
        message: Message,
        compression: Compression,
    ) -> Result<(), SendError> {
        self.check_can_send_data()?;
        if self.sending.is_some() {
            return Err(SendError::FragmentedMessageInProgress);
        }
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.into_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let compress = match (&self.deflate, compression) {
            (None, _) | (_, Compression::Never) => false,
            (Some(_), Compression::Always) => true,
            (Some(codec), Compression::Auto) => codec.should_compress(payload.len()),
        };
        match self.deflate.as_deref_mut() {
            Some(codec) if compress => {
                let mut out = BytesMut::new();
                codec
                    .compress_message(&payload, &mut out)
                    .map_err(|e| SendError::Compression(e.to_string()))?;
                self.push_frame_rsv(opcode, true, RSV1, out.freeze());
            }
            _ => self.push_frame(opcode, true, payload),
        }
        Ok(())
    }

    /// Queues a message encoded once for many connections (see [`PreparedMessage`]). A server
    /// connection writes the shared bytes when they fit its deflate settings; otherwise (and on
    /// a client, which must mask every frame) the message is encoded as by [`send`](Self::send).
    pub fn send_prepared(&mut self, prepared: &PreparedMessage) -> Result<(), SendError> {
        self.check_can_send_data()?;
        if self.sending.is_some() {
            return Err(SendError::FragmentedMessageInProgress);
        }
        let shared = match self.role {
            Role::Server => prepared.frame_for(self.deflate.as_deref().map(DeflateCodec::agreed)),
            Role::Client => None,
        };
        match shared {
            Some(frame) => {
                self.out.push_encoded(frame);
                self.sent_since_timer = true;
                Ok(())
            }
            None => self.send(prepared.message().clone()),
        }
    }

    /// Queues one fragment of a message sent in pieces (RFC 6455 §5.4): the first call opens a
    /// message of `kind`, `fin` ends it. Control frames may be sent in between. Text fragments
    /// are checked to form valid UTF-8 together.
    pub fn send_fragment(
        &mut self,
        kind: MessageKind,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<(), SendError> {
        self.check_can_send_data()?;
        let payload = payload.into();
        let opcode = match self.sending {
            None => match kind {
                MessageKind::Text => OpCode::Text,
                MessageKind::Binary => OpCode::Binary,
            },
            Some(k) if k == kind => OpCode::Continuation,
            Some(_) => return Err(SendError::FragmentTypeMismatch),
        };
        if kind == MessageKind::Text {
            let first = self.sending.is_none();
            let validator = &mut self.rare_mut().send_utf8;
            if first {
                validator.reset();
            }
            validator
                .feed(&payload)
                .map_err(|_| SendError::InvalidUtf8)?;
            if fin {
                validator.finish().map_err(|_| SendError::InvalidUtf8)?;
            }
        }
        self.push_frame(opcode, fin, payload);
        self.sending = if fin { None } else { Some(kind) };
        Ok(())
    }

    /// Queues a ping (payload at most 125 bytes).
    pub fn send_ping(&mut self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.send_control(OpCode::Ping, payload.into())
    }

    /// Queues a pong (payload at most 125 bytes); unsolicited pongs are allowed (§5.5.3).
    pub fn send_pong(&mut self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        self.send_control(OpCode::Pong, payload.into())
    }

    /// Starts the closing handshake: queues a close frame and waits up to `close_timeout` for
    /// the peer's. No data can be sent afterwards.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closing);
        }
        if !code.is_valid_on_wire() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        if reason.len() > MAX_REASON_BYTES {
            return Err(SendError::CloseReasonTooLong(reason.len()));
        }
        self.push_close(Some(&CloseFrame {
            code,
            reason: reason.into(),
        }));
        self.state = State::Closing;
        let deadline = now + self.config.close_timeout;
        self.rare_mut().close_deadline = Some(deadline);
        Ok(())
    }

    // ---- timers --------------------------------------------------------------------------

    /// When [`handle_timeout`](Self::handle_timeout) should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        };
        if self.state == State::Open {
            if let Some(timers) = &self.timers {
                consider(timers.next_ping);
                consider(timers.pong_deadline);
                consider(self.config.idle_timeout.map(|t| timers.last_message_at + t));
            }
        }
        if !self.close_timed_out && !self.eof_received {
            consider(self.close_deadline());
        }
        earliest
    }

    /// Runs the timers due at `now`: heartbeat pings, pong and close timeouts.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        if let Some(deadline) = self.close_deadline() {
            if now >= deadline && !self.close_timed_out && !self.eof_received {
                self.close_timed_out = true;
                self.discard_input = true;
                if self.state != State::Closed {
                    self.state = State::Closed;
                    if self.error().is_none() {
                        let err = ProtocolError::CloseTimeout(self.config.close_timeout);
                        self.rare_mut().error = Some(err.clone());
                        return Err(err);
                    }
                }
                return Ok(());
            }
        }
        if self.state != State::Open {
            return Ok(());
        }
        let Some(timers) = self.timers.as_deref_mut() else {
            return Ok(());
        };
        if let Some(deadline) = timers.pong_deadline {
            if now >= deadline {
                return Err(self.fail(ProtocolError::PongTimeout(self.config.pong_timeout), now));
            }
        }
        if let Some(idle) = self.config.idle_timeout {
            if std::mem::take(&mut self.sent_since_timer) {
                timers.last_message_at = timers.last_message_at.max(now);
            }
            if now >= timers.last_message_at + idle {
                // Not a failure: an orderly close of a connection nobody uses (1001).
                let _ = self.close(CloseCode::GOING_AWAY, "idle timeout", now);
                return Ok(());
            }
        }
        if let Some(at) = timers.next_ping {
            if now >= at {
                timers.next_ping = None;
                timers.pong_deadline = Some(now + self.config.pong_timeout);
                self.push_frame(OpCode::Ping, true, Bytes::new());
            }
        }
        Ok(())
    }

    // ---- extensions ----------------------------------------------------------------------

    /// Turns on permessage-deflate with the parameters both ends agreed on in the handshake
    /// (RFC 7692). Call before feeding any frame.
    pub fn set_deflate(&mut self, codec: DeflateCodec) {
        self.data_rsv_allowed = RSV1;
        self.deflate = Some(Box::new(codec));
    }

    /// Whether permessage-deflate is in use.
    pub fn deflate(&self) -> Option<&DeflateCodec> {
        self.deflate.as_deref()
    }

    // ---- memory --------------------------------------------------------------------------

    /// Frees the buffers that are empty: the input (no partial frame), the event queue and the
    /// transmit queue, keeping only small ones that every message would otherwise allocate
    /// again (at most [`IDLE_BUFFER_BOUND`] bytes in all). Call when about to wait for the
    /// transport, so that an idle connection holds (almost) no buffer memory: many idle
    /// connections are the common case on a server. Buffers grow again as data flows.
    pub fn release_idle_buffers(&mut self) {
        if self.input.is_empty() {
            // Also drops a reference the empty view may hold to a received message's storage.
            self.input = BytesMut::new();
        }
        if self.queue.is_empty() && self.queue.capacity() > KEEP_EVENTS {
            self.queue = VecDeque::new();
        }
        self.out.release_if_empty();
    }

    /// Bytes of buffer capacity this connection holds: input, pending events, the message
    /// being assembled and the transmit queue (not counting payloads shared with messages
    /// already handed out). After [`release_idle_buffers`](Self::release_idle_buffers) on an
    /// idle connection this is at most [`IDLE_BUFFER_BOUND`], and 0 if it never carried a
    /// message.
    pub fn buffer_capacity(&self) -> usize {
        self.input.capacity()
            + self.queue.capacity() * std::mem::size_of::<Queued>()
            + self.in_message().map_or(0, |m| m.data.capacity())
            + self.out.capacity()
    }

    // ---- internals -----------------------------------------------------------------------

    fn saw_traffic(&mut self, now: Instant) {
        // Anything from the peer proves it is alive.
        if let Some(timers) = &mut self.timers {
            timers.pong_deadline = None;
            if let Some(interval) = self.config.ping_interval {
                timers.next_ping = Some(now + interval);
            }
        }
    }

    /// A complete message arrived (for `idle_timeout`).
    fn saw_message(&mut self, now: Instant) {
        if let Some(timers) = &mut self.timers {
            timers.last_message_at = now;
        }
    }

    fn process_input(&mut self, now: Instant) -> Result<(), ProtocolError> {
        while !self.discard_input {
            let frame = match self.frame {
                Some(frame) => frame,
                None => match parse_header(&self.input) {
                    Ok(None) => return Ok(()),
                    Ok(Some((header, header_len))) => {
                        let len = match self.check_header(&header) {
                            Ok(len) => len,
                            Err(e) => return Err(self.fail(e, now)),
                        };
                        self.input.advance(header_len);
                        let compressed = match header.opcode {
                            OpCode::Text | OpCode::Binary => header.rsv & RSV1 != 0,
                            _ => self.in_message().is_some_and(|m| m.compressed),
                        };
                        let frame = InFrame {
                            opcode: header.opcode,
                            fin: header.fin,
                            mask: header.mask,
                            len,
                            checked: 0,
                            offset: 0,
                            delivered: 0,
                            compressed,
                        };
                        self.frame = Some(frame);
                        frame
                    }
                    Err(e) => return Err(self.fail(e.into(), now)),
                },
            };
            let complete = if frame.opcode.is_control() {
                self.advance_control_frame(frame, now)
            } else {
                self.advance_data_frame(frame, now)
            };
            match complete {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(self.fail(e, now)),
            }
        }
        Ok(())
    }

    /// Checks a header against the state; returns the payload length as a `usize`.
    fn check_header(&self, h: &FrameHeader) -> Result<usize, ProtocolError> {
        let allowed_rsv = match h.opcode {
            OpCode::Text | OpCode::Binary => self.data_rsv_allowed,
            _ => 0,
        };
        if h.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits(h.rsv));
        }
        match (self.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.payload_len > 125 {
                return Err(ProtocolError::ControlFrameTooLong(h.payload_len));
            }
            return Ok(h.payload_len as usize);
        }
        match (h.opcode, self.in_message()) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        let too_big = ProtocolError::FrameTooLarge {
            size: h.payload_len,
            max: self.config.max_frame_size,
        };
        let len = usize::try_from(h.payload_len).map_err(|_| too_big.clone())?;
        if len > self.config.max_frame_size {
            return Err(too_big);
        }
        // A compressed message is measured after inflation, while inflating.
        let compressed = match h.opcode {
            OpCode::Continuation => self.in_message().is_some_and(|m| m.compressed),
            _ => h.rsv & RSV1 != 0,
        };
        let so_far = self.in_message().map_or(0, |m| m.data.len() + m.delivered);
        if !compressed && so_far.saturating_add(len) > self.config.max_message_size {
            return Err(ProtocolError::MessageTooLarge {
                max: self.config.max_message_size,
            });
        }
        Ok(len)
    }

    /// Unmasks and validates what arrived of a data frame; on completion hands the payload on.
    /// Returns whether the frame is complete.
    fn advance_data_frame(
        &mut self,
        mut frame: InFrame,
        now: Instant,
    ) -> Result<bool, ProtocolError> {
        let kind = match (frame.opcode, self.in_message()) {
            (OpCode::Text, _) => MessageKind::Text,
            (OpCode::Binary, _) => MessageKind::Binary,
            (_, Some(m)) => m.kind,
            // check_header rejects a continuation without a message.
            (_, None) => return Err(ProtocolError::UnexpectedContinuation),
        };
        let available = self.input.len().min(frame.len);
        if available > frame.checked {
            let fresh = &mut self.input[frame.checked..available];
            if let Some(key) = frame.mask {
                apply_mask(fresh, key, frame.offset + frame.checked);
            }
            // Plain text is validated as it arrives, so bad UTF-8 fails before the frame ends.
            if kind == MessageKind::Text && !frame.compressed {
                self.utf8
                    .feed(fresh)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            frame.checked = available;
            self.frame = Some(frame);
        }
        if self.config.chunked_receive {
            return self.deliver_chunk(frame, kind, now);
        }
        if available < frame.len {
            return Ok(false);
        }
        let payload = self.input.split_to(frame.len);
        self.frame = None;
        let fin = frame.fin;
        let data = if frame.compressed {
            let mut out = self.take_message().map(|m| m.data).unwrap_or_default();
            let start = out.len();
            let limit = self.config.max_message_size;
            let codec = self
                .deflate
                .as_deref_mut()
                .ok_or(ProtocolError::ReservedBits(RSV1))?;
            codec
                .decompress(&payload, fin, &mut out, limit)
                .map_err(|e| deflate_error(e, limit))?;
            if kind == MessageKind::Text {
                self.utf8
                    .feed(&out[start..])
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            out
        } else {
            match self.take_message() {
                None => payload,
                Some(mut m) => {
                    m.data.extend_from_slice(&payload);
                    m.data
                }
            }
        };
        if !fin {
            self.rare_mut().message = Some(InMessage {
                kind,
                compressed: frame.compressed,
                data,
                delivered: 0,
            });
            return Ok(true);
        }
        let data = data.freeze();
        let message = match kind {
            MessageKind::Text => {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                Message::Text(Utf8Bytes::from_validated(data))
            }
            MessageKind::Binary => Message::Binary(data),
        };
        self.saw_message(now);
        self.push_event(Event::Message(message));
        Ok(true)
    }

    /// Chunked receive: hands on what arrived of a data frame at once (inflated if
    /// compressed), so no message or frame is ever held whole. Returns whether the frame is
    /// complete.
    fn deliver_chunk(
        &mut self,
        mut frame: InFrame,
        kind: MessageKind,
        now: Instant,
    ) -> Result<bool, ProtocolError> {
        let take = frame.checked;
        let frame_done = take == frame.len;
        if take == 0 && !frame_done {
            return Ok(false);
        }
        let piece = self.input.split_to(take);
        frame.len -= take;
        frame.offset += take;
        frame.checked = 0;
        let last = frame_done && frame.fin;
        let data = if frame.compressed {
            let before = self.in_message().map_or(0, |m| m.delivered) + frame.delivered;
            let limit = self.config.max_message_size.saturating_sub(before);
            let codec = self
                .deflate
                .as_deref_mut()
                .ok_or(ProtocolError::ReservedBits(RSV1))?;
            let mut out = BytesMut::new();
            codec
                .decompress(&piece, last, &mut out, limit)
                .map_err(|e| deflate_error(e, self.config.max_message_size))?;
            if kind == MessageKind::Text {
                self.utf8
                    .feed(&out)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            out.freeze()
        } else {
            piece.freeze()
        };
        frame.delivered += data.len();
        if last && kind == MessageKind::Text {
            self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if frame_done {
            self.frame = None;
            if last {
                self.take_message();
                self.saw_message(now);
            } else {
                match &mut self.rare_mut().message {
                    Some(m) => m.delivered += frame.delivered,
                    message @ None => {
                        *message = Some(InMessage {
                            kind,
                            compressed: frame.compressed,
                            data: BytesMut::new(),
                            delivered: frame.delivered,
                        })
                    }
                }
            }
        } else {
            self.frame = Some(frame);
        }
        if !data.is_empty() || last {
            self.push_event(Event::Chunk {
                kind,
                data,
                fin: last,
            });
        }
        Ok(frame_done)
    }

    /// Handles a control frame once its whole payload (≤ 125 bytes) is buffered.
    fn advance_control_frame(
        &mut self,
        frame: InFrame,
        now: Instant,
    ) -> Result<bool, ProtocolError> {
        if self.input.len() < frame.len {
            return Ok(false);
        }
        let mut payload = self.input.split_to(frame.len);
        self.frame = None;
        if let Some(key) = frame.mask {
            apply_mask(&mut payload, key, 0);
        }
        let payload = payload.freeze();
        match frame.opcode {
            OpCode::Ping => {
                if self.config.auto_pong && self.state == State::Open {
                    // Replaces an older unanswered ping's pong (§5.5.3 allows answering only
                    // the latest); sent at once unless the output is backed up (only then is
                    // it held, in the rare state).
                    if self.out.len() < PONG_BACKLOG_LIMIT {
                        if let Some(rare) = &mut self.rare {
                            rare.pending_pong = None;
                        }
                        self.push_frame(OpCode::Pong, true, payload.clone());
                    } else {
                        self.rare_mut().pending_pong = Some(payload.clone());
                    }
                }
                self.push_event(Event::Ping(payload));
            }
            OpCode::Pong => self.push_event(Event::Pong(payload)),
            _ => {
                let close = parse_close_payload(payload).map_err(ProtocolError::InvalidClose)?;
                self.on_close_received(close, now);
            }
        }
        Ok(true)
    }

    /// Stops reading at the peer's close frame; the answer goes out when the application
    /// reaches the close event (immediately if nothing is waiting before it).
    fn on_close_received(&mut self, close: Option<CloseFrame>, now: Instant) {
        self.discard_input = true;
        let rare = self.rare_mut();
        rare.message = None;
        rare.close_received = Some(close.clone());
        if self.queue.is_empty() {
            self.apply_peer_close(close.clone(), now);
            self.push_event(Event::Close(close));
        } else {
            self.queue.push_back(Queued::PeerClose(close, now));
        }
    }

    fn apply_peer_close(&mut self, close: Option<CloseFrame>, now: Instant) {
        if self.state == State::Open && !self.failed {
            // Echo the status code (§5.5.1); an empty close is answered with an empty one.
            let echo = close.as_ref().map(|f| CloseFrame {
                code: f.code,
                reason: Utf8Bytes::default(),
            });
            self.push_close(echo.as_ref());
        }
        self.state = State::Closed;
        // A client now waits for the server to close TCP, but not forever.
        let deadline = now + self.config.close_timeout;
        self.rare_mut().close_deadline = Some(deadline);
    }

    /// Fails the connection (§7.1.7): stops reading at once and records the error; the close
    /// frame is queued when the application has taken the events before the failure (at once if
    /// there are none). Returns the error for the caller to report.
    fn fail(&mut self, error: ProtocolError, now: Instant) -> ProtocolError {
        self.discard_input = true;
        self.frame = None;
        let rare = self.rare_mut();
        rare.message = None;
        if rare.error.is_none() {
            rare.error = Some(error.clone());
        }
        if self.queue.is_empty() {
            self.apply_failure(error.clone(), now);
        } else {
            self.queue.push_back(Queued::Fail(error.clone(), now));
        }
        error
    }

    fn apply_failure(&mut self, error: ProtocolError, now: Instant) {
        if self.failed {
            return;
        }
        self.failed = true;
        if self.state == State::Open {
            let code = error.close_code();
            if code.is_valid_on_wire() {
                let message = error.to_string();
                let reason = truncate_to_char_boundary(&message, MAX_REASON_BYTES);
                self.push_close(Some(&CloseFrame {
                    code,
                    reason: reason.into(),
                }));
            }
            self.state = State::Closing;
        }
        let deadline = now + self.config.close_timeout;
        self.rare_mut().close_deadline.get_or_insert(deadline);
    }

    fn check_can_send_data(&self) -> Result<(), SendError> {
        if self.state == State::Open {
            Ok(())
        } else {
            Err(SendError::Closing)
        }
    }

    fn send_control(&mut self, opcode: OpCode, payload: Bytes) -> Result<(), SendError> {
        if self.state != State::Open {
            return Err(SendError::Closing);
        }
        if payload.len() > 125 {
            return Err(SendError::ControlPayloadTooLong(payload.len()));
        }
        self.push_frame(opcode, true, payload);
        Ok(())
    }

    fn push_close(&mut self, frame: Option<&CloseFrame>) {
        self.push_frame(OpCode::Close, true, encode_close_payload(frame));
    }

    fn push_frame(&mut self, opcode: OpCode, fin: bool, payload: Bytes) {
        self.push_frame_rsv(opcode, fin, 0, payload);
    }

    fn push_frame_rsv(&mut self, opcode: OpCode, fin: bool, rsv: u8, payload: Bytes) {
        if !opcode.is_control() {
            self.sent_since_timer = true;
        }
        let mask = match self.role {
            Role::Client => Some(rand::random::<[u8; 4]>()),
            Role::Server => None,
        };
        let header = FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        self.out.push_frame(header, payload);
    }
}

/// The protocol error a failed inflation maps to.
fn deflate_error(error: DeflateError, max: usize) -> ProtocolError {
    match error {
        DeflateError::MessageTooBig { .. } => ProtocolError::MessageTooLarge { max },
        DeflateError::Corrupt { reason } => ProtocolError::InvalidCompressedData(reason),
        DeflateError::Internal { reason } => ProtocolError::DecompressionFailed(reason),
    }
}

fn truncate_to_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
