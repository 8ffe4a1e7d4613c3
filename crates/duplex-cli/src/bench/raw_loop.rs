//! Closed loop on the raw TCP stream: the default engine of `--mode closed` without
//! `--deflate` (with it, [`super::closed_loop`] runs the full `WebSocket` layer, whose codec
//! compression needs).
//!
//! The load generator must cost less per echo than the server it measures, or it, not the
//! server, sets the pace. So after the opening handshake (done by `duplex::client`) this
//! engine runs the frames itself, with `duplex_proto`'s header encoder, parser and masking:
//!
//! - the message is masked once per connection into a ring of up to [`RING`] frames, each
//!   with its own random key, sent in turn (`write_all` of a ready frame, no copy per send);
//! - echoes are read into one reused buffer and compared with the message as they arrive,
//!   frame by frame, without reassembly; pings are answered with a masked pong, the server's
//!   close frame is answered and counted as the server closing, protocol errors fail the
//!   connection with a 1002 close;
//! - one clock read per echo, one timeout around the whole loop instead of a timer per
//!   await, latencies and the live counter handed over in batches.
//!
//! On the wire this is a conforming client, except that masking keys repeat every
//! [`RING`] frames instead of being fresh for each (RFC 6455 §5.3 wants them fresh and
//! unpredictable so that intermediaries cannot be fed attacker-chosen bytes; no intermediary
//! sits between a benchmark and a loopback server, and the server cannot tell). Echoes of text
//! messages are not validated as UTF-8 separately: an echo equal to the (valid) message sent
//! is valid, and any other is counted as a mismatch.

use super::connect::RawConn;
use super::context::ConnCtx;
use super::stats::{ConnOutcome, ErrorKind};
use duplex::proto::close::parse_close_payload;
use duplex::proto::frame::{encode_header, parse_header, FrameHeader, OpCode, MAX_HEADER_LEN};
use duplex::proto::mask::apply_mask;
use duplex::proto::ProtocolError;
use duplex::{CloseCode, Message};
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Masked frames of the message per connection (fewer when they would not fit
/// [`RING_BUDGET`]).
pub const RING: usize = 8;
/// Bytes all the connections' rings may take together.
const RING_BUDGET: usize = 256 << 20;
/// Read buffer bounds: echoes are compared as they stream through it, so it need not hold a
/// whole message.
const MIN_READ_BUF: usize = 4 << 10;
const MAX_READ_BUF: usize = 64 << 10;
/// Latencies kept before they are recorded under the shard's lock.
const LATENCY_BATCH: usize = 64;
/// How often the live echo counter (the progress line's) is brought up to date.
const LIVE_PERIOD: Duration = Duration::from_millis(50);
/// Largest control frame: header plus 125 payload bytes.
const MAX_CONTROL_FRAME: usize = MAX_HEADER_LEN + 125;

/// Why a connection stopped before the end of the run.
#[derive(Debug)]
enum Failure {
    /// Reading or writing the socket failed.
    Io(String),
    /// The server broke the protocol: we close with 1002.
    Protocol(ProtocolError),
    /// The server closed (its close frame, or TCP without one).
    ServerClosed(String),
}

/// What a complete incoming message or close frame was.
enum Incoming {
    /// A data message; `Some(why)` when it differs from the message sent.
    Message(Option<String>),
    /// The server's close frame (answered already while echoing); the text says what it was.
    Close(Result<(), String>, String),
}

/// Where the loop was, for the report when the deadline cuts it short.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Sending,
    Waiting,
}

pub async fn run(conn: RawConn, ctx: &ConnCtx<'_>) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let message = &ctx.run.message;
    let mut engine = Engine::new(conn, message, ctx.run.connections);
    let mut phase = Phase::Sending;
    let looped = tokio::time::timeout_at(
        ctx.hard_deadline,
        engine.echo_loop(ctx, &mut out, &mut phase),
    )
    .await;
    engine.flush_counters(ctx);
    let failure = match looped {
        Ok(Ok(())) => None,
        Ok(Err(failure)) => Some(failure),
        Err(_) => {
            let why = match phase {
                Phase::Sending => "send blocked until the drain deadline",
                Phase::Waiting => "no echo before the drain deadline",
            };
            ctx.error(&mut out, ErrorKind::Unanswered, 1, why);
            out.failed = true;
            return out;
        }
    };
    match failure {
        None => {
            let limit = ctx.run.drain_timeout;
            match tokio::time::timeout(limit, engine.close()).await {
                Ok(Ok(())) => out.closed_cleanly = true,
                Ok(Err(e)) => ctx.error(&mut out, ErrorKind::Close, 1, &e),
                Err(_) => ctx.error(
                    &mut out,
                    ErrorKind::Close,
                    1,
                    &format!("closing handshake not done within {limit:?}"),
                ),
            }
        }
        Some(Failure::Io(e)) => {
            ctx.error(&mut out, ErrorKind::Io, 1, &e);
            out.failed = true;
        }
        Some(Failure::ServerClosed(why)) => {
            ctx.error(&mut out, ErrorKind::Io, 1, &why);
            out.failed = true;
        }
        Some(Failure::Protocol(e)) => {
            ctx.error(&mut out, ErrorKind::Io, 1, &format!("protocol error: {e}"));
            out.failed = true;
            // Best effort (RFC 6455 §7.1.7): the connection is given up on either way.
            let reply = masked_frame(OpCode::Close, &CloseCode::PROTOCOL_ERROR.0.to_be_bytes());
            let _ =
                tokio::time::timeout(ctx.run.drain_timeout, engine.stream.write_all(&reply)).await;
        }
    }
    out
}

/// One frame with FIN set, masked with a fresh random key.
fn masked_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let key: [u8; 4] = rand::random();
    let header = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: Some(key),
        payload_len: payload.len() as u64,
    };
    let mut frame = Vec::with_capacity(MAX_HEADER_LEN + payload.len());
    encode_header(&header, &mut frame);
    let start = frame.len();
    frame.extend_from_slice(payload);
    apply_mask(&mut frame[start..], key, 0);
    frame
}

/// One connection's state.
struct Engine<'m> {
    stream: TcpStream,
    message: &'m [u8],
    opcode: OpCode,
    ring: Vec<Vec<u8>>,
    next_frame: usize,
    reader: Reader,
    /// Latencies (ns) not yet recorded.
    latencies: Vec<u64>,
    /// Echoes not yet added to the live counter, and when to add them.
    live_pending: u64,
    live_due: Instant,
}

impl<'m> Engine<'m> {
    fn new(conn: RawConn, message: &'m Message, connections: usize) -> Self {
        let (opcode, bytes) = match message {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, &b[..]),
        };
        let frame_len = MAX_HEADER_LEN + bytes.len();
        let fits = RING_BUDGET / connections.max(1) / frame_len;
        let ring = (0..fits.clamp(2, RING))
            .map(|_| masked_frame(opcode, bytes))
            .collect();
        Engine {
            stream: conn.stream,
            message: bytes,
            opcode,
            ring,
            next_frame: 0,
            reader: Reader::new(&conn.leftover, frame_len),
            latencies: Vec::with_capacity(LATENCY_BATCH),
            live_pending: 0,
            live_due: Instant::now(),
        }
    }

    async fn echo_loop(
        &mut self,
        ctx: &ConnCtx<'_>,
        out: &mut ConnOutcome,
        phase: &mut Phase,
    ) -> Result<(), Failure> {
        // The end of one echo is the start of the next: one clock read per echo.
        let mut now = Instant::now();
        while now < ctx.end && !ctx.stopped() {
            let t0 = now;
            *phase = Phase::Sending;
            let frame = &self.ring[self.next_frame];
            self.next_frame = (self.next_frame + 1) % self.ring.len();
            self.stream
                .write_all(frame)
                .await
                .map_err(|e| Failure::Io(format!("send: {e}")))?;
            if ctx.in_window(t0) {
                out.sent += 1;
            }
            *phase = Phase::Waiting;
            let incoming = self
                .reader
                .next(&mut self.stream, Some((self.message, self.opcode)))
                .await?;
            now = Instant::now();
            match incoming {
                Incoming::Message(None) => {}
                Incoming::Message(Some(why)) => ctx.error(out, ErrorKind::Mismatch, 1, &why),
                Incoming::Close(_, why) => return Err(Failure::ServerClosed(why)),
            }
            self.live_pending += 1;
            if now >= self.live_due {
                self.flush_live(ctx, now);
            }
            if ctx.in_window(now) && !ctx.stopped() {
                out.echoes += 1;
                let ns = u64::try_from((now - t0).as_nanos()).unwrap_or(u64::MAX);
                self.latencies.push(ns);
                if self.latencies.len() == LATENCY_BATCH {
                    ctx.run.recorder.record_ns(ctx.index, &self.latencies);
                    self.latencies.clear();
                }
            }
        }
        Ok(())
    }

    fn flush_live(&mut self, ctx: &ConnCtx<'_>, now: Instant) {
        ctx.run.live.echoes.fetch_add(self.live_pending, Relaxed);
        self.live_pending = 0;
        self.live_due = now + LIVE_PERIOD;
    }

    fn flush_counters(&mut self, ctx: &ConnCtx<'_>) {
        self.flush_live(ctx, Instant::now());
        ctx.run.recorder.record_ns(ctx.index, &self.latencies);
        self.latencies.clear();
    }

    /// The closing handshake: our close (1000), then the server's; then the server closes TCP
    /// (RFC 6455 §7.1.1), which is waited for by the caller's timeout only as long as it
    /// takes the server to answer.
    async fn close(&mut self) -> Result<(), String> {
        let frame = masked_frame(OpCode::Close, &CloseCode::NORMAL.0.to_be_bytes());
        self.stream
            .write_all(&frame)
            .await
            .map_err(|e| format!("sending the close frame: {e}"))?;
        loop {
            match self.reader.next(&mut self.stream, None).await {
                Ok(Incoming::Message(_)) => {}
                Ok(Incoming::Close(valid, _)) => break valid?,
                Err(Failure::Io(e)) => return Err(e),
                Err(Failure::Protocol(e)) => return Err(format!("protocol error: {e}")),
                Err(Failure::ServerClosed(why)) => return Err(format!("{why} while closing")),
            }
        }
        // The server closes TCP after its close frame; whatever it still sends is ignored.
        let mut sink = [0u8; 256];
        loop {
            match self.stream.read(&mut sink).await {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            }
        }
    }
}

/// The data frame being received.
#[derive(Default)]
struct InFrame {
    /// Payload bytes not yet read.
    remaining: u64,
    fin: bool,
}

/// The message being received and how it compares so far.
struct InMessage {
    received: usize,
    mismatch: Option<String>,
}

/// Reads frames from the server through one buffer.
struct Reader {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    frame: InFrame,
    message: Option<InMessage>,
    /// The last read left the buffer with room to spare: the socket was drained.
    drained: bool,
}

impl Reader {
    fn new(leftover: &[u8], frame_len: usize) -> Self {
        let size = frame_len
            .clamp(MIN_READ_BUF, MAX_READ_BUF)
            .max(leftover.len() + MAX_CONTROL_FRAME);
        let mut buf = vec![0u8; size].into_boxed_slice();
        buf[..leftover.len()].copy_from_slice(leftover);
        Reader {
            buf,
            start: 0,
            end: leftover.len(),
            frame: InFrame::default(),
            message: None,
            drained: false,
        }
    }

    /// Reads until one whole data message or a close frame has arrived, answering pings on the
    /// way. With `expected` (the message and its opcode) data is compared with it; without,
    /// it is skipped.
    async fn next(
        &mut self,
        stream: &mut TcpStream,
        expected: Option<(&[u8], OpCode)>,
    ) -> Result<Incoming, Failure> {
        loop {
            while let Some(done) = self.step(stream, expected).await? {
                if let Some(incoming) = done {
                    if self.start == self.end && self.drained {
                        forget_readable(stream);
                    }
                    return Ok(incoming);
                }
            }
            self.fill(stream).await?;
        }
    }

    /// Handles what the buffer holds: `None` when more bytes are needed, `Some(None)` after a
    /// frame or part of one, `Some(Some(_))` when a message or close frame completed.
    async fn step(
        &mut self,
        stream: &mut TcpStream,
        expected: Option<(&[u8], OpCode)>,
    ) -> Result<Option<Option<Incoming>>, Failure> {
        if self.frame.remaining > 0 {
            if self.start == self.end {
                return Ok(None);
            }
            let n = (self.end - self.start)
                .min(usize::try_from(self.frame.remaining).unwrap_or(usize::MAX));
            let chunk = &self.buf[self.start..self.start + n];
            self.start += n;
            self.frame.remaining -= n as u64;
            if let (Some(msg), Some((want, _))) = (self.message.as_mut(), expected) {
                compare(msg, chunk, want);
            }
            return Ok(Some(self.frame_end(expected)));
        }
        let (header, header_len) = match parse_header(&self.buf[self.start..self.end]) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(Failure::Protocol(match e {
                    duplex::proto::frame::HeaderError::ReservedOpcode(op) => {
                        ProtocolError::ReservedOpcode(op)
                    }
                    duplex::proto::frame::HeaderError::LengthMsbSet => ProtocolError::LengthMsbSet,
                }))
            }
        };
        if header.mask.is_some() {
            return Err(Failure::Protocol(ProtocolError::MaskedFrame));
        }
        if header.rsv != 0 {
            // No extension was negotiated.
            return Err(Failure::Protocol(ProtocolError::ReservedBits(header.rsv)));
        }
        if header.opcode.is_control() {
            if !header.fin {
                return Err(Failure::Protocol(ProtocolError::FragmentedControlFrame));
            }
            if header.payload_len > 125 {
                return Err(Failure::Protocol(ProtocolError::ControlFrameTooLong(
                    header.payload_len,
                )));
            }
            let total = header_len + header.payload_len as usize;
            if self.end - self.start < total {
                return Ok(None);
            }
            let payload = &self.buf[self.start + header_len..self.start + total];
            self.start += total;
            return match header.opcode {
                OpCode::Ping => {
                    let pong = masked_frame(OpCode::Pong, payload);
                    stream
                        .write_all(&pong)
                        .await
                        .map_err(|e| Failure::Io(format!("send pong: {e}")))?;
                    Ok(Some(None))
                }
                OpCode::Close => {
                    let closed = on_close(payload);
                    if expected.is_some() {
                        // The server started the closing handshake: answer it (§5.5.1).
                        let reply = match &closed {
                            Ok(Some(code)) => masked_frame(OpCode::Close, &code.to_be_bytes()),
                            _ => masked_frame(OpCode::Close, &[]),
                        };
                        let _ = stream.write_all(&reply).await;
                    }
                    let why = match &closed {
                        Ok(Some(code)) => format!("server closed the connection ({code})"),
                        Ok(None) => "server closed the connection".to_owned(),
                        Err(e) => format!("server closed the connection with {e}"),
                    };
                    Ok(Some(Some(Incoming::Close(closed.map(|_| ()), why))))
                }
                // Unsolicited pongs are allowed (§5.5.3) and mean nothing here.
                _ => Ok(Some(None)),
            };
        }
        match (header.opcode, &self.message) {
            (OpCode::Continuation, None) => {
                return Err(Failure::Protocol(ProtocolError::UnexpectedContinuation))
            }
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(Failure::Protocol(ProtocolError::ExpectedContinuation))
            }
            // Control frames were handled above: this is a continuation.
            (_, Some(_)) => {}
            (opcode, None) => {
                let mismatch = match expected {
                    Some((_, want)) if want != opcode => Some(format!(
                        "echo is a {} message, a {} one was sent",
                        kind(opcode),
                        kind(want)
                    )),
                    _ => None,
                };
                self.message = Some(InMessage {
                    received: 0,
                    mismatch,
                });
            }
        }
        self.start += header_len;
        self.frame = InFrame {
            remaining: header.payload_len,
            fin: header.fin,
        };
        Ok(Some(self.frame_end(expected)))
    }

    /// After payload bytes (or a header): the message, if its last frame is complete.
    fn frame_end(&mut self, expected: Option<(&[u8], OpCode)>) -> Option<Incoming> {
        if self.frame.remaining > 0 || !self.frame.fin {
            return None;
        }
        let msg = self.message.take()?;
        let mismatch = match (msg.mismatch, expected) {
            (Some(why), _) => Some(why),
            (None, Some((want, _))) if msg.received != want.len() => Some(format!(
                "echo of {} bytes for a message of {}",
                msg.received,
                want.len()
            )),
            (None, _) => None,
        };
        Some(Incoming::Message(mismatch))
    }

    /// Reads more bytes, after moving what is left (at most a partial header or control
    /// frame: payloads are consumed as they come) to the front.
    async fn fill(&mut self, stream: &mut TcpStream) -> Result<(), Failure> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let room = self.buf.len() - self.end;
        let n = stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| Failure::Io(format!("receive: {e}")))?;
        if n == 0 {
            return Err(Failure::ServerClosed(
                "server closed the TCP connection without a close frame".to_owned(),
            ));
        }
        self.end += n;
        self.drained = n < room;
        Ok(())
    }
}

/// Compares the next `chunk` of an echo with the message, noting the first difference.
fn compare(msg: &mut InMessage, chunk: &[u8], want: &[u8]) {
    let at = msg.received;
    msg.received += chunk.len();
    if msg.mismatch.is_some() {
        return;
    }
    match want.get(at..at + chunk.len()) {
        Some(sent) if sent == chunk => {}
        Some(_) => {
            msg.mismatch = Some(format!(
                "echo differs from the {}-byte message sent, within bytes {at}..{}",
                want.len(),
                at + chunk.len()
            ))
        }
        None => {
            msg.mismatch = Some(format!(
                "echo is longer than the {}-byte message sent",
                want.len()
            ))
        }
    }
}

/// The server's close payload: its status code (`None`: none given), or what is wrong with it.
fn on_close(payload: &[u8]) -> Result<Option<u16>, String> {
    match parse_close_payload(bytes::Bytes::copy_from_slice(payload)) {
        Ok(frame) => Ok(frame.map(|f| f.code.0)),
        Err(e) => Err(format!("an invalid close frame: {e}")),
    }
}

fn kind(opcode: OpCode) -> &'static str {
    if opcode == OpCode::Text {
        "text"
    } else {
        "binary"
    }
}

/// Marks the socket as not readable without a `read` that would only return `WouldBlock`:
/// after a short read the echo is consumed and the next one cannot come before the next send,
/// so the next read waits for the reactor's readiness event instead of trying first. Nothing
/// is lost: data arriving later raises a new (edge-triggered) event.
fn forget_readable(stream: &TcpStream) {
    let _ = stream.try_io(Interest::READABLE, || {
        Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
    });
}
