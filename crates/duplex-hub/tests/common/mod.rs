//! Fake connections driving a `Hub` without sockets.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use duplex_hub::auth;
use duplex_hub::broker::{Broker, MemoryBroker};
use duplex_hub::config::{App, HubConfig};
use duplex_hub::hub::{ConnectionHandle, Hub, Outbound};
use serde_json::Value;

pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";
pub const APP_ID: &str = "app-id";

pub fn config(edit: impl FnOnce(&mut App)) -> HubConfig {
    let mut c = HubConfig::default();
    c.apps[0].enable_client_events = true;
    edit(&mut c.apps[0]);
    c
}

pub fn hub(edit: impl FnOnce(&mut App)) -> Hub {
    hub_on(Arc::new(MemoryBroker::new()), config(edit))
}

pub fn hub_on(broker: Arc<dyn Broker>, config: HubConfig) -> Hub {
    Hub::new(config, broker).expect("valid config")
}

/// A fake client: its handle plus the hub it talks to.
pub struct Client {
    pub hub: Hub,
    pub conn: ConnectionHandle,
}

impl Client {
    pub async fn connect(hub: &Hub) -> Client {
        let conn = hub.connect(KEY).await.expect("connects");
        let mut c = Client {
            hub: hub.clone(),
            conn,
        };
        let first = c.next().expect("connection_established");
        assert_eq!(first["event"], "pusher:connection_established");
        c
    }

    pub fn id(&self) -> &str {
        self.conn.socket_id.as_str()
    }

    pub async fn send(&mut self, v: Value) {
        self.send_at(v, Instant::now()).await;
    }

    pub async fn send_at(&mut self, v: Value, now: Instant) {
        self.hub
            .handle_client_message(&self.conn.socket_id, &v.to_string(), now)
            .await
            .expect("hub accepts the frame");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.hub
            .handle_client_message(&self.conn.socket_id, text, Instant::now())
            .await
            .expect("hub accepts the frame");
    }

    /// Next queued item, as pusher-js would see it (string `data` parsed once more).
    pub fn next(&mut self) -> Option<Value> {
        match self.conn.outbound.try_recv()? {
            Outbound::Text(b) => Some(decode(&b)),
            Outbound::Close { code, reason } => {
                Some(serde_json::json!({"close": code, "reason": reason}))
            }
        }
    }

    pub fn next_raw(&mut self) -> Option<Outbound> {
        self.conn.outbound.try_recv()
    }

    pub fn drain(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next()).collect()
    }

    pub async fn subscribe_public(&mut self, channel: &str) {
        self.send(serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel}}))
            .await;
    }

    pub async fn subscribe_private(&mut self, channel: &str) {
        let a = auth::channel_auth(KEY, SECRET, self.id(), channel, None);
        self.send(
            serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":a}}),
        )
        .await;
    }

    pub async fn subscribe_presence(&mut self, channel: &str, user_id: &str) {
        let cd = format!(r#"{{"user_id":"{user_id}","user_info":{{"name":"{user_id}"}}}}"#);
        let a = auth::channel_auth(KEY, SECRET, self.id(), channel, Some(&cd));
        self.send(serde_json::json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":a,"channel_data":cd}}))
            .await;
    }

    pub async fn signin(&mut self, user_id: &str) {
        let ud = format!(r#"{{"id":"{user_id}"}}"#);
        let a = auth::user_auth(KEY, SECRET, self.id(), &ud);
        self.send(serde_json::json!({"event":"pusher:signin","data":{"auth":a,"user_data":ud}}))
            .await;
    }

    pub async fn disconnect(&self) {
        self.hub
            .disconnect(&self.conn.socket_id)
            .await
            .expect("disconnects");
    }
}

pub fn decode(b: &Bytes) -> Value {
    let mut v: Value = serde_json::from_slice(b).expect("server sends JSON");
    if let Some(Value::String(d)) = v.get("data").cloned() {
        if let Ok(inner) = serde_json::from_str::<Value>(&d) {
            v["data"] = inner;
        }
    }
    v
}

pub fn events(v: &[Value]) -> Vec<String> {
    v.iter()
        .map(|m| m["event"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A [`MemoryBroker`] with two seams for ordering tests: every history read, node subscription
/// and subscription count first yields `yields` times to other tasks, and the first member-list
/// read can be made to wait for a gate after reading (the window in which a distributed
/// broker's answer is on its way back).
pub struct HookedBroker {
    pub inner: MemoryBroker,
    pub yields: std::sync::atomic::AtomicUsize,
    pub member_gate: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

impl HookedBroker {
    pub fn new() -> HookedBroker {
        HookedBroker {
            inner: MemoryBroker::new(),
            yields: std::sync::atomic::AtomicUsize::new(0),
            member_gate: std::sync::Mutex::new(None),
        }
    }

    async fn pause(&self) {
        for _ in 0..self.yields.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
    }
}

mod hooked {
    use super::HookedBroker;
    use bytes::Bytes;
    use duplex_hub::broker::{
        Broker, BrokerResult, Control, HistoryLimits, HistoryRead, NodeId, NodeSink, PresenceLeave,
    };
    use duplex_hub::protocol::{Position, PresenceMember};
    use duplex_hub::socket_id::SocketId;
    use std::sync::Weak;
    use std::time::Duration;

    #[async_trait::async_trait]
    impl Broker for HookedBroker {
        fn attach(&self, sink: Weak<dyn NodeSink>) -> NodeId {
            self.inner.attach(sink)
        }
        async fn publish(
            &self,
            a: &str,
            c: &str,
            p: Bytes,
            e: Option<SocketId>,
        ) -> BrokerResult<()> {
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
            self.pause().await;
            let read = self.inner.history(a, c, since, limit, l).await;
            self.pause().await;
            read
        }
        async fn control(&self, a: &str, c: Control) -> BrokerResult<()> {
            self.inner.control(a, c).await
        }
        async fn subscribe_node(&self, n: NodeId, a: &str, c: &str) -> BrokerResult<()> {
            self.pause().await;
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
            self.pause().await;
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
            let gate = self.member_gate.lock().expect("lock").take();
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
}
