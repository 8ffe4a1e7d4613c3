//! Channel history and recovery on the hub (in-process broker): the wire format, refusals,
//! and a property test that recovery never loses or duplicates an event.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use duplex_hub::config::History;
use duplex_hub::hub::Hub;
use proptest::prelude::*;
use serde_json::{json, Value};

fn history_app(size: usize) -> impl FnOnce(&mut duplex_hub::config::App) {
    move |a| {
        a.history = Some(History {
            channels: vec!["chat-*".into(), "presence-game-*".into()],
            size,
            ttl: 600,
        })
    }
}

async fn publish(hub: &Hub, channel: &str, n: u64) {
    let app = hub.app_by_id(APP_ID).expect("app");
    hub.publish(&app, channel, "msg", &json!({ "n": n }).to_string(), None)
        .await
        .expect("publishes");
}

async fn subscribe_recover(c: &mut Client, channel: &str, recover: Option<Value>) {
    let mut data = json!({ "channel": channel });
    if let Some(r) = recover {
        data["recover"] = r;
    }
    c.send(json!({"event":"pusher:subscribe","data":data}))
        .await;
}

fn position(v: &Value) -> Value {
    v["position"].clone()
}

#[tokio::test]
async fn events_on_history_channels_carry_their_position_and_plain_ones_do_not() {
    let hub = hub(history_app(100));
    let mut c = Client::connect(&hub).await;
    c.subscribe_public("chat-1").await;
    c.subscribe_public("news").await;
    let ok = c.drain();
    assert_eq!(ok[0]["data"]["position"]["offset"], 0, "{ok:?}");
    let epoch = ok[0]["data"]["position"]["epoch"].clone();
    assert!(epoch.as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        ok[1]["data"],
        json!({}),
        "plain channel: unchanged for pusher-js"
    );
    for n in 1..=3 {
        publish(&hub, "chat-1", n).await;
    }
    publish(&hub, "news", 9).await;
    let got = c.drain();
    for (i, m) in got[..3].iter().enumerate() {
        assert_eq!(position(m), json!({"epoch": epoch, "offset": i + 1}));
    }
    assert!(got[3].get("position").is_none(), "{}", got[3]);
}

#[tokio::test]
async fn a_client_that_reconnects_gets_what_it_missed_then_live_events() {
    let hub = hub(history_app(100));
    let mut a = Client::connect(&hub).await;
    a.subscribe_public("chat-1").await;
    publish(&hub, "chat-1", 1).await;
    let seen = a.drain();
    let last = position(&seen[1]);
    a.disconnect().await;
    for n in 2..=4 {
        publish(&hub, "chat-1", n).await;
    }
    let mut b = Client::connect(&hub).await;
    subscribe_recover(&mut b, "chat-1", Some(last.clone())).await;
    publish(&hub, "chat-1", 5).await;
    let got = b.drain();
    assert_eq!(got[0]["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(got[0]["data"]["recovered"], true);
    assert_eq!(got[0]["data"]["position"]["offset"], 4);
    let ns: Vec<u64> = got[1..]
        .iter()
        .map(|m| m["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, vec![2, 3, 4, 5]);
}

#[tokio::test]
async fn recovery_is_refused_for_an_unknown_epoch_an_offset_no_longer_kept_or_no_history() {
    let hub = hub(history_app(3));
    for n in 1..=10 {
        publish(&hub, "chat-1", n).await;
    }
    let mut c = Client::connect(&hub).await;
    subscribe_recover(
        &mut c,
        "chat-1",
        Some(json!({"epoch":"not-this-one","offset":9})),
    )
    .await;
    let got = c.drain();
    assert_eq!(got.len(), 1, "nothing replayed: {got:?}");
    assert_eq!(got[0]["data"]["recovered"], false);
    let current = got[0]["data"]["position"].clone();
    assert_eq!(current["offset"], 10);

    let mut c = Client::connect(&hub).await;
    let old = json!({"epoch": current["epoch"], "offset": 5});
    subscribe_recover(&mut c, "chat-1", Some(old)).await;
    let got = c.drain();
    assert_eq!(got.len(), 1, "offsets 6 and 7 are gone (size 3): {got:?}");
    assert_eq!(got[0]["data"]["recovered"], false);

    let mut c = Client::connect(&hub).await;
    let kept = json!({"epoch": current["epoch"], "offset": 7});
    subscribe_recover(&mut c, "chat-1", Some(kept)).await;
    let got = c.drain();
    assert_eq!(got[0]["data"]["recovered"], true, "8, 9, 10 are kept");
    assert_eq!(got.len(), 4);

    let mut c = Client::connect(&hub).await;
    subscribe_recover(&mut c, "news", Some(json!({"epoch":"x","offset":1}))).await;
    let got = c.drain();
    assert_eq!(
        got[0]["data"],
        json!({"recovered": false}),
        "history is off for news"
    );
}

#[tokio::test]
async fn a_malformed_recover_is_a_subscription_error_and_the_connection_stays() {
    let hub = hub(history_app(100));
    let mut c = Client::connect(&hub).await;
    for bad in [
        json!({"epoch":"e","offset":-1}),
        json!({"epoch":"e","offset":"1"}),
        json!({"epoch":"e","offset":1e300}),
        json!({"epoch": "x".repeat(10_000), "offset":1}),
        json!({"offset":1}),
        json!("e:1"),
    ] {
        subscribe_recover(&mut c, "chat-1", Some(bad.clone())).await;
        let got = c.drain();
        assert_eq!(
            events(&got),
            ["pusher:error", "pusher:subscription_error"],
            "{bad}"
        );
        let msg = got[1]["data"]["error"].as_str().unwrap_or_default();
        assert!(msg.contains("recover"), "{msg}");
        assert_eq!(got[1]["data"]["status"], 400);
    }
    c.send(json!({"event":"pusher:ping","data":{}})).await;
    assert_eq!(c.drain()[0]["event"], "pusher:pong");
}

#[tokio::test]
async fn presence_history_channels_keep_the_member_list_in_the_confirmation() {
    let hub = hub(history_app(100));
    let mut c = Client::connect(&hub).await;
    c.subscribe_presence("presence-game-1", "u1").await;
    let got = c.drain();
    assert_eq!(got[0]["data"]["presence"]["ids"], json!(["u1"]));
    assert_eq!(got[0]["data"]["position"]["offset"], 0);
}

#[derive(Debug, Clone)]
enum Step {
    /// Publish this many events while connected.
    Publish(u8),
    /// Disconnect, miss this many events, reconnect with `recover` while this many more are
    /// published concurrently, the subscription yielding this often at each broker call.
    Reconnect { missed: u8, during: u8, yields: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..5).prop_map(Step::Publish),
        (0u8..8, 0u8..5, 0u8..4).prop_map(|(missed, during, yields)| Step::Reconnect {
            missed,
            during,
            yields
        }),
    ]
}

/// Runs `steps`; returns the offsets the client received, in order, and whether every
/// recovery succeeded.
async fn run(steps: Vec<Step>, size: usize) -> (Vec<u64>, u64, bool) {
    let broker = Arc::new(HookedBroker::new());
    let hub = hub_on(broker.clone(), config(history_app(size)));
    let mut published = 0u64;
    let mut received: Vec<u64> = Vec::new();
    let mut all_recovered = true;
    let mut c = Client::connect(&hub).await;
    subscribe_recover(&mut c, "chat-p", None).await;
    let mut last: Option<Value> = None;
    let mut absorb = |msgs: Vec<Value>, received: &mut Vec<u64>, last: &mut Option<Value>| {
        for m in msgs {
            if m["event"] == "pusher_internal:subscription_succeeded" {
                if m["data"]["recovered"] == false {
                    all_recovered = false;
                }
                if last.is_none() || m["data"]["recovered"] == false {
                    *last = Some(m["data"]["position"].clone());
                }
            } else if m["event"] == "msg" {
                received.push(m["position"]["offset"].as_u64().expect("offset"));
                *last = Some(m["position"].clone());
            }
        }
    };
    absorb(c.drain(), &mut received, &mut last);
    for s in steps {
        match s {
            Step::Publish(n) => {
                for _ in 0..n {
                    published += 1;
                    publish(&hub, "chat-p", published).await;
                }
            }
            Step::Reconnect {
                missed,
                during,
                yields,
            } => {
                absorb(c.drain(), &mut received, &mut last);
                c.disconnect().await;
                for _ in 0..missed {
                    published += 1;
                    publish(&hub, "chat-p", published).await;
                }
                broker.yields.store(usize::from(yields), Ordering::Relaxed);
                let mut fresh = Client::connect(&hub).await;
                let recover = last.clone();
                let start = published;
                let publishing = async {
                    for i in 0..u64::from(during) {
                        publish(&hub, "chat-p", start + i + 1).await;
                        tokio::task::yield_now().await;
                    }
                };
                tokio::join!(subscribe_recover(&mut fresh, "chat-p", recover), publishing);
                published += u64::from(during);
                broker.yields.store(0, Ordering::Relaxed);
                c = fresh;
            }
        }
        absorb(c.drain(), &mut received, &mut last);
    }
    (received, published, all_recovered)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the interleaving of publishes, disconnections and recoveries: when every
    /// recovery succeeds, the client saw every event exactly once, in order; when one fails,
    /// it still never sees an event twice or out of order.
    #[test]
    fn recovery_never_loses_or_duplicates(steps in prop::collection::vec(step(), 1..12), small in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let size = if small { 4 } else { 1000 };
        let (received, published, all_recovered) = rt.block_on(run(steps, size));
        prop_assert!(received.windows(2).all(|w| w[0] < w[1]), "in order, no duplicate: {:?}", received);
        if all_recovered {
            prop_assert_eq!(received, (1..=published).collect::<Vec<u64>>());
        }
    }
}
