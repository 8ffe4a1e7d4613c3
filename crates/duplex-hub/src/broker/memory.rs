//! [`MemoryBroker`], the single-process [`Broker`]: one mutex around plain maps (connection,
//! subscription and presence counts, users, cache), each channel's history ring (`Stream`),
//! and striped locks that keep deliveries of one channel in publish order. Shares nothing
//! beyond the process.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{
    Broker, BrokerResult, Control, HistoryLimits, HistoryRead, NodeId, NodeSink, PresenceLeave,
};
use crate::protocol::{self, Position, PresenceMember};
use crate::socket_id::SocketId;

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
    /// The position (epoch, offset) is forgotten after this: [`POSITION_TTL`] (or the ttl if
    /// longer) after the last publish or read.
    expires: Instant,
}

/// How long a channel's position outlives its last publish or read. Events expire after the
/// ttl; the position is kept longer, so a client that missed nothing during a quiet spell still
/// recovers (with nothing to replay). Only a channel unused this long starts a new epoch.
pub const POSITION_TTL: Duration = Duration::from_secs(24 * 3600);

/// How often expired events and positions of all channels are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

fn position_ttl(ttl: Duration) -> Duration {
    ttl.max(POSITION_TTL)
}

impl Stream {
    fn new(now: Instant, ttl: Duration) -> Stream {
        Stream {
            epoch: format!("{:016x}", rand::random::<u64>()),
            offset: 0,
            events: VecDeque::new(),
            expires: now + position_ttl(ttl),
        }
    }

    /// Drops the events past their deadline; false once the position itself expired.
    fn expire(&mut self, now: Instant) -> bool {
        while self.events.front().is_some_and(|e| e.1 <= now) {
            self.events.pop_front();
        }
        now < self.expires
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
    /// When expired history was last dropped from every channel.
    history_swept: Option<Instant>,
}

impl State {
    /// At most once per [`SWEEP_EVERY`]: drops expired events of every channel, and the
    /// channels whose position expired, so channels nobody reads again do not keep memory.
    fn sweep_history(&mut self, now: Instant) {
        if self
            .history_swept
            .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.history_swept = Some(now);
        self.history.retain(|_, s| s.expire(now));
    }
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
            st.sweep_history(now);
            let stream = st
                .history
                .entry(key(app_id, channel))
                .or_insert_with(|| Stream::new(now, limits.ttl));
            stream.trim(now, limits);
            stream.offset += 1;
            stream.expires = now + position_ttl(limits.ttl);
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
        st.sweep_history(now);
        let stream = st
            .history
            .entry(key(app_id, channel))
            .or_insert_with(|| Stream::new(now, limits.ttl));
        stream.trim(now, limits);
        // A read (a subscription) keeps the position alive too.
        stream.expires = now + position_ttl(limits.ttl);
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

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_broker_passes_the_conformance_suite() {
        super::super::conformance::run_all(super::MemoryBroker::new).await;
    }
}
