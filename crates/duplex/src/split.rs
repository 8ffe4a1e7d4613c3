//! A connection split into a reader and a writer for two tasks.
//!
//! Both halves share the protocol state and the write half of the stream behind a mutex that
//! is only ever held inside one poll (never across an `.await`), so neither half can block the
//! other. Whoever polls flushes what the protocol queued: the reader keeps answering pings and
//! the closing handshake while the writer waits on a slow peer, and a write-readiness wake-up
//! goes to both halves so queued bytes always find someone to write them.

use crate::close_reason::CloseReason;
use crate::driver::{
    into_chunk, into_message, poll_mapped, poll_read_into, poll_write_queue, Driver, Transport,
};
use crate::error::{Error, Result};
use crate::websocket::{Chunk, TrySendError, WebSocket};
use bytes::{Bytes, BytesMut};
use duplex_proto::transmit::TransmitQueue;
use duplex_proto::{CloseCode, CloseFrame, Compression, Connection, Event, Message, MessageKind};
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::task::AtomicWaker;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Wake, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::Instant;

/// The two tasks that may wait for the socket to become writable.
#[derive(Debug, Default)]
struct WriteWakers {
    reader: AtomicWaker,
    writer: AtomicWaker,
}

impl Wake for WriteWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.reader.wake();
        self.writer.wake();
    }
}

#[derive(Debug)]
struct Inner<S> {
    conn: Connection,
    write: WriteHalf<S>,
    write_buffer_limit: usize,
    /// The reader finished the connection: writes fail instead of waiting.
    transport_done: bool,
}

#[derive(Debug)]
struct Shared<S> {
    inner: Mutex<Inner<S>>,
    /// The agreed subprotocol, given back by [`WsReader::reunite`].
    #[allow(clippy::box_collection)]
    subprotocol: Option<Box<String>>,
    wakers: Arc<WriteWakers>,
    /// Waker given to every write: wakes both halves.
    wake_both: Waker,
}

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A panic while holding the lock leaves the protocol state as consistent as any other
        // point between two calls; keep going rather than poison both halves.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[allow(clippy::box_collection)]
pub(crate) fn split<S: AsyncRead + AsyncWrite>(
    stream: S,
    conn: Connection,
    driver: Driver,
    write_buffer_limit: usize,
    subprotocol: Option<Box<String>>,
) -> (WsReader<S>, WsWriter<S>) {
    let (read, write) = tokio::io::split(stream);
    let wakers = Arc::new(WriteWakers::default());
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            conn,
            write,
            write_buffer_limit,
            transport_done: false,
        }),
        subprotocol,
        wake_both: Waker::from(Arc::clone(&wakers)),
        wakers,
    });
    (
        WsReader {
            read,
            driver,
            shared: Arc::clone(&shared),
        },
        WsWriter { shared },
    )
}

/// The receiving half of a split connection. It also drives the connection (pongs, closing
/// handshake, timers): keep polling it for as long as the connection lives.
#[derive(Debug)]
pub struct WsReader<S> {
    read: ReadHalf<S>,
    driver: Driver,
    shared: Arc<Shared<S>>,
}

/// The sending half of a split connection.
#[derive(Debug)]
pub struct WsWriter<S> {
    shared: Arc<Shared<S>>,
}

struct SplitIo<'a, S> {
    read: &'a mut ReadHalf<S>,
    write: &'a mut WriteHalf<S>,
    wake_both: &'a Waker,
}

impl<S: AsyncRead + AsyncWrite> Transport for SplitIo<'_, S> {
    fn poll_read_into(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut BytesMut,
    ) -> Poll<io::Result<usize>> {
        poll_read_into(self.read, cx, buf)
    }
    fn poll_write_queue(
        &mut self,
        _cx: &mut Context<'_>,
        queue: &mut TransmitQueue,
    ) -> Poll<io::Result<()>> {
        poll_write_queue(self.write, &mut Context::from_waker(self.wake_both), queue)
    }
    fn poll_shutdown(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.write).poll_shutdown(&mut Context::from_waker(self.wake_both))
    }
}

impl<S: AsyncRead + AsyncWrite> WsReader<S> {
    /// The next message; `None` after a clean close, `Some(Err)` once on failure.
    ///
    /// Cancel-safety: cancel-safe.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        loop {
            if let Some(item) = into_message(self.next_event().await?) {
                return Some(item);
            }
        }
    }

    /// The next piece of a message, with `Config::chunked_receive` on: large messages stream
    /// through in bounded memory. `None` after a clean close.
    ///
    /// Cancel-safety: cancel-safe.
    pub async fn recv_chunk(&mut self) -> Option<Result<Chunk>> {
        loop {
            if let Some(item) = into_chunk(self.next_event().await?) {
                return Some(item);
            }
        }
    }

    /// The next event, control frames included.
    ///
    /// Cancel-safety: cancel-safe.
    pub async fn next_event(&mut self) -> Option<Result<Event>> {
        poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Poll form of [`next_event`](Self::next_event).
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        self.shared.wakers.reader.register(cx.waker());
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        let mut io = SplitIo {
            read: &mut self.read,
            write: &mut inner.write,
            wake_both: &self.shared.wake_both,
        };
        let polled = self.driver.poll_event(&mut inner.conn, &mut io, cx);
        if self.driver.is_done() && !inner.transport_done {
            // Release a writer waiting on a socket that will never drain.
            inner.transport_done = true;
            self.shared.wakers.writer.wake();
        }
        polled
    }

    /// The peer's close frame, once received (a copy: the state is shared with the writer).
    /// [`close_reason`](Self::close_reason) says more.
    pub fn close_frame(&self) -> Option<CloseFrame> {
        self.shared.lock().conn.close_received().cloned().flatten()
    }

    /// Why the connection ended (or is ending); `None` while it is open: the same as
    /// [`WebSocket::close_reason`](crate::WebSocket::close_reason), same type. Ask it where
    /// the receive loop ends.
    ///
    /// ```no_run
    /// # async fn demo(ws: duplex::WebSocket<tokio::net::TcpStream>) {
    /// let (mut reader, _writer) = ws.into_split();
    /// while let Some(Ok(message)) = reader.recv().await {
    ///     println!("{message:?}");
    /// }
    /// if let Some(reason) = reader.close_reason() {
    ///     println!("ended: {reason:?} (code {})", reason.code().0);
    /// }
    /// # }
    /// ```
    pub fn close_reason(&self) -> Option<CloseReason> {
        let inner = self.shared.lock();
        crate::close_reason::close_reason(
            &inner.conn,
            self.driver.started(&inner.conn),
            self.driver.is_done(),
        )
    }

    /// Puts the two halves of one connection back together (the inverse of
    /// [`WebSocket::into_split`](crate::WebSocket::into_split)). Fails, handing both back,
    /// if `writer` belongs to another connection.
    ///
    /// ```no_run
    /// # async fn demo(ws: duplex::WebSocket<tokio::net::TcpStream>) -> duplex::Result<()> {
    /// let (reader, mut writer) = ws.into_split();
    /// writer.send("from the writer").await?;
    /// let mut ws = reader.reunite(writer).expect("halves of one connection");
    /// ws.send("whole again").await?;
    /// # Ok(()) }
    /// ```
    pub fn reunite(self, writer: WsWriter<S>) -> std::result::Result<WebSocket<S>, ReuniteError<S>>
    where
        S: Unpin,
    {
        if !Arc::ptr_eq(&self.shared, &writer.shared) {
            return Err(ReuniteError(self, writer));
        }
        drop(writer.shared);
        let shared = match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared,
            Err(_) => unreachable!("only the two halves hold the shared state"),
        };
        let inner = shared
            .inner
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let stream = self.read.unsplit(inner.write);
        Ok(WebSocket::from_parts(
            stream,
            inner.conn,
            self.driver,
            inner.write_buffer_limit,
            shared.subprotocol,
        ))
    }

    /// Bytes of buffer capacity the connection holds (input, events, output); 0 while idle.
    /// See [`Connection::buffer_capacity`].
    pub fn buffer_capacity(&self) -> usize {
        self.shared.lock().conn.buffer_capacity()
    }
}

/// [`WsReader::reunite`] was given the writer of another connection: both halves, back.
#[derive(Debug)]
pub struct ReuniteError<S>(pub WsReader<S>, pub WsWriter<S>);

impl<S> std::fmt::Display for ReuniteError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tried to reunite the halves of two different connections")
    }
}

impl<S: std::fmt::Debug> std::error::Error for ReuniteError<S> {}

impl<S: AsyncRead + AsyncWrite> Stream for WsReader<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_mapped(cx, |cx| this.poll_next_event(cx), into_message)
    }
}

impl<S: AsyncRead + AsyncWrite> WsWriter<S> {
    /// Sends a message and waits until it is written.
    ///
    /// Cancel-safety: not cancel-safe once queued: a dropped future may leave the message
    /// partly written; the rest goes out with the next write or read.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.send_with(message, Compression::Auto).await
    }

    /// Sends a message choosing whether to compress it.
    ///
    /// Cancel-safety: as `send`.
    pub async fn send_with(
        &mut self,
        message: impl Into<Message>,
        compression: Compression,
    ) -> Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await?;
        self.shared
            .lock()
            .conn
            .send_with(message.into(), compression)?;
        self.flush().await
    }

    /// Sends a message encoded once for many connections (see
    /// [`PreparedMessage`](duplex_proto::prepared::PreparedMessage)) and waits until written.
    ///
    /// Cancel-safety: as `send`: once queued, a dropped future leaves the frame to be finished by the next write, flush or receive.
    pub async fn send_prepared(
        &mut self,
        prepared: &duplex_proto::prepared::PreparedMessage,
    ) -> Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await?;
        self.shared.lock().conn.send_prepared(prepared)?;
        self.flush().await
    }

    /// Queues a message without waiting, unless the write buffer limit is reached:
    /// `Err(TrySendError::Full(message))` then hands it back (a server may close a slow
    /// consumer with 1008 instead of waiting).
    pub fn try_send(
        &mut self,
        message: impl Into<Message>,
    ) -> std::result::Result<(), TrySendError> {
        let message = message.into();
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        if inner.transport_done {
            return Err(TrySendError::Failed(Error::Closed));
        }
        if inner.conn.pending_transmit() >= inner.write_buffer_limit {
            return Err(TrySendError::Full(message));
        }
        inner
            .conn
            .send(message)
            .map_err(|e| TrySendError::Failed(e.into()))?;
        // Start writing now; if the socket is full, the write-readiness wake-up reaches both
        // halves and whichever runs next continues.
        let mut cx = Context::from_waker(&self.shared.wake_both);
        if let Poll::Ready(Err(e)) =
            poll_write_queue(&mut inner.write, &mut cx, inner.conn.transmit_queue())
        {
            return Err(TrySendError::Failed(e.into()));
        }
        Ok(())
    }

    /// Sends a ping.
    ///
    /// Cancel-safety: the ping is queued before the first await; if dropped, it is written by the next write, flush or receive.
    pub async fn send_ping(&mut self, payload: impl Into<Bytes>) -> Result<()> {
        self.shared.lock().conn.send_ping(payload)?;
        self.flush().await
    }

    /// Sends one fragment of a message sent in pieces (see [`Connection::send_fragment`]).
    ///
    /// Cancel-safety: as `send`: the fragment is queued before the first await and written later if the future is dropped.
    pub async fn send_fragment(
        &mut self,
        kind: MessageKind,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await?;
        self.shared.lock().conn.send_fragment(kind, payload, fin)?;
        self.flush().await
    }

    /// Sends our close frame. The reader completes the handshake: it returns `None` once the
    /// peer answered and the transport closed (or the close timeout passed).
    ///
    /// Cancel-safety: the close frame is queued at once; dropping the future leaves the handshake to be completed by later receives (or the close timeout).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.shared
            .lock()
            .conn
            .close(code, reason, Instant::now().into_std())?;
        self.flush().await
    }

    /// Writes everything queued.
    ///
    /// Cancel-safety: cancel-safe.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush_queue(cx)).await
    }

    fn poll_flush_queue(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.shared.wakers.writer.register(cx.waker());
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        if inner.transport_done {
            return Poll::Ready(Err(Error::Closed));
        }
        let mut both = Context::from_waker(&self.shared.wake_both);
        ready!(poll_write_queue(
            &mut inner.write,
            &mut both,
            inner.conn.transmit_queue()
        ))
        .map_err(Error::from)?;
        Poll::Ready(Ok(()))
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let over_limit = {
            let inner = self.shared.lock();
            inner.conn.pending_transmit() >= inner.write_buffer_limit
        };
        if over_limit {
            ready!(self.poll_flush_queue(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite> Sink<Message> for WsWriter<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_write_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        self.get_mut().shared.lock().conn.send(item)?;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_flush_queue(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        {
            let mut inner = this.shared.lock();
            if inner.conn.state() == duplex_proto::State::Open {
                let _ = inner
                    .conn
                    .close(CloseCode::NORMAL, "", Instant::now().into_std());
            }
        }
        this.poll_flush_queue(cx)
    }
}
