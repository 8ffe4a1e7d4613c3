//! `duplex serve --redis`: Pusher semantics across nodes, each with clients on different nodes
//! of real `duplex serve` processes sharing a real `redis-server`.

mod cluster_support;
mod serve_support;

use std::time::Duration;

use cluster_support::*;
use duplex_testkit::RedisServer;
use serde_json::json;
use serve_support::*;

#[tokio::test]
async fn an_event_reaches_every_subscriber_on_every_node_once_in_publish_order() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 3, &[]);
    let mut subs = Vec::new();
    for node in 0..3 {
        for _ in 0..2 {
            let (mut ws, _) = established(&c.url(node)).await;
            subscribe_public(&mut ws, "news").await;
            subs.push(ws);
        }
    }
    let publishes_before = redis_calls(&redis, "publish");
    // Published through every node in turn: one order, whatever node an event came from.
    for i in 0..30 {
        let (status, body) = trigger(&c.addr(i % 3), "news", "tick", json!({ "n": i })).await;
        assert_eq!(status, 200, "{body}");
    }
    trigger(&c.addr(1), "news", "end", json!({})).await;
    for ws in &mut subs {
        for i in 0..30 {
            let m = next_json(ws).await;
            assert_eq!(m["event"], "tick", "{m}");
            assert_eq!(m["data"]["n"], i, "in publish order");
        }
        // Nothing duplicated: the next message is the last one published.
        assert_eq!(next_json(ws).await["event"], "end");
    }
    // One PUBLISH per event, and the Redis channel has one subscriber per node (not per client).
    assert_eq!(redis_calls(&redis, "publish") - publishes_before, 31);
    let numsub = redis.command(&["PUBSUB", "NUMSUB", "duplex:app:app-id:ev:news"]);
    assert!(
        numsub.trim_end().ends_with(":3"),
        "three nodes subscribe: {numsub}"
    );
}

#[tokio::test]
async fn client_events_cross_nodes_but_not_back_to_the_sender() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 3, &["--enable-client-events"]);
    let mut socks = Vec::new();
    for node in 0..3 {
        let (mut ws, id) = established(&c.url(node)).await;
        subscribe_private(&mut ws, &id, "private-room").await;
        socks.push(ws);
    }
    send_json(
        &mut socks[0],
        json!({"event":"client-typing","channel":"private-room","data":{"who":"a"}}),
    )
    .await;
    for ws in &mut socks[1..] {
        let m = next_json(ws).await;
        assert_eq!(m["event"], "client-typing", "{m}");
        assert_eq!(m["data"]["who"], "a");
    }
    let back = collect_for(&mut socks[0], Duration::from_millis(500)).await;
    assert!(back.is_empty(), "the sender gets nothing back: {back:?}");
}

#[tokio::test]
async fn presence_has_one_member_per_user_across_nodes() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 3, &[]);
    let ch = "presence-room";
    let (mut watcher, wid) = established(&c.url(2)).await;
    assert_eq!(
        join_presence(&mut watcher, &wid, ch, "watcher").await,
        ["watcher"]
    );

    // The same user on two nodes: one member_added, when the first socket joins.
    let (mut a1, a1id) = established(&c.url(0)).await;
    let members = join_presence(&mut a1, &a1id, ch, "alice").await;
    assert_eq!(members, ["alice", "watcher"], "the list is the cluster's");
    let m = next_event_named(
        &mut watcher,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(m["data"]["user_id"], "alice");
    let (mut a2, a2id) = established(&c.url(1)).await;
    assert_eq!(
        join_presence(&mut a2, &a2id, ch, "alice").await,
        ["alice", "watcher"]
    );
    let quiet = collect_for(&mut watcher, Duration::from_millis(700)).await;
    assert!(
        quiet.is_empty(),
        "second socket of alice: no member_added: {quiet:?}"
    );

    let (status, users) = api_get(
        &c.addr(1),
        &format!("/apps/{APP_ID}/channels/{ch}/users"),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(users["users"].as_array().map(Vec::len), Some(2), "{users}");

    // member_removed only when the last socket of alice anywhere leaves.
    drop(a1);
    let quiet = collect_for(&mut watcher, Duration::from_millis(700)).await;
    assert!(quiet.is_empty(), "alice is still on node 1: {quiet:?}");
    send_json(
        &mut a2,
        json!({"event":"pusher:unsubscribe","data":{"channel":ch}}),
    )
    .await;
    let m = next_event_named(
        &mut watcher,
        "pusher_internal:member_removed",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(m["data"]["user_id"], "alice");
}

#[tokio::test]
async fn the_rest_api_answers_for_the_whole_cluster_from_any_node() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 3, &[]);
    let mut keep = Vec::new();
    for (node, user) in [(0, "u1"), (1, "u2"), (1, "u1")] {
        let (mut ws, id) = established(&c.url(node)).await;
        join_presence(&mut ws, &id, "presence-lobby", user).await;
        subscribe_public(&mut ws, "news").await;
        keep.push(ws);
    }
    for node in 0..3 {
        let addr = c.addr(node);
        let (status, body) = api_get(&addr, &format!("/apps/{APP_ID}/channels"), &[]).await;
        assert_eq!(status, 200, "{body}");
        let chans = body["channels"].as_object().expect("channels");
        assert!(
            chans.contains_key("news") && chans.contains_key("presence-lobby"),
            "{body}"
        );
        let (_, info) = api_get(
            &addr,
            &format!("/apps/{APP_ID}/channels/presence-lobby"),
            &[("info", "user_count,subscription_count")],
        )
        .await;
        assert_eq!(info["occupied"], true, "{info}");
        assert_eq!(info["subscription_count"], 3, "{info}");
        assert_eq!(info["user_count"], 2, "{info}");
        let (_, news) = api_get(
            &addr,
            &format!("/apps/{APP_ID}/channels/news"),
            &[("info", "subscription_count")],
        )
        .await;
        assert_eq!(news["subscription_count"], 3, "{news}");
    }
    drop(keep);
    let addr = c.addr(2);
    eventually("the counts to drop to zero", Duration::from_secs(5), || {
        let addr = addr.clone();
        async move {
            let (_, news) = api_get(&addr, &format!("/apps/{APP_ID}/channels/news"), &[]).await;
            (news["occupied"] == false).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn terminate_connections_asked_of_any_node_closes_the_user_everywhere() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 3, &[]);
    let (mut a, aid) = established(&c.url(0)).await;
    sign_in(&mut a, &aid, "u9").await;
    let (mut b, bid) = established(&c.url(1)).await;
    sign_in(&mut b, &bid, "u9").await;
    let (mut other, oid) = established(&c.url(1)).await;
    sign_in(&mut other, &oid, "someone-else").await;
    let addr = c.addr(2);
    let (status, body) = tokio::task::spawn_blocking(move || {
        signed(
            &addr,
            "POST",
            &format!("/apps/{APP_ID}/users/u9/terminate_connections"),
            &[],
            "{}",
        )
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{body}");
    assert_eq!(close_code(&mut a).await, 4009);
    assert_eq!(close_code(&mut b).await, 4009);
    let still = collect_for(&mut other, Duration::from_millis(500)).await;
    assert!(still.is_empty(), "{still:?}");
}

#[tokio::test]
async fn a_cache_channel_event_published_on_one_node_is_served_on_another() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 2, &[]);
    let (status, _) = trigger(&c.addr(0), "cache-price", "price", json!({"eur": 7})).await;
    assert_eq!(status, 200);
    let (mut ws, _) = established(&c.url(1)).await;
    subscribe_public(&mut ws, "cache-price").await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["event"], "price", "{m}");
    assert_eq!(m["data"]["eur"], 7);
    // The TTL is Redis's: the key expires with the hub's cache_ttl.
    let ttl: i64 = redis
        .command(&["PTTL", "duplex:app:app-id:cache:cache-price"])
        .trim()
        .trim_start_matches(':')
        .parse()
        .expect("a number");
    assert!(ttl > 0 && ttl <= 1800 * 1000, "ttl {ttl}");
}

#[tokio::test]
async fn the_connection_quota_counts_the_whole_cluster() {
    let redis = RedisServer::start();
    let dir = duplex_testkit::TempDir::new("quota");
    let config = config_file(&dir, None, 2);
    let c = Cluster::start(
        &redis.url(),
        3,
        &["--config", config.to_str().expect("utf-8")],
    );
    let (_a, _) = established(&c.url(0)).await;
    let (_b, _) = established(&c.url(1)).await;
    let mut refused = ws(&c.url(2)).await;
    let m = next_json(&mut refused).await;
    assert_eq!(m["event"], "pusher:error", "{m}");
    assert_eq!(m["data"]["code"], 4004);
    drop(_a);
    let url = c.url(2);
    eventually(
        "a free place after a disconnect",
        Duration::from_secs(5),
        || {
            let url = url.clone();
            async move {
                let mut w = ws(&url).await;
                let m = next_json(&mut w).await;
                (m["event"] == "pusher:connection_established").then_some(())
            }
        },
    )
    .await;
}

#[tokio::test]
async fn webhooks_are_sent_once_per_cluster() {
    let redis = RedisServer::start();
    let hooks = WebhookSink::start();
    let dir = duplex_testkit::TempDir::new("hooks");
    let config = config_file(&dir, Some(&hooks.url), 0);
    let c = Cluster::start(
        &redis.url(),
        3,
        &["--config", config.to_str().expect("utf-8")],
    );
    let mut socks = Vec::new();
    for node in 0..3 {
        let (mut ws, id) = established(&c.url(node)).await;
        subscribe_public(&mut ws, "news").await;
        join_presence(&mut ws, &id, "presence-team", "same-user").await;
        socks.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hooks.named("channel_occupied").len(),
        2,
        "news and presence-team once each"
    );
    assert_eq!(hooks.named("member_added").len(), 1);
    drop(socks);
    eventually(
        "vacated and member_removed",
        Duration::from_secs(10),
        || {
            let done = hooks.named("channel_vacated").len() >= 2
                && !hooks.named("member_removed").is_empty();
            async move { done.then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        hooks.named("channel_vacated").len(),
        2,
        "{:?}",
        hooks.events
    );
    assert_eq!(hooks.named("member_removed").len(), 1, "{:?}", hooks.events);
    assert_eq!(hooks.named("channel_occupied").len(), 2);
}

#[tokio::test]
async fn the_vacate_delay_cancels_a_leave_and_join_on_different_nodes() {
    let redis = RedisServer::start();
    let hooks = WebhookSink::start();
    let dir = duplex_testkit::TempDir::new("delay");
    let config = config_file_with_delay(&dir, Some(&hooks.url), 0, 1500);
    let c = Cluster::start(
        &redis.url(),
        2,
        &["--config", config.to_str().expect("utf-8")],
    );
    let (mut first, fid) = established(&c.url(0)).await;
    subscribe_public(&mut first, "news").await;
    join_presence(&mut first, &fid, "presence-room", "reloader").await;
    eventually("occupied and member_added", Duration::from_secs(5), || {
        let done =
            hooks.named("channel_occupied").len() == 2 && hooks.named("member_added").len() == 1;
        async move { done.then_some(()) }
    })
    .await;
    // A page reload that lands on the other node: leave on node 0, join on node 1 at once.
    drop(first);
    let (mut second, sid) = established(&c.url(1)).await;
    subscribe_public(&mut second, "news").await;
    join_presence(&mut second, &sid, "presence-room", "reloader").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        hooks.named("channel_vacated").len(),
        0,
        "{:?}",
        hooks.events
    );
    assert_eq!(hooks.named("member_removed").len(), 0, "{:?}", hooks.events);
    assert_eq!(
        hooks.named("channel_occupied").len(),
        2,
        "{:?}",
        hooks.events
    );
    assert_eq!(hooks.named("member_added").len(), 1, "{:?}", hooks.events);
    // A real leave is reported once the delay has passed.
    drop(second);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        hooks.named("channel_vacated").is_empty(),
        "held for the delay"
    );
    eventually("vacated after the delay", Duration::from_secs(5), || {
        let done =
            hooks.named("channel_vacated").len() == 2 && hooks.named("member_removed").len() == 1;
        async move { done.then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn a_killed_node_leaves_the_cluster_within_its_node_timeout() {
    let redis = RedisServer::start();
    let hooks = WebhookSink::start();
    let dir = duplex_testkit::TempDir::new("kill");
    let config = config_file(&dir, Some(&hooks.url), 0);
    let mut c = Cluster::start(
        &redis.url(),
        3,
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--node-timeout",
            "2",
        ],
    );
    let (mut watcher, wid) = established(&c.url(0)).await;
    join_presence(&mut watcher, &wid, "presence-room", "watcher").await;
    let (mut doomed, did) = established(&c.url(1)).await;
    join_presence(&mut doomed, &did, "presence-room", "doomed").await;
    subscribe_public(&mut doomed, "only-on-node-1").await;
    next_event_named(
        &mut watcher,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;

    let killed_at = std::time::Instant::now();
    c.kill(1);
    let m = next_event_named(
        &mut watcher,
        "pusher_internal:member_removed",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(m["data"]["user_id"], "doomed");
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "removed {took:?} after the kill (timeout 2 s + sweep 0.5 s)"
    );

    let (_, body) = api_get(&c.addr(2), &format!("/apps/{APP_ID}/channels"), &[]).await;
    let chans = body["channels"].as_object().expect("channels");
    assert!(!chans.contains_key("only-on-node-1"), "{body}");
    let (_, info) = api_get(
        &c.addr(2),
        &format!("/apps/{APP_ID}/channels/presence-room"),
        &[("info", "user_count,subscription_count")],
    )
    .await;
    assert_eq!(info["user_count"], 1, "{info}");
    assert_eq!(info["subscription_count"], 1, "{info}");
    eventually(
        "the webhooks of the dead node's share",
        Duration::from_secs(5),
        || {
            let done = hooks.named("member_removed").len() == 1
                && hooks
                    .named("channel_vacated")
                    .iter()
                    .any(|e| e["channel"] == "only-on-node-1");
            async move { done.then_some(()) }
        },
    )
    .await;
    // Exactly once, though two nodes sweep.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooks.named("member_removed").len(), 1, "{:?}", hooks.events);
}

#[tokio::test]
async fn a_node_restarting_gracefully_causes_no_leave_and_join_storm() {
    let redis = RedisServer::start();
    let mut c = Cluster::start(&redis.url(), 2, &["--node-timeout", "3"]);
    let (mut watcher, wid) = established(&c.url(0)).await;
    join_presence(&mut watcher, &wid, "presence-room", "watcher").await;
    let mut movers = Vec::new();
    for user in ["m1", "m2", "m3"] {
        let (mut ws, id) = established(&c.url(1)).await;
        join_presence(&mut ws, &id, "presence-room", user).await;
        movers.push(ws);
    }
    let added = collect_for(&mut watcher, Duration::from_millis(800)).await;
    assert_eq!(added.len(), 3, "{added:?}");

    // Node 1 drains (SIGTERM): its clients are told to reconnect and do so on a new node.
    c.signal(1, "-TERM");
    for mut ws in movers {
        assert_eq!(close_code(&mut ws).await, 4200);
    }
    let fresh = c.add_node();
    let mut back = Vec::new();
    for user in ["m1", "m2", "m3"] {
        let (mut ws, id) = established(&c.url(fresh)).await;
        join_presence(&mut ws, &id, "presence-room", user).await;
        back.push(ws);
    }
    // The drained node's share leaves when its lease expires (3 s after it exited)...
    let addr = c.addr(0);
    eventually(
        "the drained node's share to leave",
        Duration::from_secs(12),
        || {
            let addr = addr.clone();
            async move {
                let (_, info) = api_get(
                    &addr,
                    &format!("/apps/{APP_ID}/channels/presence-room"),
                    &[("info", "user_count,subscription_count")],
                )
                .await;
                (info["subscription_count"] == 4 && info["user_count"] == 4).then_some(())
            }
        },
    )
    .await;
    // ... and meanwhile the watcher saw nobody leave or join.
    let seen = collect_for(&mut watcher, Duration::from_secs(1)).await;
    assert!(
        seen.is_empty(),
        "no member_removed/member_added storm: {seen:?}"
    );
    assert!(
        c.log(0).contains("removed a dead node") || c.log(2).contains("removed a dead node"),
        "the old share was swept, not left behind"
    );
}

#[tokio::test]
async fn a_stuck_node_does_not_slow_the_others() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 3, &[]);
    let mut fast = Vec::new();
    for node in [0, 2] {
        let (mut ws, _) = established(&c.url(node)).await;
        subscribe_public(&mut ws, "feed").await;
        fast.push(ws);
    }
    let (mut stuck_sub, _) = established(&c.url(1)).await;
    subscribe_public(&mut stuck_sub, "feed").await;
    c.signal(1, "-STOP");
    let started = std::time::Instant::now();
    for i in 0..20 {
        let (status, _) = trigger(&c.addr(0), "feed", "e", json!({ "n": i })).await;
        assert_eq!(status, 200);
    }
    for ws in &mut fast {
        for i in 0..20 {
            let m = next_json(ws).await;
            assert_eq!(m["data"]["n"], i);
        }
    }
    let took = started.elapsed();
    c.signal(1, "-CONT");
    assert!(
        took < Duration::from_secs(3),
        "20 events took {took:?} with a node stopped"
    );
    // The stopped node catches up once it runs again.
    for i in 0..20 {
        assert_eq!(next_json(&mut stuck_sub).await["data"]["n"], i);
    }
}

#[tokio::test]
async fn a_node_killed_and_replaced_quickly_causes_no_storm() {
    let redis = RedisServer::start();
    let mut c = Cluster::start(&redis.url(), 2, &["--node-timeout", "3"]);
    let (mut watcher, wid) = established(&c.url(0)).await;
    join_presence(&mut watcher, &wid, "presence-room", "watcher").await;
    let mut movers = Vec::new();
    for user in ["k1", "k2"] {
        let (mut ws, id) = established(&c.url(1)).await;
        join_presence(&mut ws, &id, "presence-room", user).await;
        movers.push(ws);
    }
    assert_eq!(
        collect_for(&mut watcher, Duration::from_millis(800))
            .await
            .len(),
        2
    );
    c.kill(1);
    drop(movers);
    // Its clients come back (to a new node) before its lease expires.
    let fresh = c.add_node();
    let mut back = Vec::new();
    for user in ["k1", "k2"] {
        let (mut ws, id) = established(&c.url(fresh)).await;
        join_presence(&mut ws, &id, "presence-room", user).await;
        back.push(ws);
    }
    let addr = c.addr(0);
    eventually(
        "the dead node's share to leave",
        Duration::from_secs(12),
        || {
            let addr = addr.clone();
            async move {
                let (_, info) = api_get(
                    &addr,
                    &format!("/apps/{APP_ID}/channels/presence-room"),
                    &[("info", "subscription_count")],
                )
                .await;
                (info["subscription_count"] == 3).then_some(())
            }
        },
    )
    .await;
    let seen = collect_for(&mut watcher, Duration::from_secs(1)).await;
    assert!(seen.is_empty(), "no member_removed/member_added: {seen:?}");
}

#[tokio::test]
async fn a_node_stopped_past_its_timeout_is_removed_then_announces_its_users_again() {
    let redis = RedisServer::start();
    let c = Cluster::start(&redis.url(), 2, &["--node-timeout", "2"]);
    let (mut watcher, wid) = established(&c.url(0)).await;
    join_presence(&mut watcher, &wid, "presence-room", "watcher").await;
    let (mut sleeper, sid) = established(&c.url(1)).await;
    join_presence(&mut sleeper, &sid, "presence-room", "sleeper").await;
    next_event_named(
        &mut watcher,
        "pusher_internal:member_added",
        Duration::from_secs(5),
    )
    .await;
    c.signal(1, "-STOP");
    let m = next_event_named(
        &mut watcher,
        "pusher_internal:member_removed",
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(m["data"]["user_id"], "sleeper");
    c.signal(1, "-CONT");
    // Its client never left: once it runs again, the node registers it again and says so.
    let m = next_event_named(
        &mut watcher,
        "pusher_internal:member_added",
        Duration::from_secs(8),
    )
    .await;
    assert_eq!(m["data"]["user_id"], "sleeper");
    let (_, info) = api_get(
        &c.addr(0),
        &format!("/apps/{APP_ID}/channels/presence-room"),
        &[("info", "user_count,subscription_count")],
    )
    .await;
    assert_eq!(info["user_count"], 2, "{info}");
    assert_eq!(info["subscription_count"], 2, "{info}");
    // And the sleeper's connection still works both ways.
    let (status, _) = trigger(&c.addr(0), "presence-room", "hello", json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        next_event_named(&mut sleeper, "hello", Duration::from_secs(5)).await["event"],
        "hello"
    );
}
