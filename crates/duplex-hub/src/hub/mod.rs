//! The per-node core: connections, subscriptions, presence, client events, fan-out.
//!
//! Driven by three inputs, each from the connection's own task:
//! [`Hub::connect`] (an upgrade on `/app/{key}`), [`Hub::handle_client_message`] (every text
//! frame) and [`Hub::disconnect`] (the socket is gone). Its one output per connection is the
//! [`OutboundReceiver`] in the [`ConnectionHandle`]: [`Outbound::Text`] items to frame and send,
//! and at most one [`Outbound::Close`]. Replies, errors and published events all arrive there.
//!
//! ```text
//!  client frame ──► handle_client_message ──► protocol::parse ──► subscribe / signin / client event
//!                                                                   │ auth, limits, presence
//!                                                                   ▼
//!                                         Broker (counts, presence, users, cache, publish)
//!                                                                   │ NodeSink::deliver
//!                                                                   ▼
//!  OutboundReceiver ◄── bounded queue ◄── same Bytes per local subscriber (serialized once)
//! ```
//!
//! **Fan-out.** An event is serialized once per channel; every local subscriber gets a clone of
//! the same [`Bytes`] through `try_send` on its bounded queue. A full queue never blocks the
//! publisher: that subscriber is marked for closing with 4100 (over capacity: back off and
//! reconnect), which its receiver yields ahead of anything queued.
//!
//! **Client events** (`client-*`) must be enabled for the app, go only to private and presence
//! channels the sender is subscribed to (never `private-encrypted-`), are not echoed to the
//! sender, carry `user_id` on presence channels, and are rate limited per connection by a token
//! bucket (`client_event_rate` per second, burst of the same size). Over the limit the event is
//! dropped and the sender gets `pusher:error` 4301; the connection stays open.
//!
//! **Refusals and drain.** [`Hub::connect_with_protocol`] checks the `protocol` parameter, the
//! app, its quota and the drain flag; a refusal comes back as a [`Refused`] holding the
//! `pusher:error` and the close to send, so front ends only forward them. [`Hub::drain`]
//! closes every local connection with 4200 and refuses new ones with 4200.
//!
//! **Refused subscriptions** get a `pusher:error` with code `null` (as Pusher sends) and a
//! `pusher:subscription_error` on the channel (which pusher-js emits on the channel object).
//!
//! **Not here yet:** message recovery after reconnect (Pusher has none either), watchlist
//! events, "authorized connections" (closing connections that do not sign in in time).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::auth;
use crate::broker::{Broker, BrokerError, ClusterChange, Control, NodeId, NodeSink};
use crate::channel::{self, ChannelKind};
use crate::config::{App, ConfigError, HubConfig};
use crate::metrics::Metrics;
use crate::protocol::{self, codes, ClientEvent, ClientMessage, ServerMessage, Signin, Subscribe};
use crate::socket_id::SocketId;
use crate::webhooks::{AppWebhookEvent, WebhookEvent};

/// Close reason sent with 4200 when the node drains.
pub const DRAIN_REASON: &str = "Server shutting down, reconnect";

/// One item for a connection's writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A complete JSON text message, serialized once and shared between recipients.
    Text(Bytes),
    /// Close the WebSocket with this code and reason, then call [`Hub::disconnect`].
    Close {
        /// 4000–4299 close code.
        code: u16,
        /// Close reason (kept under the 123-byte close-frame limit).
        reason: String,
    },
}

#[derive(Default)]
struct CloseSignal {
    slot: Mutex<Option<(u16, String)>>,
    /// Stays set after the receiver took the close.
    requested: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl CloseSignal {
    /// Requests a close; the first request wins. Returns whether this one did.
    fn close(&self, code: u16, reason: &str) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if self.requested.swap(true, Relaxed) {
            return false;
        }
        let mut reason = reason.to_owned();
        truncate_utf8(&mut reason, 123);
        *slot = Some((code, reason));
        drop(slot);
        self.notify.notify_one();
        true
    }

    fn take(&self) -> Option<(u16, String)> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn is_set(&self) -> bool {
        self.requested.load(Relaxed)
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The receiving end of a connection's outbound queue. A requested close is yielded before
/// anything still queued; after it, `recv` returns `None`.
pub struct OutboundReceiver {
    rx: mpsc::Receiver<Outbound>,
    close: Arc<CloseSignal>,
    done: bool,
}

impl OutboundReceiver {
    /// The next item, waiting for one; `None` once closed or disconnected.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if self.done {
                return None;
            }
            if let Some((code, reason)) = self.close.take() {
                self.done = true;
                return Some(Outbound::Close { code, reason });
            }
            tokio::select! {
                biased;
                () = self.close.notify.notified() => continue,
                item = self.rx.recv() => {
                    if item.is_none() {
                        self.done = true;
                    }
                    return item;
                }
            }
        }
    }

    /// The next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        if self.done {
            return None;
        }
        if let Some((code, reason)) = self.close.take() {
            self.done = true;
            return Some(Outbound::Close { code, reason });
        }
        self.rx.try_recv().ok()
    }
}

/// What [`Hub::connect`] hands the connection task.
pub struct ConnectionHandle {
    /// The new socket id (already sent in `pusher:connection_established`).
    pub socket_id: SocketId,
    /// The app's id.
    pub app_id: Arc<str>,
    /// The `activity_timeout` announced to the client.
    pub activity_timeout: Duration,
    /// Everything to send to this client.
    pub outbound: OutboundReceiver,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The `protocol` query parameter is missing (4008).
    #[error("No protocol version supplied")]
    NoProtocolVersion,
    /// The `protocol` query parameter is not a number (4006).
    #[error("Invalid version string format")]
    InvalidVersionFormat,
    /// The protocol version is not one this server speaks (4007).
    #[error("Unsupported protocol version")]
    UnsupportedProtocol,
    /// No app has this key (4001).
    #[error("App key {0} does not exist")]
    AppNotFound(String),
    /// The app is disabled (4003).
    #[error("Application disabled")]
    AppDisabled,
    /// The app is at `max_connections` (4004).
    #[error("Application is over connection quota")]
    OverConnectionQuota,
    /// A WebSocket upgrade on a path other than `/app/{key}` (4005).
    #[error("Path not found: WebSocket connections go to /app/{{key}}")]
    PathNotFound,
    /// The node is draining (4200: reconnect at once, to another node).
    #[error("Server shutting down, reconnect")]
    Draining,
    /// The broker failed (4100: try again later).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ConnectError {
    /// The close code to send.
    pub fn close_code(&self) -> u16 {
        match self {
            ConnectError::NoProtocolVersion => codes::NO_PROTOCOL_VERSION,
            ConnectError::InvalidVersionFormat => codes::INVALID_VERSION_FORMAT,
            ConnectError::UnsupportedProtocol => codes::UNSUPPORTED_PROTOCOL,
            ConnectError::AppNotFound(_) => codes::APP_NOT_FOUND,
            ConnectError::AppDisabled => codes::APP_DISABLED,
            ConnectError::OverConnectionQuota => codes::OVER_CONNECTION_QUOTA,
            ConnectError::PathNotFound => codes::PATH_NOT_FOUND,
            ConnectError::Draining => codes::RECONNECT_IMMEDIATELY,
            ConnectError::Broker(_) => codes::OVER_CAPACITY,
        }
    }

    fn from_protocol_code(code: u16) -> ConnectError {
        match code {
            codes::NO_PROTOCOL_VERSION => ConnectError::NoProtocolVersion,
            codes::INVALID_VERSION_FORMAT => ConnectError::InvalidVersionFormat,
            _ => ConnectError::UnsupportedProtocol,
        }
    }
}

/// A refused connection: why, and exactly what to send before dropping the socket.
///
/// The hub builds the messages so every front end answers the same way: a `pusher:error`
/// `{code, message}` (which pusher-js reads during its handshake) followed by a close with the
/// same code (which it reads once connected, and which tells other clients the range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection refused ({}): {error}", error.close_code())]
pub struct Refused {
    /// The reason.
    pub error: ConnectError,
    /// `[Outbound::Text(pusher:error), Outbound::Close]`: send in order, then drop the socket.
    pub outbound: Vec<Outbound>,
}

impl From<ConnectError> for Refused {
    fn from(error: ConnectError) -> Refused {
        Refused::new(error)
    }
}

impl Refused {
    /// The answer to send for `error`; front ends use it for refusals decided before the hub
    /// is asked (e.g. [`ConnectError::PathNotFound`]).
    pub fn new(error: ConnectError) -> Refused {
        let code = error.close_code();
        let mut reason = error.to_string();
        truncate_utf8(&mut reason, 123);
        let text = ServerMessage::Error {
            code: Some(code),
            message: &reason,
        }
        .to_bytes();
        Refused {
            error,
            outbound: vec![Outbound::Text(text), Outbound::Close { code, reason }],
        }
    }

    /// The close code to send.
    pub fn close_code(&self) -> u16 {
        self.error.close_code()
    }
}

/// Failures of hub calls that are not the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The socket is not connected (already disconnected or never was).
    #[error("unknown socket {0}")]
    UnknownSocket(SocketId),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

#[derive(Clone)]
struct Subscriber {
    tx: mpsc::Sender<Outbound>,
    close: Arc<CloseSignal>,
}

/// Per-connection token bucket for client events.
#[derive(Debug, Clone, Default)]
struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn try_take(&mut self, now: Instant, rate: u32) -> bool {
        let cap = f64::from(rate.max(1));
        self.tokens = match self.last {
            None => cap,
            Some(last) => {
                let refill = now.saturating_duration_since(last).as_secs_f64() * cap;
                (self.tokens + refill).min(cap)
            }
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Conn {
    app: Arc<App>,
    sub: Subscriber,
    /// Channel → presence user id (for presence channels).
    channels: HashMap<String, Option<String>>,
    user_id: Option<String>,
    bucket: TokenBucket,
}

/// Events for a channel that reach a new subscriber before its `subscription_succeeded` was
/// queued: they wait here, so the confirmation (and the member list it carries, read after
/// the subscriber began to receive) always comes first. A `member_added` published meanwhile
/// then adds to that list instead of being wiped by it.
#[derive(Default)]
struct Held {
    items: Vec<Bytes>,
    released: bool,
}

/// One local subscriber of one channel.
#[derive(Clone)]
struct ChannelSub {
    sub: Subscriber,
    /// Until the confirmation is queued (then `None`, so deliveries take no lock).
    held: Option<Arc<Mutex<Held>>>,
}

type ChannelMap = HashMap<String, HashMap<String, HashMap<SocketId, ChannelSub>>>;

fn lock_held(h: &Mutex<Held>) -> MutexGuard<'_, Held> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// This node's connections and local channel membership; the broker's sink.
struct Local {
    conns: Mutex<HashMap<SocketId, Conn>>,
    /// app id → channel → local subscribers.
    channels: RwLock<ChannelMap>,
    metrics: Arc<Metrics>,
    webhook_tx: mpsc::Sender<AppWebhookEvent>,
    /// Ids of the apps that have webhooks.
    webhook_apps: std::collections::HashSet<String>,
}

impl Local {
    fn conns(&self) -> MutexGuard<'_, HashMap<SocketId, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a webhook event for `app_id` (dropped and counted when the queue is full).
    fn webhook(&self, app_id: &str, event: WebhookEvent) {
        if !self.webhook_apps.contains(app_id) {
            return;
        }
        let item = AppWebhookEvent {
            app_id: app_id.into(),
            event,
        };
        if self.webhook_tx.try_send(item).is_err() {
            self.metrics.webhooks_dropped_total.fetch_add(1, Relaxed);
        }
    }

    /// Queues `payload` for one subscriber; a full queue closes it as a slow consumer.
    fn send(&self, sub: &Subscriber, payload: Bytes) {
        let len = payload.len();
        match sub.tx.try_send(Outbound::Text(payload)) {
            Ok(()) => self.metrics.message_out(len),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if sub
                    .close
                    .close(codes::OVER_CAPACITY, "Slow consumer: outbound queue full")
                {
                    self.metrics.slow_consumers_total.fetch_add(1, Relaxed);
                    tracing::warn!("closing slow consumer: outbound queue full");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl NodeSink for Local {
    fn deliver(&self, app_id: &str, channel: &str, payload: &Bytes, except: Option<&SocketId>) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let Some(subs) = channels.get(app_id).and_then(|c| c.get(channel)) else {
            return;
        };
        for (socket, cs) in subs {
            if Some(socket) == except {
                continue;
            }
            match &cs.held {
                None => self.send(&cs.sub, payload.clone()),
                Some(held) => {
                    let mut h = lock_held(held);
                    if h.released {
                        drop(h);
                        self.send(&cs.sub, payload.clone());
                    } else if h.items.len() < cs.sub.tx.max_capacity() {
                        h.items.push(payload.clone());
                    } else {
                        drop(h);
                        if cs
                            .sub
                            .close
                            .close(codes::OVER_CAPACITY, "Slow consumer: outbound queue full")
                        {
                            self.metrics.slow_consumers_total.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }
    }

    fn cluster_change(&self, app_id: &str, change: &ClusterChange) {
        let event = match change.clone() {
            ClusterChange::ChannelOccupied { channel } => WebhookEvent::ChannelOccupied { channel },
            ClusterChange::ChannelVacated { channel } => WebhookEvent::ChannelVacated { channel },
            ClusterChange::MemberAdded { channel, user_id } => {
                WebhookEvent::MemberAdded { channel, user_id }
            }
            ClusterChange::MemberRemoved { channel, user_id } => {
                WebhookEvent::MemberRemoved { channel, user_id }
            }
        };
        self.webhook(app_id, event);
    }

    fn control(&self, app_id: &str, control: &Control) {
        match control {
            Control::CloseSockets {
                sockets,
                code,
                reason,
            } => {
                let conns = self.conns();
                for s in sockets {
                    if let Some(conn) = conns.get(s).filter(|c| *c.app.id == *app_id) {
                        conn.sub.close.close(*code, reason);
                    }
                }
            }
        }
    }
}

struct Inner {
    config: HubConfig,
    apps_by_key: HashMap<String, Arc<App>>,
    apps_by_id: HashMap<String, Arc<App>>,
    broker: Arc<dyn Broker>,
    node: NodeId,
    local: Arc<Local>,
    webhook_rx: Mutex<Option<mpsc::Receiver<AppWebhookEvent>>>,
    metrics: Arc<Metrics>,
    /// Set by [`Hub::drain`]: new connections are refused with 4200.
    draining: std::sync::atomic::AtomicBool,
}

/// The hub of one node. Cheap to clone (shared).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// Why a `pusher:subscribe` was refused, in the shape pusher-js uses for its own
/// subscription errors (`{type, error, status}`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubscribeRefusal {
    kind: &'static str,
    status: u16,
    message: String,
}

impl SubscribeRefusal {
    /// Missing or wrong signature, or a server-to-user channel of another user: 401.
    fn auth(message: String) -> Self {
        SubscribeRefusal {
            kind: "AuthError",
            status: 401,
            message,
        }
    }

    /// A bad channel name or `channel_data`: 400.
    fn invalid(message: String) -> Self {
        SubscribeRefusal {
            kind: "SubscriptionError",
            status: 400,
            message,
        }
    }

    /// A limit (channels per connection, presence members): 403.
    fn limit(message: String) -> Self {
        SubscribeRefusal {
            kind: "SubscriptionError",
            status: 403,
            message,
        }
    }
}

/// Result of one client-facing check: either go on, or an error to send.
type Check<T> = Result<T, (Option<u16>, String)>;

impl Hub {
    /// A hub serving `config`'s apps, sharing state through `broker`. Validates the config.
    pub fn new(config: HubConfig, broker: Arc<dyn Broker>) -> Result<Hub, ConfigError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let (webhook_tx, webhook_rx) = mpsc::channel(config.webhook_queue);
        let local = Arc::new(Local {
            conns: Mutex::new(HashMap::new()),
            channels: RwLock::new(HashMap::new()),
            metrics: metrics.clone(),
            webhook_tx,
            webhook_apps: config
                .apps
                .iter()
                .filter(|a| !a.webhooks.is_empty())
                .map(|a| a.id.clone())
                .collect(),
        });
        let sink: Weak<dyn NodeSink> = Arc::downgrade(&local) as Weak<dyn NodeSink>;
        let node = broker.attach(sink);
        let apps: Vec<Arc<App>> = config.apps.iter().cloned().map(Arc::new).collect();
        Ok(Hub {
            inner: Arc::new(Inner {
                apps_by_key: apps.iter().map(|a| (a.key.clone(), a.clone())).collect(),
                apps_by_id: apps.iter().map(|a| (a.id.clone(), a.clone())).collect(),
                config,
                broker,
                node,
                local,
                webhook_rx: Mutex::new(Some(webhook_rx)),
                metrics,
                draining: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The app with this id.
    pub fn app_by_id(&self, id: &str) -> Option<Arc<App>> {
        self.inner.apps_by_id.get(id).cloned()
    }

    /// The app with this key.
    pub fn app_by_key(&self, key: &str) -> Option<Arc<App>> {
        self.inner.apps_by_key.get(key).cloned()
    }

    /// The webhook queue's receiving end, for a [`crate::webhooks::WebhookDispatcher`]; `None`
    /// after the first call.
    pub fn take_webhook_receiver(&self) -> Option<mpsc::Receiver<AppWebhookEvent>> {
        self.inner
            .webhook_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Number of connections on this node.
    pub fn local_connections(&self) -> usize {
        self.inner.local.conns().len()
    }

    /// Accepts a connection for `app_key` speaking protocol 7; see
    /// [`connect_with_protocol`](Self::connect_with_protocol).
    pub async fn connect(&self, app_key: &str) -> Result<ConnectionHandle, Refused> {
        self.connect_with_protocol(app_key, Some("7")).await
    }

    /// Accepts a connection for `app_key` whose URL carried `protocol` (the raw `protocol`
    /// query value, `None` when absent): checks the version, the app, its quota and whether
    /// the node is draining, assigns a socket id and queues `pusher:connection_established`.
    /// On refusal the [`Refused`] holds the `pusher:error` and close to send.
    pub async fn connect_with_protocol(
        &self,
        app_key: &str,
        protocol: Option<&str>,
    ) -> Result<ConnectionHandle, Refused> {
        self.try_connect(app_key, protocol)
            .await
            .map_err(|e| self.refuse(e))
    }

    /// Refuses a connection the front end turned down before asking the hub (e.g.
    /// [`ConnectError::PathNotFound`]): counted like any refusal, with the messages to send.
    pub fn refuse(&self, error: ConnectError) -> Refused {
        self.inner
            .metrics
            .connections_refused_total
            .fetch_add(1, Relaxed);
        tracing::debug!(code = error.close_code(), "connection refused: {error}");
        Refused::new(error)
    }

    async fn try_connect(
        &self,
        app_key: &str,
        protocol: Option<&str>,
    ) -> Result<ConnectionHandle, ConnectError> {
        protocol::check_protocol_param(protocol).map_err(ConnectError::from_protocol_code)?;
        if self.is_draining() {
            return Err(ConnectError::Draining);
        }
        let app = self
            .app_by_key(app_key)
            .ok_or_else(|| ConnectError::AppNotFound(app_key.chars().take(64).collect()))?;
        if !app.enabled {
            return Err(ConnectError::AppDisabled);
        }
        let broker = &self.inner.broker;
        let count = broker.add_connection(&app.id).await?;
        if app.max_connections > 0 && count > app.max_connections {
            broker.remove_connection(&app.id).await?;
            return Err(ConnectError::OverConnectionQuota);
        }
        let socket_id = SocketId::generate();
        let (tx, rx) = mpsc::channel(self.inner.config.outbound_queue);
        let sub = Subscriber {
            tx,
            close: Arc::new(CloseSignal::default()),
        };
        let activity_timeout = self.inner.config.activity_timeout;
        self.inner.local.send(
            &sub,
            ServerMessage::ConnectionEstablished {
                socket_id: socket_id.as_str(),
                activity_timeout,
            }
            .to_bytes(),
        );
        let outbound = OutboundReceiver {
            rx,
            close: sub.close.clone(),
            done: false,
        };
        self.inner.local.conns().insert(
            socket_id.clone(),
            Conn {
                app: app.clone(),
                sub,
                channels: HashMap::new(),
                user_id: None,
                bucket: TokenBucket::default(),
            },
        );
        if self.is_draining() {
            // A drain started while this connection was being set up: it missed the sweep.
            self.close_socket(&socket_id, codes::RECONNECT_IMMEDIATELY, DRAIN_REASON);
        }
        let m = &self.inner.metrics;
        m.connections_total.fetch_add(1, Relaxed);
        m.connections_current.fetch_add(1, Relaxed);
        tracing::debug!(socket = %socket_id, app = %app.id, "connected");
        Ok(ConnectionHandle {
            socket_id,
            app_id: app.id.as_str().into(),
            activity_timeout: Duration::from_secs(activity_timeout),
            outbound,
        })
    }

    /// Handles one text frame from `socket`, at time `now` (used by the client event rate
    /// limit). Replies and errors go to the socket's outbound queue; `Err` only for an unknown
    /// socket or a broker failure.
    pub async fn handle_client_message(
        &self,
        socket: &SocketId,
        text: &str,
        now: Instant,
    ) -> Result<(), HubError> {
        self.inner.metrics.message_in(text.len());
        let (app, sub) = self.conn_basics(socket)?;
        let msg = match protocol::parse_client_message(text) {
            Ok(m) => m,
            Err(e) => {
                self.send_error(&sub, None, &e.to_string());
                return Ok(());
            }
        };
        match msg {
            ClientMessage::Ping => {
                self.inner.local.send(&sub, ServerMessage::Pong.to_bytes());
                Ok(())
            }
            ClientMessage::Pong => Ok(()),
            ClientMessage::Subscribe(s) => self.subscribe(socket, &app, &sub, s).await,
            ClientMessage::Unsubscribe { channel } => self.unsubscribe(socket, &channel).await,
            ClientMessage::Signin(s) => self.signin(socket, &app, &sub, s).await,
            ClientMessage::ClientEvent(e) => self.client_event(socket, &app, &sub, e, now).await,
        }
    }

    /// Forgets `socket`: leaves its channels (presence `member_removed` only when the user's
    /// last socket leaves), its user association and its connection count. Idempotent.
    pub async fn disconnect(&self, socket: &SocketId) -> Result<(), HubError> {
        let Some(conn) = self.inner.local.conns().remove(socket) else {
            return Ok(());
        };
        let broker = &self.inner.broker;
        if self.is_draining() && broker.hands_over_on_drain() {
            // The cluster keeps this node's share until its lease expires: clients reconnecting
            // to other nodes meanwhile cause no member_removed/added or vacated/occupied pair.
            for channel in conn.channels.keys() {
                self.unroute(socket, &conn.app, channel).await;
            }
            self.inner.metrics.connections_current.fetch_sub(1, Relaxed);
            return Ok(());
        }
        let mut result = Ok(());
        for (channel, presence_user) in &conn.channels {
            if let Err(e) = self
                .leave_channel(socket, &conn.app, channel, presence_user.is_some())
                .await
            {
                result = Err(e);
            }
        }
        if let Some(user) = &conn.user_id {
            broker
                .user_remove_socket(&conn.app.id, user, socket)
                .await?;
        }
        broker.remove_connection(&conn.app.id).await?;
        self.inner.metrics.connections_current.fetch_sub(1, Relaxed);
        tracing::debug!(%socket, "disconnected");
        result
    }

    /// Publishes an event (from the REST API) on `channel`: serialized once, cached for cache
    /// channels, fanned out through the broker except to `except`.
    pub async fn publish(
        &self,
        app: &App,
        channel: &str,
        event: &str,
        data: &str,
        except: Option<&SocketId>,
    ) -> Result<(), HubError> {
        let payload = ServerMessage::Event {
            event,
            channel,
            data: Some(data),
            user_id: None,
        }
        .to_bytes();
        let broker = &self.inner.broker;
        if channel::is_cache(channel) {
            broker
                .cache_set(
                    &app.id,
                    channel,
                    payload.clone(),
                    self.inner.config.cache_ttl(),
                )
                .await?;
        }
        let start = Instant::now();
        self.publish_payload(app, channel, payload, except.cloned())
            .await?;
        let m = &self.inner.metrics;
        m.delivery_latency.observe(start.elapsed());
        m.events_published_total.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Publishes a serialized event: appended to the channel's history first when the app
    /// keeps one for it (then the event carries its `position`).
    async fn publish_payload(
        &self,
        app: &App,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
    ) -> Result<(), BrokerError> {
        let broker = &self.inner.broker;
        match app.history_for(channel) {
            Some(h) => broker
                .publish_with_history(&app.id, channel, payload, except, h.into())
                .await
                .map(|_| ()),
            None => broker.publish(&app.id, channel, payload, except).await,
        }
    }

    /// The channel's history (position, and events after `since`), for the REST API; `None`
    /// when the app keeps no history for it.
    pub async fn history(
        &self,
        app: &App,
        channel: &str,
        since: u64,
        limit: usize,
    ) -> Result<Option<crate::broker::HistoryRead>, HubError> {
        let Some(h) = app.history_for(channel) else {
            return Ok(None);
        };
        Ok(Some(
            self.inner
                .broker
                .history(&app.id, channel, Some(since), limit, h.into())
                .await?,
        ))
    }

    /// Asks every connection on this node to close with `code` and `reason` (each writer
    /// yields the [`Outbound::Close`] ahead of anything queued). Returns how many were asked.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        let conns = self.inner.local.conns();
        conns
            .values()
            .filter(|c| c.sub.close.close(code, reason))
            .count()
    }

    /// Starts draining this node: from now on [`connect`](Self::connect) refuses with 4200 and
    /// every open connection is closed with 4200 ("reconnect now", so clients move to another
    /// node). Front ends wait for their connection tasks to end. Returns how many were asked.
    pub fn drain(&self) -> usize {
        self.inner.draining.store(true, Relaxed);
        self.close_all(codes::RECONNECT_IMMEDIATELY, DRAIN_REASON)
    }

    /// True once [`drain`](Self::drain) was called.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Relaxed)
    }

    /// True while the node should get traffic: not draining, and its broker can serve (in a
    /// cluster: Redis reachable and this node's share registered). Load balancers poll it
    /// through `/ready`.
    pub fn is_ready(&self) -> bool {
        !self.is_draining() && self.inner.broker.is_ready()
    }

    fn close_socket(&self, socket: &SocketId, code: u16, reason: &str) {
        if let Some(conn) = self.inner.local.conns().get(socket) {
            conn.sub.close.close(code, reason);
        }
    }

    /// Closes every connection signed in as `user_id` (on any node) with 4009.
    pub async fn terminate_user(&self, app_id: &str, user_id: &str) -> Result<usize, HubError> {
        let broker = &self.inner.broker;
        let sockets = broker.user_sockets(app_id, user_id).await?;
        let n = sockets.len();
        if n > 0 {
            broker
                .control(
                    app_id,
                    Control::CloseSockets {
                        sockets,
                        code: codes::UNAUTHORIZED,
                        reason: "Connection terminated by the app server".into(),
                    },
                )
                .await?;
        }
        Ok(n)
    }

    // ---- internals ----

    fn conn_basics(&self, socket: &SocketId) -> Result<(Arc<App>, Subscriber), HubError> {
        let conns = self.inner.local.conns();
        let conn = conns
            .get(socket)
            .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
        Ok((conn.app.clone(), conn.sub.clone()))
    }

    fn send_error(&self, sub: &Subscriber, code: Option<u16>, message: &str) {
        self.inner.metrics.client_errors_total.fetch_add(1, Relaxed);
        self.inner
            .local
            .send(sub, ServerMessage::Error { code, message }.to_bytes());
    }

    /// Answers a refused `pusher:subscribe` twice: a `pusher:error` with code `null` and the
    /// reason (what Pusher sends; pusher-js emits it as a connection `error`), then a
    /// `pusher:subscription_error` on the channel (pusher-js emits it on the channel object,
    /// where apps and Laravel Echo's `.error()` listen).
    fn refuse_subscription(&self, sub: &Subscriber, channel: &str, refusal: &SubscribeRefusal) {
        self.send_error(sub, None, &refusal.message);
        self.inner.local.send(
            sub,
            ServerMessage::SubscriptionError {
                channel,
                kind: refusal.kind,
                error: &refusal.message,
                status: refusal.status,
            }
            .to_bytes(),
        );
    }

    fn webhook(&self, app: &App, event: WebhookEvent) {
        self.inner.local.webhook(&app.id, event);
    }

    /// Pure checks of a subscription request (no state changes).
    fn check_subscribe(
        &self,
        socket: &SocketId,
        app: &App,
        s: &Subscribe,
        signed_in_as: Option<&str>,
    ) -> Result<Option<protocol::PresenceMember>, SubscribeRefusal> {
        channel::validate(&s.channel)
            .map_err(|e| SubscribeRefusal::invalid(format!("Invalid channel name: {e}")))?;
        let kind = ChannelKind::of(&s.channel);
        match kind {
            ChannelKind::ServerToUser => {
                let owner = channel::server_to_user_id(&s.channel);
                if owner.is_none() || owner != signed_in_as {
                    return Err(SubscribeRefusal::auth(format!(
                        "Subscription to {} requires signing in as that user",
                        s.channel
                    )));
                }
                Ok(None)
            }
            ChannelKind::Public => Ok(None),
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence => {
                let unauthorized = |why: String| {
                    SubscribeRefusal::auth(format!(
                        "Unauthorized subscription to {}: {why}",
                        s.channel
                    ))
                };
                let auth = s
                    .auth
                    .as_deref()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| unauthorized("missing auth".into()))?;
                let channel_data = if kind == ChannelKind::Presence {
                    Some(s.channel_data.as_deref().ok_or_else(|| {
                        unauthorized("presence channels need channel_data".into())
                    })?)
                } else {
                    None
                };
                auth::verify_channel_auth(
                    &app.key,
                    &app.secret,
                    socket.as_str(),
                    &s.channel,
                    channel_data,
                    auth,
                )
                .map_err(|e| unauthorized(e.to_string()))?;
                match channel_data {
                    None => Ok(None),
                    Some(cd) => {
                        if cd.len() > app.max_presence_member_size {
                            return Err(SubscribeRefusal::invalid(format!(
                                "Presence channel_data is larger than {} bytes",
                                app.max_presence_member_size
                            )));
                        }
                        protocol::parse_channel_data(cd).map(Some).map_err(|e| {
                            SubscribeRefusal::invalid(format!("Invalid channel_data: {e}"))
                        })
                    }
                }
            }
        }
    }

    async fn subscribe(
        &self,
        socket: &SocketId,
        app: &Arc<App>,
        sub: &Subscriber,
        s: Subscribe,
    ) -> Result<(), HubError> {
        let (already, count, signed_in_as) = {
            let conns = self.inner.local.conns();
            let conn = conns
                .get(socket)
                .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
            (
                conn.channels.contains_key(&s.channel),
                conn.channels.len(),
                conn.user_id.clone(),
            )
        };
        let recover = match &s.recover {
            None => None,
            Some(Ok(p)) => Some(p.clone()),
            Some(Err(why)) => {
                let refusal = SubscribeRefusal::invalid(format!("Invalid recover: {why}"));
                self.refuse_subscription(sub, &s.channel, &refusal);
                return Ok(());
            }
        };
        let member = match self.check_subscribe(socket, app, &s, signed_in_as.as_deref()) {
            Ok(m) => m,
            Err(refusal) => {
                self.refuse_subscription(sub, &s.channel, &refusal);
                return Ok(());
            }
        };
        let broker = &self.inner.broker;
        let channel = s.channel.as_str();
        if already {
            // Idempotent: confirm again without counting twice.
            return self
                .confirm_subscription(app, sub, channel, member.is_some(), None, None)
                .await;
        }
        if count >= app.max_channels_per_connection {
            let refusal = SubscribeRefusal::limit(format!(
                "Too many channels: at most {} per connection",
                app.max_channels_per_connection
            ));
            self.refuse_subscription(sub, channel, &refusal);
            return Ok(());
        }
        if let Some(m) = &member {
            let users = broker.presence_user_count(&app.id, channel).await?;
            if users >= app.max_presence_members as u64
                && !broker
                    .presence_has_user(&app.id, channel, &m.user_id)
                    .await?
            {
                let refusal = SubscribeRefusal::limit(format!(
                    "Presence channel {channel} is full: at most {} members",
                    app.max_presence_members
                ));
                self.refuse_subscription(sub, channel, &refusal);
                return Ok(());
            }
        }

        // Local registration first, so nothing published from here on is missed.
        {
            let mut conns = self.inner.local.conns();
            let Some(conn) = conns.get_mut(socket) else {
                return Err(HubError::UnknownSocket(socket.clone()));
            };
            conn.channels.insert(
                s.channel.clone(),
                member.as_ref().map(|m| m.user_id.clone()),
            );
        }
        let held = Arc::new(Mutex::new(Held::default()));
        let first_local = {
            let mut channels = self
                .inner
                .local
                .channels
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let subs = channels
                .entry(app.id.clone())
                .or_default()
                .entry(s.channel.clone())
                .or_default();
            subs.insert(
                socket.clone(),
                ChannelSub {
                    sub: sub.clone(),
                    held: Some(held.clone()),
                },
            );
            subs.len() == 1
        };
        self.inner
            .metrics
            .subscriptions_current
            .fetch_add(1, Relaxed);
        let mut counted = false;
        let joined = self
            .join_shared(
                socket,
                app,
                sub,
                channel,
                member.as_ref(),
                first_local,
                &held,
                recover.as_ref(),
                &mut counted,
            )
            .await;
        if let Err(e) = joined {
            // The broker failed (in a cluster: Redis unreachable). Undo, and tell the client:
            // a subscription that the cluster does not know would miss events silently.
            tracing::warn!(%socket, channel, "subscription refused: {e}");
            if let Some(conn) = self.inner.local.conns().get_mut(socket) {
                conn.channels.remove(channel);
            }
            if counted {
                let _ = self
                    .leave_channel(socket, app, channel, member.is_some())
                    .await;
            } else {
                self.unroute(socket, app, channel).await;
            }
            self.refuse_subscription(
                sub,
                channel,
                &SubscribeRefusal {
                    kind: "SubscriptionError",
                    status: 503,
                    message: format!(
                        "Subscription to {channel} failed: the cluster's shared state is unavailable, retry later"
                    ),
                },
            );
        }
        Ok(())
    }

    /// The shared half of a subscription: routing, counts, presence, then the confirmation.
    /// Sets `counted` once the broker counted the subscription.
    #[allow(clippy::too_many_arguments)]
    async fn join_shared(
        &self,
        socket: &SocketId,
        app: &App,
        sub: &Subscriber,
        channel: &str,
        member: Option<&protocol::PresenceMember>,
        first_local: bool,
        held: &Arc<Mutex<Held>>,
        recover: Option<&protocol::Position>,
        counted: &mut bool,
    ) -> Result<(), HubError> {
        let broker = &self.inner.broker;
        if first_local {
            broker
                .subscribe_node(self.inner.node, &app.id, channel)
                .await?;
        }
        let count = broker.add_subscription(&app.id, channel, socket).await?;
        *counted = true;
        let by_broker = broker.handles_transitions();
        if count == 1 && !by_broker {
            self.webhook(
                app,
                WebhookEvent::ChannelOccupied {
                    channel: channel.to_owned(),
                },
            );
        }
        if let Some(m) = member {
            let is_new_user = broker
                .presence_add(&app.id, channel, socket, m.clone())
                .await?;
            if is_new_user && !by_broker {
                let payload = ServerMessage::MemberAdded { channel, member: m }.to_bytes();
                broker
                    .publish(&app.id, channel, payload, Some(socket.clone()))
                    .await?;
                self.webhook(
                    app,
                    WebhookEvent::MemberAdded {
                        channel: channel.to_owned(),
                        user_id: m.user_id.clone(),
                    },
                );
            }
        }
        self.confirm_subscription(app, sub, channel, member.is_some(), Some(held), recover)
            .await?;
        self.release(socket, app, channel, held);
        Ok(())
    }

    /// Delivers to the subscriber without holding from now on (the confirmation is queued).
    fn release(&self, socket: &SocketId, app: &App, channel: &str, held: &Arc<Mutex<Held>>) {
        let mut channels = self
            .inner
            .local
            .channels
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(cs) = channels
            .get_mut(app.id.as_str())
            .and_then(|c| c.get_mut(channel))
            .and_then(|subs| subs.get_mut(socket))
        {
            if cs.held.as_ref().is_some_and(|h| Arc::ptr_eq(h, held)) {
                cs.held = None;
            }
        }
    }

    /// Sends `subscription_succeeded` (with members for presence; with the position on
    /// history channels, and whether `recover` succeeded), then on history channels the
    /// recovered events, then on cache channels the cached event or `pusher:cache_miss`, then
    /// whatever `held` kept meanwhile (without what the recovery already replayed).
    async fn confirm_subscription(
        &self,
        app: &App,
        sub: &Subscriber,
        channel: &str,
        presence: bool,
        held: Option<&Arc<Mutex<Held>>>,
        recover: Option<&protocol::Position>,
    ) -> Result<(), HubError> {
        let broker = &self.inner.broker;
        let local = &self.inner.local;
        let members = if presence {
            Some(broker.presence_members(&app.id, channel).await?)
        } else {
            None
        };
        let mut first = Vec::with_capacity(2);
        let mut replayed_upto = None;
        match (app.history_for(channel), recover) {
            (Some(h), _) => {
                let read = broker
                    .history(
                        &app.id,
                        channel,
                        recover.map(|r| r.offset),
                        h.size,
                        h.into(),
                    )
                    .await?;
                let recovered = recover.map(|r| read.complete && r.epoch == read.position.epoch);
                first.push(
                    ServerMessage::HistorySubscriptionSucceeded {
                        channel,
                        members: members.as_deref(),
                        position: Some(&read.position),
                        recovered,
                    }
                    .to_bytes(),
                );
                if recovered == Some(true) {
                    first.extend(read.events);
                    replayed_upto = Some(read.position.offset);
                }
            }
            (None, Some(_)) => first.push(
                ServerMessage::HistorySubscriptionSucceeded {
                    channel,
                    members: members.as_deref(),
                    position: None,
                    recovered: Some(false),
                }
                .to_bytes(),
            ),
            (None, None) => first.push(match &members {
                Some(members) => {
                    ServerMessage::PresenceSubscriptionSucceeded { channel, members }.to_bytes()
                }
                None => ServerMessage::SubscriptionSucceeded { channel }.to_bytes(),
            }),
        }
        if channel::is_cache(channel) {
            match broker.cache_get(&app.id, channel).await? {
                Some((payload, _ttl)) => first.push(payload),
                None => {
                    first.push(ServerMessage::CacheMiss { channel }.to_bytes());
                    self.webhook(
                        app,
                        WebhookEvent::CacheMiss {
                            channel: channel.to_owned(),
                        },
                    );
                }
            }
        }
        // The confirmation first, then what was held back for it, under the hold's lock so no
        // delivery slips in between.
        let mut h = held.map(|h| lock_held(h));
        for payload in first {
            local.send(sub, payload);
        }
        if let Some(h) = h.as_mut() {
            for payload in h.items.drain(..) {
                // Delivered live while the history was read: already replayed.
                let replayed = replayed_upto.is_some_and(|upto| {
                    protocol::position_offset(&payload).is_some_and(|o| o <= upto)
                });
                if !replayed {
                    local.send(sub, payload);
                }
            }
            h.released = true;
        }
        Ok(())
    }

    async fn unsubscribe(&self, socket: &SocketId, channel: &str) -> Result<(), HubError> {
        let (app, was) = {
            let mut conns = self.inner.local.conns();
            let conn = conns
                .get_mut(socket)
                .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
            (conn.app.clone(), conn.channels.remove(channel))
        };
        match was {
            // Unsubscribing from a channel one is not in is a no-op, as with Pusher.
            None => Ok(()),
            Some(presence_user) => {
                self.leave_channel(socket, &app, channel, presence_user.is_some())
                    .await
            }
        }
    }

    /// Removes `socket` from the local subscribers of `channel` (and the node's broker route
    /// when it was the last). Returns whether it was the last.
    async fn unroute(&self, socket: &SocketId, app: &App, channel: &str) -> bool {
        let last_local = {
            let mut channels = self
                .inner
                .local
                .channels
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let mut last = false;
            let mut removed = false;
            if let Some(app_channels) = channels.get_mut(app.id.as_str()) {
                if let Some(subs) = app_channels.get_mut(channel) {
                    removed = subs.remove(socket).is_some();
                    if subs.is_empty() {
                        app_channels.remove(channel);
                        last = true;
                    }
                }
                if app_channels.is_empty() {
                    channels.remove(app.id.as_str());
                }
            }
            if removed {
                self.inner
                    .metrics
                    .subscriptions_current
                    .fetch_sub(1, Relaxed);
            }
            last
        };
        if last_local {
            if let Err(e) = self
                .inner
                .broker
                .unsubscribe_node(self.inner.node, &app.id, channel)
                .await
            {
                tracing::debug!(channel, "unsubscribe_node: {e}");
            }
        }
        last_local
    }

    async fn leave_channel(
        &self,
        socket: &SocketId,
        app: &App,
        channel: &str,
        presence: bool,
    ) -> Result<(), HubError> {
        self.unroute(socket, app, channel).await;
        let broker = &self.inner.broker;
        let by_broker = broker.handles_transitions();
        if presence {
            if let Some(leave) = broker.presence_remove(&app.id, channel, socket).await? {
                if leave.user_left && !by_broker {
                    let payload = ServerMessage::MemberRemoved {
                        channel,
                        user_id: &leave.user_id,
                    }
                    .to_bytes();
                    broker.publish(&app.id, channel, payload, None).await?;
                    self.webhook(
                        app,
                        WebhookEvent::MemberRemoved {
                            channel: channel.to_owned(),
                            user_id: leave.user_id,
                        },
                    );
                }
            }
        }
        if broker.remove_subscription(&app.id, channel, socket).await? == 0 && !by_broker {
            self.webhook(
                app,
                WebhookEvent::ChannelVacated {
                    channel: channel.to_owned(),
                },
            );
        }
        Ok(())
    }

    async fn signin(
        &self,
        socket: &SocketId,
        app: &App,
        sub: &Subscriber,
        s: Signin,
    ) -> Result<(), HubError> {
        if let Err(e) = auth::verify_user_auth(
            &app.key,
            &app.secret,
            socket.as_str(),
            &s.user_data,
            &s.auth,
        ) {
            self.send_error(
                sub,
                Some(codes::UNAUTHORIZED),
                &format!("Invalid signin: {e}"),
            );
            return Ok(());
        }
        let user_id = match serde_json::from_str::<serde_json::Value>(&s.user_data) {
            Ok(serde_json::Value::Object(o)) => match o.get("id") {
                Some(serde_json::Value::String(id))
                    if !id.is_empty() && id.chars().count() <= protocol::MAX_USER_ID_LEN =>
                {
                    id.clone()
                }
                _ => {
                    self.send_error(
                        sub,
                        Some(codes::UNAUTHORIZED),
                        "Invalid signin: user_data.id must be a non-empty string",
                    );
                    return Ok(());
                }
            },
            _ => {
                self.send_error(
                    sub,
                    Some(codes::UNAUTHORIZED),
                    "Invalid signin: user_data must be a JSON object",
                );
                return Ok(());
            }
        };
        let previous = {
            let mut conns = self.inner.local.conns();
            let conn = conns
                .get_mut(socket)
                .ok_or_else(|| HubError::UnknownSocket(socket.clone()))?;
            match &conn.user_id {
                Some(existing) if *existing != user_id => Err(existing.clone()),
                Some(_) => Ok(true),
                None => {
                    conn.user_id = Some(user_id.clone());
                    Ok(false)
                }
            }
        };
        match previous {
            Err(_) => {
                self.send_error(
                    sub,
                    Some(codes::UNAUTHORIZED),
                    "Invalid signin: this connection is already signed in as another user",
                );
                return Ok(());
            }
            Ok(false) => {
                self.inner
                    .broker
                    .user_add_socket(&app.id, &user_id, socket)
                    .await?;
            }
            Ok(true) => {}
        }
        self.inner.local.send(
            sub,
            ServerMessage::SigninSuccess {
                user_data: &s.user_data,
            }
            .to_bytes(),
        );
        Ok(())
    }

    async fn client_event(
        &self,
        socket: &SocketId,
        app: &App,
        sub: &Subscriber,
        e: ClientEvent,
        now: Instant,
    ) -> Result<(), HubError> {
        let checked: Check<Option<String>> = (|| {
            if !app.enable_client_events {
                return Err((
                    None,
                    "Client events are not enabled for this app (enable_client_events)".into(),
                ));
            }
            if e.event.chars().count() > protocol::MAX_EVENT_NAME_LEN {
                return Err((
                    None,
                    format!(
                        "Event name is longer than {} characters",
                        protocol::MAX_EVENT_NAME_LEN
                    ),
                ));
            }
            match ChannelKind::of(&e.channel) {
                k if k.allows_client_events() => {}
                ChannelKind::PrivateEncrypted => {
                    return Err((
                        None,
                        "Client events are not allowed on encrypted channels".into(),
                    ))
                }
                _ => {
                    return Err((
                        None,
                        "Client events are only supported on private and presence channels".into(),
                    ))
                }
            }
            if e.data.as_ref().map_or(0, String::len) > app.max_message_size {
                return Err((
                    None,
                    format!(
                        "Client event data is larger than {} bytes",
                        app.max_message_size
                    ),
                ));
            }
            let mut conns = self.inner.local.conns();
            let Some(conn) = conns.get_mut(socket) else {
                return Err((None, "Unknown connection".into()));
            };
            let Some(presence_user) = conn.channels.get(&e.channel).cloned() else {
                return Err((
                    None,
                    format!("Client event rejected: not subscribed to {}", e.channel),
                ));
            };
            if !conn.bucket.try_take(now, app.client_event_rate) {
                self.inner
                    .metrics
                    .client_events_rate_limited_total
                    .fetch_add(1, Relaxed);
                return Err((
                    Some(codes::CLIENT_EVENT_RATE_LIMIT),
                    format!(
                        "Client event rejected due to rate limit ({} per second)",
                        app.client_event_rate
                    ),
                ));
            }
            Ok(presence_user)
        })();
        let user_id = match checked {
            Ok(u) => u,
            Err((code, msg)) => {
                self.send_error(sub, code, &msg);
                return Ok(());
            }
        };
        let payload = ServerMessage::Event {
            event: &e.event,
            channel: &e.channel,
            data: e.data.as_deref(),
            user_id: user_id.as_deref(),
        }
        .to_bytes();
        self.publish_payload(app, &e.channel, payload, Some(socket.clone()))
            .await?;
        self.inner
            .metrics
            .events_published_total
            .fetch_add(1, Relaxed);
        self.webhook(
            app,
            WebhookEvent::ClientEvent {
                channel: e.channel,
                event: e.event,
                data: e.data,
                socket_id: socket.as_str().to_owned(),
                user_id,
            },
        );
        Ok(())
    }

    /// True once a close was requested for `socket` (slow consumer, terminate).
    pub fn is_closing(&self, socket: &SocketId) -> bool {
        self.inner
            .local
            .conns()
            .get(socket)
            .is_some_and(|c| c.sub.close.is_set())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_burst_of_rate_then_refills() {
        let mut b = TokenBucket::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(b.try_take(t0, 10));
        }
        assert!(!b.try_take(t0, 10));
        assert!(b.try_take(t0 + Duration::from_millis(100), 10));
        assert!(!b.try_take(t0 + Duration::from_millis(100), 10));
        let t1 = t0 + Duration::from_secs(5);
        for _ in 0..10 {
            assert!(b.try_take(t1, 10));
        }
        assert!(!b.try_take(t1, 10));
    }

    #[test]
    fn close_reason_is_cut_to_fit_a_close_frame() {
        let s = CloseSignal::default();
        assert!(s.close(4100, &"é".repeat(100)));
        assert!(!s.close(4200, "second"));
        let (code, reason) = s.take().expect("set");
        assert_eq!(code, 4100);
        assert!(reason.len() <= 123);
    }

    #[tokio::test]
    async fn close_is_yielded_before_queued_items() {
        let (tx, rx) = mpsc::channel(4);
        let close = Arc::new(CloseSignal::default());
        let mut r = OutboundReceiver {
            rx,
            close: close.clone(),
            done: false,
        };
        tx.try_send(Outbound::Text(Bytes::from_static(b"a")))
            .expect("room");
        close.close(4100, "slow");
        assert_eq!(
            r.recv().await,
            Some(Outbound::Close {
                code: 4100,
                reason: "slow".into()
            })
        );
        assert_eq!(r.recv().await, None);
    }
}
