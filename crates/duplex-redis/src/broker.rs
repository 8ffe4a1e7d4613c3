//! The broker: Broker calls as Redis commands, the pub/sub supervisor, leases and the sweep.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use duplex_hub::broker::{
    Broker, BrokerError, BrokerResult, ClusterChange, Control, HistoryLimits, HistoryRead, NodeId,
    NodeSink, PresenceLeave,
};
use duplex_hub::protocol::{Position, PresenceMember, ServerMessage};
use duplex_hub::socket_id::SocketId;
use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink};
use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::mirror::{Delta, Mirror, SEP};
use crate::scripts::Scripts;
use crate::target::{redact, Target};
use crate::{RedisBrokerError, RedisConfig};

/// Most contribution changes sent in one script call while re-registering.
const RESYNC_CHUNK: usize = 500;
/// Most dead nodes removed per sweep.
const REAP_PER_SWEEP: usize = 16;

/// Key and channel names under the prefix.
struct Keys {
    prefix: String,
}

impl Keys {
    fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }
    fn epoch(&self) -> String {
        format!("{}:epoch", self.prefix)
    }
    fn node(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }
    fn app(&self, app: &str, rest: &str) -> String {
        format!("{}:app:{app}:{rest}", self.prefix)
    }
    fn events(&self, app: &str, channel: &str) -> String {
        self.app(app, &format!("ev:{channel}"))
    }
    fn history(&self, app: &str, channel: &str) -> (String, String) {
        (
            self.app(app, &format!("history:{channel}")),
            self.app(app, &format!("history-meta:{channel}")),
        )
    }
    fn control(&self) -> String {
        format!("{}:control", self.prefix)
    }
}

/// Local subscribers of one Redis channel.
struct Route {
    app: String,
    channel: String,
    nodes: Vec<NodeId>,
}

struct Shared {
    cfg: RedisConfig,
    shown_url: String,
    node_id: String,
    keys: Keys,
    target: Target,
    scripts: Scripts,
    /// The command connection (multiplexed: concurrent calls are pipelined); `None` while
    /// reconnecting.
    cmd: RwLock<Option<MultiplexedConnection>>,
    /// The pub/sub connection's command half. Its lock also orders route changes with their
    /// SUBSCRIBE/UNSUBSCRIBE, so the two never disagree.
    pubsub: tokio::sync::Mutex<Option<PubSubSink>>,
    routes: RwLock<HashMap<String, Route>>,
    sinks: RwLock<Vec<(NodeId, Weak<dyn NodeSink>)>>,
    next_node: AtomicU64,
    mirror: Mutex<Mirror>,
    /// Held shared by every change of this node's share, exclusively by a resync: a resync
    /// compares the mirror with Redis while nothing is half-applied.
    contrib: tokio::sync::RwLock<()>,
    connected: AtomicBool,
    /// Connected and this node's share re-registered since.
    ready: AtomicBool,
    /// A change of this node's share may not have reached Redis: resync at the next tick.
    dirty: AtomicBool,
    /// The cluster epoch this node last saw (it changes when Redis lost its data).
    epoch: Mutex<Option<String>>,
    /// Wakes the supervisor when a call finds the connection broken.
    broken: Notify,
    /// Wakes the lease loop after a (re)connection.
    connected_notify: Notify,
    cancel: CancellationToken,
    /// Itself, for tasks spawned from a `&Shared` method.
    me: std::sync::OnceLock<Weak<Shared>>,
}

/// A [`Broker`] over Redis: see the [crate docs](crate) for the design.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use duplex_redis::{RedisBroker, RedisConfig};
/// let broker = RedisBroker::connect(RedisConfig::new("redis://127.0.0.1:6379/0")).await?;
/// println!("node {}", broker.node_id());
/// let hub = duplex_hub::hub::Hub::new(Default::default(), Arc::new(broker))?;
/// # let _ = hub; Ok(()) }
/// ```
pub struct RedisBroker {
    shared: Arc<Shared>,
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // Stops the supervisor and the lease: the cluster removes this node's share once the
        // lease expires.
        self.shared.cancel.cancel();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.:{}".contains(c))
}

impl RedisBroker {
    /// Connects (waiting at most `connect_timeout`), registers a new node and starts the
    /// supervisor and the lease. Fails with the URL (password redacted) when Redis does not
    /// answer: a node never starts without its broker.
    pub async fn connect(cfg: RedisConfig) -> Result<RedisBroker, RedisBrokerError> {
        if !valid_prefix(&cfg.prefix) {
            return Err(RedisBrokerError::BadPrefix(cfg.prefix.clone()));
        }
        let ca = match &cfg.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| RedisBrokerError::CaFile {
                path: path.display().to_string(),
                why: e.to_string(),
            })?),
            None => None,
        };
        let target = Target::parse_with_ca(&cfg.url, ca)?;
        let shown_url = redact(&cfg.url);
        let node_id = format!("{:016x}", rand::random::<u64>());
        let shared = Arc::new(Shared {
            keys: Keys {
                prefix: cfg.prefix.clone(),
            },
            cfg,
            shown_url,
            node_id,
            target,
            scripts: Scripts::new(),
            cmd: RwLock::new(None),
            pubsub: tokio::sync::Mutex::new(None),
            routes: RwLock::new(HashMap::new()),
            sinks: RwLock::new(Vec::new()),
            next_node: AtomicU64::new(0),
            mirror: Mutex::new(Mirror::default()),
            contrib: tokio::sync::RwLock::new(()),
            connected: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
            epoch: Mutex::new(None),
            broken: Notify::new(),
            connected_notify: Notify::new(),
            cancel: CancellationToken::new(),
            me: std::sync::OnceLock::new(),
        });
        let _ = shared.me.set(Arc::downgrade(&shared));
        let first = shared
            .open()
            .await
            .map_err(|why| RedisBrokerError::Unreachable {
                url: shared.shown_url.clone(),
                why,
            })?;
        let pubsub = shared
            .install(first)
            .await
            .map_err(|why| RedisBrokerError::Unreachable {
                url: shared.shown_url.clone(),
                why,
            })?;
        shared
            .sync_share()
            .await
            .map_err(|e| RedisBrokerError::Unreachable {
                url: shared.shown_url.clone(),
                why: e.0,
            })?;
        shared.ready.store(true, Relaxed);
        tracing::info!(
            node = %shared.node_id,
            redis = %shared.shown_url,
            prefix = %shared.cfg.prefix,
            "cluster node registered"
        );
        tokio::spawn(supervise(shared.clone(), pubsub));
        tokio::spawn(lease_loop(shared.clone()));
        Ok(RedisBroker { shared })
    }

    /// This node's id in the cluster (random, new at every start).
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }
}

type Transitions = Vec<(String, String)>;

/// A message to publish with a change: `(pub/sub channel, framed message)`.
type Announce = Option<(String, Vec<u8>)>;

/// An event as sent over pub/sub: the length of the excluded socket id, the id, the payload.
fn frame(except: Option<&SocketId>, payload: &[u8]) -> Vec<u8> {
    let except = except.map_or("", |s| s.as_str());
    let mut msg = Vec::with_capacity(1 + except.len() + payload.len());
    msg.push(except.len() as u8);
    msg.extend_from_slice(except.as_bytes());
    msg.extend_from_slice(payload);
    msg
}

impl Shared {
    fn unavailable(&self) -> BrokerError {
        BrokerError(format!(
            "Redis at {} is unreachable; reconnecting",
            self.shown_url
        ))
    }

    fn conn(&self) -> BrokerResult<MultiplexedConnection> {
        read(&self.cmd).clone().ok_or_else(|| self.unavailable())
    }

    /// Runs one Redis call with the op timeout; a connection-level failure wakes the
    /// supervisor, which reconnects.
    async fn call<T>(&self, fut: impl Future<Output = RedisResult<T>>) -> BrokerResult<T> {
        match tokio::time::timeout(self.cfg.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let lost = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                if lost {
                    self.connection_broken();
                }
                Err(BrokerError(format!("Redis at {}: {e}", self.shown_url)))
            }
            Err(_) => {
                self.connection_broken();
                Err(BrokerError(format!(
                    "Redis at {} did not answer within {:?}",
                    self.shown_url, self.cfg.op_timeout
                )))
            }
        }
    }

    fn connection_broken(&self) {
        self.ready.store(false, Relaxed);
        self.broken.notify_one();
    }

    /// Opens the command and pub/sub connections to the current primary.
    async fn open(&self) -> Result<(MultiplexedConnection, PubSub), String> {
        let t = self.cfg.connect_timeout;
        let opened = tokio::time::timeout(t, async {
            let client = self.target.client().await?;
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(t))
                .set_response_timeout(Some(self.cfg.op_timeout));
            let cmd = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            let pubsub = client.get_async_pubsub().await?;
            RedisResult::Ok((cmd, pubsub))
        })
        .await;
        match opened {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {t:?}")),
        }
    }

    /// Makes fresh connections current: subscribes to the control channel and every routed
    /// channel, then publishes the command connection. Returns the message stream.
    async fn install(
        &self,
        (cmd, pubsub): (MultiplexedConnection, PubSub),
    ) -> Result<redis::aio::PubSubStream, String> {
        let (mut sink, stream) = pubsub.split();
        let mut slot = self.pubsub.lock().await;
        let mut channels: Vec<String> = read(&self.routes).keys().cloned().collect();
        channels.push(self.keys.control());
        for chunk in channels.chunks(1000) {
            tokio::time::timeout(self.cfg.op_timeout, sink.subscribe(chunk))
                .await
                .map_err(|_| "SUBSCRIBE timed out".to_string())?
                .map_err(|e| e.to_string())?;
        }
        *slot = Some(sink);
        *write(&self.cmd) = Some(cmd);
        self.connected.store(true, Relaxed);
        Ok(stream)
    }

    fn disconnected(&self) {
        self.connected.store(false, Relaxed);
        self.ready.store(false, Relaxed);
        *write(&self.cmd) = None;
    }

    /// Applies contribution deltas in one script, each with the message to publish if it
    /// makes a member join or leave the cluster; returns per delta `(transition, count)`.
    ///
    /// With `report`, the transitions are reported to the node (webhooks), leaves after the
    /// vacate delay unless a join cancelled them.
    async fn apply(
        &self,
        changes: &[(Delta, Announce)],
        report: bool,
    ) -> BrokerResult<Transitions> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn()?;
        let token = format!("{}.{:016x}", self.node_id, rand::random::<u64>());
        let mut inv = self.scripts.apply.key(self.keys.node(&self.node_id));
        inv.arg(&self.cfg.prefix)
            .arg(&self.node_id)
            .arg(self.cfg.vacate_delay.as_millis() as u64)
            .arg(&token);
        for ((field, delta, info), message) in changes {
            inv.arg(field).arg(*delta).arg(info);
            match message {
                Some((channel, body)) => inv.arg(channel).arg(body.as_slice()),
                None => inv.arg("").arg(""),
            };
        }
        let out: Vec<String> = self.call(inv.invoke_async(&mut c)).await?;
        let mut transitions = Vec::with_capacity(out.len());
        for (((field, _, _), _), s) in changes.iter().zip(out) {
            let (t, n) = s.split_once(':').unwrap_or((s.as_str(), ""));
            let (kind, held, cancelled) = match t.as_bytes() {
                [k, b'~'] => (*k as char, true, false),
                [k, b'!'] => (*k as char, false, true),
                [k] => (*k as char, false, false),
                _ => (' ', false, false),
            };
            if report && !cancelled {
                if held {
                    self.confirm_later(field.clone(), kind, token.clone());
                } else {
                    self.report(field, &kind.to_string());
                }
            }
            transitions.push((kind.to_string().trim().to_owned(), n.to_owned()));
        }
        Ok(transitions)
    }

    /// After the vacate delay, sends a held leave's webhook unless a join took it away.
    fn confirm_later(&self, field: String, kind: char, token: String) {
        let Some(shared) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        tokio::spawn(async move {
            tokio::time::sleep(shared.cfg.vacate_delay).await;
            let pending = format!("{}:pending:{field}", shared.cfg.prefix);
            let Ok(mut c) = shared.conn() else {
                return;
            };
            let confirmed: BrokerResult<i64> = shared
                .call(
                    shared
                        .scripts
                        .confirm
                        .key(pending)
                        .arg(token)
                        .invoke_async(&mut c),
                )
                .await;
            if confirmed == Ok(1) {
                shared.report(&field, &kind.to_string());
            }
        });
    }

    /// The pub/sub message announcing a presence field's change of `delta` (member_added to
    /// all but `except`, or member_removed), for [`Shared::apply`].
    fn membership_message(
        &self,
        field: &str,
        delta: i64,
        info: &str,
        except: Option<&SocketId>,
    ) -> Announce {
        let parts: Vec<&str> = field.splitn(4, SEP).collect();
        let ["p", app, channel, user] = parts.as_slice() else {
            return None;
        };
        let payload = if delta > 0 {
            let member = split_member((*user).to_owned(), info.to_owned());
            ServerMessage::MemberAdded {
                channel,
                member: &member,
            }
            .to_bytes()
        } else {
            ServerMessage::MemberRemoved {
                channel,
                user_id: user,
            }
            .to_bytes()
        };
        Some((self.keys.events(app, channel), frame(except, &payload)))
    }

    /// One change of this node's share: `update` edits the mirror and says what to send.
    /// `undo` reverts the mirror when an addition did not reach Redis, so a failed call has no
    /// effect; a removal stays removed locally and reaches Redis at the next resync.
    async fn change(
        &self,
        update: impl FnOnce(&mut Mirror) -> Option<(Delta, Announce)>,
        undo: impl FnOnce(&mut Mirror),
    ) -> BrokerResult<Option<(String, String)>> {
        let _share = self.contrib.read().await;
        let Some(change) = update(&mut lock(&self.mirror)) else {
            return Ok(None);
        };
        let adding = change.0 .1 > 0;
        match self.apply(std::slice::from_ref(&change), true).await {
            Ok(mut t) => Ok(t.pop()),
            Err(e) => {
                if adding {
                    undo(&mut lock(&self.mirror));
                }
                self.dirty.store(true, Relaxed);
                Err(e)
            }
        }
    }

    /// Renews the lease; returns whether this node must re-register its share (it was not
    /// registered, or Redis lost its data) and whether what that changes should be announced
    /// (only when Redis kept its data: then the rest of the cluster saw this node leave).
    async fn heartbeat(&self) -> BrokerResult<Option<bool>> {
        let mut c = self.conn()?;
        let candidate = format!("{:016x}", rand::random::<u64>());
        let (added, epoch): (i64, String) = self
            .call(
                self.scripts
                    .heartbeat
                    .key(self.keys.nodes())
                    .key(self.keys.epoch())
                    .arg(&self.node_id)
                    .arg(self.cfg.node_timeout.as_millis() as u64)
                    .arg(candidate)
                    .invoke_async(&mut c),
            )
            .await?;
        let mut known = lock(&self.epoch);
        let same_epoch = known.as_deref() == Some(epoch.as_str());
        let first = known.is_none();
        *known = Some(epoch);
        if !same_epoch && !first {
            tracing::warn!(
                node = %self.node_id,
                "Redis lost the cluster's state (new epoch): re-registering this node"
            );
        }
        let must = added == 1 || !same_epoch || self.dirty.load(Relaxed);
        Ok(must.then_some(same_epoch))
    }

    /// Renews the lease and, when needed, makes this node's share in Redis equal to its mirror.
    async fn sync_share(&self) -> BrokerResult<()> {
        let Some(announce) = self.heartbeat().await? else {
            return Ok(());
        };
        let _exclusive = self.contrib.write().await;
        self.dirty.store(false, Relaxed);
        let desired = lock(&self.mirror).contributions();
        let mut c = self.conn()?;
        let actual: HashMap<String, i64> = self
            .call(
                redis::cmd("HGETALL")
                    .arg(self.keys.node(&self.node_id))
                    .query_async(&mut c),
            )
            .await?;
        let mut deltas: Vec<(Delta, Announce)> = Vec::new();
        let mut push = |field: &str, delta: i64, info: &str| {
            // Member changes are announced only when the cluster kept its state: after a
            // data loss the others still know this node's members.
            let message = if announce {
                self.membership_message(field, delta, info, None)
            } else {
                None
            };
            deltas.push(((field.to_owned(), delta, info.to_owned()), message));
        };
        for (field, (want, info)) in &desired {
            let have = actual.get(field).copied().unwrap_or(0);
            if *want != have {
                push(field, want - have, info);
            }
        }
        for (field, have) in &actual {
            if !desired.contains_key(field) && *have != 0 {
                push(field, -have, "");
            }
        }
        if deltas.is_empty() {
            return Ok(());
        }
        tracing::info!(
            node = %self.node_id,
            changes = deltas.len(),
            announce,
            "re-registering this node's share in Redis"
        );
        for chunk in deltas.chunks(RESYNC_CHUNK) {
            if let Err(e) = self.apply(chunk, announce).await {
                self.dirty.store(true, Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Reports a transition found by a resync or a sweep to one local sink (webhooks).
    fn report(&self, field: &str, transition: &str) {
        let parts: Vec<&str> = field.splitn(4, SEP).collect();
        let (app, channel) = match parts.as_slice() {
            [_, app, channel, ..] => (*app, (*channel).to_owned()),
            _ => return,
        };
        let user_id = parts.get(3).map(|u| (*u).to_owned()).unwrap_or_default();
        let change = match transition {
            "o" => ClusterChange::ChannelOccupied { channel },
            "v" => ClusterChange::ChannelVacated { channel },
            "a" => ClusterChange::MemberAdded { channel, user_id },
            "r" => ClusterChange::MemberRemoved { channel, user_id },
            _ => return,
        };
        let sink = read(&self.sinks).iter().find_map(|(_, w)| w.upgrade());
        if let Some(sink) = sink {
            sink.cluster_change(app, &change);
        }
    }

    /// Removes the share of nodes whose lease expired (one script per node, so one sweeper
    /// wins each) and announces what changed.
    async fn sweep(&self) -> BrokerResult<()> {
        for _ in 0..REAP_PER_SWEEP {
            let mut c = self.conn()?;
            let out: Vec<String> = self
                .call(
                    self.scripts
                        .reap
                        .key(self.keys.nodes())
                        .arg(&self.cfg.prefix)
                        .arg(&self.node_id)
                        .invoke_async(&mut c),
                )
                .await?;
            let Some((dead, transitions)) = out.split_first() else {
                return Ok(());
            };
            tracing::warn!(
                node = %self.node_id,
                dead = %dead,
                changes = transitions.len(),
                "removed a dead node's members and subscriptions (its lease expired)"
            );
            for t in transitions {
                let (kind, rest) = t.split_at(1);
                if kind == "r" {
                    let field = format!("p{rest}");
                    if let Some((channel, body)) = self.membership_message(&field, -1, "", None) {
                        let mut c = self.conn()?;
                        let _: i64 = self
                            .call(
                                redis::cmd("PUBLISH")
                                    .arg(channel)
                                    .arg(body)
                                    .query_async(&mut c),
                            )
                            .await?;
                    }
                }
                self.report(&format!("x{rest}"), kind);
            }
        }
        Ok(())
    }

    async fn publish_raw(
        &self,
        app: &str,
        channel: &str,
        payload: &[u8],
        except: Option<&SocketId>,
    ) -> BrokerResult<()> {
        let msg = frame(except, payload);
        let mut c = self.conn()?;
        let _: i64 = self
            .call(
                redis::cmd("PUBLISH")
                    .arg(self.keys.events(app, channel))
                    .arg(msg)
                    .query_async(&mut c),
            )
            .await?;
        Ok(())
    }

    /// Hands one pub/sub message to the local sinks.
    fn dispatch(&self, msg: &redis::Msg) {
        let name = msg.get_channel_name();
        let body = msg.get_payload_bytes();
        if name == self.keys.control() {
            self.dispatch_control(body);
            return;
        }
        let Some((&n, rest)) = body.split_first() else {
            return;
        };
        let n = usize::from(n);
        if rest.len() < n {
            return;
        }
        let except = std::str::from_utf8(&rest[..n])
            .ok()
            .filter(|s| !s.is_empty())
            .and_then(|s| SocketId::parse(s).ok());
        let payload = Bytes::copy_from_slice(&rest[n..]);
        let (app, channel, sinks) = {
            let routes = read(&self.routes);
            let Some(route) = routes.get(name) else {
                return;
            };
            let sinks = read(&self.sinks);
            let live: Vec<Arc<dyn NodeSink>> = sinks
                .iter()
                .filter(|(id, _)| route.nodes.contains(id))
                .filter_map(|(_, w)| w.upgrade())
                .collect();
            (route.app.clone(), route.channel.clone(), live)
        };
        for sink in sinks {
            sink.deliver(&app, &channel, &payload, except.as_ref());
        }
    }

    fn dispatch_control(&self, body: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return;
        };
        let app = v["app"].as_str().unwrap_or_default();
        let sockets: Vec<SocketId> = v["sockets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().and_then(|s| SocketId::parse(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        let control = Control::CloseSockets {
            sockets,
            code: v["code"].as_u64().unwrap_or(4009) as u16,
            reason: v["reason"].as_str().unwrap_or_default().to_owned(),
        };
        let sinks: Vec<_> = read(&self.sinks)
            .iter()
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        for sink in sinks {
            sink.control(app, &control);
        }
    }
}

/// Owns the pub/sub stream: dispatches messages, and on a lost connection reconnects with
/// capped exponential backoff (full jitter), logging the loss and the recovery once each.
async fn supervise(shared: Arc<Shared>, mut stream: redis::aio::PubSubStream) {
    loop {
        loop {
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                () = shared.broken.notified() => break,
                msg = stream.next() => match msg {
                    Some(m) => shared.dispatch(&m),
                    None => break,
                },
            }
        }
        shared.disconnected();
        tracing::warn!(
            node = %shared.node_id,
            redis = %shared.shown_url,
            "lost the connection to Redis: not ready, reconnecting"
        );
        let lost_at = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        stream = loop {
            attempts += 1;
            let attempt = async {
                let conns = shared.open().await?;
                shared.install(conns).await
            };
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                r = attempt => match r {
                    Ok(s) => break s,
                    Err(e) => tracing::debug!(attempts, "Redis reconnect failed: {e}"),
                },
            }
            let jitter = rand::random::<f64>();
            tokio::select! {
                () = shared.cancel.cancelled() => return,
                () = tokio::time::sleep(backoff.mul_f64(0.5 + jitter / 2.0)) => {}
            }
            backoff = (backoff * 2).min(shared.cfg.max_backoff);
        };
        // Anything this node did while away reaches Redis now.
        shared.dirty.store(true, Relaxed);
        shared.connected_notify.notify_one();
        tracing::info!(
            node = %shared.node_id,
            attempts,
            down_ms = lost_at.elapsed().as_millis() as u64,
            "reconnected to Redis"
        );
    }
}

/// Renews the lease, re-registers when needed, sweeps dead nodes: every quarter of the node
/// timeout, and at once after a reconnection.
async fn lease_loop(shared: Arc<Shared>) {
    let every = (shared.cfg.node_timeout / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
            () = shared.connected_notify.notified() => {}
        }
        if !shared.connected.load(Relaxed) {
            continue;
        }
        match shared.sync_share().await {
            Ok(()) => {
                if shared.connected.load(Relaxed) && !shared.ready.swap(true, Relaxed) {
                    tracing::info!(node = %shared.node_id, "ready: this node's share is registered");
                }
            }
            Err(e) => {
                tracing::debug!("lease renewal or re-registration failed: {e}");
                continue;
            }
        }
        if let Err(e) = shared.sweep().await {
            tracing::debug!("sweep for dead nodes failed: {e}");
        }
    }
}

fn split_member(user_id: String, info: String) -> PresenceMember {
    PresenceMember {
        user_id,
        user_info: (!info.is_empty())
            .then(|| serde_json::value::RawValue::from_string(info).ok())
            .flatten(),
    }
}

#[async_trait::async_trait]
impl Broker for RedisBroker {
    fn attach(&self, sink: Weak<dyn NodeSink>) -> NodeId {
        let id = NodeId(self.shared.next_node.fetch_add(1, Relaxed));
        write(&self.shared.sinks).push((id, sink));
        id
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Relaxed)
    }

    fn hands_over_on_drain(&self) -> bool {
        true
    }

    fn handles_transitions(&self) -> bool {
        true
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
    ) -> BrokerResult<()> {
        if !self.shared.ready.load(Relaxed) {
            return Err(self.shared.unavailable());
        }
        self.shared
            .publish_raw(app_id, channel, &payload, except.as_ref())
            .await
    }

    async fn publish_with_history(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
        limits: HistoryLimits,
    ) -> BrokerResult<Position> {
        let s = &self.shared;
        if !s.ready.load(Relaxed) {
            return Err(s.unavailable());
        }
        let (stream, meta) = s.keys.history(app_id, channel);
        let mut c = s.conn()?;
        let (epoch, offset): (String, u64) = s
            .call(
                s.scripts
                    .publish_history
                    .key(stream)
                    .key(meta)
                    .arg(payload.as_ref())
                    .arg(limits.ttl.as_millis().max(1) as u64)
                    .arg(limits.size)
                    .arg(format!("{:016x}", rand::random::<u64>()))
                    .arg(s.keys.events(app_id, channel))
                    .arg(frame(except.as_ref(), b""))
                    .invoke_async(&mut c),
            )
            .await?;
        Ok(Position { epoch, offset })
    }

    async fn history(
        &self,
        app_id: &str,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        limits: HistoryLimits,
    ) -> BrokerResult<HistoryRead> {
        let s = &self.shared;
        let (stream, meta) = s.keys.history(app_id, channel);
        let mut c = s.conn()?;
        let out: Vec<Vec<u8>> = s
            .call(
                s.scripts
                    .read_history
                    .key(stream)
                    .key(meta)
                    .arg(since.map(|n| n.to_string()).unwrap_or_default())
                    .arg(limit)
                    .arg(format!("{:016x}", rand::random::<u64>()))
                    .arg(limits.ttl.as_millis().max(1) as u64)
                    .invoke_async(&mut c),
            )
            .await?;
        let mut it = out.into_iter();
        let text =
            |v: Option<Vec<u8>>| String::from_utf8(v.unwrap_or_default()).unwrap_or_default();
        let epoch = text(it.next());
        let offset = text(it.next()).parse().unwrap_or(0);
        let complete = text(it.next()) == "1";
        Ok(HistoryRead {
            position: Position { epoch, offset },
            events: it.map(Bytes::from).collect(),
            complete,
        })
    }

    async fn control(&self, app_id: &str, control: Control) -> BrokerResult<()> {
        let s = &self.shared;
        let Control::CloseSockets {
            sockets,
            code,
            reason,
        } = control;
        let body = serde_json::json!({
            "app": app_id,
            "sockets": sockets.iter().map(SocketId::as_str).collect::<Vec<_>>(),
            "code": code,
            "reason": reason,
        })
        .to_string();
        let mut c = s.conn()?;
        let _: i64 = s
            .call(
                redis::cmd("PUBLISH")
                    .arg(s.keys.control())
                    .arg(body)
                    .query_async(&mut c),
            )
            .await?;
        Ok(())
    }

    async fn subscribe_node(&self, node: NodeId, app_id: &str, channel: &str) -> BrokerResult<()> {
        let s = &self.shared;
        let key = s.keys.events(app_id, channel);
        let mut slot = s.pubsub.lock().await;
        let is_new = {
            let mut routes = write(&s.routes);
            let route = routes.entry(key.clone()).or_insert_with(|| Route {
                app: app_id.to_owned(),
                channel: channel.to_owned(),
                nodes: Vec::new(),
            });
            if !route.nodes.contains(&node) {
                route.nodes.push(node);
            }
            route.nodes.len() == 1
        };
        if !is_new {
            return Ok(());
        }
        let result = match slot.as_mut() {
            Some(sink) => s.call(sink.subscribe(&key)).await,
            None => Err(s.unavailable()),
        };
        if result.is_err() {
            let mut routes = write(&s.routes);
            routes.remove(&key);
        }
        result
    }

    async fn unsubscribe_node(
        &self,
        node: NodeId,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<()> {
        let s = &self.shared;
        let key = s.keys.events(app_id, channel);
        let mut slot = s.pubsub.lock().await;
        let now_empty = {
            let mut routes = write(&s.routes);
            match routes.get_mut(&key) {
                Some(route) => {
                    route.nodes.retain(|n| *n != node);
                    let empty = route.nodes.is_empty();
                    if empty {
                        routes.remove(&key);
                    }
                    empty
                }
                None => false,
            }
        };
        if now_empty {
            if let Some(sink) = slot.as_mut() {
                // Not routed any more: a failure here only costs unwanted messages until the
                // next reconnection, which subscribes to routed channels only.
                let _ = s.call(sink.unsubscribe(&key)).await;
            }
        }
        Ok(())
    }

    async fn add_connection(&self, app_id: &str) -> BrokerResult<u64> {
        let t = self
            .shared
            .change(
                |m| Some((m.add_connection(app_id), None)),
                |m| {
                    m.remove_connection(app_id);
                },
            )
            .await?;
        Ok(count_of(t))
    }

    async fn remove_connection(&self, app_id: &str) -> BrokerResult<u64> {
        let t = self
            .shared
            .change(|m| m.remove_connection(app_id).map(|d| (d, None)), |_| {})
            .await?;
        match t {
            Some(t) => Ok(count_of(Some(t))),
            None => {
                self.read_count(&self.shared.keys.app(app_id, "connections"))
                    .await
            }
        }
    }

    async fn add_subscription(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<u64> {
        let t = self
            .shared
            .change(
                |m| {
                    m.add_subscription(app_id, channel, socket)
                        .map(|d| (d, None))
                },
                |m| {
                    m.remove_subscription(app_id, channel, socket);
                },
            )
            .await?;
        match t {
            Some(t) => Ok(count_of(Some(t))),
            None => self.subscription_count(app_id, channel).await,
        }
    }

    async fn remove_subscription(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<u64> {
        let t = self
            .shared
            .change(
                |m| {
                    m.remove_subscription(app_id, channel, socket)
                        .map(|d| (d, None))
                },
                |_| {},
            )
            .await?;
        match t {
            Some(t) => Ok(count_of(Some(t))),
            None => self.subscription_count(app_id, channel).await,
        }
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> BrokerResult<u64> {
        let s = &self.shared;
        let mut c = s.conn()?;
        let n: Option<i64> = s
            .call(
                redis::cmd("HGET")
                    .arg(s.keys.app(app_id, "channels"))
                    .arg(channel)
                    .query_async(&mut c),
            )
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> BrokerResult<Vec<(String, u64)>> {
        let s = &self.shared;
        let mut c = s.conn()?;
        let all: HashMap<String, i64> = s
            .call(
                redis::cmd("HGETALL")
                    .arg(s.keys.app(app_id, "channels"))
                    .query_async(&mut c),
            )
            .await?;
        let mut out: Vec<(String, u64)> = all
            .into_iter()
            .filter(|(ch, n)| *n > 0 && prefix.is_none_or(|p| ch.starts_with(p)))
            .map(|(ch, n)| (ch, n as u64))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn presence_add(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
        member: PresenceMember,
    ) -> BrokerResult<bool> {
        let t = self
            .shared
            .change(
                |m| {
                    let d = m.presence_add(app_id, channel, socket, member)?;
                    let message = self.shared.membership_message(&d.0, 1, &d.2, Some(socket));
                    Some((d, message))
                },
                |m| {
                    m.presence_remove(app_id, channel, socket);
                },
            )
            .await?;
        Ok(t.is_some_and(|(t, _)| t == "a"))
    }

    async fn presence_remove(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<Option<PresenceLeave>> {
        let mut user = None;
        let t = self
            .shared
            .change(
                |m| {
                    let (u, delta) = m.presence_remove(app_id, channel, socket)?;
                    user = Some(u);
                    let d = delta?;
                    let message = self.shared.membership_message(&d.0, -1, "", None);
                    Some((d, message))
                },
                |_| {},
            )
            .await?;
        Ok(user.map(|user_id| PresenceLeave {
            user_id,
            user_left: t.is_some_and(|(t, _)| t == "r"),
        }))
    }

    async fn presence_members(
        &self,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<Vec<PresenceMember>> {
        let s = &self.shared;
        let mut c = s.conn()?;
        let all: HashMap<String, String> = s
            .call(
                redis::cmd("HGETALL")
                    .arg(s.keys.app(app_id, &format!("members:{channel}")))
                    .query_async(&mut c),
            )
            .await?;
        let mut members: Vec<PresenceMember> = all
            .into_iter()
            .map(|(u, info)| split_member(u, info))
            .collect();
        members.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        Ok(members)
    }

    async fn presence_user_count(&self, app_id: &str, channel: &str) -> BrokerResult<u64> {
        let s = &self.shared;
        let mut c = s.conn()?;
        s.call(
            redis::cmd("HLEN")
                .arg(s.keys.app(app_id, &format!("presence:{channel}")))
                .query_async(&mut c),
        )
        .await
    }

    async fn presence_has_user(
        &self,
        app_id: &str,
        channel: &str,
        user_id: &str,
    ) -> BrokerResult<bool> {
        let s = &self.shared;
        let mut c = s.conn()?;
        s.call(
            redis::cmd("HEXISTS")
                .arg(s.keys.app(app_id, &format!("presence:{channel}")))
                .arg(user_id)
                .query_async(&mut c),
        )
        .await
    }

    async fn user_add_socket(
        &self,
        app_id: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> BrokerResult<()> {
        self.shared
            .change(
                |m| m.user_add(app_id, user_id, socket).map(|d| (d, None)),
                |m| {
                    m.user_remove(app_id, user_id, socket);
                },
            )
            .await?;
        Ok(())
    }

    async fn user_remove_socket(
        &self,
        app_id: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> BrokerResult<()> {
        self.shared
            .change(
                |m| m.user_remove(app_id, user_id, socket).map(|d| (d, None)),
                |_| {},
            )
            .await?;
        Ok(())
    }

    async fn user_sockets(&self, app_id: &str, user_id: &str) -> BrokerResult<Vec<SocketId>> {
        let s = &self.shared;
        let mut c = s.conn()?;
        let ids: Vec<String> = s
            .call(
                redis::cmd("HKEYS")
                    .arg(s.keys.app(app_id, &format!("user:{user_id}")))
                    .query_async(&mut c),
            )
            .await?;
        let mut out: Vec<SocketId> = ids
            .iter()
            .filter_map(|s| SocketId::parse(s).ok())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        out.sort();
        Ok(out)
    }

    async fn cache_set(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        ttl: Duration,
    ) -> BrokerResult<()> {
        let s = &self.shared;
        let key = s.keys.app(app_id, &format!("cache:{channel}"));
        let mut c = s.conn()?;
        let ms = ttl.as_millis() as u64;
        if ms == 0 {
            let _: i64 = s
                .call(redis::cmd("DEL").arg(key).query_async(&mut c))
                .await?;
            return Ok(());
        }
        let _: () = s
            .call(
                redis::cmd("SET")
                    .arg(key)
                    .arg(payload.as_ref())
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c),
            )
            .await?;
        Ok(())
    }

    async fn cache_get(
        &self,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<Option<(Bytes, Duration)>> {
        let s = &self.shared;
        let key = s.keys.app(app_id, &format!("cache:{channel}"));
        let mut c = s.conn()?;
        let (payload, ttl): (Option<Vec<u8>>, i64) = s
            .call(
                redis::pipe()
                    .cmd("GET")
                    .arg(&key)
                    .cmd("PTTL")
                    .arg(&key)
                    .query_async(&mut c),
            )
            .await?;
        Ok(match payload {
            Some(p) if ttl > 0 => Some((Bytes::from(p), Duration::from_millis(ttl as u64))),
            _ => None,
        })
    }
}

impl RedisBroker {
    async fn read_count(&self, key: &str) -> BrokerResult<u64> {
        let s = &self.shared;
        let mut c = s.conn()?;
        let n: Option<i64> = s
            .call(redis::cmd("GET").arg(key).query_async(&mut c))
            .await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }
}

fn count_of(t: Option<(String, String)>) -> u64 {
    t.and_then(|(_, n)| n.parse::<i64>().ok())
        .unwrap_or(0)
        .max(0) as u64
}
