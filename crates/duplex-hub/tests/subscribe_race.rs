//! A new subscriber gets its `subscription_succeeded` before any event of the channel, even
//! when an event (here a `member_added`) is published while its member list is being read: the
//! event is held and follows the confirmation, so clients that reset their member list on the
//! confirmation (pusher-js) do not lose the newcomer.

mod common;

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use duplex_hub::broker::{
    Broker, BrokerResult, Control, HistoryLimits, HistoryRead, MemoryBroker, NodeId, NodeSink,
    PresenceLeave,
};
use duplex_hub::protocol::{Position, PresenceMember};
use duplex_hub::socket_id::SocketId;
use tokio::sync::oneshot;

/// A memory broker whose first `presence_members` reads the list, then waits for a gate: the
/// window in which a distributed broker's answer is on its way back.
struct SlowFirstMemberList {
    inner: MemoryBroker,
    gate: Mutex<Option<oneshot::Receiver<()>>>,
}

#[async_trait::async_trait]
impl Broker for SlowFirstMemberList {
    fn attach(&self, sink: Weak<dyn NodeSink>) -> NodeId {
        self.inner.attach(sink)
    }
    async fn publish(&self, a: &str, c: &str, p: Bytes, e: Option<SocketId>) -> BrokerResult<()> {
        self.inner.publish(a, c, p, e).await
    }
    async fn publish_with_history(
        &self,
        a: &str,
        c: &str,
        p: Bytes,
        e: Option<SocketId>,
        l: HistoryLimits,
    ) -> BrokerResult<Position> {
        self.inner.publish_with_history(a, c, p, e, l).await
    }
    async fn history(
        &self,
        a: &str,
        c: &str,
        since: Option<u64>,
        limit: usize,
        l: HistoryLimits,
    ) -> BrokerResult<HistoryRead> {
        self.inner.history(a, c, since, limit, l).await
    }
    async fn control(&self, a: &str, c: Control) -> BrokerResult<()> {
        self.inner.control(a, c).await
    }
    async fn subscribe_node(&self, n: NodeId, a: &str, c: &str) -> BrokerResult<()> {
        self.inner.subscribe_node(n, a, c).await
    }
    async fn unsubscribe_node(&self, n: NodeId, a: &str, c: &str) -> BrokerResult<()> {
        self.inner.unsubscribe_node(n, a, c).await
    }
    async fn add_connection(&self, a: &str) -> BrokerResult<u64> {
        self.inner.add_connection(a).await
    }
    async fn remove_connection(&self, a: &str) -> BrokerResult<u64> {
        self.inner.remove_connection(a).await
    }
    async fn add_subscription(&self, a: &str, c: &str, s: &SocketId) -> BrokerResult<u64> {
        self.inner.add_subscription(a, c, s).await
    }
    async fn remove_subscription(&self, a: &str, c: &str, s: &SocketId) -> BrokerResult<u64> {
        self.inner.remove_subscription(a, c, s).await
    }
    async fn subscription_count(&self, a: &str, c: &str) -> BrokerResult<u64> {
        self.inner.subscription_count(a, c).await
    }
    async fn channels(&self, a: &str, p: Option<&str>) -> BrokerResult<Vec<(String, u64)>> {
        self.inner.channels(a, p).await
    }
    async fn presence_add(
        &self,
        a: &str,
        c: &str,
        s: &SocketId,
        m: PresenceMember,
    ) -> BrokerResult<bool> {
        self.inner.presence_add(a, c, s, m).await
    }
    async fn presence_remove(
        &self,
        a: &str,
        c: &str,
        s: &SocketId,
    ) -> BrokerResult<Option<PresenceLeave>> {
        self.inner.presence_remove(a, c, s).await
    }
    async fn presence_members(&self, a: &str, c: &str) -> BrokerResult<Vec<PresenceMember>> {
        let list = self.inner.presence_members(a, c).await;
        let gate = self.gate.lock().expect("lock").take();
        if let Some(gate) = gate {
            let _ = tokio::time::timeout(Duration::from_secs(5), gate).await;
        }
        list
    }
    async fn presence_user_count(&self, a: &str, c: &str) -> BrokerResult<u64> {
        self.inner.presence_user_count(a, c).await
    }
    async fn presence_has_user(&self, a: &str, c: &str, u: &str) -> BrokerResult<bool> {
        self.inner.presence_has_user(a, c, u).await
    }
    async fn user_add_socket(&self, a: &str, u: &str, s: &SocketId) -> BrokerResult<()> {
        self.inner.user_add_socket(a, u, s).await
    }
    async fn user_remove_socket(&self, a: &str, u: &str, s: &SocketId) -> BrokerResult<()> {
        self.inner.user_remove_socket(a, u, s).await
    }
    async fn user_sockets(&self, a: &str, u: &str) -> BrokerResult<Vec<SocketId>> {
        self.inner.user_sockets(a, u).await
    }
    async fn cache_set(&self, a: &str, c: &str, p: Bytes, t: Duration) -> BrokerResult<()> {
        self.inner.cache_set(a, c, p, t).await
    }
    async fn cache_get(&self, a: &str, c: &str) -> BrokerResult<Option<(Bytes, Duration)>> {
        self.inner.cache_get(a, c).await
    }
}

#[tokio::test]
async fn a_member_added_during_the_member_list_read_follows_the_confirmation() {
    let (open_gate, gate) = oneshot::channel();
    let broker = Arc::new(SlowFirstMemberList {
        inner: MemoryBroker::new(),
        gate: Mutex::new(Some(gate)),
    });
    let hub = hub_on(broker, config(|_| {}));
    let mut alice = Client::connect(&hub).await;
    let mut bob = Client::connect(&hub).await;
    alice.drain();
    bob.drain();
    let alice_joins = alice.subscribe_presence("presence-room", "alice");
    let bob_joins_meanwhile = async {
        // Alice's subscription is now waiting for its (stale) member list.
        tokio::task::yield_now().await;
        bob.subscribe_presence("presence-room", "bob").await;
        let _ = open_gate.send(());
    };
    tokio::join!(alice_joins, bob_joins_meanwhile);
    let got = alice.drain();
    assert_eq!(
        events(&got),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher_internal:member_added"
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0]["data"]["presence"]["ids"],
        serde_json::json!(["alice"])
    );
    assert_eq!(got[1]["data"]["user_id"], "bob");
}
