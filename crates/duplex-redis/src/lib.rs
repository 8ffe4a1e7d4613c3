//! [`RedisBroker`]: many `duplex serve` nodes sharing one hub through Redis.
//!
//! It implements [`duplex_hub::broker::Broker`], the seam every piece of shared state goes
//! through, and passes the same conformance suite as the in-process `MemoryBroker`
//! (`tests/conformance.rs`, against a real `redis-server`).
//!
//! **State: per-node contributions, aggregated by scripts.** Each node writes only its own
//! share, in its own hash (see [`scripts`] for the fields), and every change of a share updates
//! the cluster-wide aggregate in the same Lua script. So the answer a node gets back ("that
//! was the channel's first subscriber", "that was the user's last socket anywhere") is the
//! cluster's, decided once, and `channel_occupied`, `member_added` and their webhooks happen
//! exactly once per cluster. Nothing is asked of other nodes over pub/sub: a stuck node cannot
//! stall anyone's answers.
//!
//! **Liveness by lease.** A node renews `{prefix}:nodes` (a sorted set scored by lease expiry,
//! Redis's clock) every `node_timeout / 4`. Every node sweeps for expired leases; the sweep is a
//! script that removes one dead node's share atomically and returns what changed (members
//! removed, channels vacated), so exactly one node publishes `member_removed` and sends the
//! webhooks. A restarted node has a new id; its old share leaves when the old lease expires,
//! after its clients have come back, so a restart causes no leave/join storm.
//!
//! **Events.** `PUBLISH {prefix}:app:{app}:ev:{channel}` once per event; a node subscribes to a
//! channel's Redis channel while it has local subscribers, so an event crosses Redis once per
//! interested node. Redis delivers one channel's messages in one order to every subscriber:
//! that order is the delivery order on every node (local subscribers of the publishing node
//! included: they get the event back from Redis too).
//!
//! **Failures.** Every call has a timeout. When the connection drops, the node is not ready
//! ([`Broker::is_ready`](duplex_hub::broker::Broker::is_ready)), calls fail fast, and a supervisor reconnects with capped exponential
//! backoff (following a Sentinel failover). Once back, it re-subscribes and re-registers its
//! share from [`mirror`] (its own record of what it holds): after Redis lost its data this
//! rebuilds the cluster's state without any event; after this node was reaped while away, the
//! users that come back are announced again. Users who left meanwhile are removed then.

#![warn(missing_docs)]

mod broker;
pub mod mirror;
pub mod scripts;
pub mod target;

use std::time::Duration;

pub use broker::RedisBroker;
pub use target::redact;

/// How to reach Redis and how the cluster behaves.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://`, `rediss://` or `redis+sentinel://` (see [`target::Target::parse`]).
    pub url: String,
    /// Prefix of every key and pub/sub channel, so clusters can share one Redis.
    pub prefix: String,
    /// A node whose lease is this old is dead: its members and subscriptions are removed.
    /// Leases are renewed every quarter of it, and every node sweeps as often.
    pub node_timeout: Duration,
    /// Longest wait for one Redis call.
    pub op_timeout: Duration,
    /// Longest wait to connect.
    pub connect_timeout: Duration,
    /// Longest wait between two reconnection attempts (backoff doubles up to it).
    pub max_backoff: Duration,
    /// PEM file of the CA that signed Redis's certificate, for `rediss://` with a private CA
    /// (default: the webpki roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// How long a `channel_vacated`/`member_removed` webhook is held, cluster-wide: a join on
    /// any node within it cancels both webhooks (Pusher's behaviour). Zero sends them at once.
    pub vacate_delay: Duration,
}

impl RedisConfig {
    /// Defaults for `url`: prefix `duplex`, node timeout 20 s (a dead node's share is gone
    /// within 25 s), 2 s per call, 5 s to connect, reconnection backoff capped at 2 s.
    pub fn new(url: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            prefix: "duplex".into(),
            node_timeout: Duration::from_secs(20),
            op_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(2),
            vacate_delay: Duration::ZERO,
            ca_file: None,
        }
    }
}

/// Why a [`RedisBroker`] could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisBrokerError {
    /// The URL does not parse.
    #[error("bad Redis URL {url}: {why}")]
    BadUrl {
        /// The URL, password redacted.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Redis did not answer.
    #[error(
        "cannot reach Redis at {url}: {why} (is redis-server running there, and is the URL right?)"
    )]
    Unreachable {
        /// The URL, password redacted.
        url: String,
        /// The error.
        why: String,
    },
    /// The CA file could not be read.
    #[error("cannot read the Redis CA file {path}: {why}")]
    CaFile {
        /// The path.
        path: String,
        /// The error.
        why: String,
    },
    /// The prefix is empty or contains a character that Redis keys here cannot hold.
    #[error("bad Redis key prefix {0:?}: use letters, digits, '-', '_', '.', ':' or '{{}}'")]
    BadPrefix(String),
}
