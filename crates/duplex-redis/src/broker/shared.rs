//! The state one node shares between its [`RedisBroker`](super::RedisBroker), its supervisor
//! and its lease loop (`Shared`: connections, routes, sinks, the mirror of its share), and the
//! Redis calls made from it: every call with its timeout (`call`), changes of this node's
//! share (`apply`, `change`, `sync_share`) and the member messages they publish, the lease
//! (`heartbeat`), the sweep of dead nodes, reports to the node (`report`), and the dispatch of
//! pub/sub messages to the local sinks. It never decides when to reconnect (the supervisor).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use bytes::Bytes;
use duplex_hub::broker::{BrokerError, BrokerResult, ClusterChange, Control, NodeId, NodeSink};
use duplex_hub::protocol::{PresenceMember, ServerMessage};
use duplex_hub::socket_id::SocketId;
use redis::aio::{MultiplexedConnection, PubSub, PubSubSink};
use redis::{AsyncConnectionConfig, RedisResult};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::keys::Keys;
use crate::mirror::{Delta, Mirror, SEP};
use crate::scripts::Scripts;
use crate::target::Target;
use crate::RedisConfig;

/// Most contribution changes sent in one script call while re-registering.
const RESYNC_CHUNK: usize = 500;
/// Most dead nodes removed per sweep.
const REAP_PER_SWEEP: usize = 16;

/// Local subscribers of one Redis channel.
pub(super) struct Route {
    pub(super) app: String,
    pub(super) channel: String,
    pub(super) nodes: Vec<NodeId>,
}

pub(super) struct Shared {
    pub(super) cfg: RedisConfig,
    pub(super) shown_url: String,
    pub(super) node_id: String,
    pub(super) keys: Keys,
    pub(super) target: Target,
    pub(super) scripts: Scripts,
    /// The command connection (multiplexed: concurrent calls are pipelined); `None` while
    /// reconnecting.
    pub(super) cmd: RwLock<Option<MultiplexedConnection>>,
    /// The pub/sub connection's command half. Its lock also orders route changes with their
    /// SUBSCRIBE/UNSUBSCRIBE, so the two never disagree.
    pub(super) pubsub: tokio::sync::Mutex<Option<PubSubSink>>,
    pub(super) routes: RwLock<HashMap<String, Route>>,
    pub(super) sinks: RwLock<Vec<(NodeId, Weak<dyn NodeSink>)>>,
    pub(super) next_node: AtomicU64,
    pub(super) mirror: Mutex<Mirror>,
    /// Held shared by every change of this node's share, exclusively by a resync: a resync
    /// compares the mirror with Redis while nothing is half-applied.
    pub(super) contrib: tokio::sync::RwLock<()>,
    pub(super) connected: AtomicBool,
    /// Connected and this node's share re-registered since.
    pub(super) ready: AtomicBool,
    /// A change of this node's share may not have reached Redis: resync at the next tick.
    pub(super) dirty: AtomicBool,
    /// The cluster epoch this node last saw (it changes when Redis lost its data).
    pub(super) epoch: Mutex<Option<String>>,
    /// Wakes the supervisor when a call finds the connection broken.
    pub(super) broken: Notify,
    /// Counts installed connections, so a failure seen on an older one does not tear down the
    /// one that replaced it.
    pub(super) generation: std::sync::atomic::AtomicU64,
    /// Wakes the lease loop after a (re)connection.
    pub(super) connected_notify: Notify,
    pub(super) cancel: CancellationToken,
    /// Itself, for tasks spawned from a `&Shared` method.
    pub(super) me: std::sync::OnceLock<Weak<Shared>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

type Transitions = Vec<(String, String)>;

/// A message to publish with a change: `(pub/sub channel, framed message)`.
type Announce = Option<(String, Vec<u8>)>;

/// An event as sent over pub/sub: the length of the excluded socket id, the id, the payload.
pub(super) fn frame(except: Option<&SocketId>, payload: &[u8]) -> Vec<u8> {
    let except = except.map_or("", |s| s.as_str());
    let mut msg = Vec::with_capacity(1 + except.len() + payload.len());
    msg.push(except.len() as u8);
    msg.extend_from_slice(except.as_bytes());
    msg.extend_from_slice(payload);
    msg
}

impl Shared {
    pub(super) fn unavailable(&self) -> BrokerError {
        BrokerError(format!(
            "Redis at {} is unreachable; reconnecting",
            self.shown_url
        ))
    }

    pub(super) fn conn(&self) -> BrokerResult<MultiplexedConnection> {
        read(&self.cmd).clone().ok_or_else(|| self.unavailable())
    }

    /// Runs one Redis call with the op timeout; a connection-level failure wakes the
    /// supervisor, which reconnects.
    pub(super) async fn call<T>(
        &self,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> BrokerResult<T> {
        let generation = self.generation.load(Relaxed);
        match tokio::time::timeout(self.cfg.op_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let lost = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_unrecoverable_error()
                    || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
                if lost {
                    self.connection_broken(generation);
                }
                Err(BrokerError(format!("Redis at {}: {e}", self.shown_url)))
            }
            Err(_) => {
                self.connection_broken(generation);
                Err(BrokerError(format!(
                    "Redis at {} did not answer within {:?}",
                    self.shown_url, self.cfg.op_timeout
                )))
            }
        }
    }

    fn connection_broken(&self, generation: u64) {
        if generation == self.generation.load(Relaxed) {
            self.ready.store(false, Relaxed);
            self.broken.notify_one();
        }
    }

    /// Opens the command and pub/sub connections to the current primary.
    pub(super) async fn open(&self) -> Result<(MultiplexedConnection, PubSub), String> {
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
    pub(super) async fn install(
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
        self.generation.fetch_add(1, Relaxed);
        *write(&self.cmd) = Some(cmd);
        self.connected.store(true, Relaxed);
        Ok(stream)
    }

    pub(super) fn disconnected(&self) {
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
    pub(super) fn membership_message(
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
    pub(super) async fn change(
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
    pub(super) async fn sync_share(&self) -> BrokerResult<()> {
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
    pub(super) async fn sweep(&self) -> BrokerResult<()> {
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

    pub(super) async fn publish_raw(
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
    pub(super) fn dispatch(&self, msg: &redis::Msg) {
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

pub(super) fn split_member(user_id: String, info: String) -> PresenceMember {
    PresenceMember {
        user_id,
        user_info: (!info.is_empty())
            .then(|| serde_json::value::RawValue::from_string(info).ok())
            .flatten(),
    }
}
