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
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::{Broker, BrokerError, Control, NodeId, NodeSink};
use crate::channel;
use crate::config::{App, ConfigError, HubConfig};
use crate::metrics::Metrics;
use crate::protocol::{self, codes, ClientMessage, ServerMessage};
use crate::socket_id::SocketId;
use crate::webhooks::{AppWebhookEvent, WebhookEvent};
use client_event::TokenBucket;
use local::{Conn, Local, Subscriber};
use outbound::CloseSignal;

/// Close reason sent with 4200 when the node drains.
pub const DRAIN_REASON: &str = "Server shutting down, reconnect";

mod client_event;
mod errors;
mod local;
mod outbound;
mod signin;
mod subscription;

pub use errors::{ConnectError, HubError, Refused};
pub use outbound::{ConnectionHandle, Outbound, OutboundReceiver};

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

    fn webhook(&self, app: &App, event: WebhookEvent) {
        self.inner.local.webhook(&app.id, event);
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
