//! `duplex serve` end to end: the real binary on a loopback port.

mod serve_support;

use std::time::Duration;

use serde_json::json;
use serve_support::*;

#[tokio::test]
async fn connection_established_on_app_key_protocol_7() {
    let s = Server::start(&[]);
    let (_ws, id) = established(&s.ws_url(KEY, "?protocol=7&client=js&version=8.4.0")).await;
    assert!(id.contains('.'), "socket id {id}");
}

#[tokio::test]
async fn wrong_key_closes_4001_and_missing_protocol_4008() {
    let s = Server::start(&[]);
    let mut a = ws(&s.ws_url("nope", "?protocol=7")).await;
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "pusher:error");
    assert_eq!(m["data"]["code"], 4001);
    assert_eq!(close_code(&mut a).await, 4001);

    let mut b = ws(&s.ws_url(KEY, "")).await;
    assert_eq!(close_code(&mut b).await, 4008);
    let mut c = ws(&s.ws_url(KEY, "?protocol=3")).await;
    assert_eq!(close_code(&mut c).await, 4007);
}

#[tokio::test]
async fn signed_rest_trigger_reaches_a_subscribed_socket() {
    let s = Server::start(&[]);
    let (mut a, _) = established(&s.ws_url(KEY, "?protocol=7")).await;
    send_json(
        &mut a,
        json!({"event":"pusher:subscribe","data":{"channel":"news"}}),
    )
    .await;
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");

    let addr = s.addr.clone();
    let path = format!("/apps/{APP_ID}/events");
    let body = json!({"name":"breaking","channels":["news"],"data":"{\"n\":1}"}).to_string();
    let (status, resp) =
        tokio::task::spawn_blocking(move || signed(&addr, "POST", &path, &[], &body))
            .await
            .unwrap();
    assert_eq!(status, 200, "{resp}");
    let m = next_json(&mut a).await;
    assert_eq!(m["event"], "breaking");
    assert_eq!(m["channel"], "news");
    assert_eq!(m["data"]["n"], 1);

    // Channel info through the API, and a bad signature.
    let addr = s.addr.clone();
    let path = format!("/apps/{APP_ID}/channels/news");
    let (status, resp) = tokio::task::spawn_blocking(move || {
        signed(&addr, "GET", &path, &[("info", "subscription_count")], "")
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{resp}");
    let v: serde_json::Value = serde_json::from_str(&resp).unwrap();
    assert_eq!(v["occupied"], true);
    assert_eq!(v["subscription_count"], 1);
    let addr = s.addr.clone();
    let (status, _) = tokio::task::spawn_blocking(move || {
        http(&addr, "GET", "/apps/app-id/channels?auth_key=app-key&auth_timestamp=1&auth_version=1.0&auth_signature=00", "")
    })
    .await
    .unwrap();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn client_events_between_private_subscribers() {
    let s = Server::start(&["--enable-client-events"]);
    let url = s.ws_url(KEY, "?protocol=7");
    let (mut a, ida) = established(&url).await;
    let (mut b, idb) = established(&url).await;
    for (ws, id) in [(&mut a, &ida), (&mut b, &idb)] {
        let auth = duplex_hub::auth::channel_auth(KEY, SECRET, id, "private-room", None);
        send_json(
            ws,
            json!({"event":"pusher:subscribe","data":{"channel":"private-room","auth":auth}}),
        )
        .await;
        let m = next_json(ws).await;
        assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");
    }
    send_json(
        &mut a,
        json!({"event":"client-hi","channel":"private-room","data":{"x":1}}),
    )
    .await;
    let m = next_json(&mut b).await;
    assert_eq!(m["event"], "client-hi");
    assert_eq!(m["data"]["x"], 1);
}

#[tokio::test]
async fn pusher_ping_gets_pong() {
    let s = Server::start(&[]);
    let (mut a, _) = established(&s.ws_url(KEY, "?protocol=7")).await;
    send_json(&mut a, json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(next_json(&mut a).await["event"], "pusher:pong");
}

#[test]
fn metrics_health_ready_and_demo_page() {
    let s = Server::start(&[]);
    let (st, body) = http(&s.addr, "GET", "/health", "");
    assert_eq!(st, 200, "{body}");
    let (st, body) = http(&s.addr, "GET", "/ready", "");
    assert_eq!(st, 200, "{body}");
    let (st, body) = http(&s.addr, "GET", "/metrics", "");
    assert_eq!(st, 200);
    assert!(body.contains("# TYPE"), "{body}");
    let (st, body) = http(&s.addr, "GET", "/", "");
    assert_eq!(st, 200);
    assert!(body.contains("<title>duplex serve"), "{body}");
    let (st, body) = http(&s.addr, "GET", "/app.js", "");
    assert_eq!(st, 200);
    assert!(body.contains("class PusherLite"));
    // The demo auth endpoint signs presence subscriptions for the default app.
    let (st, body) = http(
        &s.addr,
        "POST",
        "/demo/auth",
        "socket_id=1.2&channel_name=presence-chat-x&user_name=ann",
    );
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = v["channel_data"].as_str().unwrap();
    assert_eq!(
        v["auth"],
        duplex_hub::auth::channel_auth(KEY, SECRET, "1.2", "presence-chat-x", Some(data))
    );
}

#[test]
fn demo_auth_is_off_for_non_default_credentials() {
    let s = Server::start(&["--app-secret", "s3cret"]);
    let (st, _) = http(
        &s.addr,
        "POST",
        "/demo/auth",
        "socket_id=1.2&channel_name=private-x",
    );
    assert_eq!(st, 404);
}

#[tokio::test]
async fn sigterm_drains_with_4200_and_exits() {
    let mut s = Server::start(&[]);
    let url = s.ws_url(KEY, "?protocol=7");
    let (mut a, _) = established(&url).await;
    let (mut b, _) = established(&url).await;
    s.terminate();
    assert_eq!(close_code(&mut a).await, 4200);
    assert_eq!(close_code(&mut b).await, 4200);
    drop((a, b));
    let status = tokio::task::spawn_blocking(move || s.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn while_draining_ready_is_503_and_new_websockets_are_refused() {
    let mut s = Server::start(&[]);
    // This client does not read, so its close handshake (and the drain) takes a few seconds.
    let (mut a, _) = established(&s.ws_url(KEY, "?protocol=7")).await;
    s.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addr = s.addr.clone();
    let (ready, health) = tokio::task::spawn_blocking(move || {
        (
            http(&addr, "GET", "/ready", "").0,
            http(&addr, "GET", "/health", "").0,
        )
    })
    .await
    .unwrap();
    assert_eq!(ready, 503);
    assert_eq!(health, 200);
    let refused = duplex::client::connect(
        &s.ws_url(KEY, "?protocol=7"),
        &duplex::client::ClientConfig::default(),
    )
    .await;
    let err = match refused {
        Ok(_) => panic!("upgrade accepted while draining"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("503"), "{err}");
    assert_eq!(close_code(&mut a).await, 4200);
    drop(a);
    let status = tokio::task::spawn_blocking(move || s.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[test]
fn log_format_json_writes_json_lines() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_duplex"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--log-format",
            "json",
        ])
        .env("DUPLEX_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let stderr = child.stderr.take().unwrap();
    let lines: Vec<String> = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(child.wait().unwrap().success());
    assert!(!lines.is_empty(), "no log lines");
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
}
