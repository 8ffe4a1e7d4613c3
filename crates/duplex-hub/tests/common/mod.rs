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
