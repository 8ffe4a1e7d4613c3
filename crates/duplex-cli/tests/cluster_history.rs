//! Channel history and recovery on a cluster: two real `duplex serve --redis` nodes over a
//! real `redis-server`; a client recovers on another node than the one it left.

mod cluster_support;
mod serve_support;

use std::time::Duration;

use cluster_support::*;
use duplex_testkit::{RedisServer, TempDir};
use serde_json::{json, Value};
use serve_support::*;

fn history_config(dir: &TempDir, size: usize) -> String {
    let path = dir.path().join("history.toml");
    std::fs::write(
        &path,
        format!(
            "[[apps]]\nid = \"{APP_ID}\"\nkey = \"{KEY}\"\nsecret = \"{SECRET}\"\n\
             history = {{ channels = [\"chat-*\"], size = {size}, ttl = 600 }}\n"
        ),
    )
    .expect("write config");
    path.to_str().expect("utf-8").to_owned()
}

async fn subscribe_with(ws: &mut Ws, channel: &str, recover: Option<&Value>) -> Value {
    let mut data = json!({ "channel": channel });
    if let Some(r) = recover {
        data["recover"] = r.clone();
    }
    send_json(ws, json!({"event":"pusher:subscribe","data":data})).await;
    let m = next_json(ws).await;
    assert_eq!(m["event"], "pusher_internal:subscription_succeeded", "{m}");
    m
}

#[tokio::test]
async fn a_client_recovers_on_another_node_in_order_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    let dir = TempDir::new("history");
    let config = history_config(&dir, 100);
    let c = Cluster::start(&redis.url(), 2, &["--config", &config]);
    let (mut a, _) = established(&c.url(0)).await;
    let ok = subscribe_with(&mut a, "chat-1", None).await;
    let epoch = ok["data"]["position"]["epoch"].clone();
    assert_eq!(ok["data"]["position"]["offset"], 0);
    for n in 1..=3 {
        trigger(&c.addr(n % 2), "chat-1", "msg", json!({ "n": n })).await;
    }
    let mut last = Value::Null;
    for n in 1..=3 {
        let m = next_json(&mut a).await;
        assert_eq!(m["data"]["n"], n);
        assert_eq!(m["position"], json!({"epoch": epoch, "offset": n}));
        last = m["position"].clone();
    }
    drop(a);
    for n in 4..=6 {
        let (status, _) = trigger(&c.addr(n % 2), "chat-1", "msg", json!({ "n": n })).await;
        assert_eq!(status, 200);
    }
    // Back, on the other node.
    let (mut b, _) = established(&c.url(1)).await;
    let ok = subscribe_with(&mut b, "chat-1", Some(&last)).await;
    assert_eq!(ok["data"]["recovered"], true, "{ok}");
    assert_eq!(ok["data"]["position"]["offset"], 6);
    trigger(&c.addr(0), "chat-1", "msg", json!({ "n": 7 })).await;
    for n in 4..=7 {
        let m = next_json(&mut b).await;
        assert_eq!(m["data"]["n"], n, "{m}");
        assert_eq!(m["position"]["offset"], n);
    }
    let extra = collect_for(&mut b, Duration::from_millis(300)).await;
    assert!(extra.is_empty(), "no duplicate: {extra:?}");

    // The REST API reads the same history from any node.
    let (status, h) = api_get(
        &c.addr(0),
        &format!("/apps/{APP_ID}/channels/chat-1/history"),
        &[("since", "2"), ("limit", "2")],
    )
    .await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["position"]["offset"], 7);
    assert_eq!(h["complete"], true);
    let offsets: Vec<&Value> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["position"]["offset"])
        .collect();
    assert_eq!(offsets, [&json!(3), &json!(4)]);
    for (k, v) in [
        ("since", "x"),
        ("since", "-1"),
        ("limit", "0"),
        ("limit", "5000"),
        ("since", "99"),
    ] {
        let (status, body) = api_get(
            &c.addr(1),
            &format!("/apps/{APP_ID}/channels/chat-1/history"),
            &[(k, v)],
        )
        .await;
        assert_eq!(status, 400, "{k}={v}: {body}");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
}

#[tokio::test]
async fn redis_losing_its_data_starts_a_new_epoch_and_old_positions_are_refused() {
    let mut redis = RedisServer::start();
    let dir = TempDir::new("history-epoch");
    let config = history_config(&dir, 100);
    let c = Cluster::start(&redis.url(), 2, &["--config", &config]);
    for n in 1..=2 {
        trigger(&c.addr(0), "chat-9", "msg", json!({ "n": n })).await;
    }
    let (_, h) = api_get(
        &c.addr(0),
        &format!("/apps/{APP_ID}/channels/chat-9/history"),
        &[],
    )
    .await;
    let old = h["position"].clone();
    assert_eq!(old["offset"], 2);
    redis.restart_empty();
    let addr = c.addr(1);
    eventually(
        "the node to be ready again",
        Duration::from_secs(10),
        || {
            let addr = addr.clone();
            async move {
                let ok = tokio::task::spawn_blocking(move || ready_status(&addr) == 200)
                    .await
                    .expect("join");
                ok.then_some(())
            }
        },
    )
    .await;
    let (mut ws, _) = established(&c.url(1)).await;
    let ok = subscribe_with(&mut ws, "chat-9", Some(&old)).await;
    assert_eq!(ok["data"]["recovered"], false, "{ok}");
    assert_ne!(ok["data"]["position"]["epoch"], old["epoch"], "a new epoch");
    assert_eq!(ok["data"]["position"]["offset"], 0);
}
