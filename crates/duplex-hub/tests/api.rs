//! The HTTP API driven with signed requests, as server SDKs send them.

mod common;

use common::*;
use duplex_hub::api::{self, ApiRequest, ApiResponse};
use duplex_hub::auth;
use duplex_hub::hub::{Hub, Outbound};
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000;

/// A request signed like the `pusher` SDKs do: auth params in the query, body_md5 for bodies.
fn signed(method: &str, path: &str, extra: &[(&str, &str)], body: &str) -> ApiRequest {
    signed_with(SECRET, NOW, method, path, extra, body)
}

fn signed_with(
    secret: &str,
    ts: u64,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> ApiRequest {
    let mut q: Vec<(String, String)> = vec![
        ("auth_key".into(), KEY.into()),
        ("auth_timestamp".into(), ts.to_string()),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        q.push(("body_md5".into(), auth::body_md5(body.as_bytes())));
    }
    for (k, v) in extra {
        q.push(((*k).into(), (*v).into()));
    }
    let sig = auth::sign_request(secret, method, path, &q);
    q.push(("auth_signature".into(), sig));
    let raw: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    ApiRequest::new(method, path, Some(&raw.join("&")), body.to_owned())
}

async fn call(hub: &Hub, req: ApiRequest) -> ApiResponse {
    api::handle(hub, &req, NOW).await
}

fn trigger_body(v: Value) -> String {
    v.to_string()
}

#[tokio::test]
async fn trigger_event_reaches_subscribers_and_answers_empty_object() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("news").await;
    c.drain();
    let body =
        trigger_body(json!({"name":"headline","channels":["news","other"],"data":"{\"t\":1}"}));
    let r = call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
    assert_eq!((r.status, r.json_body()), (200, json!({})));
    assert_eq!(
        c.drain(),
        vec![json!({"event":"headline","channel":"news","data":{"t":1}})]
    );
}

#[tokio::test]
async fn trigger_with_socket_id_excludes_that_connection() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    b.subscribe_public("news").await;
    a.drain();
    b.drain();
    let body = trigger_body(json!({"name":"e","channel":"news","data":"x","socket_id":a.id()}));
    let r = call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
    assert_eq!(r.status, 200);
    assert!(a.drain().is_empty());
    assert_eq!(events(&b.drain()), vec!["e"]);
}

#[tokio::test]
async fn object_data_is_forwarded_as_its_json_text() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("news").await;
    c.drain();
    let body = trigger_body(json!({"name":"e","channel":"news","data":{"a":1}}));
    assert_eq!(
        call(&hub, signed("POST", "/apps/app-id/events", &[], &body))
            .await
            .status,
        200
    );
    let Some(Outbound::Text(raw)) = c.next_raw() else {
        panic!("event expected")
    };
    let v: Value = serde_json::from_slice(&raw).expect("JSON");
    assert_eq!(v["data"], json!("{\"a\":1}"), "data travels as a string");
}

#[tokio::test]
async fn bad_signature_is_401() {
    let hub = hub(|_| {});
    let body = trigger_body(json!({"name":"e","channel":"news","data":"x"}));
    let r = call(
        &hub,
        signed_with("wrong", NOW, "POST", "/apps/app-id/events", &[], &body),
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.json_body()["error"].is_string());
}

#[tokio::test]
async fn expired_timestamp_is_401() {
    let hub = hub(|_| {});
    let r = call(
        &hub,
        signed_with(SECRET, NOW - 601, "GET", "/apps/app-id/channels", &[], ""),
    )
    .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn tampered_body_is_401() {
    let hub = hub(|_| {});
    let mut req = signed(
        "POST",
        "/apps/app-id/events",
        &[],
        &trigger_body(json!({"name":"e","channel":"news","data":"x"})),
    );
    req.body = trigger_body(json!({"name":"e","channel":"news","data":"y"})).into();
    assert_eq!(call(&hub, req).await.status, 401);
}

#[tokio::test]
async fn unknown_app_and_unknown_route_are_404() {
    let hub = hub(|_| {});
    assert_eq!(
        call(&hub, signed("GET", "/apps/nope/channels", &[], ""))
            .await
            .status,
        404
    );
    assert_eq!(
        call(&hub, signed("GET", "/apps/app-id/nothing", &[], ""))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn disabled_app_is_403() {
    let hub = hub(|a| a.enabled = false);
    assert_eq!(
        call(&hub, signed("GET", "/apps/app-id/channels", &[], ""))
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn wrong_method_is_405() {
    let hub = hub(|_| {});
    assert_eq!(
        call(&hub, signed("GET", "/apps/app-id/events", &[], ""))
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn more_than_100_channels_is_400() {
    let hub = hub(|_| {});
    let channels: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let body = trigger_body(json!({"name":"e","channels":channels,"data":"x"}));
    let r = call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn data_over_10kb_is_413() {
    let hub = hub(|_| {});
    let body = trigger_body(json!({"name":"e","channel":"news","data":"x".repeat(10 * 1024 + 1)}));
    let r = call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
    assert_eq!(r.status, 413);
    let body = trigger_body(json!({"name":"e","channel":"news","data":"x".repeat(10 * 1024)}));
    assert_eq!(
        call(&hub, signed("POST", "/apps/app-id/events", &[], &body))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn missing_name_invalid_channel_bad_socket_id_and_bad_json_are_400() {
    let hub = hub(|_| {});
    for body in [
        json!({"channel":"news","data":"x"}).to_string(),
        json!({"name":"e","channel":"bad name","data":"x"}).to_string(),
        json!({"name":"e","channel":"news","data":"x","socket_id":"abc"}).to_string(),
        json!({"name":"e","channel":"news"}).to_string(),
        "{oops".to_string(),
    ] {
        let r = call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
        assert_eq!(r.status, 400, "{body}");
    }
}

#[tokio::test]
async fn batch_delivers_each_event_and_refuses_more_than_10() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("a").await;
    c.subscribe_public("b").await;
    c.drain();
    let body = trigger_body(json!({"batch":[
        {"name":"e1","channel":"a","data":"1"},
        {"name":"e2","channel":"b","data":"2"}]}));
    let r = call(
        &hub,
        signed("POST", "/apps/app-id/batch_events", &[], &body),
    )
    .await;
    assert_eq!((r.status, r.json_body()), (200, json!({})));
    assert_eq!(events(&c.drain()), vec!["e1", "e2"]);
    let eleven: Vec<Value> = (0..11)
        .map(|i| json!({"name":"e","channel":"a","data":i.to_string()}))
        .collect();
    let body = trigger_body(json!({ "batch": eleven }));
    let r = call(
        &hub,
        signed("POST", "/apps/app-id/batch_events", &[], &body),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(c.drain().is_empty(), "nothing of a refused batch is sent");
}

#[tokio::test]
async fn batch_with_info_returns_attributes_per_event() {
    let hub = hub(|_| {});
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("a").await;
    let body = trigger_body(json!({"batch":[
        {"name":"e1","channel":"a","data":"1","info":"subscription_count"},
        {"name":"e2","channel":"b","data":"2"}]}));
    let r = call(
        &hub,
        signed("POST", "/apps/app-id/batch_events", &[], &body),
    )
    .await;
    assert_eq!(
        r.json_body(),
        json!({"batch":[{"subscription_count":1},{}]})
    );
}

#[tokio::test]
async fn channels_lists_occupied_channels_with_prefix_and_user_count() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    a.subscribe_presence("presence-room", "alice").await;
    b.subscribe_presence("presence-room", "bob").await;
    let r = call(&hub, signed("GET", "/apps/app-id/channels", &[], "")).await;
    assert_eq!(
        r.json_body(),
        json!({"channels":{"news":{},"presence-room":{}}})
    );
    let r = call(
        &hub,
        signed(
            "GET",
            "/apps/app-id/channels",
            &[
                ("filter_by_prefix", "presence-"),
                ("info", "user_count,subscription_count"),
            ],
            "",
        ),
    )
    .await;
    assert_eq!(
        r.json_body(),
        json!({"channels":{"presence-room":{"user_count":2,"subscription_count":2}}})
    );
    let r = call(
        &hub,
        signed(
            "GET",
            "/apps/app-id/channels",
            &[("info", "user_count")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 400, "user_count needs the presence- prefix");
}

#[tokio::test]
async fn channel_info_reports_occupied_counts_and_cache() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    a.subscribe_public("news").await;
    let r = call(
        &hub,
        signed(
            "GET",
            "/apps/app-id/channels/news",
            &[("info", "subscription_count")],
            "",
        ),
    )
    .await;
    assert_eq!(
        r.json_body(),
        json!({"occupied":true,"subscription_count":1})
    );
    let r = call(&hub, signed("GET", "/apps/app-id/channels/empty", &[], "")).await;
    assert_eq!(r.json_body(), json!({"occupied":false}));
    let r = call(
        &hub,
        signed(
            "GET",
            "/apps/app-id/channels/news",
            &[("info", "user_count")],
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 400, "user_count is presence-only");
    let body = trigger_body(json!({"name":"tick","channel":"cache-p","data":"1"}));
    call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
    let r = call(
        &hub,
        signed(
            "GET",
            "/apps/app-id/channels/cache-p",
            &[("info", "cache")],
            "",
        ),
    )
    .await;
    assert_eq!(r.json_body()["cache"]["event"]["event"], "tick");
}

#[tokio::test]
async fn users_lists_presence_members_and_refuses_other_channels() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    let mut a2 = Client::connect(&hub).await;
    let mut b = Client::connect(&hub).await;
    a.subscribe_presence("presence-room", "alice").await;
    a2.subscribe_presence("presence-room", "alice").await;
    b.subscribe_presence("presence-room", "bob").await;
    let r = call(
        &hub,
        signed("GET", "/apps/app-id/channels/presence-room/users", &[], ""),
    )
    .await;
    assert_eq!(
        r.json_body(),
        json!({"users":[{"id":"alice"},{"id":"bob"}]})
    );
    let r = call(
        &hub,
        signed("GET", "/apps/app-id/channels/news/users", &[], ""),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn terminate_connections_closes_the_users_sockets() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    a.signin("u1").await;
    a.drain();
    let r = call(
        &hub,
        signed(
            "POST",
            "/apps/app-id/users/u1/terminate_connections",
            &[],
            "",
        ),
    )
    .await;
    assert_eq!((r.status, r.json_body()), (200, json!({})));
    assert!(matches!(
        a.next_raw(),
        Some(Outbound::Close { code: 4009, .. })
    ));
}

#[tokio::test]
async fn terminate_connections_without_apps_prefix_finds_the_app_by_auth_key() {
    // The Python SDK (pusher 3.3) posts to /users/{id}/terminate_connections.
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    a.signin("u1").await;
    a.drain();
    let path = "/users/u1/terminate_connections";
    let r = call(&hub, signed_with("wrong", NOW, "POST", path, &[], "")).await;
    assert_eq!(r.status, 401);
    let mut bad_key = signed("POST", path, &[], "");
    bad_key.query[0].1 = "no-such-key".into();
    assert_eq!(call(&hub, bad_key).await.status, 404);
    let mut no_key = signed("POST", path, &[], "");
    no_key.query.remove(0);
    assert_eq!(call(&hub, no_key).await.status, 401);
    assert!(a.drain().is_empty(), "refused requests closed nothing");
    let r = call(&hub, signed("POST", path, &[], "")).await;
    assert_eq!((r.status, r.json_body()), (200, json!({})));
    assert!(matches!(
        a.next_raw(),
        Some(Outbound::Close { code: 4009, .. })
    ));
}

#[tokio::test]
async fn send_to_user_reaches_the_signed_in_users_channel() {
    let hub = hub(|_| {});
    let mut a = Client::connect(&hub).await;
    a.signin("u1").await;
    a.send(json!({"event":"pusher:subscribe","data":{"channel":"#server-to-user-u1"}}))
        .await;
    a.drain();
    let body = trigger_body(json!({"name":"note","channels":["#server-to-user-u1"],"data":"{}"}));
    let r = call(&hub, signed("POST", "/apps/app-id/events", &[], &body)).await;
    assert_eq!(r.status, 200);
    assert_eq!(events(&a.drain()), vec!["note"]);
}

#[tokio::test]
async fn api_responses_are_counted_by_status_class() {
    let hub = hub(|_| {});
    call(&hub, signed("GET", "/apps/app-id/channels", &[], "")).await;
    call(
        &hub,
        signed_with("x", NOW, "GET", "/apps/app-id/channels", &[], ""),
    )
    .await;
    let text = hub.metrics().render();
    assert!(text.contains("duplex_api_requests_total{status=\"2xx\"} 1"));
    assert!(text.contains("duplex_api_requests_total{status=\"4xx\"} 1"));
}
