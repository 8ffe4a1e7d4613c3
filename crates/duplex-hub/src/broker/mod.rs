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

use std::sync::Weak;
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::{self, Position, PresenceMember};
use crate::socket_id::SocketId;

mod memory;

pub use memory::MemoryBroker;

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

pub mod conformance;
