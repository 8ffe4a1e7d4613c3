//! A cluster of real `duplex serve --redis` processes over a real `redis-server`, plus the
//! Pusher-protocol steps the cluster tests repeat.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duplex_testkit::{RedisServer, TempDir};
use serde_json::{json, Value};

use crate::serve_support::*;

/// Redis and `n` nodes; each node's log is kept in the cluster's temp dir.
pub struct Cluster {
    pub nodes: Vec<Option<Server>>,
    pub dir: TempDir,
    pub redis_url: String,
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes on `redis_url` with `extra` flags each.
    pub fn start(redis_url: &str, n: usize, extra: &[&str]) -> Cluster {
        let mut c = Cluster {
            nodes: Vec::new(),
            dir: TempDir::new("cluster"),
            redis_url: redis_url.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for _ in 0..n {
            c.add_node();
        }
        c
    }

    /// Starts one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let mut args: Vec<&str> = vec!["--redis", &self.redis_url];
        args.extend(self.extra.iter().map(String::as_str));
        let log = self.log_path(i);
        self.nodes
            .push(Some(Server::start_logged(&args, Some(&log))));
        i
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}.log"))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node is running")
    }

    pub fn addr(&self, i: usize) -> String {
        self.node(i).addr.clone()
    }

    pub fn url(&self, i: usize) -> String {
        self.node(i)
            .ws_url(KEY, "?protocol=7&client=js&version=8.4.0")
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut s) = self.nodes[i].take() {
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    pub fn signal(&self, i: usize, sig: &str) {
        let pid = self.node(i).child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }
}

/// `GET path` on a node, signed; the JSON body.
pub async fn api_get(addr: &str, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
    let (addr, path) = (addr.to_owned(), path.to_owned());
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, body) = signed(&addr, "GET", &path, &p, "");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    })
    .await
    .expect("join")
}

/// Triggers `event` on `channel` through a node's REST API; the status.
pub async fn trigger(addr: &str, channel: &str, event: &str, data: Value) -> (u16, String) {
    let addr = addr.to_owned();
    let path = format!("/apps/{APP_ID}/events");
    let body = json!({"name": event, "channels": [channel], "data": data.to_string()}).to_string();
    tokio::task::spawn_blocking(move || signed(&addr, "POST", &path, &[], &body))
        .await
        .expect("join")
}

/// Subscribes to a public channel and waits for the confirmation.
pub async fn subscribe_public(ws: &mut Ws, channel: &str) {
    send_json(
        ws,
        json!({"event":"pusher:subscribe","data":{"channel":channel}}),
    )
    .await;
    let m = next_json(ws).await;
    assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");
    assert_eq!(m["channel"], channel);
}

/// Subscribes to a private channel (signed with the app secret).
pub async fn subscribe_private(ws: &mut Ws, socket_id: &str, channel: &str) {
    let auth = duplex_hub::auth::channel_auth(KEY, SECRET, socket_id, channel, None);
    send_json(
        ws,
        json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth}}),
    )
    .await;
    let m = next_json(ws).await;
    assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");
}

/// Joins a presence channel as `user`; returns the member ids in the confirmation.
pub async fn join_presence(ws: &mut Ws, socket_id: &str, channel: &str, user: &str) -> Vec<String> {
    let data = json!({"user_id": user, "user_info": {"name": user}}).to_string();
    let auth = duplex_hub::auth::channel_auth(KEY, SECRET, socket_id, channel, Some(&data));
    send_json(
        ws,
        json!({"event":"pusher:subscribe","data":{"channel":channel,"auth":auth,"channel_data":data}}),
    )
    .await;
    let m = next_json(ws).await;
    assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");
    let mut ids: Vec<String> = m["data"]["presence"]["ids"]
        .as_array()
        .expect("presence ids")
        .iter()
        .map(|v| v.as_str().expect("string id").to_owned())
        .collect();
    ids.sort();
    ids
}

/// Signs in as `user`.
pub async fn sign_in(ws: &mut Ws, socket_id: &str, user: &str) {
    let user_data = json!({"id": user}).to_string();
    let auth = duplex_hub::auth::user_auth(KEY, SECRET, socket_id, &user_data);
    send_json(
        ws,
        json!({"event":"pusher:signin","data":{"auth":auth,"user_data":user_data}}),
    )
    .await;
    let m = next_json(ws).await;
    assert_eq!(m["event"], "pusher:signin_success", "{m}");
}

/// Every message that arrives within `d` (none expected to close the socket).
pub async fn collect_for(ws: &mut Ws, d: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + d;
    while let Ok(ev) = tokio::time::timeout_at(end, ws.next_event()).await {
        match ev {
            Some(Ok(duplex::Event::Message(duplex::Message::Text(t)))) => {
                let mut v: Value = serde_json::from_str(&t).expect("JSON");
                if let Some(Value::String(d)) = v.get("data") {
                    if let Ok(parsed) = serde_json::from_str::<Value>(d) {
                        v["data"] = parsed;
                    }
                }
                out.push(v);
            }
            Some(Ok(duplex::Event::Close(f))) => panic!("closed: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed: {e}"),
            None => panic!("connection ended"),
        }
    }
    out
}

/// The next message whose `event` is `name` (others skipped), within `limit`.
pub async fn next_event_named(ws: &mut Ws, name: &str, limit: Duration) -> Value {
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {name} within {limit:?}");
        let m = tokio::time::timeout(left, next_json(ws))
            .await
            .unwrap_or_else(|_| panic!("no {name} within {limit:?}"));
        if m["event"] == name {
            return m;
        }
    }
}

/// Polls `check` every 100 ms until it returns `Some`, at most `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /ready` status of a node.
pub fn ready_status(addr: &str) -> u16 {
    http(addr, "GET", "/ready", "").0
}

/// A webhook endpoint: records every event of every POST it receives.
pub struct WebhookSink {
    pub url: String,
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl WebhookSink {
    pub fn start() -> WebhookSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; len];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                            if let Some(evs) = v["events"].as_array() {
                                sink.lock().expect("lock").extend(evs.iter().cloned());
                            }
                        }
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    }
                });
            }
        });
        WebhookSink { url, events }
    }

    /// Events named `name` so far.
    pub fn named(&self, name: &str) -> Vec<Value> {
        self.events
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e["name"] == name)
            .cloned()
            .collect()
    }
}

/// Writes a config file with webhooks to `url` (no vacate delay) and `max_connections`.
pub fn config_file(dir: &TempDir, webhook_url: Option<&str>, max_connections: u64) -> PathBuf {
    config_file_with_delay(dir, webhook_url, max_connections, 0)
}

/// Like [`config_file`], with a vacate delay in milliseconds.
pub fn config_file_with_delay(
    dir: &TempDir,
    webhook_url: Option<&str>,
    max_connections: u64,
    vacate_delay_ms: u64,
) -> PathBuf {
    let mut toml = format!(
        "webhook_vacate_delay_ms = {vacate_delay_ms}\n\n[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\nenable_client_events = true\nmax_connections = {max_connections}\n"
    );
    if let Some(url) = webhook_url {
        toml.push_str(&format!(
            "\n[[apps.webhooks]]\nurl = \"{url}\"\nevents = [\"channel_occupied\", \"channel_vacated\", \"member_added\", \"member_removed\"]\n"
        ));
    }
    let path = dir.path().join("duplex.toml");
    std::fs::write(&path, toml).expect("write config");
    path
}

/// `calls` of one command in Redis's `INFO commandstats`.
pub fn redis_calls(redis: &RedisServer, command: &str) -> u64 {
    let info = redis.command(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
