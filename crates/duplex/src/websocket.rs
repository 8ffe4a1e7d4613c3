//! `WebSocket<S>`: an established connection over any tokio byte stream.

use crate::close_reason::CloseReason;
use crate::driver::{into_chunk, into_message, poll_mapped, poll_write_queue, Driver, Whole};
use crate::error::{Error, Result};
use crate::split::{self, WsReader, WsWriter};
use bytes::Bytes;
use duplex_proto::{
    CloseCode, CloseFrame, Compression, Config, Connection, Event, Message, MessageKind, Role,
};
use futures_core::Stream;
use futures_sink::Sink;
use futures_util::StreamExt;
use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// A piece of a message received with `Config::chunked_receive` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Text or binary.
    pub kind: MessageKind,
    /// The bytes; for text only the concatenation of a message's chunks is guaranteed UTF-8.
    pub data: Bytes,
    /// Last chunk of its message.
    pub fin: bool,
}

/// Default for [`WebSocket::set_write_buffer_limit`].
pub const DEFAULT_WRITE_BUFFER_LIMIT: usize = 128 * 1024;

/// An established WebSocket connection over `S` (a `TcpStream`, a TLS stream, ...).
///
/// Receiving drives the connection: pings are answered, the closing handshake completed and
/// timers run while [`recv`](Self::recv) (or [`next_event`](Self::next_event), or the
/// [`Stream`] implementation) is being awaited, so keep a receive loop going.
///
/// ```no_run
/// # async fn demo() -> duplex::Result<()> {
/// use duplex::client::{connect, ClientConfig};
/// let (mut ws, _) = connect("ws://127.0.0.1:9001/", &ClientConfig::default()).await?;
/// ws.send("hello").await?;
/// while let Some(message) = ws.recv().await {
///     println!("{:?}", message?);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    driver: Driver,
    write_buffer_limit: usize,
    /// Boxed: a thin pointer, as every connection carries this field and few use it.
    #[allow(clippy::box_collection)]
    subprotocol: Option<Box<String>>,
}

/// `config` as an `Arc` shared with the connections this thread made before with an equal
/// config, so that each connection holds a pointer rather than a copy (a server has many
/// connections, nearly always with one config).
pub(crate) fn shared_config(config: &Config) -> Arc<Config> {
    thread_local! {
        static LAST: RefCell<Option<Arc<Config>>> = const { RefCell::new(None) };
    }
    let fresh = || Arc::new(config.clone());
    LAST.try_with(|last| {
        let Ok(mut last) = last.try_borrow_mut() else {
            return fresh();
        };
        match &*last {
            Some(shared) if **shared == *config => Arc::clone(shared),
            _ => Arc::clone(last.insert(fresh())),
        }
    })
    // Thread-local storage already destroyed (a connection made during thread exit).
    .unwrap_or_else(|_| fresh())
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose opening handshake is complete. `leftover` holds bytes read past the
    /// handshake (frames the peer sent right after it).
    pub fn from_raw(stream: S, role: Role, config: Config, leftover: &[u8]) -> Self {
        let conn = Connection::new(role, shared_config(&config), Instant::now().into_std());
        Self::from_connection(stream, conn, leftover)
    }

    /// Wraps a stream and a protocol state prepared by the caller (e.g. with
    /// permessage-deflate turned on). `leftover` as in [`from_raw`](Self::from_raw).
    pub fn from_connection(stream: S, mut conn: Connection, leftover: &[u8]) -> Self {
        let now = Instant::now().into_std();
        let pending_error = conn.receive_data(leftover, now).err().map(Error::Protocol);
        WebSocket {
            stream,
            conn,
            driver: Driver::new(pending_error),
            write_buffer_limit: DEFAULT_WRITE_BUFFER_LIMIT,
            subprotocol: None,
        }
    }

    /// Records the subprotocol agreed in the handshake (see [`subprotocol`](Self::subprotocol)).
    pub fn with_subprotocol(mut self, protocol: Option<String>) -> Self {
        self.subprotocol = protocol.map(Box::new);
        self
    }

    /// The subprotocol agreed in the opening handshake, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref().map(String::as_str)
    }

    /// The protocol state machine (read-only).
    pub fn protocol(&self) -> &Connection {
        &self.conn
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, mutably: to set socket options, say. Reading or writing
    /// through it breaks the WebSocket framing; don't.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The underlying stream, without the WebSocket state: frames queued but not yet written
    /// and input read but not yet delivered are dropped. For a connection whose closing
    /// handshake is over, or to hand the socket to code that takes over the protocol.
    ///
    /// ```no_run
    /// # async fn demo(mut ws: duplex::WebSocket<tokio::net::TcpStream>) -> duplex::Result<()> {
    /// ws.get_mut().set_nodelay(true)?;
    /// ws.close(duplex::CloseCode::NORMAL, "").await?;
    /// let tcp: tokio::net::TcpStream = ws.into_inner();
    /// # Ok(()) }
    /// ```
    pub fn into_inner(self) -> S {
        self.stream
    }

    /// The peer's close frame, once received. [`close_reason`](Self::close_reason) says more:
    /// who closed, the idle timeout, failures.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.conn.close_received().and_then(|c| c.as_ref())
    }

    /// Why the connection ended (or is ending); `None` while it is open. Ask it when
    /// [`recv`](Self::recv) (or the `Stream`) returned `None`: a clean close by either side,
    /// the peer's error code (e.g. 1011), our idle timeout (1001), a failure such as a missing
    /// pong, or a broken transport all end the loop alike. [`WsReader::close_reason`] returns
    /// the same type. See [`CloseReason`] for a loop example.
    ///
    /// ```no_run
    /// # async fn demo() -> duplex::Result<()> {
    /// let (mut ws, _) = duplex::connect("ws://127.0.0.1:9001/", &Default::default()).await?;
    /// while let Some(message) = ws.recv().await {
    ///     println!("{:?}", message);
    /// }
    /// let reason = ws.close_reason().expect("recv() returned None: the connection is over");
    /// println!("closed with {} (normal: {})", reason.code().0, reason.is_normal());
    /// # Ok(()) }
    /// ```
    pub fn close_reason(&self) -> Option<CloseReason> {
        crate::close_reason::close_reason(
            &self.conn,
            self.driver.started(&self.conn),
            self.driver.is_done(),
        )
    }

    /// Bytes queued but not yet written beyond which sending waits (`feed`, the [`Sink`]).
    /// Default [`DEFAULT_WRITE_BUFFER_LIMIT`]. A single larger message is still accepted when
    /// the buffer is empty, so the bound is `limit + one message`.
    pub fn set_write_buffer_limit(&mut self, bytes: usize) {
        self.write_buffer_limit = bytes;
    }

    /// The next message. `None` once the connection closed cleanly; `Some(Err(_))` once if it
    /// failed, after the close frame was sent and the transport closed (bounded by
    /// `close_timeout`). Pings, pongs and the peer's close frame are handled, not returned;
    /// use [`next_event`](Self::next_event) to see them.
    ///
    /// Cancel-safety: cancel-safe. Nothing is lost if the future is dropped: a message is
    /// taken from the protocol state only when it is returned.
    ///
    /// Memory: a message that arrived in one read shares that read's storage (no copy), a
    /// block of up to 64 KiB shared with other messages of the thread. To keep many small
    /// messages for long, copy them out (`Bytes::copy_from_slice`) so they don't hold it.
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

    /// The next event: messages, pings, pongs and the peer's close frame.
    ///
    /// Cancel-safety: cancel-safe, as [`recv`](Self::recv).
    pub async fn next_event(&mut self) -> Option<Result<Event>> {
        poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Poll form of [`next_event`](Self::next_event).
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Event>>> {
        self.driver
            .poll_event(&mut self.conn, &mut Whole(&mut self.stream), cx)
    }

    /// Sends a message and waits until it is written (compressed when permessage-deflate is on
    /// and the message reaches the threshold).
    ///
    /// Cancel-safety: not cancel-safe. If dropped before completion the message may be queued
    /// and partly written; it is then finished by the next send, flush or receive.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.send_with(message, Compression::Auto).await
    }

    /// Sends a message choosing whether to compress it, and waits until it is written.
    ///
    /// Cancel-safety: as [`send`](Self::send).
    pub async fn send_with(
        &mut self,
        message: impl Into<Message>,
        compression: Compression,
    ) -> Result<()> {
        self.conn.send_with(message.into(), compression)?;
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
        self.conn.send_prepared(prepared)?;
        self.flush().await
    }

    /// Queues a message, waiting only while more than the write buffer limit is queued.
    /// Pair with [`flush`](Self::flush).
    ///
    /// Cancel-safety: cancel-safe: the message is queued only once the future completes.
    pub async fn feed(&mut self, message: impl Into<Message>) -> Result<()> {
        poll_fn(|cx| self.poll_write_ready(cx)).await?;
        self.conn.send(message.into())?;
        Ok(())
    }

    /// Queues a message if fewer than the write buffer limit bytes are waiting, without
    /// waiting. On `Err(TrySendError::Full(message))` a server may choose to close a slow
    /// consumer (e.g. with 1008) instead of waiting.
    pub fn try_send(
        &mut self,
        message: impl Into<Message>,
    ) -> std::result::Result<(), TrySendError> {
        let message = message.into();
        if self.conn.pending_transmit() >= self.write_buffer_limit {
            return Err(TrySendError::Full(message));
        }
        self.conn
            .send(message)
            .map_err(|e| TrySendError::Failed(e.into()))
    }

    /// Writes everything queued.
    ///
    /// Cancel-safety: cancel-safe; what was not written stays queued.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| poll_write_queue(&mut self.stream, cx, self.conn.transmit_queue())).await?;
        Ok(())
    }

    /// Sends a ping (payload at most 125 bytes). The pong arrives as [`Event::Pong`].
    ///
    /// Cancel-safety: the ping is queued before the first await; if dropped, it is written by the next write, flush or receive.
    pub async fn send_ping(&mut self, payload: impl Into<Bytes>) -> Result<()> {
        self.conn.send_ping(payload)?;
        self.flush().await
    }

    /// Sends an unsolicited pong (a one-way heartbeat, RFC 6455 §5.5.3).
    ///
    /// Cancel-safety: as `send_ping`.
    pub async fn send_pong(&mut self, payload: impl Into<Bytes>) -> Result<()> {
        self.conn.send_pong(payload)?;
        self.flush().await
    }

    /// Sends one fragment of a message sent in pieces: the first call opens a message of
    /// `kind`, `fin` ends it (RFC 6455 §5.4). Fragments are not compressed.
    ///
    /// Cancel-safety: as `send`: the fragment is queued before the first await and written later if the future is dropped.
    pub async fn send_fragment(
        &mut self,
        kind: MessageKind,
        payload: impl Into<Bytes>,
        fin: bool,
    ) -> Result<()> {
        self.conn.send_fragment(kind, payload, fin)?;
        self.flush().await
    }

    /// Sends a message whose payload comes from a stream of chunks, one fragment per chunk, so
    /// the whole message never needs to be in memory. Text chunks must together be valid
    /// UTF-8 (a code point may be split across chunks).
    ///
    /// Cancel-safety: not cancel-safe: dropping it leaves a message half sent, and the connection refuses other messages until it is finished with `send_fragment(.., fin = true)`.
    pub async fn send_stream<St>(&mut self, kind: MessageKind, chunks: St) -> Result<()>
    where
        St: Stream<Item = Bytes>,
    {
        let mut chunks = std::pin::pin!(chunks.peekable());
        loop {
            let Some(chunk) = chunks.next().await else {
                // Empty stream: an empty message.
                return self.send_fragment(kind, Bytes::new(), true).await;
            };
            let last = chunks.as_mut().peek().await.is_none();
            self.send_fragment(kind, chunk, last).await?;
            if last {
                return Ok(());
            }
        }
    }

    /// Starts the closing handshake and waits for it to finish (the peer's close frame and the
    /// end of the transport), up to the configured close timeout. Messages still arriving are
    /// discarded; use [`WsWriter::close`] on a split connection to keep reading them.
    ///
    /// Cancel-safety: the close frame is queued at once; dropping the future leaves the handshake to be completed by later receives (or the close timeout).
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.conn.close(code, reason, Instant::now().into_std())?;
        while let Some(event) = self.next_event().await {
            event?;
        }
        Ok(())
    }

    /// Splits into a **reader** and a **writer** (in that order) for two tasks: the reader
    /// ([`WsReader`]) receives and keeps answering pings and the closing handshake even while
    /// the writer ([`WsWriter`]) waits on a slow peer. [`WsReader::reunite`] puts them back
    /// together.
    ///
    /// Not to be confused with [`futures_util::StreamExt::split`], which tokio-tungstenite
    /// code calls as `ws.split()` and which returns `(sink, stream)`, writer first, as
    /// `SplitSink`/`SplitStream` halves behind a `BiLock`. Both work here; to use that one call
    /// it as `StreamExt::split(ws)`.
    ///
    /// ```no_run
    /// # async fn demo(ws: duplex::WebSocket<tokio::net::TcpStream>) -> duplex::Result<()> {
    /// let (mut reader, mut writer) = ws.into_split();
    /// tokio::spawn(async move { writer.send("hello").await });
    /// while let Some(message) = reader.recv().await {
    ///     println!("{:?}", message?);
    /// }
    ///
    /// // The futures way, sink first:
    /// # let ws: duplex::WebSocket<tokio::net::TcpStream> = todo!();
    /// use futures_util::{SinkExt, StreamExt};
    /// let (mut sink, mut stream) = StreamExt::split(ws);
    /// sink.send(duplex::Message::from("hello")).await?;
    /// let _ = stream.next().await;
    /// # Ok(()) }
    /// ```
    pub fn into_split(self) -> (WsReader<S>, WsWriter<S>) {
        split::split(
            self.stream,
            self.conn,
            self.driver,
            self.write_buffer_limit,
            self.subprotocol,
        )
    }

    /// Reassembles a connection from its parts ([`WsReader::reunite`]).
    #[allow(clippy::box_collection)]
    pub(crate) fn from_parts(
        stream: S,
        conn: Connection,
        driver: Driver,
        write_buffer_limit: usize,
        subprotocol: Option<Box<String>>,
    ) -> Self {
        WebSocket {
            stream,
            conn,
            driver,
            write_buffer_limit,
            subprotocol,
        }
    }

    /// The old name of [`into_split`](Self::into_split), kept for existing code: returns
    /// `(reader, writer)`, unlike the `StreamExt::split` it hides, which returns
    /// `(sink, stream)`.
    #[deprecated(
        since = "0.1.0",
        note = "use into_split(): it returns (reader, writer), while StreamExt::split returns (sink, stream)"
    )]
    pub fn split(self) -> (WsReader<S>, WsWriter<S>) {
        self.into_split()
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        if self.conn.pending_transmit() >= self.write_buffer_limit {
            ready!(poll_write_queue(
                &mut self.stream,
                cx,
                self.conn.transmit_queue()
            ))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Why [`WebSocket::try_send`] did not queue a message.
#[derive(Debug, thiserror::Error)]
pub enum TrySendError {
    /// The write buffer is full; the message is handed back.
    #[error("write buffer full")]
    Full(Message),
    /// The message cannot be sent at all (the connection is closing, ...).
    #[error(transparent)]
    Failed(Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Stream for WebSocket<S> {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        poll_mapped(cx, |cx| this.poll_next_event(cx), into_message)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Sink<Message> for WebSocket<S> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.get_mut().poll_write_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<()> {
        self.get_mut().conn.send(item)?;
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        ready!(poll_write_queue(
            &mut this.stream,
            cx,
            this.conn.transmit_queue()
        ))?;
        Poll::Ready(Ok(()))
    }

    /// Sends a normal close (1000) if none was sent, and flushes; completing the handshake is
    /// left to the receive side.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        if this.conn.state() == duplex_proto::State::Open {
            let _ = this
                .conn
                .close(CloseCode::NORMAL, "", Instant::now().into_std());
        }
        ready!(poll_write_queue(
            &mut this.stream,
            cx,
            this.conn.transmit_queue()
        ))?;
        Poll::Ready(Ok(()))
    }
}
