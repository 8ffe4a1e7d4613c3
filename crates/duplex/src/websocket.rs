//! `WebSocket<S>`: an established connection over any tokio byte stream.

use crate::error::{Error, Result};
use bytes::Buf;
use duplex_proto::{CloseCode, CloseFrame, Config, Connection, Event, Message, Role};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How much read space to make before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Upper bound on how long a closing server drains the peer's remaining input.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// An established WebSocket connection over `S` (a `TcpStream`, a TLS stream, ...).
///
/// Pings are answered and close frames echoed while [`recv`](Self::recv) runs, so keep a
/// receive loop going.
#[derive(Debug)]
pub struct WebSocket<S> {
    stream: S,
    conn: Connection,
    /// An error to report after the events that preceded it.
    pending_error: Option<Error>,
    finished: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose opening handshake is complete. `leftover` holds bytes read past the
    /// handshake (frames the peer sent right after it).
    pub fn from_raw(stream: S, role: Role, config: Config, leftover: &[u8]) -> Self {
        let now = Instant::now().into_std();
        let mut conn = Connection::new(role, config, now);
        let pending_error = conn.receive_data(leftover, now).err().map(Error::Protocol);
        WebSocket {
            stream,
            conn,
            pending_error,
            finished: false,
        }
    }

    /// The protocol state machine (read-only).
    pub fn protocol(&self) -> &Connection {
        &self.conn
    }

    /// The peer's close frame, once received.
    pub fn close_frame(&self) -> Option<&CloseFrame> {
        self.conn.close_received().and_then(|c| c.as_ref())
    }

    /// The next message. `None` once the connection closed cleanly; `Some(Err(_))` once if it
    /// failed, after the close frame was sent and the transport closed (bounded by
    /// `close_timeout`). Answers pings and completes the closing handshake as a side effect.
    ///
    /// Cancel-safety: cancel-safe. A message is only taken from the protocol state when it is
    /// returned; partial reads stay buffered in the connection.
    pub async fn recv(&mut self) -> Option<Result<Message>> {
        loop {
            while let Some(event) = self.conn.poll_event() {
                if let Event::Message(message) = event {
                    return Some(Ok(message));
                }
            }
            if self.finished {
                return self.pending_error.take().map(Err);
            }
            if let Err(e) = self.flush().await {
                self.finished = true;
                return self.transport_error(e);
            }
            if self.conn.should_close_transport() {
                // A failure is reported only after the closing procedure, so that closing the
                // socket with unread input cannot reset the connection under our close frame.
                self.shutdown().await;
                return self.pending_error.take().map(Err);
            }
            if let Err(e) = self.read_once().await {
                if self.finished {
                    return self.transport_error(e);
                }
                self.pending_error.get_or_insert(e);
            }
        }
    }

    /// A transport error ends the connection. After the peer's close frame it is not worth
    /// reporting (the peer said goodbye and did not wait for our answer, e.g. a reset).
    fn transport_error(&mut self, error: Error) -> Option<Result<Message>> {
        if self.conn.close_received().is_some() {
            return self.pending_error.take().map(Err);
        }
        Some(Err(self.pending_error.take().unwrap_or(error)))
    }

    /// Sends a message and flushes it.
    ///
    /// Cancel-safety: not cancel-safe; if cancelled, part of the message may have been written.
    pub async fn send(&mut self, message: impl Into<Message>) -> Result<()> {
        self.conn.send(message.into())?;
        self.flush().await
    }

    /// Starts the closing handshake and waits for it to finish (the peer's close frame and the
    /// end of the transport), up to the configured close timeout.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        self.conn.close(code, reason, Instant::now().into_std())?;
        while let Some(item) = self.recv().await {
            item?;
        }
        Ok(())
    }

    /// Writes everything the protocol has queued.
    async fn flush(&mut self) -> Result<()> {
        let queue = self.conn.transmit_queue();
        while queue.has_remaining() {
            self.stream.write_buf(queue).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads once (or fires a timer) and feeds the protocol.
    async fn read_once(&mut self) -> Result<()> {
        let deadline = self.conn.poll_timeout();
        let input = self.conn.input_buffer();
        input.reserve(READ_CHUNK);
        let read = async {
            match deadline {
                Some(at) => {
                    tokio::time::timeout_at(Instant::from_std(at), self.stream.read_buf(input))
                        .await
                        .ok()
                }
                None => Some(self.stream.read_buf(input).await),
            }
        };
        match read.await {
            None => {
                self.conn.handle_timeout(Instant::now().into_std())?;
                Ok(())
            }
            Some(Ok(0)) => {
                self.conn.receive_eof()?;
                Ok(())
            }
            Some(Ok(_)) => {
                self.conn.handle_input(Instant::now().into_std())?;
                Ok(())
            }
            Some(Err(e)) => {
                self.finished = true;
                Err(e.into())
            }
        }
    }

    /// Closes the transport: half-close, then drain what the peer still sends (bounded), so
    /// the kernel does not answer unread data with a reset that could destroy our close frame.
    async fn shutdown(&mut self) {
        self.finished = true;
        let _ = self.stream.shutdown().await;
        let limit = self.conn.config().close_timeout.min(DRAIN_LIMIT);
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(limit, async {
            while let Ok(n) = self.stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}
