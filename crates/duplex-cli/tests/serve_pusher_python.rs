//! `duplex serve` against the official Python `pusher` server SDK (PyPI `pusher`, pinned in
//! tests/pusher/requirements.txt).
//!
//! The SDK runs in tests/pusher/sdk_rpc.py, which calls it line by line on this test's behalf;
//! WebSocket subscribers here (the `duplex` client speaking the Pusher protocol) check that what
//! the SDK triggers arrives and that what its `authenticate` / `authenticate_user` produce is
//! accepted. Needs the venv made by `tests/pusher/install.sh`; without it this test fails.

mod serve_support;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use serve_support::*;

/// The Python SDK accepts numeric app ids only (as Pusher issues them), so not the default
/// `app-id`: `Pusher(app_id="app-id", ...)` raises `ValueError: Invalid app id`.
const PY_APP_ID: &str = "1001";

/// Starts `duplex serve` with the numeric app id and the default key and secret.
fn server() -> Server {
    Server::start(&["--app-id", PY_APP_ID])
}

/// 32 bytes of 7, base64: the master key the SDK derives `private-encrypted-` keys from.
const MASTER_KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";

/// The Python SDK in a child process (tests/pusher/sdk_rpc.py), killed on drop.
struct Sdk {
    child: Child,
    stdin: ChildStdin,
    replies: mpsc::Receiver<String>,
    version: String,
}

impl Sdk {
    fn start(server: &Server) -> Sdk {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/pusher");
        let python = dir.join(".venv/bin/python");
        assert!(
            python.exists(),
            "{} missing: run tests/pusher/install.sh (needs python3 >= 3.8 with venv and pip)",
            python.display()
        );
        let (host, port) = server
            .addr
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("server address {} has no port", server.addr));
        let mut child = Command::new(&python)
            .arg(dir.join("sdk_rpc.py"))
            .args([host, port, PY_APP_ID, KEY, SECRET, MASTER_KEY])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sdk = Sdk {
            child,
            stdin,
            replies,
            version: String::new(),
        };
        let hello = sdk.reply("start");
        sdk.version = hello["ok"]["version"]
            .as_str()
            .unwrap_or_else(|| panic!("sdk_rpc.py greeting {hello}"))
            .to_string();
        sdk
    }

    fn reply(&mut self, what: &str) -> Value {
        let line = self
            .replies
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("no reply from sdk_rpc.py to {what}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("sdk_rpc.py said {line:?}: {e}"))
    }

    /// Calls `call(*args)` on the SDK client (`"good"` or `"forged"`); the raw reply.
    fn call_as(&mut self, client: &str, call: &str, args: Value) -> Value {
        let req = json!({"call": call, "args": args, "client": client});
        writeln!(self.stdin, "{req}").expect("writing to sdk_rpc.py");
        self.stdin.flush().expect("writing to sdk_rpc.py");
        self.reply(call)
    }

    /// Calls `call(*args)` and returns its result, failing the test on an SDK exception.
    fn ok(&mut self, call: &str, args: Value) -> Value {
        let r = self.call_as("good", call, args.clone());
        match r.get("ok") {
            Some(v) => v.clone(),
            None => panic!("{call}({args}) raised: {r}"),
        }
    }

    /// Calls `call(*args)` expecting an SDK exception; returns (type, message).
    fn err(&mut self, client: &str, call: &str, args: Value) -> (String, String) {
        let r = self.call_as(client, call, args.clone());
        let e = r
            .get("error")
            .unwrap_or_else(|| panic!("{call}({args}) did not raise: {r}"));
        let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
        (s("type"), s("message"))
    }
}

impl Drop for Sdk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn subscribe(ws: &mut Ws, data: Value) -> Value {
    send_json(ws, json!({"event": "pusher:subscribe", "data": data})).await;
    next_json(ws).await
}

async fn subscribed(ws: &mut Ws, data: Value) -> Value {
    let m = subscribe(ws, data).await;
    assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");
    m
}

/// Asserts nothing is queued for `ws`: a ping's pong is the very next message.
async fn nothing_pending(ws: &mut Ws) {
    send_json(ws, json!({"event": "pusher:ping", "data": {}})).await;
    let m = next_json(ws).await;
    assert_eq!(
        m["event"], "pusher:pong",
        "expected nothing before the pong, got {m}"
    );
}

#[tokio::test]
async fn python_sdk_trigger_and_trigger_batch_reach_subscribers() {
    let s = server();
    let mut sdk = Sdk::start(&s);
    assert_eq!(sdk.version, "3.3.4");
    let url = s.ws_url(KEY, "?protocol=7&client=python-test");
    let (mut a, _) = established(&url).await;
    let (mut b, id_b) = established(&url).await;
    for ch in ["py-news", "py-a", "py-b"] {
        subscribed(&mut a, json!({"channel": ch})).await;
    }
    subscribed(&mut b, json!({"channel": "py-news"})).await;

    // trigger: one channel, a dict payload (the SDK JSON-encodes it).
    let r = sdk.ok("trigger", json!(["py-news", "headline", {"text": "hi"}]));
    assert_eq!(r, json!({}));
    for ws in [&mut a, &mut b] {
        let m = next_json(ws).await;
        assert_eq!(
            (&m["event"], &m["channel"], &m["data"]),
            (
                &json!("headline"),
                &json!("py-news"),
                &json!({"text": "hi"})
            )
        );
    }

    // trigger: two channels, a string payload (sent as is).
    sdk.ok("trigger", json!([["py-a", "py-b"], "multi", "plain text"]));
    let mut got = Vec::new();
    for _ in 0..2 {
        let m = next_json(&mut a).await;
        assert_eq!(
            (&m["event"], &m["data"]),
            (&json!("multi"), &json!("plain text"))
        );
        got.push(m["channel"].as_str().unwrap_or_default().to_string());
    }
    got.sort();
    assert_eq!(got, ["py-a", "py-b"]);

    // trigger with socket_id: that socket is left out.
    sdk.ok("trigger", json!(["py-news", "excl", {"n": 1}, id_b]));
    assert_eq!(next_json(&mut a).await["event"], "excl");
    nothing_pending(&mut b).await;

    // trigger_batch: two events to two channels in one request.
    let r = sdk.ok(
        "trigger_batch",
        json!([[
            {"channel": "py-a", "name": "e1", "data": {"n": 1}},
            {"channel": "py-b", "name": "e2", "data": "two"}
        ]]),
    );
    assert_eq!(r, json!({}));
    let m1 = next_json(&mut a).await;
    let m2 = next_json(&mut a).await;
    assert_eq!(
        (&m1["channel"], &m1["event"], &m1["data"]),
        (&json!("py-a"), &json!("e1"), &json!({"n": 1}))
    );
    assert_eq!(
        (&m2["channel"], &m2["event"], &m2["data"]),
        (&json!("py-b"), &json!("e2"), &json!("two"))
    );

    // A wrong secret: 401, which the SDK raises as PusherBadAuth; nothing is delivered.
    let (ty, msg) = sdk.err("forged", "trigger", json!(["py-news", "forged", {}]));
    assert_eq!(ty, "PusherBadAuth", "{msg}");
    // Over the 10 KB event limit (the SDK itself allows 30 KB): 413, PusherBadStatus.
    let (ty, msg) = sdk.err(
        "good",
        "trigger",
        json!(["py-news", "big", "x".repeat(12_000)]),
    );
    assert_eq!(ty, "PusherBadStatus", "{msg}");
    assert!(msg.starts_with("413: "), "{msg}");
    nothing_pending(&mut a).await;
    nothing_pending(&mut b).await;
}

#[tokio::test]
async fn python_sdk_authenticate_output_is_accepted() {
    let s = server();
    let mut sdk = Sdk::start(&s);
    let url = s.ws_url(KEY, "?protocol=7");
    let (mut a, id) = established(&url).await;

    // Private channel: {"auth": "key:signature"}.
    let auth = sdk.ok("authenticate", json!(["private-py", id]));
    assert!(
        auth["auth"]
            .as_str()
            .is_some_and(|a| a.starts_with("app-key:")),
        "{auth}"
    );
    let mut data = auth.clone();
    data["channel"] = json!("private-py");
    subscribed(&mut a, data).await;
    sdk.ok("trigger", json!(["private-py", "secret", {"k": 1}]));
    let m = next_json(&mut a).await;
    assert_eq!(
        (&m["channel"], &m["data"]),
        (&json!("private-py"), &json!({"k": 1}))
    );

    // Presence channel: custom_data becomes channel_data, the member list echoes it.
    let member = json!({"user_id": "u1", "user_info": {"name": "One"}});
    let auth = sdk.ok("authenticate", json!(["presence-py", id, member]));
    assert!(auth["channel_data"].is_string(), "{auth}");
    let mut data = auth.clone();
    data["channel"] = json!("presence-py");
    let m = subscribed(&mut a, data).await;
    assert_eq!(m["data"]["presence"]["ids"], json!(["u1"]), "{m}");
    assert_eq!(m["data"]["presence"]["hash"]["u1"], json!({"name": "One"}));

    // Encrypted channel: a shared secret for the client, and a server that relays ciphertext.
    let auth = sdk.ok("authenticate", json!(["private-encrypted-py", id]));
    assert_eq!(
        auth["shared_secret"].as_str().map(str::len),
        Some(44),
        "{auth}"
    );
    subscribed(
        &mut a,
        json!({"channel": "private-encrypted-py", "auth": auth["auth"]}),
    )
    .await;
    sdk.ok(
        "trigger",
        json!(["private-encrypted-py", "sealed", {"pin": 1234}]),
    );
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "sealed");
    assert!(
        m["data"]["nonce"].is_string() && m["data"]["ciphertext"].is_string(),
        "{m}"
    );
    assert!(!m.to_string().contains("1234"), "plaintext leaked: {m}");

    // A signature from the wrong secret is refused: pusher:error, then subscription_error.
    let bad = sdk.call_as("forged", "authenticate", json!(["private-vault", id]));
    let m = subscribe(
        &mut a,
        json!({"channel": "private-vault", "auth": bad["ok"]["auth"]}),
    )
    .await;
    assert_eq!(m["event"], "pusher:error", "{m}");
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "pusher:subscription_error", "{m}");
    assert_eq!(m["data"]["status"], 401);

    // authenticate_user -> pusher:signin; then send_to_user reaches the signed-in socket.
    let signin = sdk.ok(
        "authenticate_user",
        json!([id, {"id": "u9", "name": "Nine"}]),
    );
    send_json(&mut a, json!({"event": "pusher:signin", "data": signin})).await;
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "pusher:signin_success", "{m}");
    // What pusher-js does after a signin: subscribe to the user's own channel.
    subscribed(&mut a, json!({"channel": "#server-to-user-u9"})).await;
    sdk.ok("send_to_user", json!(["u9", "note", {"hello": "u9"}]));
    let m = next_json(&mut a).await;
    assert_eq!(
        (&m["event"], &m["channel"], &m["data"]),
        (
            &json!("note"),
            &json!("#server-to-user-u9"),
            &json!({"hello": "u9"})
        )
    );

    // terminate_user_connections closes the user's connection with 4009.
    sdk.ok("terminate_user_connections", json!(["u9"]));
    assert_eq!(close_code(&mut a).await, 4009);
}

#[tokio::test]
async fn python_sdk_channel_queries() {
    let s = server();
    let mut sdk = Sdk::start(&s);
    let url = s.ws_url(KEY, "?protocol=7");
    let (mut a, id_a) = established(&url).await;
    let (mut b, id_b) = established(&url).await;
    for (ws, id, user) in [(&mut a, &id_a, "u1"), (&mut b, &id_b, "u2")] {
        subscribed(ws, json!({"channel": "py-pub"})).await;
        let member = json!({"user_id": user, "user_info": {"name": user}});
        let mut data = sdk.ok("authenticate", json!(["presence-room", id, member]));
        data["channel"] = json!("presence-room");
        subscribed(ws, data).await;
    }
    // a saw b join.
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "pusher_internal:member_added", "{m}");

    let all = sdk.ok("channels_info", json!([]));
    let mut names: Vec<&String> = all["channels"]
        .as_object()
        .unwrap_or_else(|| panic!("{all}"))
        .keys()
        .collect();
    names.sort();
    assert_eq!(names, ["presence-room", "py-pub"]);
    let presence = sdk.ok("channels_info", json!(["presence-", ["user_count"]]));
    assert_eq!(
        presence,
        json!({"channels": {"presence-room": {"user_count": 2}}})
    );

    let info = sdk.ok("channel_info", json!(["py-pub", ["subscription_count"]]));
    assert_eq!(info, json!({"occupied": true, "subscription_count": 2}));
    let info = sdk.ok("channel_info", json!(["presence-room", ["user_count"]]));
    assert_eq!(info["occupied"], true, "{info}");
    assert_eq!(info["user_count"], 2, "{info}");
    let info = sdk.ok("channel_info", json!(["py-empty"]));
    assert_eq!(info["occupied"], false, "{info}");

    let users = sdk.ok("users_info", json!(["presence-room"]));
    let mut ids: Vec<&str> = users["users"]
        .as_array()
        .unwrap_or_else(|| panic!("{users}"))
        .iter()
        .filter_map(|u| u["id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["u1", "u2"]);

    // b goes away: the counts follow (bounded poll: the close is asynchronous).
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let users = sdk.ok("users_info", json!(["presence-room"]));
        if users == json!({"users": [{"id": "u1"}]}) {
            break;
        }
        assert!(Instant::now() < deadline, "u2 still listed: {users}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = sdk.ok("channel_info", json!(["py-pub", ["subscription_count"]]));
    assert_eq!(info["subscription_count"], 1, "{info}");
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "pusher_internal:member_removed", "{m}");
    assert_eq!(m["data"]["user_id"], "u2");
}
