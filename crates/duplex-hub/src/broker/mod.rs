//! The broker: all state and traffic that more than one node must share.
//!
//! A node keeps only its own connections and which of them listen to which channel. Everything
//! a second node would need goes through [`Broker`]: published events (fan-out to every node
//! that has subscribers), control messages (terminate connections), connection counts per app,
//! subscription counts per channel, presence members, user → sockets, and cache-channel last
//! events. [`MemoryBroker`] is the single-process implementation; a Redis broker implements the
//! same trait and must pass the same tests.
//!
//! Delivery is push: a node [`attach`](Broker::attach)es a [`NodeSink`] and the broker calls
//! [`NodeSink::deliver`] for every event on a channel that node subscribed to. Sinks must not
//! block (the hub's sink only does `try_send` into bounded queues).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{self, Position, PresenceMember};
use crate::socket_id::SocketId;

/// Identifies one attached node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// Instructions that reach every node of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close these sockets (wherever they are) with the given code.
    CloseSockets {
        /// Sockets to close.
        sockets: Vec<SocketId>,
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
}

/// A change of cluster-wide state that no call of this node caused: the broker found it while
/// removing a dead node's share (its lease expired) or while re-registering this node after the
/// shared store lost or dropped its state. The broker has already published what subscribers
/// must see (`member_added`/`member_removed`); the node only reports it (webhooks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterChange {
    /// The channel's cluster-wide subscription count went from 0 to 1.
    ChannelOccupied {
        /// Channel name.
        channel: String,
    },
    /// The channel's cluster-wide subscription count went to 0.
    ChannelVacated {
        /// Channel name.
        channel: String,
    },
    /// The user's first socket anywhere joined the presence channel.
    MemberAdded {
        /// Channel name.
        channel: String,
        /// User id.
        user_id: String,
    },
    /// The user's last socket anywhere left the presence channel.
    MemberRemoved {
        /// Channel name.
        channel: String,
        /// User id.
        user_id: String,
    },
}

/// Where a broker delivers to a node.
pub trait NodeSink: Send + Sync {
    /// An event serialized once by the publisher: queue `payload` for every local subscriber of
    /// `channel` except `except`.
    fn deliver(&self, app_id: &str, channel: &str, payload: &Bytes, except: Option<&SocketId>);
    /// A control message for `app_id`.
    fn control(&self, app_id: &str, control: &Control);
    /// A cluster-wide change found by the broker itself (see [`ClusterChange`]); reported to
    /// exactly one node of the cluster.
    fn cluster_change(&self, app_id: &str, change: &ClusterChange) {
        let _ = (app_id, change);
    }
}

/// What [`Broker::presence_remove`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceLeave {
    /// The user the socket was a member as.
    pub user_id: String,
    /// True when that was the user's last socket in the channel (send `member_removed`).
    pub user_left: bool,
}

/// How much history one channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Events kept (the oldest go first).
    pub size: usize,
    /// How long an event is kept; a stream with no event for that long is gone, and the next
    /// one starts a new epoch.
    pub ttl: Duration,
}

impl From<&crate::config::History> for HistoryLimits {
    fn from(h: &crate::config::History) -> HistoryLimits {
        HistoryLimits {
            size: h.size,
            ttl: Duration::from_secs(h.ttl),
        }
    }
}

/// What [`Broker::history`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRead {
    /// The channel's position at the read (a new stream's, offset 0, if it had none).
    pub position: Position,
    /// The kept events after `since`, oldest first, at most `limit`, each as delivered (with
    /// its `position`).
    pub events: Vec<Bytes>,
    /// True when every event after `since` is still kept (nothing was trimmed in between and
    /// `since` is not ahead of the position): the events are then a gap-free continuation.
    pub complete: bool,
}

/// The broker is unreachable or refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker: {0}")]
pub struct BrokerError(pub String);

/// Result of broker calls.
pub type BrokerResult<T> = Result<T, BrokerError>;

/// Shared state and fan-out between nodes. Methods are keyed by app id.
#[async_trait::async_trait]
pub trait Broker: Send + Sync {
    /// Registers a node's sink; the broker holds it weakly.
    fn attach(&self, sink: Weak<dyn NodeSink>) -> NodeId;

    /// False while the broker cannot serve (its shared store is unreachable or this node's
    /// state is being re-registered): the node reports not ready and refuses work that needs it.
    fn is_ready(&self) -> bool {
        true
    }

    /// True when a draining node should leave its share of the shared state in place (its
    /// lease then expires and the cluster removes it), so clients that move to another node
    /// in time cause no `member_removed`/`member_added` or vacated/occupied pair. A
    /// single-process broker has no one to hand over to.
    fn hands_over_on_drain(&self) -> bool {
        false
    }

    /// True when the broker itself announces the transitions its calls cause, each exactly
    /// once for the cluster and in the same step as the change: `member_added` (to all but
    /// the joining socket) and `member_removed` are published by
    /// [`presence_add`](Broker::presence_add)/[`presence_remove`](Broker::presence_remove),
    /// and occupied/vacated/member webhooks are reported through
    /// [`NodeSink::cluster_change`] (with the vacate delay applied cluster-wide). Then a reply
    /// lost on the way back cannot lose or double them. Otherwise the node does all of it from
    /// the calls' answers.
    fn handles_transitions(&self) -> bool {
        false
    }

    /// Sends a serialized event to every node subscribed to `channel`.
    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
    ) -> BrokerResult<()>;
    /// Appends an event to `channel`'s history and publishes it, as one step: `payload` (a
    /// JSON object) gets the event's `position` (see [`protocol::with_position`]), and the
    /// order of offsets is the order of delivery on every node. Returns the position.
    async fn publish_with_history(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
        limits: HistoryLimits,
    ) -> BrokerResult<Position>;
    /// The channel's position and, with `since`, the kept events after that offset (at most
    /// `limit`). A channel with no stream gets one (a new epoch, offset 0).
    async fn history(
        &self,
        app_id: &str,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        limits: HistoryLimits,
    ) -> BrokerResult<HistoryRead>;
    /// Sends a control message to every node.
    async fn control(&self, app_id: &str, control: Control) -> BrokerResult<()>;
    /// From now on, deliver `channel`'s events to `node`.
    async fn subscribe_node(&self, node: NodeId, app_id: &str, channel: &str) -> BrokerResult<()>;
    /// Stop delivering `channel`'s events to `node`.
    async fn unsubscribe_node(&self, node: NodeId, app_id: &str, channel: &str)
        -> BrokerResult<()>;

    /// Counts a new connection; returns the app's connection count including it.
    async fn add_connection(&self, app_id: &str) -> BrokerResult<u64>;
    /// Forgets a connection; returns the count left.
    async fn remove_connection(&self, app_id: &str) -> BrokerResult<u64>;

    /// Records `socket` as subscribed; returns the channel's subscription count after.
    async fn add_subscription(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<u64>;
    /// Forgets a subscription; returns the count after (0 = vacated).
    async fn remove_subscription(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<u64>;
    /// Current subscription count.
    async fn subscription_count(&self, app_id: &str, channel: &str) -> BrokerResult<u64>;
    /// Occupied channels (optionally only those starting with `prefix`) with their
    /// subscription counts, sorted by name.
    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> BrokerResult<Vec<(String, u64)>>;

    /// Adds `socket` to a presence channel as `member`; returns true when the user was not in
    /// the channel before (send `member_added`).
    async fn presence_add(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
        member: PresenceMember,
    ) -> BrokerResult<bool>;
    /// Removes `socket` from a presence channel.
    async fn presence_remove(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<Option<PresenceLeave>>;
    /// One member per user, sorted by user id.
    async fn presence_members(
        &self,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<Vec<PresenceMember>>;
    /// Distinct users in a presence channel.
    async fn presence_user_count(&self, app_id: &str, channel: &str) -> BrokerResult<u64>;
    /// Whether `user_id` is in the channel.
    async fn presence_has_user(
        &self,
        app_id: &str,
        channel: &str,
        user_id: &str,
    ) -> BrokerResult<bool>;

    /// Associates a signed-in socket with its user.
    async fn user_add_socket(
        &self,
        app_id: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> BrokerResult<()>;
    /// Forgets that association.
    async fn user_remove_socket(
        &self,
        app_id: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> BrokerResult<()>;
    /// All sockets signed in as `user_id`, on any node.
    async fn user_sockets(&self, app_id: &str, user_id: &str) -> BrokerResult<Vec<SocketId>>;

    /// Stores a cache channel's last event (serialized) for `ttl`.
    async fn cache_set(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        ttl: Duration,
    ) -> BrokerResult<()>;
    /// The cached event and its remaining time to live, if any.
    async fn cache_get(
        &self,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<Option<(Bytes, Duration)>>;
}

type Key = (String, String);

fn key(app_id: &str, channel: &str) -> Key {
    (app_id.to_owned(), channel.to_owned())
}

/// One channel's kept events.
struct Stream {
    epoch: String,
    offset: u64,
    /// (offset, kept until, event with its position)
    events: VecDeque<(u64, Instant, Bytes)>,
    /// The stream is gone after this (no event for `ttl`).
    expires: Instant,
}

impl Stream {
    fn new(now: Instant, ttl: Duration) -> Stream {
        Stream {
            epoch: format!("{:016x}", rand::random::<u64>()),
            offset: 0,
            events: VecDeque::new(),
            expires: now + ttl,
        }
    }

    fn position(&self) -> Position {
        Position {
            epoch: self.epoch.clone(),
            offset: self.offset,
        }
    }

    /// Drops what `limits` no longer allow; a stream past its end restarts (new epoch).
    fn trim(&mut self, now: Instant, limits: HistoryLimits) {
        if now >= self.expires {
            *self = Stream::new(now, limits.ttl);
        }
        while self
            .events
            .front()
            .is_some_and(|e| e.1 <= now || self.events.len() > limits.size)
        {
            self.events.pop_front();
        }
    }
}

/// Locks that order deliveries per channel: events of one channel reach the sinks one at a
/// time, in publish order, without one lock for every channel.
const DELIVERY_STRIPES: usize = 64;

fn stripe(app_id: &str, channel: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (app_id, channel).hash(&mut h);
    (h.finish() as usize) % DELIVERY_STRIPES
}

#[derive(Default)]
struct State {
    sinks: HashMap<NodeId, Weak<dyn NodeSink>>,
    node_channels: HashMap<Key, HashSet<NodeId>>,
    connections: HashMap<String, u64>,
    subscriptions: HashMap<Key, HashSet<SocketId>>,
    /// channel → socket → member; members per user are derived.
    presence: HashMap<Key, HashMap<SocketId, PresenceMember>>,
    users: HashMap<Key, HashSet<SocketId>>,
    cache: HashMap<Key, (Bytes, Instant)>,
    history: HashMap<Key, Stream>,
}

/// The in-process broker: one mutex around plain maps, never held across an await or while a
/// sink runs.
pub struct MemoryBroker {
    state: Mutex<State>,
    next_node: AtomicU64,
    delivery: [Mutex<()>; DELIVERY_STRIPES],
}

impl Default for MemoryBroker {
    fn default() -> MemoryBroker {
        MemoryBroker {
            state: Mutex::default(),
            next_node: AtomicU64::default(),
            delivery: std::array::from_fn(|_| Mutex::new(())),
        }
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> MemoryBroker {
        MemoryBroker::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sinks_of(&self, app_id: &str, channel: &str) -> Vec<std::sync::Arc<dyn NodeSink>> {
        let st = self.lock();
        match st.node_channels.get(&key(app_id, channel)) {
            Some(nodes) => nodes
                .iter()
                .filter_map(|n| st.sinks.get(n).and_then(Weak::upgrade))
                .collect(),
            None => Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    fn attach(&self, sink: Weak<dyn NodeSink>) -> NodeId {
        let id = NodeId(self.next_node.fetch_add(1, Ordering::Relaxed));
        self.lock().sinks.insert(id, sink);
        id
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
    ) -> BrokerResult<()> {
        let _order = self.delivery[stripe(app_id, channel)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for sink in self.sinks_of(app_id, channel) {
            sink.deliver(app_id, channel, &payload, except.as_ref());
        }
        Ok(())
    }

    async fn publish_with_history(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        except: Option<SocketId>,
        limits: HistoryLimits,
    ) -> BrokerResult<Position> {
        // Appending and delivering under the channel's delivery lock: offsets in delivery order.
        let _order = self.delivery[stripe(app_id, channel)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let (position, event) = {
            let mut st = self.lock();
            let stream = st
                .history
                .entry(key(app_id, channel))
                .or_insert_with(|| Stream::new(now, limits.ttl));
            stream.trim(now, limits);
            stream.offset += 1;
            stream.expires = now + limits.ttl;
            let position = stream.position();
            let event = protocol::with_position(&payload, &position);
            stream
                .events
                .push_back((position.offset, now + limits.ttl, event.clone()));
            stream.trim(now, limits);
            (position, event)
        };
        for sink in self.sinks_of(app_id, channel) {
            sink.deliver(app_id, channel, &event, except.as_ref());
        }
        Ok(position)
    }

    async fn history(
        &self,
        app_id: &str,
        channel: &str,
        since: Option<u64>,
        limit: usize,
        limits: HistoryLimits,
    ) -> BrokerResult<HistoryRead> {
        let now = Instant::now();
        let mut st = self.lock();
        let stream = st
            .history
            .entry(key(app_id, channel))
            .or_insert_with(|| Stream::new(now, limits.ttl));
        stream.trim(now, limits);
        let position = stream.position();
        let Some(since) = since else {
            return Ok(HistoryRead {
                position,
                events: Vec::new(),
                complete: true,
            });
        };
        let oldest = stream.events.front().map_or(stream.offset + 1, |e| e.0);
        let complete = since <= stream.offset && since + 1 >= oldest;
        let events = stream
            .events
            .iter()
            .filter(|e| e.0 > since)
            .take(limit)
            .map(|e| e.2.clone())
            .collect();
        Ok(HistoryRead {
            position,
            events,
            complete,
        })
    }

    async fn control(&self, app_id: &str, control: Control) -> BrokerResult<()> {
        let sinks: Vec<_> = self
            .lock()
            .sinks
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        for sink in sinks {
            sink.control(app_id, &control);
        }
        Ok(())
    }

    async fn subscribe_node(&self, node: NodeId, app_id: &str, channel: &str) -> BrokerResult<()> {
        self.lock()
            .node_channels
            .entry(key(app_id, channel))
            .or_default()
            .insert(node);
        Ok(())
    }

    async fn unsubscribe_node(
        &self,
        node: NodeId,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<()> {
        let mut st = self.lock();
        let k = key(app_id, channel);
        if let Some(nodes) = st.node_channels.get_mut(&k) {
            nodes.remove(&node);
            if nodes.is_empty() {
                st.node_channels.remove(&k);
            }
        }
        Ok(())
    }

    async fn add_connection(&self, app_id: &str) -> BrokerResult<u64> {
        let mut st = self.lock();
        let n = st.connections.entry(app_id.to_owned()).or_default();
        *n += 1;
        Ok(*n)
    }

    async fn remove_connection(&self, app_id: &str) -> BrokerResult<u64> {
        let mut st = self.lock();
        let n = st.connections.entry(app_id.to_owned()).or_default();
        *n = n.saturating_sub(1);
        Ok(*n)
    }

    async fn add_subscription(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<u64> {
        let mut st = self.lock();
        let set = st.subscriptions.entry(key(app_id, channel)).or_default();
        set.insert(socket.clone());
        Ok(set.len() as u64)
    }

    async fn remove_subscription(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<u64> {
        let mut st = self.lock();
        let k = key(app_id, channel);
        let left = match st.subscriptions.get_mut(&k) {
            Some(set) => {
                set.remove(socket);
                set.len() as u64
            }
            None => 0,
        };
        if left == 0 {
            st.subscriptions.remove(&k);
        }
        Ok(left)
    }

    async fn subscription_count(&self, app_id: &str, channel: &str) -> BrokerResult<u64> {
        Ok(self
            .lock()
            .subscriptions
            .get(&key(app_id, channel))
            .map_or(0, |s| s.len() as u64))
    }

    async fn channels(
        &self,
        app_id: &str,
        prefix: Option<&str>,
    ) -> BrokerResult<Vec<(String, u64)>> {
        let st = self.lock();
        let mut out: Vec<(String, u64)> = st
            .subscriptions
            .iter()
            .filter(|((a, c), set)| {
                a == app_id && !set.is_empty() && prefix.is_none_or(|p| c.starts_with(p))
            })
            .map(|((_, c), set)| (c.clone(), set.len() as u64))
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
        let mut st = self.lock();
        let members = st.presence.entry(key(app_id, channel)).or_default();
        let is_new = !members.values().any(|m| m.user_id == member.user_id);
        members.insert(socket.clone(), member);
        Ok(is_new)
    }

    async fn presence_remove(
        &self,
        app_id: &str,
        channel: &str,
        socket: &SocketId,
    ) -> BrokerResult<Option<PresenceLeave>> {
        let mut st = self.lock();
        let k = key(app_id, channel);
        let Some(members) = st.presence.get_mut(&k) else {
            return Ok(None);
        };
        let Some(member) = members.remove(socket) else {
            return Ok(None);
        };
        let user_left = !members.values().any(|m| m.user_id == member.user_id);
        if members.is_empty() {
            st.presence.remove(&k);
        }
        Ok(Some(PresenceLeave {
            user_id: member.user_id,
            user_left,
        }))
    }

    async fn presence_members(
        &self,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<Vec<PresenceMember>> {
        let st = self.lock();
        let mut by_user: BTreeMap<&str, &PresenceMember> = BTreeMap::new();
        if let Some(members) = st.presence.get(&key(app_id, channel)) {
            // Sockets in id order, so the info shown for a user is stable.
            let mut sockets: Vec<_> = members.iter().collect();
            sockets.sort_by(|a, b| a.0.cmp(b.0));
            for (_, m) in sockets {
                by_user.entry(m.user_id.as_str()).or_insert(m);
            }
        }
        Ok(by_user.into_values().cloned().collect())
    }

    async fn presence_user_count(&self, app_id: &str, channel: &str) -> BrokerResult<u64> {
        let st = self.lock();
        Ok(st.presence.get(&key(app_id, channel)).map_or(0, |m| {
            m.values()
                .map(|m| m.user_id.as_str())
                .collect::<HashSet<_>>()
                .len() as u64
        }))
    }

    async fn presence_has_user(
        &self,
        app_id: &str,
        channel: &str,
        user_id: &str,
    ) -> BrokerResult<bool> {
        let st = self.lock();
        Ok(st
            .presence
            .get(&key(app_id, channel))
            .is_some_and(|m| m.values().any(|m| m.user_id == user_id)))
    }

    async fn user_add_socket(
        &self,
        app_id: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> BrokerResult<()> {
        self.lock()
            .users
            .entry(key(app_id, user_id))
            .or_default()
            .insert(socket.clone());
        Ok(())
    }

    async fn user_remove_socket(
        &self,
        app_id: &str,
        user_id: &str,
        socket: &SocketId,
    ) -> BrokerResult<()> {
        let mut st = self.lock();
        let k = key(app_id, user_id);
        if let Some(set) = st.users.get_mut(&k) {
            set.remove(socket);
            if set.is_empty() {
                st.users.remove(&k);
            }
        }
        Ok(())
    }

    async fn user_sockets(&self, app_id: &str, user_id: &str) -> BrokerResult<Vec<SocketId>> {
        let st = self.lock();
        let mut v: Vec<SocketId> = st
            .users
            .get(&key(app_id, user_id))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort();
        Ok(v)
    }

    async fn cache_set(
        &self,
        app_id: &str,
        channel: &str,
        payload: Bytes,
        ttl: Duration,
    ) -> BrokerResult<()> {
        let expires = Instant::now() + ttl;
        self.lock()
            .cache
            .insert(key(app_id, channel), (payload, expires));
        Ok(())
    }

    async fn cache_get(
        &self,
        app_id: &str,
        channel: &str,
    ) -> BrokerResult<Option<(Bytes, Duration)>> {
        let mut st = self.lock();
        let k = key(app_id, channel);
        let now = Instant::now();
        match st.cache.get(&k) {
            Some((payload, expires)) if *expires > now => {
                Ok(Some((payload.clone(), *expires - now)))
            }
            Some(_) => {
                st.cache.remove(&k);
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

/// The behaviour every [`Broker`] must show, as one suite: a Redis broker runs the same checks.
///
/// Each check takes a fresh broker and panics on the first mismatch (it is test code, shipped
/// so other crates can run it):
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// duplex_hub::broker::conformance::run_all(duplex_hub::broker::MemoryBroker::new).await;
/// # });
/// ```
#[allow(clippy::missing_panics_doc)]
pub mod conformance {
    use super::*;
    use crate::protocol::parse_channel_data;
    use std::sync::Arc;

    type Delivered = (String, String, Bytes, Option<SocketId>);

    #[derive(Default)]
    struct RecordingSink {
        got: Mutex<Vec<Delivered>>,
        controls: Mutex<Vec<Control>>,
    }

    impl NodeSink for RecordingSink {
        fn deliver(&self, app: &str, channel: &str, payload: &Bytes, except: Option<&SocketId>) {
            self.got.lock().expect("lock").push((
                app.into(),
                channel.into(),
                payload.clone(),
                except.cloned(),
            ));
        }
        fn control(&self, _app: &str, control: &Control) {
            self.controls.lock().expect("lock").push(control.clone());
        }
    }

    fn sid(s: &str) -> SocketId {
        SocketId::parse(s).expect("valid id")
    }

    fn member(id: &str) -> PresenceMember {
        parse_channel_data(&format!(r#"{{"user_id":"{id}"}}"#)).expect("valid")
    }

    /// Waits (at most 5 s) until `done` holds: a distributed broker delivers asynchronously.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn payloads(s: &RecordingSink) -> Vec<Bytes> {
        s.got
            .lock()
            .expect("lock")
            .iter()
            .map(|d| d.2.clone())
            .collect()
    }

    /// Conformance check `publish_reaches_only_nodes_subscribed_to_the_channel`.
    pub async fn publish_reaches_only_nodes_subscribed_to_the_channel(b: &dyn Broker) {
        let s1 = Arc::new(RecordingSink::default());
        let s2 = Arc::new(RecordingSink::default());
        let w1: Weak<dyn NodeSink> = Arc::downgrade(&s1) as Weak<dyn NodeSink>;
        let w2: Weak<dyn NodeSink> = Arc::downgrade(&s2) as Weak<dyn NodeSink>;
        let n1 = b.attach(w1);
        let n2 = b.attach(w2);
        b.subscribe_node(n1, "app", "a").await.expect("ok");
        b.publish("app", "a", Bytes::from_static(b"x"), Some(sid("1.1")))
            .await
            .expect("ok");
        b.publish("app", "b", Bytes::from_static(b"y"), None)
            .await
            .expect("ok");
        b.publish("other", "a", Bytes::from_static(b"z"), None)
            .await
            .expect("ok");
        // A marker published last arrives last: what was misrouted would be in by then.
        b.publish("app", "a", Bytes::from_static(b"m"), None)
            .await
            .expect("ok");
        eventually("the marker", || payloads(&s1).len() >= 2).await;
        assert_eq!(
            *s1.got.lock().expect("lock"),
            vec![
                (
                    "app".into(),
                    "a".into(),
                    Bytes::from_static(b"x"),
                    Some(sid("1.1"))
                ),
                ("app".into(), "a".into(), Bytes::from_static(b"m"), None)
            ]
        );
        assert!(s2.got.lock().expect("lock").is_empty());
        b.unsubscribe_node(n1, "app", "a").await.expect("ok");
        b.subscribe_node(n2, "app", "a").await.expect("ok");
        b.publish("app", "a", Bytes::from_static(b"x2"), None)
            .await
            .expect("ok");
        eventually("delivery to the second node", || !payloads(&s2).is_empty()).await;
        assert_eq!(payloads(&s2), vec![Bytes::from_static(b"x2")]);
        assert_eq!(payloads(&s1).len(), 2, "no delivery after unsubscribe_node");
    }

    /// Conformance check `publish_order_is_kept_per_channel`.
    pub async fn publish_order_is_kept_per_channel(b: &dyn Broker) {
        let s1 = Arc::new(RecordingSink::default());
        let n1 = b.attach(Arc::downgrade(&s1) as Weak<dyn NodeSink>);
        b.subscribe_node(n1, "app", "ordered").await.expect("ok");
        let sent: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("{i}"))).collect();
        for p in &sent {
            b.publish("app", "ordered", p.clone(), None)
                .await
                .expect("ok");
        }
        eventually("200 events", || payloads(&s1).len() >= sent.len()).await;
        assert_eq!(payloads(&s1), sent);
    }

    /// Conformance check `control_reaches_every_node`.
    pub async fn control_reaches_every_node(b: &dyn Broker) {
        let s1 = Arc::new(RecordingSink::default());
        let s2 = Arc::new(RecordingSink::default());
        b.attach(Arc::downgrade(&s1) as Weak<dyn NodeSink>);
        b.attach(Arc::downgrade(&s2) as Weak<dyn NodeSink>);
        let c = Control::CloseSockets {
            sockets: vec![sid("1.1")],
            code: 4009,
            reason: "x".into(),
        };
        b.control("app", c.clone()).await.expect("ok");
        eventually("the control message", || {
            !s1.controls.lock().expect("lock").is_empty()
                && !s2.controls.lock().expect("lock").is_empty()
        })
        .await;
        assert_eq!(*s1.controls.lock().expect("lock"), vec![c.clone()]);
        assert_eq!(*s2.controls.lock().expect("lock"), vec![c]);
    }

    /// Conformance check `subscription_counts_report_occupied_and_vacated`.
    pub async fn subscription_counts_report_occupied_and_vacated(b: &dyn Broker) {
        assert_eq!(b.add_subscription("a", "c", &sid("1.1")).await, Ok(1));
        assert_eq!(b.add_subscription("a", "c", &sid("1.2")).await, Ok(2));
        assert_eq!(b.add_subscription("a", "c", &sid("1.2")).await, Ok(2));
        assert_eq!(b.channels("a", None).await, Ok(vec![("c".to_string(), 2)]));
        assert_eq!(b.remove_subscription("a", "c", &sid("1.1")).await, Ok(1));
        assert_eq!(b.remove_subscription("a", "c", &sid("1.2")).await, Ok(0));
        assert_eq!(b.channels("a", None).await, Ok(vec![]));
        assert_eq!(b.subscription_count("a", "c").await, Ok(0));
    }

    /// Conformance check `channels_filter_by_prefix`.
    pub async fn channels_filter_by_prefix(b: &dyn Broker) {
        b.add_subscription("a", "presence-x", &sid("1.1"))
            .await
            .expect("ok");
        b.add_subscription("a", "news", &sid("1.1"))
            .await
            .expect("ok");
        assert_eq!(
            b.channels("a", Some("presence-")).await,
            Ok(vec![("presence-x".to_string(), 1)])
        );
    }

    /// Conformance check `presence_counts_one_member_per_user_across_sockets`.
    pub async fn presence_counts_one_member_per_user_across_sockets(b: &dyn Broker) {
        assert_eq!(
            b.presence_add("a", "presence-c", &sid("1.1"), member("u"))
                .await,
            Ok(true)
        );
        assert_eq!(
            b.presence_add("a", "presence-c", &sid("1.2"), member("u"))
                .await,
            Ok(false)
        );
        assert_eq!(
            b.presence_add("a", "presence-c", &sid("1.3"), member("v"))
                .await,
            Ok(true)
        );
        assert_eq!(b.presence_user_count("a", "presence-c").await, Ok(2));
        let ids: Vec<String> = b
            .presence_members("a", "presence-c")
            .await
            .expect("ok")
            .into_iter()
            .map(|m| m.user_id)
            .collect();
        assert_eq!(ids, vec!["u", "v"]);
        assert_eq!(
            b.presence_remove("a", "presence-c", &sid("1.1")).await,
            Ok(Some(PresenceLeave {
                user_id: "u".into(),
                user_left: false
            }))
        );
        assert_eq!(
            b.presence_remove("a", "presence-c", &sid("1.2")).await,
            Ok(Some(PresenceLeave {
                user_id: "u".into(),
                user_left: true
            }))
        );
        assert_eq!(
            b.presence_remove("a", "presence-c", &sid("1.2")).await,
            Ok(None)
        );
        assert_eq!(b.presence_has_user("a", "presence-c", "v").await, Ok(true));
    }

    /// Conformance check `user_sockets_and_connection_counts`.
    pub async fn user_sockets_and_connection_counts(b: &dyn Broker) {
        b.user_add_socket("a", "u", &sid("1.1")).await.expect("ok");
        b.user_add_socket("a", "u", &sid("1.2")).await.expect("ok");
        assert_eq!(
            b.user_sockets("a", "u").await,
            Ok(vec![sid("1.1"), sid("1.2")])
        );
        b.user_remove_socket("a", "u", &sid("1.1"))
            .await
            .expect("ok");
        assert_eq!(b.user_sockets("a", "u").await, Ok(vec![sid("1.2")]));
        assert_eq!(b.add_connection("a").await, Ok(1));
        assert_eq!(b.add_connection("a").await, Ok(2));
        assert_eq!(b.remove_connection("a").await, Ok(1));
    }

    /// Conformance check `cache_keeps_last_event_until_ttl`.
    pub async fn cache_keeps_last_event_until_ttl(b: &dyn Broker) {
        assert_eq!(b.cache_get("a", "cache-c").await, Ok(None));
        b.cache_set(
            "a",
            "cache-c",
            Bytes::from_static(b"1"),
            Duration::from_secs(60),
        )
        .await
        .expect("ok");
        b.cache_set(
            "a",
            "cache-c",
            Bytes::from_static(b"2"),
            Duration::from_secs(60),
        )
        .await
        .expect("ok");
        let got = b.cache_get("a", "cache-c").await.expect("ok");
        assert_eq!(got.map(|g| g.0), Some(Bytes::from_static(b"2")));
        b.cache_set("a", "cache-d", Bytes::from_static(b"3"), Duration::ZERO)
            .await
            .expect("ok");
        assert_eq!(b.cache_get("a", "cache-d").await, Ok(None));
    }

    fn limits(size: usize) -> HistoryLimits {
        HistoryLimits {
            size,
            ttl: Duration::from_secs(60),
        }
    }

    /// Conformance check `history_positions_follow_delivery_order`.
    pub async fn history_positions_follow_delivery_order(b: &dyn Broker) {
        let s1 = Arc::new(RecordingSink::default());
        let n1 = b.attach(Arc::downgrade(&s1) as Weak<dyn NodeSink>);
        b.subscribe_node(n1, "app", "chat-1").await.expect("ok");
        let start = b
            .history("app", "chat-1", None, 0, limits(5))
            .await
            .expect("ok");
        assert_eq!(start.position.offset, 0, "a new stream starts at 0");
        let mut last = None;
        for i in 0..8 {
            let p = b
                .publish_with_history(
                    "app",
                    "chat-1",
                    Bytes::from(format!(r#"{{"event":"e","data":"{i}"}}"#)),
                    None,
                    limits(5),
                )
                .await
                .expect("ok");
            assert_eq!(p.epoch, start.position.epoch, "same stream");
            assert_eq!(p.offset, i + 1);
            last = Some(p);
        }
        eventually("8 events", || payloads(&s1).len() >= 8).await;
        let got = payloads(&s1);
        for (i, e) in got.iter().enumerate() {
            assert_eq!(
                protocol::position_offset(e),
                Some(i as u64 + 1),
                "delivered in offset order"
            );
            let v: serde_json::Value = serde_json::from_slice(e).expect("JSON");
            assert_eq!(v["position"]["epoch"], start.position.epoch.as_str());
            assert_eq!(v["data"], i.to_string());
        }
        // Kept: the last 5 (offsets 4..=8).
        let read = b
            .history("app", "chat-1", Some(5), 100, limits(5))
            .await
            .expect("ok");
        assert_eq!(Some(read.position.clone()), last);
        assert!(read.complete);
        assert_eq!(read.events, got[5..].to_vec());
        let read = b
            .history("app", "chat-1", Some(3), 100, limits(5))
            .await
            .expect("ok");
        assert!(read.complete, "offset 3 is just before the oldest kept (4)");
        assert_eq!(read.events.len(), 5);
        let read = b
            .history("app", "chat-1", Some(2), 100, limits(5))
            .await
            .expect("ok");
        assert!(!read.complete, "offset 3 was trimmed: a gap");
        let read = b
            .history("app", "chat-1", Some(9), 100, limits(5))
            .await
            .expect("ok");
        assert!(!read.complete, "ahead of the stream");
        let read = b
            .history("app", "chat-1", Some(4), 2, limits(5))
            .await
            .expect("ok");
        assert_eq!(read.events, got[4..6].to_vec(), "limit");
    }

    /// Conformance check `history_expires_into_a_new_epoch`.
    pub async fn history_expires_into_a_new_epoch(b: &dyn Broker) {
        let short = HistoryLimits {
            size: 10,
            ttl: Duration::from_millis(300),
        };
        let p1 = b
            .publish_with_history("app", "chat-2", Bytes::from_static(b"{}"), None, short)
            .await
            .expect("ok");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let read = b
            .history("app", "chat-2", Some(p1.offset), 10, short)
            .await
            .expect("ok");
        assert_ne!(read.position.epoch, p1.epoch, "a new stream, a new epoch");
        assert_eq!(read.position.offset, 0);
    }

    /// Runs every check, each on a fresh broker from `make`.
    pub async fn run_all<B: Broker, F: Fn() -> B>(make: F) {
        publish_reaches_only_nodes_subscribed_to_the_channel(&make()).await;
        publish_order_is_kept_per_channel(&make()).await;
        control_reaches_every_node(&make()).await;
        subscription_counts_report_occupied_and_vacated(&make()).await;
        channels_filter_by_prefix(&make()).await;
        presence_counts_one_member_per_user_across_sockets(&make()).await;
        user_sockets_and_connection_counts(&make()).await;
        cache_keeps_last_event_until_ttl(&make()).await;
        history_positions_follow_delivery_order(&make()).await;
        history_expires_into_a_new_epoch(&make()).await;
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_broker_passes_the_conformance_suite() {
        super::conformance::run_all(super::MemoryBroker::new).await;
    }
}
