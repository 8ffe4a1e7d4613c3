//! History and recovery on one `duplex serve` (embedded broker), with raw WebSocket clients.

mod serve_support;

use serde_json::{json, Value};
use serve_support::*;

async fn subscribe_with(ws: &mut Ws, channel: &str, recover: Option<Value>) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(r) = recover {
        data["recover"] = r;
    }
    send_json(ws, json!({"event":"pusher:subscribe","data":data})).await;
    next_json(ws).await
}

async fn trigger(addr: &str, channel: &str, n: u64) {
    let addr = addr.to_owned();
    let path = format!("/apps/{APP_ID}/events");
    let body =
        json!({"name":"msg","channels":[channel],"data":json!({"n": n}).to_string()}).to_string();
    let (status, resp) =
        tokio::task::spawn_blocking(move || signed(&addr, "POST", &path, &[], &body))
            .await
            .expect("join");
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn a_reconnecting_client_recovers_what_it_missed_or_is_told_it_cannot() {
    // Size 5, so a client that misses more cannot recover.
    let dir = std::env::temp_dir().join(format!("duplex-serve-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join("duplex.toml");
    std::fs::write(
        &config,
        format!(
            "[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
             history = {{ channels = [\"chat-*\"], size = 5, ttl = 600 }}\n"
        ),
    )
    .expect("write");
    let s = Server::start(&["--config", config.to_str().expect("utf-8")]);
    let url = s.ws_url(KEY, "?protocol=7");
    let (mut a, _) = established(&url).await;
    let ok = subscribe_with(&mut a, "chat-x", None).await;
    assert_eq!(ok["data"]["position"]["offset"], 0, "{ok}");
    trigger(&s.addr, "chat-x", 1).await;
    let m = next_json(&mut a).await;
    let last = m["position"].clone();
    assert_eq!(last["offset"], 1);
    drop(a);
    for n in 2..=4 {
        trigger(&s.addr, "chat-x", n).await;
    }
    let (mut b, _) = established(&url).await;
    let ok = subscribe_with(&mut b, "chat-x", Some(last.clone())).await;
    assert_eq!(ok["data"]["recovered"], true, "{ok}");
    for n in 2..=4 {
        assert_eq!(next_json(&mut b).await["data"]["n"], n);
    }
    // More than `size` missed: recovery is refused and nothing is replayed.
    drop(b);
    for n in 5..=12 {
        trigger(&s.addr, "chat-x", n).await;
    }
    let (mut c, _) = established(&url).await;
    let ok = subscribe_with(
        &mut c,
        "chat-x",
        Some(json!({"epoch": last["epoch"], "offset": 4})),
    )
    .await;
    assert_eq!(ok["data"]["recovered"], false, "{ok}");
    trigger(&s.addr, "chat-x", 13).await;
    assert_eq!(next_json(&mut c).await["data"]["n"], 13, "live events only");
    // Bad input: a subscription error, and the connection stays up.
    let err = subscribe_with(&mut c, "chat-y", Some(json!({"epoch": "e", "offset": -3}))).await;
    assert_eq!(err["event"], "pusher:error", "{err}");
    let m = next_json(&mut c).await;
    assert_eq!(m["event"], "pusher:subscription_error", "{m}");
    assert_eq!(m["data"]["status"], 400);
    send_json(&mut c, json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(next_json(&mut c).await["event"], "pusher:pong");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_embedded_default_app_keeps_history_for_the_demo_rooms() {
    let s = Server::start(&[]);
    let (mut ws, id) = established(&s.ws_url(KEY, "?protocol=7")).await;
    let data = json!({"user_id": "u", "user_info": {"name": "u"}}).to_string();
    let auth = duplex_hub::auth::channel_auth(KEY, SECRET, &id, "presence-chat-lobby", Some(&data));
    send_json(
        &mut ws,
        json!({"event":"pusher:subscribe","data":{"channel":"presence-chat-lobby","auth":auth,"channel_data":data}}),
    )
    .await;
    let ok = next_json(&mut ws).await;
    assert_eq!(ok["data"]["position"]["offset"], 0, "{ok}");
    assert_eq!(ok["data"]["presence"]["ids"], json!(["u"]));
}
