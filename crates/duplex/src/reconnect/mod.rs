//! A client that reconnects: exponential backoff with full jitter, a hook to re-send state
//! after every (re)connection, and a stream of events saying what happened.
//!
//! [`ReconnectingClient::start`] spawns a task that owns the connection. It connects with
//! [`client::connect_tls`](crate::client::connect_tls) (`ws://` and `wss://`; plain
//! [`client::connect`](crate::client::connect), `ws://` only, without the `rustls` feature),
//! runs the on-connect hook, then forwards messages as [`ReconnectEvent::Message`]. When the
//! connection ends or an attempt fails, it reports [`ReconnectEvent::Disconnected`], waits
//! the backoff ([`ReconnectEvent::Reconnecting`]) and tries again, until a close code that
//! means "do not retry", the attempt limit, or [`ReconnectingClient::close`].
//!
//! ```text
//!        start
//!          │
//!          ▼
//!   ┌─► connect ──fails──► Disconnected{error} ──┐
//!   │      │ ok                                  │
//!   │  on_connect hook ──fails──► Disconnected ──┤
//!   │      │ ok                                  │
//!   │  Connected, Message.. ──ends──► Disconnected{code, reason, error}
//!   │                                            │    ├─ code in no_retry ──► GaveUp
//!   │                                            ▼    └─ close() called ───► (end)
//!   └── sleep ◄── Reconnecting{attempt, delay} ◄─┴─ attempts > max ────────► GaveUp
//! ```
//!
//! What this module owns: the retry policy and the task. What it must never do: decide
//! anything about the protocol (that is [`WebSocket`]'s job) or send on its own behalf
//! anything but the hook's messages and the close frame the application asks for.
//!
//! **Sending while disconnected fails** with [`ReconnectSendError::NotConnected`], which hands
//! the message back. Nothing is queued across a reconnection: what a message means often
//! depends on the connection it is sent on (a subscription, a request whose answer would come
//! on the old socket), and only the application knows which messages are still worth
//! sending; state that must survive belongs in the on-connect hook. Messages sent while the
//! hook runs wait for it and then go out on the new connection, after what the hook sent.
//!
//! ```no_run
//! # async fn demo() -> duplex::Result<()> {
//! use duplex::reconnect::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
//! use std::time::Duration;
//!
//! let config = ReconnectConfig::new()
//!     .base(Duration::from_millis(250))
//!     .cap(Duration::from_secs(20))
//!     .max_attempts(50);
//! // Subscriptions live on the connection: send them again after every (re)connection.
//! let mut client = ReconnectingClient::start_with("wss://example.com/feed", config, |ws| {
//!     Box::pin(async move { ws.send(r#"{"subscribe":"prices"}"#).await })
//! })?;
//! let sender = client.sender(); // for other tasks: sender.send("...").await
//! # drop(sender);
//! while let Some(event) = client.recv().await {
//!     match event {
//!         ReconnectEvent::Connected { .. } => println!("connected"),
//!         ReconnectEvent::Message(message) => println!("got {message:?}"),
//!         ReconnectEvent::Disconnected { code, reason, error } => {
//!             println!("disconnected: {code:?} {reason:?} {error:?}")
//!         }
//!         ReconnectEvent::Reconnecting { attempt, delay } => {
//!             println!("attempt {attempt} in {delay:?}")
//!         }
//!         ReconnectEvent::GaveUp => println!("giving up"),
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

mod backoff;

pub use backoff::{Backoff, BackoffConfig, RandomSource, SplitMix64};

use crate::client::{ClientConfig, Target};
use crate::error::{Error, Result};
use crate::websocket::WebSocket;
use duplex_proto::handshake::Negotiated;
use duplex_proto::{CloseCode, Message};
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// The stream a [`ReconnectingClient`] connection runs on: TCP, or TLS over TCP for `wss://`.
#[cfg(feature = "rustls")]
pub type ClientStream = crate::tls::MaybeTlsStream<TcpStream>;
/// The stream a [`ReconnectingClient`] connection runs on (TCP; `wss://` needs the `rustls`
/// feature).
#[cfg(not(feature = "rustls"))]
pub type ClientStream = TcpStream;

/// A boxed future borrowing the connection: what the on-connect hook returns.
pub type HookFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

type Hook = Box<dyn for<'a> FnMut(&'a mut WebSocket<ClientStream>) -> HookFuture<'a> + Send>;

/// What the application hears from a [`ReconnectingClient`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ReconnectEvent {
    /// A connection is open and the on-connect hook has run on it.
    Connected {
        /// What the server agreed to (subprotocol, extensions).
        negotiated: Negotiated,
    },
    /// A message from the server.
    Message(Message),
    /// A connection ended, or an attempt to open one failed (then `code` is `None` and
    /// `error` says why: refused, timed out, an HTTP status instead of `101`...).
    Disconnected {
        /// The server's close code, when it sent a close frame.
        code: Option<CloseCode>,
        /// The server's close reason (empty without a close frame).
        reason: String,
        /// What went wrong; `None` after a clean closing handshake.
        error: Option<Error>,
    },
    /// The next attempt (counted from 1 since the last reset) will start after `delay`.
    Reconnecting {
        /// Which attempt: 1 for the first after a disconnection or after a reset.
        attempt: u32,
        /// How long the client waits before it (drawn from the backoff).
        delay: Duration,
    },
    /// The client stopped for good: the server's close code is in
    /// [`ReconnectConfig::no_retry`], or [`ReconnectConfig::max_attempts`] attempts failed.
    /// The [`Disconnected`](Self::Disconnected) just before says why. No event follows.
    GaveUp,
}

/// Settings of a [`ReconnectingClient`].
#[derive(Debug, Clone)]
pub struct ReconnectConfig {
    /// How each connection is made (headers, subprotocols, TLS, timeouts...).
    pub client: ClientConfig,
    /// The waits between attempts.
    pub backoff: BackoffConfig,
    /// How many reconnection attempts in a row may fail before [`ReconnectEvent::GaveUp`].
    /// The first connection is not counted: with `Some(3)`, a server that is down gets
    /// 1 + 3 attempts. The count is the backoff's: it starts over only after a connection
    /// that stayed open [`BackoffConfig::reset_after`], so a server that accepts and at once
    /// drops every connection also ends in `GaveUp`. `None` (the default): retry forever.
    pub max_attempts: Option<u32>,
    /// Close codes from the server after which the client gives up instead of retrying.
    ///
    /// Defaults, all meaning "the same request will be refused again":
    /// - `1008` policy violation: the server refuses this client (authentication, origin,
    ///   quota); retrying unchanged only adds load.
    /// - `1003` unsupported data: the client sends something the server cannot accept, and
    ///   would send it again after reconnecting.
    /// - `4000..=4099`: the Pusher Channels protocol's "do not reconnect unchanged" range
    ///   (unknown app key 4001, disabled app 4003, over quota 4004, terminated 4009...;
    ///   see docs/pusher-errors.md). 4100–4199 (back off, then reconnect) and 4200–4299
    ///   (reconnect at once) are retried.
    ///
    /// Every other close code, 1000 and 1001 included (a server restart), is retried.
    pub no_retry: Vec<RangeInclusive<u16>>,
    /// Events buffered for the application before the client stops reading from the server
    /// (backpressure). Default 64.
    pub event_capacity: usize,
    /// Sends buffered for the connection task before [`ReconnectSender::send`] waits.
    /// Default 64.
    pub send_capacity: usize,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            client: ClientConfig::default(),
            backoff: BackoffConfig::default(),
            max_attempts: None,
            no_retry: vec![1003..=1003, 1008..=1008, 4000..=4099],
            event_capacity: 64,
            send_capacity: 64,
        }
    }
}

impl ReconnectConfig {
    /// Default settings, to refine with the builder methods below.
    ///
    /// ```
    /// use duplex::client::ClientConfig;
    /// use duplex::reconnect::ReconnectConfig;
    /// use duplex::CloseCode;
    /// use std::time::Duration;
    /// let config = ReconnectConfig::new()
    ///     .client(ClientConfig::new().header("Authorization", "Bearer t0k3n"))
    ///     .base(Duration::from_millis(100))
    ///     .cap(Duration::from_secs(10))
    ///     .reset_after(Duration::from_secs(60))
    ///     .max_attempts(20)
    ///     .no_retry_code(4401);
    /// assert!(config.gives_up_on(CloseCode::POLICY_VIOLATION));
    /// assert!(config.gives_up_on(CloseCode(4001)));
    /// assert!(config.gives_up_on(CloseCode(4401)));
    /// assert!(!config.gives_up_on(CloseCode::GOING_AWAY));
    /// assert!(!config.gives_up_on(CloseCode(4200)));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses these connection settings.
    pub fn client(mut self, client: ClientConfig) -> Self {
        self.client = client;
        self
    }

    /// Sets the backoff's first ceiling ([`BackoffConfig::base`]).
    pub fn base(mut self, base: Duration) -> Self {
        self.backoff.base = base;
        self
    }

    /// Sets the backoff's largest ceiling ([`BackoffConfig::cap`]).
    pub fn cap(mut self, cap: Duration) -> Self {
        self.backoff.cap = cap;
        self
    }

    /// Sets how long a connection must last to reset the backoff
    /// ([`BackoffConfig::reset_after`]).
    pub fn reset_after(mut self, up: Duration) -> Self {
        self.backoff.reset_after = up;
        self
    }

    /// Gives up after this many failed attempts in a row ([`max_attempts`](Self::max_attempts)).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Also gives up on this close code.
    pub fn no_retry_code(mut self, code: u16) -> Self {
        self.no_retry.push(code..=code);
        self
    }

    /// Also gives up on these close codes.
    pub fn no_retry_range(mut self, codes: RangeInclusive<u16>) -> Self {
        self.no_retry.push(codes);
        self
    }

    /// Retries whatever the close code (clears [`no_retry`](Self::no_retry)).
    pub fn retry_every_close_code(mut self) -> Self {
        self.no_retry.clear();
        self
    }

    /// Whether the server closing with `code` ends the client.
    pub fn gives_up_on(&self, code: CloseCode) -> bool {
        self.no_retry.iter().any(|range| range.contains(&code.0))
    }
}

/// Why [`ReconnectSender::send`] did not send a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconnectSendError {
    /// No connection is open (the client is waiting or connecting); the message is handed
    /// back, unsent. Nothing is queued across reconnections (see the module docs).
    #[error("not connected: the client is reconnecting; the message was not sent")]
    NotConnected(Message),
    /// The client was closed, gave up, or was dropped: the message was not sent. It is
    /// handed back unless the client stopped after taking it.
    #[error("the reconnecting client has stopped; the message was not sent")]
    Stopped(Option<Message>),
    /// Writing on the open connection failed; the connection is lost and will be reported as
    /// [`ReconnectEvent::Disconnected`]. The message may have been partly sent.
    #[error("sending failed: {0}")]
    Connection(#[source] Error),
}

enum Command {
    Send(Message, oneshot::Sender<Result<(), ReconnectSendError>>),
    Close(CloseCode, String),
}

/// A WebSocket client that reconnects: see the [module docs](self).
///
/// Dropping it stops the connection task at once (without a closing handshake); use
/// [`close`](Self::close) to close cleanly.
#[derive(Debug)]
pub struct ReconnectingClient {
    events: mpsc::Receiver<ReconnectEvent>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

/// Sends on a [`ReconnectingClient`]'s current connection, from any task.
#[derive(Debug, Clone)]
pub struct ReconnectSender {
    commands: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Send(message, _) => f.debug_tuple("Send").field(message).finish(),
            Command::Close(code, reason) => {
                f.debug_tuple("Close").field(code).field(reason).finish()
            }
        }
    }
}

impl ReconnectingClient {
    /// Starts connecting to `url` (`ws://`, or `wss://` with the `rustls` feature) in a new
    /// task, and returns at once: watch [`recv`](Self::recv) for
    /// [`ReconnectEvent::Connected`]. An unusable URL is an error here rather than a reason
    /// to retry. Must be called within a tokio runtime.
    pub fn start(url: &str, config: ReconnectConfig) -> Result<Self> {
        Self::spawn(url, config, None)
    }

    /// As [`start`](Self::start), running `on_connect` on every new connection before it is
    /// reported as [`ReconnectEvent::Connected`] and before any [`ReconnectSender::send`]
    /// goes out on it: the place to send subscriptions, authentication, or a resume token.
    ///
    /// The hook may also receive (to wait for an acknowledgement); what it reads is not
    /// reported as events. If it fails, the connection is dropped and reported as
    /// [`ReconnectEvent::Disconnected`] with its error, and the client retries.
    ///
    /// ```no_run
    /// # async fn demo() -> duplex::Result<()> {
    /// use duplex::reconnect::{ReconnectConfig, ReconnectingClient};
    /// let topics = vec!["a".to_string(), "b".to_string()];
    /// let client = ReconnectingClient::start_with(
    ///     "ws://127.0.0.1:9001/",
    ///     ReconnectConfig::default(),
    ///     move |ws| {
    ///         let topics = topics.clone();
    ///         Box::pin(async move {
    ///             for topic in topics {
    ///                 ws.send(format!("subscribe {topic}")).await?;
    ///             }
    ///             Ok(())
    ///         })
    ///     },
    /// )?;
    /// # drop(client); Ok(()) }
    /// ```
    pub fn start_with<F>(url: &str, config: ReconnectConfig, on_connect: F) -> Result<Self>
    where
        F: for<'a> FnMut(&'a mut WebSocket<ClientStream>) -> HookFuture<'a> + Send + 'static,
    {
        Self::spawn(url, config, Some(Box::new(on_connect)))
    }

    fn spawn(url: &str, config: ReconnectConfig, hook: Option<Hook>) -> Result<Self> {
        Target::parse(url)?;
        #[cfg(not(feature = "rustls"))]
        if url
            .trim_start()
            .get(..4)
            .is_some_and(|s| s.eq_ignore_ascii_case("wss:"))
        {
            return Err(Error::Url("wss:// needs the \"rustls\" feature".into()));
        }
        let (event_tx, events) = mpsc::channel(config.event_capacity.max(1));
        let (commands, command_rx) = mpsc::channel(config.send_capacity.max(1));
        let backoff = Backoff::new(config.backoff.clone());
        let task = Task {
            url: url.to_owned(),
            config,
            hook,
            backoff,
            events: event_tx,
            commands: command_rx,
        };
        let task = tokio::spawn(task.run());
        Ok(ReconnectingClient {
            events,
            commands,
            task,
        })
    }

    /// The next event; `None` once the client stopped (after [`ReconnectEvent::GaveUp`], or
    /// after [`close`](Self::close)).
    ///
    /// While events are not taken, at most [`ReconnectConfig::event_capacity`] wait and the
    /// server is not read from (backpressure), so keep a receive loop going.
    ///
    /// Cancel-safety: cancel-safe.
    pub async fn recv(&mut self) -> Option<ReconnectEvent> {
        self.events.recv().await
    }

    /// A handle to send with, from this task or others.
    pub fn sender(&self) -> ReconnectSender {
        ReconnectSender {
            commands: self.commands.clone(),
        }
    }

    /// Sends on the current connection (see [`ReconnectSender::send`]).
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), ReconnectSendError> {
        self.sender().send(message).await
    }

    /// Stops reconnecting and closes: when connected, runs the closing handshake with
    /// `code` and `reason` (bounded by the close timeout). Events still arriving are
    /// discarded. Returns once the connection task has ended.
    ///
    /// Cancel-safety: not cancel-safe: the close may have been requested and not finished.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<()> {
        // Drain events while asking, so a task blocked on a full event queue can take it.
        let request = self.commands.send(Command::Close(code, reason.to_owned()));
        tokio::pin!(request);
        let mut requested = false;
        loop {
            tokio::select! {
                // An error means the task ended already (gave up): nothing to close.
                _ = &mut request, if !requested => requested = true,
                event = self.events.recv() => if event.is_none() {
                    return Ok(());
                },
            }
        }
    }
}

impl Drop for ReconnectingClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl futures_core::Stream for ReconnectingClient {
    type Item = ReconnectEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl ReconnectSender {
    /// Sends a message on the current connection and waits until it is written.
    ///
    /// Fails at once with [`ReconnectSendError::NotConnected`] while no connection is open;
    /// waits for the on-connect hook when it is running.
    ///
    /// Cancel-safety: not cancel-safe: once handed to the connection task, the message is
    /// sent even if this future is dropped.
    pub async fn send(&self, message: impl Into<Message>) -> Result<(), ReconnectSendError> {
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(command)) = self
            .commands
            .send(Command::Send(message.into(), reply))
            .await
        {
            let Command::Send(message, _) = command else {
                unreachable!("a Send command was sent")
            };
            return Err(ReconnectSendError::Stopped(Some(message)));
        }
        // A dropped reply means the task stopped before answering; the message went with it.
        answer
            .await
            .unwrap_or(Err(ReconnectSendError::Stopped(None)))
    }
}

/// How one connection ended.
enum Ended {
    /// Retry (or give up, per the policy).
    Lost,
    /// The application closed, or dropped the client: stop without retrying.
    Stop,
}

struct Task {
    url: String,
    config: ReconnectConfig,
    hook: Option<Hook>,
    backoff: Backoff,
    events: mpsc::Sender<ReconnectEvent>,
    commands: mpsc::Receiver<Command>,
}

impl Task {
    async fn run(mut self) {
        loop {
            let ended = match self.connect().await {
                Some(Ok((ws, negotiated))) => self.session(ws, negotiated).await,
                Some(Err(error)) => {
                    tracing::debug!(url = %self.url, %error, "reconnect: attempt failed");
                    self.emit_disconnected(None, String::new(), Some(error))
                        .await
                }
                None => Ended::Stop,
            };
            if let Ended::Stop = ended {
                return;
            }
            if self
                .config
                .max_attempts
                .is_some_and(|max| self.backoff.attempt() >= max)
            {
                tracing::debug!(url = %self.url, "reconnect: giving up after max attempts");
                let _ = self.events.send(ReconnectEvent::GaveUp).await;
                return;
            }
            let delay = self.backoff.next_delay();
            let attempt = self.backoff.attempt();
            tracing::debug!(url = %self.url, attempt, ?delay, "reconnect: waiting");
            if self
                .events
                .send(ReconnectEvent::Reconnecting { attempt, delay })
                .await
                .is_err()
            {
                return;
            }
            if !self.idle(tokio::time::sleep(delay)).await {
                return;
            }
        }
    }

    /// One connection attempt, answering sends with `NotConnected` meanwhile. `None`: stop.
    async fn connect(&mut self) -> Option<Result<(WebSocket<ClientStream>, Negotiated)>> {
        let url = self.url.clone();
        let client = self.config.client.clone();
        let mut result = None;
        let attempt = async {
            #[cfg(feature = "rustls")]
            let connected = crate::client::connect_tls(&url, &client).await;
            #[cfg(not(feature = "rustls"))]
            let connected = crate::client::connect(&url, &client).await;
            result = Some(connected);
        };
        if self.idle(attempt).await {
            result
        } else {
            None
        }
    }

    /// Runs `work` while no connection is open, refusing sends meanwhile. `false` if the
    /// application asked to stop (or went away) first.
    async fn idle(&mut self, work: impl Future<Output = ()>) -> bool {
        tokio::pin!(work);
        loop {
            tokio::select! {
                () = &mut work => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Send(message, reply)) => {
                        let _ = reply.send(Err(ReconnectSendError::NotConnected(message)));
                    }
                    Some(Command::Close(..)) | None => return false,
                },
            }
        }
    }

    /// Runs the hook, then forwards messages and sends until the connection ends.
    async fn session(&mut self, mut ws: WebSocket<ClientStream>, negotiated: Negotiated) -> Ended {
        let opened = Instant::now();
        if let Some(hook) = &mut self.hook {
            if let Err(error) = hook(&mut ws).await {
                tracing::debug!(url = %self.url, %error, "reconnect: on-connect hook failed");
                if ws.close_frame().is_some() {
                    // The server closed (that is likely why the hook failed): finish the
                    // closing handshake, bounded by the close timeout, and honour its code.
                    while let Some(Ok(_)) = ws.recv().await {}
                }
                return self.ended(&ws, opened, Some(error), false).await;
            }
        }
        if self
            .events
            .send(ReconnectEvent::Connected { negotiated })
            .await
            .is_err()
        {
            return Ended::Stop;
        }
        let mut closing = false;
        let error = loop {
            tokio::select! {
                received = ws.recv() => match received {
                    Some(Ok(message)) => {
                        if self.events.send(ReconnectEvent::Message(message)).await.is_err() {
                            return Ended::Stop;
                        }
                    }
                    Some(Err(error)) => break Some(error),
                    None => break None,
                },
                command = self.commands.recv() => match command {
                    Some(Command::Send(message, reply)) => {
                        let sent = ws.send(message).await;
                        let _ = reply.send(sent.map_err(ReconnectSendError::Connection));
                    }
                    Some(Command::Close(code, reason)) => {
                        closing = true;
                        // Completes the handshake; a failure is reported below.
                        break ws.close(code, &reason).await.err();
                    }
                    None => return Ended::Stop,
                },
            }
        };
        self.ended(&ws, opened, error, closing).await
    }

    /// Reports the end of a connection opened at `opened` and decides what follows: stop
    /// when the application closed (`closing`), give up on a no-retry close code, else retry.
    async fn ended(
        &mut self,
        ws: &WebSocket<ClientStream>,
        opened: Instant,
        error: Option<Error>,
        closing: bool,
    ) -> Ended {
        self.backoff.connection_lasted(opened.elapsed());
        let (code, reason) = match ws.close_frame() {
            Some(frame) => (Some(frame.code), frame.reason.as_str().to_owned()),
            None => (None, String::new()),
        };
        tracing::debug!(url = %self.url, ?code, %reason, ?error, "reconnect: disconnected");
        let gives_up = code.is_some_and(|code| self.config.gives_up_on(code));
        let ended = self.emit_disconnected(code, reason, error).await;
        if closing {
            return Ended::Stop;
        }
        if gives_up {
            let _ = self.events.send(ReconnectEvent::GaveUp).await;
            return Ended::Stop;
        }
        ended
    }

    async fn emit_disconnected(
        &mut self,
        code: Option<CloseCode>,
        reason: String,
        error: Option<Error>,
    ) -> Ended {
        let event = ReconnectEvent::Disconnected {
            code,
            reason,
            error,
        };
        match self.events.send(event).await {
            Ok(()) => Ended::Lost,
            Err(_) => Ended::Stop,
        }
    }
}
