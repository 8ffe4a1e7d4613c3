//! The read side of a connection as a poll function, shared by [`WebSocket`](crate::WebSocket)
//! and the split [`WsReader`](crate::split::WsReader).
//!
//! One call delivers the next event, and on the way flushes what the protocol queued (pongs,
//! close answers), reads, runs the protocol's timers, and performs the closing procedure:
//! flush, half-close, then drain the peer's remaining input (bounded), so that closing the
//! socket with unread data cannot reset the connection under our close frame.

use crate::close_reason::{infer_started, Started};
use crate::error::{Error, Result};
use crate::websocket::Chunk;
use bytes::{Buf, BytesMut};
use duplex_proto::transmit::TransmitQueue;
use duplex_proto::{Connection, Event, Message, MessageKind};
use std::cell::RefCell;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

/// Read space made available before a read into a connection's own (partly filled) buffer.
const READ_CHUNK: usize = 8 * 1024;
/// Size of the thread's shared read block. Reads into it have at least half of it free, so
/// a message up to 32 KiB arrives in one read (one recv per 16 KiB echo instead of two) and a
/// short read tells the runtime the socket is drained, saving a read that would block.
const SHARED_READ_BLOCK: usize = 64 * 1024;
/// Upper bound on how long a closing endpoint drains the peer's remaining input.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);
/// Slices gathered for one vectored write.
const MAX_IOVECS: usize = 32;

/// Byte-level access the driver needs; implemented over a whole stream and over split halves.
pub(crate) trait Transport {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>>;
    fn poll_write_queue(
        &mut self,
        cx: &mut Context<'_>,
        queue: &mut TransmitQueue,
    ) -> Poll<io::Result<()>>;
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

/// Writes the whole queue (vectored) and flushes the writer.
pub(crate) fn poll_write_queue<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    cx: &mut Context<'_>,
    queue: &mut TransmitQueue,
) -> Poll<io::Result<()>> {
    while queue.has_remaining() {
        let chunk = queue.chunk();
        // One contiguous chunk (the usual small message) goes out with write(2): writev(2)
        // would cost the kernel an iovec import, and gathering slices costs us, for nothing.
        let written = if chunk.len() == queue.remaining() {
            ready!(Pin::new(&mut *writer).poll_write(cx, chunk))?
        } else {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = queue.chunks_vectored(&mut slices);
            ready!(Pin::new(&mut *writer).poll_write_vectored(cx, &slices[..n]))?
        };
        if written == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        queue.advance(written);
    }
    Pin::new(writer).poll_flush(cx)
}

thread_local! {
    /// Read space shared by a thread's connections (see [`poll_read_into`]).
    static SHARED_READ: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Reads into the spare capacity of `buf`, growing it first if it is (nearly) full.
///
/// When `buf` is empty (no partial frame) the read goes into a buffer shared by the thread's
/// connections, and what arrived is split off into `buf` (no copy: messages then share that
/// allocation as they would share a per-connection one). An idle connection thus holds no
/// read buffer: with 8 KiB reserved each, that was most of an idle connection's memory. Once a
/// frame is partly buffered, reads go straight into `buf`; the reserve made before such a read
/// (a view of the shared block has no spare room) copies the partial frame out of the block
/// before the read can return `Pending`, so a connection stalled mid-frame never pins the
/// block (`tests/partial_frame_memory.rs`).
pub(crate) fn poll_read_into<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        // `None`: the shared buffer is in use further up this thread's stack (a stream that
        // is itself read through another connection) or already destroyed; read directly.
        let read = SHARED_READ
            .try_with(|shared| {
                let mut shared = shared.try_borrow_mut().ok()?;
                // Empty here: every read is split off. Once its earlier parts are dropped,
                // reserving reuses the allocation instead of making a new one.
                if shared.capacity() < SHARED_READ_BLOCK / 2 {
                    shared.reserve(SHARED_READ_BLOCK);
                }
                Some(
                    tokio_util::io::poll_read_buf(Pin::new(&mut *reader), cx, &mut *shared).map_ok(
                        |n| {
                            *buf = shared.split();
                            n
                        },
                    ),
                )
            })
            .ok()
            .flatten();
        if let Some(read) = read {
            return read;
        }
    }
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
    tokio_util::io::poll_read_buf(Pin::new(reader), cx, buf)
}

/// A whole stream used for both directions.
pub(crate) struct Whole<'a, S>(pub(crate) &'a mut S);

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for Whole<'_, S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_read_into(self.0, cx, buf)
    }
    fn poll_write_queue(
        &mut self,
        cx: &mut Context<'_>,
        queue: &mut TransmitQueue,
    ) -> Poll<io::Result<()>> {
        poll_write_queue(self.0, cx, queue)
    }
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Half-closed; reading and discarding until end of stream or the timer.
    Draining,
    Done,
}

/// Read-side state that outlives one poll.
#[derive(Debug)]
pub(crate) struct Driver {
    phase: Phase,
    /// The timer is armed for the deadline of flushing the final frames to a peer that does
    /// not read (the deadline is kept in the timer rather than in another field).
    flush_armed: bool,
    /// Boxed and created on first use: most connections never arm a timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// Who started the closing handshake, recorded when the state leaves `Open` (before the
    /// peer's answer can make it look the other way round).
    started: Started,
    /// A failure to report after the closing procedure.
    /// Boxed: rare, and `Error` is large; every idle connection carries this field.
    pending_error: Option<Box<Error>>,
}

impl Driver {
    pub(crate) fn new(pending_error: Option<Error>) -> Self {
        Driver {
            phase: Phase::Running,
            flush_armed: false,
            started: Started::Unknown,
            timer: None,
            pending_error: pending_error.map(Box::new),
        }
    }

    /// Whether the connection is over for the transport (the reader returned its end).
    pub(crate) fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Who started the closing handshake, as far as seen.
    pub(crate) fn started(&self, conn: &Connection) -> Started {
        match self.started {
            Started::Unknown => infer_started(conn),
            known => known,
        }
    }

    fn note_started(&mut self, conn: &Connection) {
        if self.started == Started::Unknown {
            self.started = infer_started(conn);
        }
    }

    /// The next event; `None` at the end of a clean close, `Some(Err)` once for a failure.
    pub(crate) fn poll_event<T: Transport>(
        &mut self,
        conn: &mut Connection,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Event>>> {
        loop {
            self.note_started(conn);
            match self.phase {
                Phase::Done => return Poll::Ready(self.pending_error.take().map(|e| Err(*e))),
                Phase::Draining => {
                    ready!(self.poll_drain(conn, io, cx));
                    continue;
                }
                Phase::Running => {}
            }
            if let Some(event) = conn.poll_event() {
                return Poll::Ready(Some(Ok(event)));
            }
            match io.poll_write_queue(cx, conn.transmit_queue()) {
                Poll::Ready(Err(e)) => {
                    self.phase = Phase::Done;
                    return Poll::Ready(self.transport_error(conn, e.into()));
                }
                Poll::Ready(Ok(())) => {
                    if conn.should_close_transport() {
                        // Shutdown errors mean the peer is already gone: nothing to report.
                        let _ = ready!(io.poll_shutdown(cx));
                        self.phase = Phase::Draining;
                        let limit = conn.config().close_timeout.min(DRAIN_LIMIT);
                        self.arm(Instant::now() + limit);
                        continue;
                    }
                }
                // The peer is slow to read; keep reading so its frames are still processed.
                Poll::Pending => {
                    if conn.should_close_transport() {
                        // Waiting to flush our close frame, but not past the close deadline:
                        // a peer that never reads must not hold the connection forever.
                        // Nothing re-arms the timer until this ends: every later poll comes
                        // back here or moves on to draining.
                        if !std::mem::replace(&mut self.flush_armed, true) {
                            let deadline = conn
                                .poll_timeout()
                                .map(Instant::from_std)
                                .unwrap_or_else(|| Instant::now() + conn.config().close_timeout);
                            self.arm(deadline);
                        }
                        if self.poll_timer(cx).is_ready() {
                            let _ = conn.handle_timeout(Instant::now().into_std());
                            self.phase = Phase::Done;
                            self.timer = None;
                            continue;
                        }
                        return Poll::Pending;
                    }
                }
            }
            match io.poll_read_into(cx, conn.input_buffer()) {
                Poll::Ready(Ok(0)) => {
                    if let Err(e) = conn.receive_eof() {
                        self.pending_error.get_or_insert_with(|| Box::new(e.into()));
                    }
                    continue;
                }
                Poll::Ready(Ok(_)) => {
                    if let Err(e) = conn.handle_input(Instant::now().into_std()) {
                        self.pending_error.get_or_insert_with(|| Box::new(e.into()));
                    }
                    continue;
                }
                Poll::Ready(Err(e)) => {
                    self.phase = Phase::Done;
                    return Poll::Ready(self.transport_error(conn, e.into()));
                }
                Poll::Pending => {}
            }
            if let Some(deadline) = conn.poll_timeout() {
                self.arm(Instant::from_std(deadline));
                if self.poll_timer(cx).is_ready() {
                    let was_open = conn.state() == duplex_proto::State::Open;
                    if let Err(e) = conn.handle_timeout(Instant::now().into_std()) {
                        self.pending_error.get_or_insert_with(|| Box::new(e.into()));
                    }
                    if was_open
                        && conn.state() != duplex_proto::State::Open
                        && conn.error().is_none()
                        && conn.close_received().is_none()
                    {
                        // Only the idle timer closes without a failure.
                        self.started = Started::IdleTimeout;
                    }
                    continue;
                }
            }
            // Waiting for the peer: an idle connection keeps no buffer memory.
            conn.release_idle_buffers();
            return Poll::Pending;
        }
    }

    fn poll_drain<T: Transport>(
        &mut self,
        conn: &mut Connection,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            let buf = conn.input_buffer();
            buf.clear();
            match io.poll_read_into(cx, buf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(_)) => continue,
                Poll::Pending => {
                    if self.poll_timer(cx).is_ready() {
                        break;
                    }
                    return Poll::Pending;
                }
            }
        }
        conn.input_buffer().clear();
        conn.release_idle_buffers();
        self.phase = Phase::Done;
        self.timer = None;
        Poll::Ready(())
    }

    fn arm(&mut self, deadline: Instant) {
        match &mut self.timer {
            Some(timer) if timer.deadline() == deadline => {}
            Some(timer) => timer.as_mut().reset(deadline),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// A transport error ends the connection. After the peer's close frame it is not worth
    /// reporting (the peer said goodbye and did not wait for our answer, e.g. a reset).
    fn transport_error(&mut self, conn: &Connection, error: Error) -> Option<Result<Event>> {
        if conn.close_received().is_some() {
            return self.pending_error.take().map(|e| Err(*e));
        }
        Some(Err(self.pending_error.take().map_or(error, |e| *e)))
    }
}

/// What `recv` makes of an event: `Some` to hand out, `None` to skip (control frames).
pub(crate) fn into_message(event: Result<Event>) -> Option<Result<Message>> {
    match event {
        Ok(Event::Message(message)) => Some(Ok(message)),
        Ok(Event::Chunk { .. }) => Some(Err(Error::ChunkedReceive)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

/// What `recv_chunk` makes of an event: with chunked receive off, a whole message is one
/// final chunk.
pub(crate) fn into_chunk(event: Result<Event>) -> Option<Result<Chunk>> {
    match event {
        Ok(Event::Chunk { kind, data, fin }) => Some(Ok(Chunk { kind, data, fin })),
        Ok(Event::Message(Message::Text(text))) => Some(Ok(Chunk {
            kind: MessageKind::Text,
            data: text.into_bytes(),
            fin: true,
        })),
        Ok(Event::Message(Message::Binary(data))) => Some(Ok(Chunk {
            kind: MessageKind::Binary,
            data,
            fin: true,
        })),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Polls events until one maps to an item (the `Stream` implementations).
pub(crate) fn poll_mapped<T>(
    cx: &mut Context<'_>,
    mut poll_event: impl FnMut(&mut Context<'_>) -> Poll<Option<Result<Event>>>,
    map: impl Fn(Result<Event>) -> Option<Result<T>>,
) -> Poll<Option<Result<T>>> {
    loop {
        match ready!(poll_event(cx)) {
            None => return Poll::Ready(None),
            Some(event) => {
                if let Some(item) = map(event) {
                    return Poll::Ready(Some(item));
                }
            }
        }
    }
}
