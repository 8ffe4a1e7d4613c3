//! End-to-end hub behaviour with fake connections: no sockets, no network.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use duplex_hub::broker::{Broker, MemoryBroker};
use duplex_hub::hub::{ConnectError, Outbound};
use duplex_hub::protocol::codes;
use duplex_hub::socket_id::SocketId;
use duplex_hub::webhooks::WebhookEvent;
use serde_json::{json, Value};

async fn publish(hub: &duplex_hub::hub::Hub, channel: &str, event: &str, data: &str) {
    let app = hub.app_by_id(APP_ID).expect("app");
    hub.publish(&app, channel, event, data, None)
        .await
        .expect("publishes");
}

#[tokio::test]
async fn connect_sends_connection_established_with_socket_id_and_activity_timeout() {
    let hub = hub(|_| {});
    let mut h = hub.connect(KEY).await.expect("connects");
    let Some(Outbound::Text(b)) = h.outbound.try_recv() else {
        panic!("expected a text message");
    };
    let m = decode(&b);
    assert_eq!(m["event"], "pusher:connection_established");
    assert_eq!(m["data"]["socket_id"], h.socket_id.as_str());
    assert_eq!(m["data"]["activity_timeout"], 120);
    assert!(SocketId::parse(h.socket_id.as_str()).is_ok());
}

/// The refusal's messages as (pusher:error code, close code).
fn refusal_codes(r: &duplex_hub::hub::Refused) -> (Value, u16) {
    let [Outbound::Text(t), Outbound::Close { code, reason }] = r.outbound.as_slice() else {
        panic!("expected pusher:error then close: {:?}", r.outbound);
    };
    let m = decode(t);
    assert_eq!(m["event"], "pusher:error");
    assert_eq!(m["data"]["message"], reason.as_str());
    (m["data"]["code"].clone(), *code)
}

#[tokio::test]
async fn unknown_app_key_is_refused_with_4001() {
    let hub = hub(|_| {});
    let e = hub.connect("nope").await.err().expect("refused");
    assert!(matches!(e.error, ConnectError::AppNotFound(_)));
    assert_eq!(e.close_code(), codes::APP_NOT_FOUND);
    assert_eq!(refusal_codes(&e), (json!(4001), 4001));
}

#[tokio::test]
async fn protocol_versions_are_refused_by_the_hub_with_4006_4007_4008() {
    let hub = hub(|_| {});
    for (param, code) in [
        (None, 4008),
        (Some("seven"), 4006),
        (Some("3"), 4007),
        (Some("8"), 4007),
    ] {
        let e = hub
            .connect_with_protocol(KEY, param)
            .await
            .err()
            .expect("refused");
        assert_eq!(refusal_codes(&e), (json!(code), code), "{param:?}");
    }
    assert!(hub.connect_with_protocol(KEY, Some("7")).await.is_ok());
    assert_eq!(
        hub.metrics()
            .connections_refused_total
            .load(std::sync::atomic::Ordering::Relaxed),
        4
    );
}

#[tokio::test]
async fn drain_closes_every_connection_with_4200_and_refuses_new_ones() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    a.drain();
    assert_eq!(hub.drain(), 2);
    assert!(hub.is_draining());
    for c in [&mut a, &mut b] {
        assert_eq!(c.next().map(|m| m["close"].clone()), Some(json!(4200)));
    }
    let e = hub
        .connect(KEY)
        .await
        .err()
        .expect("refused while draining");
    assert_eq!(refusal_codes(&e), (json!(4200), 4200));
}

#[tokio::test]
async fn close_all_asks_each_connection_once() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    assert_eq!(hub.close_all(4100, "bye"), 1);
    assert_eq!(hub.close_all(4200, "again"), 0, "the first close wins");
    assert_eq!(a.next().map(|m| m["close"].clone()), Some(json!(4100)));
    assert!(!hub.is_draining());
    assert!(hub.connect(KEY).await.is_ok());
}

#[tokio::test]
async fn disabled_app_is_refused_with_4003() {
    let hub = hub(|a| a.enabled = false);
    let e = hub.connect(KEY).await.err().expect("refused");
    assert_eq!(e.close_code(), codes::APP_DISABLED);
    assert_eq!(refusal_codes(&e), (json!(4003), 4003));
}

#[tokio::test]
async fn connection_over_quota_is_refused_with_4004_and_frees_its_slot() {
    let hub = hub(|a| a.max_connections = 1);
    let first = Client::connect(&hub).await;
    let e = hub.connect(KEY).await.err().expect("refused");
    assert_eq!(e.close_code(), codes::OVER_CONNECTION_QUOTA);
    assert_eq!(refusal_codes(&e), (json!(4004), 4004));
    first.disconnect().await;
    assert!(hub.connect(KEY).await.is_ok());
}

#[tokio::test]
async fn ping_gets_pong() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.send(json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(events(&c.drain()), vec!["pusher:pong"]);
}

#[tokio::test]
async fn malformed_frame_gets_pusher_error_and_connection_stays() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.send_text("{not json").await;
    let m = c.drain();
    assert_eq!(events(&m), vec!["pusher:error"]);
    assert!(!hub.is_closing(&c.conn.socket_id));
}

#[tokio::test]
async fn public_subscribe_gets_subscription_succeeded_and_events() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("news").await;
    let m = c.drain();
    assert_eq!(m[0]["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(m[0]["channel"], "news");
    publish(&hub, "news", "headline", r#"{"t":1}"#).await;
    let m = c.drain();
    assert_eq!(
        m,
        vec![json!({"event":"headline","channel":"news","data":{"t":1}})]
    );
}

/// A refused subscription is answered like Pusher (`pusher:error`, code null) and on the
/// channel (`pusher:subscription_error`, which pusher-js emits on the channel object).
fn assert_subscription_refused(m: &[Value], channel: &str, kind: &str, status: u16) {
    assert_eq!(
        events(m),
        vec!["pusher:error", "pusher:subscription_error"],
        "{m:?}"
    );
    assert_eq!(m[0]["data"]["code"], Value::Null);
    assert_eq!(m[1]["channel"], channel);
    assert_eq!(m[1]["data"]["type"], kind);
    assert_eq!(m[1]["data"]["status"], status);
    assert_eq!(m[1]["data"]["error"], m[0]["data"]["message"]);
}

#[tokio::test]
async fn private_subscribe_with_bad_signature_gets_subscription_error() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    let forged = duplex_hub::auth::channel_auth(KEY, "wrong-secret", c.id(), "private-a", None);
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-a","auth":forged}}))
        .await;
    let m = c.drain();
    assert_subscription_refused(&m, "private-a", "AuthError", 401);
    publish(&hub, "private-a", "e", "{}").await;
    assert!(c.drain().is_empty(), "not subscribed");
}

#[tokio::test]
async fn private_subscribe_without_auth_gets_subscription_error() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("private-a").await;
    assert_subscription_refused(&c.drain(), "private-a", "AuthError", 401);
}

#[tokio::test]
async fn subscription_over_the_channel_limit_gets_a_403_subscription_error() {
    let hub = hub(|a| a.max_channels_per_connection = 1);
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("one").await;
    c.drain();
    c.subscribe_public("two").await;
    assert_subscription_refused(&c.drain(), "two", "SubscriptionError", 403);
}

#[tokio::test]
async fn signature_for_another_socket_is_refused() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    let a = duplex_hub::auth::channel_auth(KEY, SECRET, "1.1", "private-a", None);
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"private-a","auth":a}}))
        .await;
    assert_subscription_refused(&c.drain(), "private-a", "AuthError", 401);
}

#[tokio::test]
async fn private_and_encrypted_subscribe_with_valid_signature_succeed() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_private("private-a").await;
    c.subscribe_private("private-encrypted-a").await;
    assert_eq!(
        events(&c.drain()),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher_internal:subscription_succeeded"
        ]
    );
}

#[tokio::test]
async fn invalid_channel_name_is_refused() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("bad name").await;
    assert_subscription_refused(&c.drain(), "bad name", "SubscriptionError", 400);
}

#[tokio::test]
async fn published_event_is_serialized_once_and_shared_by_every_subscriber() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    b.subscribe_public("news").await;
    a.drain();
    b.drain();
    publish(&hub, "news", "e", "x").await;
    let (Some(Outbound::Text(x)), Some(Outbound::Text(y))) = (a.next_raw(), b.next_raw()) else {
        panic!("both get the event");
    };
    assert_eq!(x, y);
    assert_eq!(x.as_ptr(), y.as_ptr(), "same buffer, not a copy");
}

#[tokio::test]
async fn publish_with_socket_id_excludes_that_connection() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    b.subscribe_public("news").await;
    a.drain();
    b.drain();
    let app = hub.app_by_id(APP_ID).expect("app");
    hub.publish(&app, "news", "e", "{}", Some(&a.conn.socket_id))
        .await
        .expect("publishes");
    assert!(a.drain().is_empty());
    assert_eq!(events(&b.drain()), vec!["e"]);
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("news").await;
    c.send(json!({"event":"pusher:unsubscribe","data":{"channel":"news"}}))
        .await;
    c.drain();
    publish(&hub, "news", "e", "{}").await;
    assert!(c.drain().is_empty());
    assert_eq!(hub.broker().subscription_count(APP_ID, "news").await, Ok(0));
}

#[tokio::test]
async fn presence_subscribe_lists_members_and_announces_newcomers_to_others() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_presence("presence-room", "alice").await;
    let m = a.drain();
    assert_eq!(m[0]["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(
        m[0]["data"],
        json!({"presence":{"ids":["alice"],"hash":{"alice":{"name":"alice"}},"count":1}})
    );
    b.subscribe_presence("presence-room", "bob").await;
    let m = b.drain();
    assert_eq!(m[0]["data"]["presence"]["ids"], json!(["alice", "bob"]));
    assert_eq!(m[0]["data"]["presence"]["count"], 2);
    assert_eq!(m.len(), 1, "bob does not get his own member_added");
    let m = a.drain();
    assert_eq!(
        m,
        vec![
            json!({"event":"pusher_internal:member_added","channel":"presence-room",
                    "data":{"user_id":"bob","user_info":{"name":"bob"}}})
        ]
    );
}

#[tokio::test]
async fn member_removed_only_when_the_users_last_socket_leaves() {
    let hub = hub(|_| {});
    let mut watcher = Client::connect(&hub).await;
    let mut tab1 = Client::connect(&hub).await;
    let mut tab2 = Client::connect(&hub).await;
    watcher.subscribe_presence("presence-room", "w").await;
    tab1.subscribe_presence("presence-room", "u").await;
    tab2.subscribe_presence("presence-room", "u").await;
    let m = watcher.drain();
    assert_eq!(
        events(&m),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher_internal:member_added"
        ],
        "one member_added for two sockets of one user"
    );
    assert_eq!(tab2.drain()[0]["data"]["presence"]["count"], 2);
    tab1.disconnect().await;
    assert!(watcher.drain().is_empty(), "u still has a socket");
    tab2.send(json!({"event":"pusher:unsubscribe","data":{"channel":"presence-room"}}))
        .await;
    assert_eq!(
        watcher.drain(),
        vec![
            json!({"event":"pusher_internal:member_removed","channel":"presence-room","data":{"user_id":"u"}})
        ]
    );
}

#[tokio::test]
async fn presence_without_channel_data_is_unauthorized() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_private("presence-room").await;
    assert_subscription_refused(&c.drain(), "presence-room", "AuthError", 401);
}

#[tokio::test]
async fn presence_channel_over_member_limit_refuses_new_users() {
    let hub = hub(|a| a.max_presence_members = 1);
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    let mut a2 = Client::connect(&hub).await;
    a.subscribe_presence("presence-room", "a").await;
    b.subscribe_presence("presence-room", "b").await;
    assert_subscription_refused(&b.drain(), "presence-room", "SubscriptionError", 403);
    a2.subscribe_presence("presence-room", "a").await;
    assert_eq!(
        events(&a2.drain()),
        vec!["pusher_internal:subscription_succeeded"],
        "an existing user may open another socket"
    );
}

#[tokio::test]
async fn client_event_reaches_others_but_is_not_echoed_to_the_sender() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_private("private-chat").await;
    b.subscribe_private("private-chat").await;
    a.drain();
    b.drain();
    a.send(json!({"event":"client-typing","channel":"private-chat","data":{"who":"a"}}))
        .await;
    assert!(a.drain().is_empty());
    assert_eq!(
        b.drain(),
        vec![json!({"event":"client-typing","channel":"private-chat","data":{"who":"a"}})]
    );
}

#[tokio::test]
async fn client_event_on_presence_channel_carries_user_id() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_presence("presence-room", "alice").await;
    b.subscribe_presence("presence-room", "bob").await;
    a.drain();
    b.drain();
    a.send(json!({"event":"client-hi","channel":"presence-room","data":"{}"}))
        .await;
    let m = b.drain();
    assert_eq!(m[0]["user_id"], "alice");
}

#[tokio::test]
async fn client_event_on_public_channel_is_rejected() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    b.subscribe_public("news").await;
    a.drain();
    b.drain();
    a.send(json!({"event":"client-x","channel":"news","data":{}}))
        .await;
    assert_eq!(events(&a.drain()), vec!["pusher:error"]);
    assert!(b.drain().is_empty());
}

#[tokio::test]
async fn client_event_on_encrypted_channel_is_rejected() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_private("private-encrypted-x").await;
    b.subscribe_private("private-encrypted-x").await;
    a.drain();
    b.drain();
    a.send(json!({"event":"client-x","channel":"private-encrypted-x","data":{}}))
        .await;
    assert_eq!(events(&a.drain()), vec!["pusher:error"]);
    assert!(b.drain().is_empty());
}

#[tokio::test]
async fn client_events_are_refused_when_the_app_disables_them() {
    let hub = hub(|a| a.enable_client_events = false);
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_private("private-chat").await;
    b.subscribe_private("private-chat").await;
    a.drain();
    b.drain();
    a.send(json!({"event":"client-x","channel":"private-chat","data":{}}))
        .await;
    assert_eq!(events(&a.drain()), vec!["pusher:error"]);
    assert!(b.drain().is_empty());
}

#[tokio::test]
async fn client_event_on_unsubscribed_channel_is_rejected() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    a.send(json!({"event":"client-x","channel":"private-chat","data":{}}))
        .await;
    assert_eq!(events(&a.drain()), vec!["pusher:error"]);
}

#[tokio::test]
async fn client_events_over_the_rate_get_error_4301_and_are_dropped() {
    let hub = hub(|a| a.client_event_rate = 3);
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_private("private-chat").await;
    b.subscribe_private("private-chat").await;
    a.drain();
    b.drain();
    let t0 = Instant::now();
    for _ in 0..4 {
        a.send_at(
            json!({"event":"client-x","channel":"private-chat","data":{}}),
            t0,
        )
        .await;
    }
    let errs = a.drain();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0]["data"]["code"], codes::CLIENT_EVENT_RATE_LIMIT);
    assert_eq!(b.drain().len(), 3);
    a.send_at(
        json!({"event":"client-x","channel":"private-chat","data":{}}),
        t0 + Duration::from_secs(1),
    )
    .await;
    assert_eq!(b.drain().len(), 1, "the bucket refills");
    assert!(
        !hub.is_closing(&a.conn.socket_id),
        "rate limiting does not close"
    );
}

#[tokio::test]
async fn cache_channel_replays_last_event_to_new_subscribers() {
    let hub = hub(|_| {});
    publish(&hub, "cache-price", "tick", r#"{"p":1}"#).await;
    publish(&hub, "cache-price", "tick", r#"{"p":2}"#).await;
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("cache-price").await;
    let m = c.drain();
    assert_eq!(
        events(&m),
        vec!["pusher_internal:subscription_succeeded", "tick"]
    );
    assert_eq!(m[1]["data"], json!({"p":2}));
}

#[tokio::test]
async fn empty_cache_channel_sends_cache_miss() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_private("private-cache-x").await;
    assert_eq!(
        events(&c.drain()),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher:cache_miss"
        ]
    );
}

#[tokio::test]
async fn slow_consumer_is_closed_with_4100_and_others_still_receive() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let mut cfg = config(|_| {});
    cfg.outbound_queue = 4;
    let hub = hub_on(broker, cfg);
    let mut slow = Client::connect(&hub).await;
    let mut fast = Client::connect(&hub).await;
    slow.subscribe_public("news").await;
    fast.subscribe_public("news").await;
    slow.drain();
    fast.drain();
    for i in 0..10 {
        publish(&hub, "news", "e", &i.to_string()).await;
        assert_eq!(fast.drain().len(), 1, "fast reader gets every event");
    }
    assert!(hub.is_closing(&slow.conn.socket_id));
    assert_eq!(
        slow.next_raw(),
        Some(Outbound::Close {
            code: codes::OVER_CAPACITY,
            reason: "Slow consumer: outbound queue full".into()
        })
    );
    assert_eq!(slow.next_raw(), None);
    assert_eq!(
        hub.metrics()
            .slow_consumers_total
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn signin_succeeds_and_terminate_closes_every_socket_of_that_user() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    let mut other = Client::connect(&hub).await;
    a.signin("u1").await;
    b.signin("u1").await;
    other.signin("u2").await;
    let m = a.drain();
    assert_eq!(m[0]["event"], "pusher:signin_success");
    assert_eq!(m[0]["data"]["user_data"], r#"{"id":"u1"}"#);
    b.drain();
    other.drain();
    assert_eq!(hub.terminate_user(APP_ID, "u1").await, Ok(2));
    for c in [&mut a, &mut b] {
        assert!(matches!(
            c.next_raw(),
            Some(Outbound::Close { code, .. }) if code == codes::UNAUTHORIZED
        ));
    }
    assert!(other.next_raw().is_none());
}

#[tokio::test]
async fn signin_with_bad_signature_gets_error_4009() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    let ud = r#"{"id":"u1"}"#;
    let forged = duplex_hub::auth::user_auth(KEY, "nope", c.id(), ud);
    c.send(json!({"event":"pusher:signin","data":{"auth":forged,"user_data":ud}}))
        .await;
    assert_eq!(c.drain()[0]["data"]["code"], 4009);
}

#[tokio::test]
async fn server_to_user_channel_requires_signin_as_that_user() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1","auth":""}}))
        .await;
    assert_subscription_refused(&c.drain(), "#server-to-user-u1", "AuthError", 401);
    c.signin("u1").await;
    c.send(json!({"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1","auth":""}}))
        .await;
    let m = c.drain();
    assert_eq!(
        events(&m),
        vec![
            "pusher:signin_success",
            "pusher_internal:subscription_succeeded"
        ]
    );
    publish(&hub, "#server-to-user-u1", "note", "{}").await;
    assert_eq!(events(&c.drain()), vec!["note"]);
}

#[tokio::test]
async fn too_many_channels_per_connection_is_refused() {
    let hub = hub(|a| a.max_channels_per_connection = 2);
    let mut c = Client::connect(&hub).await;
    for ch in ["a", "b", "c"] {
        c.subscribe_public(ch).await;
    }
    assert_eq!(
        events(&c.drain()),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher_internal:subscription_succeeded",
            "pusher:error",
            "pusher:subscription_error"
        ]
    );
}

#[tokio::test]
async fn disconnect_cleans_up_subscriptions_presence_and_counts() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("news").await;
    c.subscribe_presence("presence-room", "u").await;
    c.signin("u").await;
    c.disconnect().await;
    let b = hub.broker();
    assert_eq!(b.channels(APP_ID, None).await, Ok(vec![]));
    assert_eq!(b.presence_user_count(APP_ID, "presence-room").await, Ok(0));
    assert_eq!(b.user_sockets(APP_ID, "u").await, Ok(vec![]));
    assert_eq!(hub.local_connections(), 0);
    assert!(c
        .conn
        .outbound
        .recv()
        .await
        .is_some_and(|o| matches!(o, Outbound::Text(_))));
    // Everything queued is drained, then the queue ends.
    while let Some(o) = c.conn.outbound.recv().await {
        assert!(matches!(o, Outbound::Text(_)));
    }
    c.disconnect().await;
}

#[tokio::test]
async fn webhooks_report_occupied_member_added_client_event_vacated() {
    let hub = hub(|a| {
        a.webhooks.push(duplex_hub::config::Webhook {
            url: "http://hooks.test/".into(),
            events: vec![],
        })
    });
    let mut rx = hub.take_webhook_receiver().expect("first take");
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_presence("presence-room", "alice").await;
    b.subscribe_presence("presence-room", "bob").await;
    a.send(json!({"event":"client-x","channel":"presence-room","data":"hi"}))
        .await;
    a.disconnect().await;
    b.disconnect().await;
    let mut got = Vec::new();
    while let Ok(e) = rx.try_recv() {
        got.push(e.event);
    }
    let ch = || "presence-room".to_string();
    assert_eq!(
        got,
        vec![
            WebhookEvent::ChannelOccupied { channel: ch() },
            WebhookEvent::MemberAdded {
                channel: ch(),
                user_id: "alice".into()
            },
            WebhookEvent::MemberAdded {
                channel: ch(),
                user_id: "bob".into()
            },
            WebhookEvent::ClientEvent {
                channel: ch(),
                event: "client-x".into(),
                data: Some("hi".into()),
                socket_id: a.id().into(),
                user_id: Some("alice".into())
            },
            WebhookEvent::MemberRemoved {
                channel: ch(),
                user_id: "alice".into()
            },
            WebhookEvent::MemberRemoved {
                channel: ch(),
                user_id: "bob".into()
            },
            WebhookEvent::ChannelVacated { channel: ch() },
        ]
    );
}

#[tokio::test]
async fn two_nodes_on_one_broker_share_events_and_presence() {
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let node1 = hub_on(broker.clone(), config(|_| {}));
    let node2 = hub_on(broker.clone(), config(|_| {}));
    let mut a = Client::connect(&node1).await;
    let mut b = Client::connect(&node2).await;
    a.subscribe_presence("presence-room", "alice").await;
    b.subscribe_presence("presence-room", "bob").await;
    assert_eq!(b.drain()[0]["data"]["presence"]["count"], 2);
    assert_eq!(
        events(&a.drain()),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher_internal:member_added"
        ]
    );
    publish(&node1, "presence-room", "e", "{}").await;
    assert_eq!(events(&a.drain()), vec!["e"]);
    assert_eq!(events(&b.drain()), vec!["e"]);
    b.send(json!({"event":"client-x","channel":"presence-room","data":{}}))
        .await;
    assert_eq!(events(&a.drain()), vec!["client-x"]);
    b.signin("bob").await;
    assert_eq!(node1.terminate_user(APP_ID, "bob").await, Ok(1));
    assert!(node2.is_closing(&b.conn.socket_id));
    assert!(b.drain().iter().any(|m| m["close"] == codes::UNAUTHORIZED));
    b.disconnect().await;
    assert_eq!(
        a.drain(),
        vec![
            json!({"event":"pusher_internal:member_removed","channel":"presence-room","data":{"user_id":"bob"}})
        ]
    );
}
