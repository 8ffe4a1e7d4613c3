//! [`RedisBroker`]: connecting (a node never starts without its broker), stopping on drop,
//! and the [`Broker`] calls as Redis commands and scripts. The state they share lives in
//! [`shared`], the background tasks in [`supervisor`], the key names in [`keys`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use duplex_hub::broker::{
    Broker, BrokerResult, Control, HistoryLimits, HistoryRead, NodeId, NodeSink, PresenceLeave,
};
use duplex_hub::protocol::{Position, PresenceMember};
use duplex_hub::socket_id::SocketId;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::mirror::Mirror;
use crate::scripts::Scripts;
use crate::target::{redact, Target};
use crate::{RedisBrokerError, RedisConfig};
use keys::Keys;
use shared::{frame, split_member, write, Route, Shared};
use supervisor::{lease_loop, supervise};

mod keys;
mod shared;
mod supervisor;

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
            generation: std::sync::atomic::AtomicU64::new(0),
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
