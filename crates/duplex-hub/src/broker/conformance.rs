//! The behaviour every [`Broker`] must show, as one suite: a Redis broker runs the same checks.
//!
//! Each check takes a fresh broker and panics on the first mismatch (it is test code, shipped
//! so other crates can run it):
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! duplex_hub::broker::conformance::run_all(duplex_hub::broker::MemoryBroker::new).await;
//! # });
//! ```
#![allow(clippy::missing_panics_doc)]

use super::*;
use crate::protocol::parse_channel_data;
use std::sync::{Arc, Mutex};
use std::time::Instant;

type Delivered = (String, String, Bytes, Option<SocketId>);

#[derive(Default)]
struct RecordingSink {
    got: Mutex<Vec<Delivered>>,
    controls: Mutex<Vec<Control>>,
}

impl NodeSink for RecordingSink {
    fn deliver(&self, app: &str, channel: &str, payload: &Bytes, except: Option<&SocketId>) {
        self.got.lock().expect("lock").push((
            app.into(),
            channel.into(),
            payload.clone(),
            except.cloned(),
        ));
    }
    fn control(&self, _app: &str, control: &Control) {
        self.controls.lock().expect("lock").push(control.clone());
    }
}

fn sid(s: &str) -> SocketId {
    SocketId::parse(s).expect("valid id")
}

fn member(id: &str) -> PresenceMember {
    parse_channel_data(&format!(r#"{{"user_id":"{id}"}}"#)).expect("valid")
}

/// Waits (at most 5 s) until `done` holds: a distributed broker delivers asynchronously.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn payloads(s: &RecordingSink) -> Vec<Bytes> {
    s.got
        .lock()
        .expect("lock")
        .iter()
        .map(|d| d.2.clone())
        .collect()
}

/// Conformance check `publish_reaches_only_nodes_subscribed_to_the_channel`.
pub async fn publish_reaches_only_nodes_subscribed_to_the_channel(b: &dyn Broker) {
    let s1 = Arc::new(RecordingSink::default());
    let s2 = Arc::new(RecordingSink::default());
    let w1: Weak<dyn NodeSink> = Arc::downgrade(&s1) as Weak<dyn NodeSink>;
    let w2: Weak<dyn NodeSink> = Arc::downgrade(&s2) as Weak<dyn NodeSink>;
    let n1 = b.attach(w1);
    let n2 = b.attach(w2);
    b.subscribe_node(n1, "app", "a").await.expect("ok");
    b.publish("app", "a", Bytes::from_static(b"x"), Some(sid("1.1")))
        .await
        .expect("ok");
    b.publish("app", "b", Bytes::from_static(b"y"), None)
        .await
        .expect("ok");
    b.publish("other", "a", Bytes::from_static(b"z"), None)
        .await
        .expect("ok");
    // A marker published last arrives last: what was misrouted would be in by then.
    b.publish("app", "a", Bytes::from_static(b"m"), None)
        .await
        .expect("ok");
    eventually("the marker", || payloads(&s1).len() >= 2).await;
    assert_eq!(
        *s1.got.lock().expect("lock"),
        vec![
            (
                "app".into(),
                "a".into(),
                Bytes::from_static(b"x"),
                Some(sid("1.1"))
            ),
            ("app".into(), "a".into(), Bytes::from_static(b"m"), None)
        ]
    );
    assert!(s2.got.lock().expect("lock").is_empty());
    b.unsubscribe_node(n1, "app", "a").await.expect("ok");
    b.subscribe_node(n2, "app", "a").await.expect("ok");
    b.publish("app", "a", Bytes::from_static(b"x2"), None)
        .await
        .expect("ok");
    eventually("delivery to the second node", || !payloads(&s2).is_empty()).await;
    assert_eq!(payloads(&s2), vec![Bytes::from_static(b"x2")]);
    assert_eq!(payloads(&s1).len(), 2, "no delivery after unsubscribe_node");
}

/// Conformance check `publish_order_is_kept_per_channel`.
pub async fn publish_order_is_kept_per_channel(b: &dyn Broker) {
    let s1 = Arc::new(RecordingSink::default());
    let n1 = b.attach(Arc::downgrade(&s1) as Weak<dyn NodeSink>);
    b.subscribe_node(n1, "app", "ordered").await.expect("ok");
    let sent: Vec<Bytes> = (0..200).map(|i| Bytes::from(format!("{i}"))).collect();
    for p in &sent {
        b.publish("app", "ordered", p.clone(), None)
            .await
            .expect("ok");
    }
    eventually("200 events", || payloads(&s1).len() >= sent.len()).await;
    assert_eq!(payloads(&s1), sent);
}

/// Conformance check `control_reaches_every_node`.
pub async fn control_reaches_every_node(b: &dyn Broker) {
    let s1 = Arc::new(RecordingSink::default());
    let s2 = Arc::new(RecordingSink::default());
    b.attach(Arc::downgrade(&s1) as Weak<dyn NodeSink>);
    b.attach(Arc::downgrade(&s2) as Weak<dyn NodeSink>);
    let c = Control::CloseSockets {
        sockets: vec![sid("1.1")],
        code: 4009,
        reason: "x".into(),
    };
    b.control("app", c.clone()).await.expect("ok");
    eventually("the control message", || {
        !s1.controls.lock().expect("lock").is_empty()
            && !s2.controls.lock().expect("lock").is_empty()
    })
    .await;
    assert_eq!(*s1.controls.lock().expect("lock"), vec![c.clone()]);
    assert_eq!(*s2.controls.lock().expect("lock"), vec![c]);
}

/// Conformance check `subscription_counts_report_occupied_and_vacated`.
pub async fn subscription_counts_report_occupied_and_vacated(b: &dyn Broker) {
    assert_eq!(b.add_subscription("a", "c", &sid("1.1")).await, Ok(1));
    assert_eq!(b.add_subscription("a", "c", &sid("1.2")).await, Ok(2));
    assert_eq!(b.add_subscription("a", "c", &sid("1.2")).await, Ok(2));
    assert_eq!(b.channels("a", None).await, Ok(vec![("c".to_string(), 2)]));
    assert_eq!(b.remove_subscription("a", "c", &sid("1.1")).await, Ok(1));
    assert_eq!(b.remove_subscription("a", "c", &sid("1.2")).await, Ok(0));
    assert_eq!(b.channels("a", None).await, Ok(vec![]));
    assert_eq!(b.subscription_count("a", "c").await, Ok(0));
}

/// Conformance check `channels_filter_by_prefix`.
pub async fn channels_filter_by_prefix(b: &dyn Broker) {
    b.add_subscription("a", "presence-x", &sid("1.1"))
        .await
        .expect("ok");
    b.add_subscription("a", "news", &sid("1.1"))
        .await
        .expect("ok");
    assert_eq!(
        b.channels("a", Some("presence-")).await,
        Ok(vec![("presence-x".to_string(), 1)])
    );
}

/// Conformance check `presence_counts_one_member_per_user_across_sockets`.
pub async fn presence_counts_one_member_per_user_across_sockets(b: &dyn Broker) {
    assert_eq!(
        b.presence_add("a", "presence-c", &sid("1.1"), member("u"))
            .await,
        Ok(true)
    );
    assert_eq!(
        b.presence_add("a", "presence-c", &sid("1.2"), member("u"))
            .await,
        Ok(false)
    );
    assert_eq!(
        b.presence_add("a", "presence-c", &sid("1.3"), member("v"))
            .await,
        Ok(true)
    );
    assert_eq!(b.presence_user_count("a", "presence-c").await, Ok(2));
    let ids: Vec<String> = b
        .presence_members("a", "presence-c")
        .await
        .expect("ok")
        .into_iter()
        .map(|m| m.user_id)
        .collect();
    assert_eq!(ids, vec!["u", "v"]);
    assert_eq!(
        b.presence_remove("a", "presence-c", &sid("1.1")).await,
        Ok(Some(PresenceLeave {
            user_id: "u".into(),
            user_left: false
        }))
    );
    assert_eq!(
        b.presence_remove("a", "presence-c", &sid("1.2")).await,
        Ok(Some(PresenceLeave {
            user_id: "u".into(),
            user_left: true
        }))
    );
    assert_eq!(
        b.presence_remove("a", "presence-c", &sid("1.2")).await,
        Ok(None)
    );
    assert_eq!(b.presence_has_user("a", "presence-c", "v").await, Ok(true));
}

/// Conformance check `user_sockets_and_connection_counts`.
pub async fn user_sockets_and_connection_counts(b: &dyn Broker) {
    b.user_add_socket("a", "u", &sid("1.1")).await.expect("ok");
    b.user_add_socket("a", "u", &sid("1.2")).await.expect("ok");
    assert_eq!(
        b.user_sockets("a", "u").await,
        Ok(vec![sid("1.1"), sid("1.2")])
    );
    b.user_remove_socket("a", "u", &sid("1.1"))
        .await
        .expect("ok");
    assert_eq!(b.user_sockets("a", "u").await, Ok(vec![sid("1.2")]));
    assert_eq!(b.add_connection("a").await, Ok(1));
    assert_eq!(b.add_connection("a").await, Ok(2));
    assert_eq!(b.remove_connection("a").await, Ok(1));
}

/// Conformance check `cache_keeps_last_event_until_ttl`.
pub async fn cache_keeps_last_event_until_ttl(b: &dyn Broker) {
    assert_eq!(b.cache_get("a", "cache-c").await, Ok(None));
    b.cache_set(
        "a",
        "cache-c",
        Bytes::from_static(b"1"),
        Duration::from_secs(60),
    )
    .await
    .expect("ok");
    b.cache_set(
        "a",
        "cache-c",
        Bytes::from_static(b"2"),
        Duration::from_secs(60),
    )
    .await
    .expect("ok");
    let got = b.cache_get("a", "cache-c").await.expect("ok");
    assert_eq!(got.map(|g| g.0), Some(Bytes::from_static(b"2")));
    b.cache_set("a", "cache-d", Bytes::from_static(b"3"), Duration::ZERO)
        .await
        .expect("ok");
    assert_eq!(b.cache_get("a", "cache-d").await, Ok(None));
}

fn limits(size: usize) -> HistoryLimits {
    HistoryLimits {
        size,
        ttl: Duration::from_secs(60),
    }
}

/// Conformance check `history_positions_follow_delivery_order`.
pub async fn history_positions_follow_delivery_order(b: &dyn Broker) {
    let s1 = Arc::new(RecordingSink::default());
    let n1 = b.attach(Arc::downgrade(&s1) as Weak<dyn NodeSink>);
    b.subscribe_node(n1, "app", "chat-1").await.expect("ok");
    let start = b
        .history("app", "chat-1", None, 0, limits(5))
        .await
        .expect("ok");
    assert_eq!(start.position.offset, 0, "a new stream starts at 0");
    let mut last = None;
    for i in 0..8 {
        let p = b
            .publish_with_history(
                "app",
                "chat-1",
                Bytes::from(format!(r#"{{"event":"e","data":"{i}"}}"#)),
                None,
                limits(5),
            )
            .await
            .expect("ok");
        assert_eq!(p.epoch, start.position.epoch, "same stream");
        assert_eq!(p.offset, i + 1);
        last = Some(p);
    }
    eventually("8 events", || payloads(&s1).len() >= 8).await;
    let got = payloads(&s1);
    for (i, e) in got.iter().enumerate() {
        assert_eq!(
            protocol::position_offset(e),
            Some(i as u64 + 1),
            "delivered in offset order"
        );
        let v: serde_json::Value = serde_json::from_slice(e).expect("JSON");
        assert_eq!(v["position"]["epoch"], start.position.epoch.as_str());
        assert_eq!(v["data"], i.to_string());
    }
    // Kept: the last 5 (offsets 4..=8).
    let read = b
        .history("app", "chat-1", Some(5), 100, limits(5))
        .await
        .expect("ok");
    assert_eq!(Some(read.position.clone()), last);
    assert!(read.complete);
    assert_eq!(read.events, got[5..].to_vec());
    let read = b
        .history("app", "chat-1", Some(3), 100, limits(5))
        .await
        .expect("ok");
    assert!(read.complete, "offset 3 is just before the oldest kept (4)");
    assert_eq!(read.events.len(), 5);
    let read = b
        .history("app", "chat-1", Some(2), 100, limits(5))
        .await
        .expect("ok");
    assert!(!read.complete, "offset 3 was trimmed: a gap");
    let read = b
        .history("app", "chat-1", Some(9), 100, limits(5))
        .await
        .expect("ok");
    assert!(!read.complete, "ahead of the stream");
    let read = b
        .history("app", "chat-1", Some(4), 2, limits(5))
        .await
        .expect("ok");
    assert_eq!(read.events, got[4..6].to_vec(), "limit");
}

/// Conformance check `history_events_expire_but_the_position_stays`.
pub async fn history_events_expire_but_the_position_stays(b: &dyn Broker) {
    let short = HistoryLimits {
        size: 10,
        ttl: Duration::from_millis(300),
    };
    let p1 = b
        .publish_with_history("app", "chat-2", Bytes::from_static(b"{}"), None, short)
        .await
        .expect("ok");
    let p2 = b
        .publish_with_history("app", "chat-2", Bytes::from_static(b"{}"), None, short)
        .await
        .expect("ok");
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A quiet spell longer than the ttl: the events are gone, the position is not.
    let read = b
        .history("app", "chat-2", Some(p2.offset), 10, short)
        .await
        .expect("ok");
    assert_eq!(read.position, p2, "same epoch and offset");
    assert!(read.complete, "nothing was missed since offset 2");
    assert!(read.events.is_empty());
    let read = b
        .history("app", "chat-2", Some(p1.offset), 10, short)
        .await
        .expect("ok");
    assert!(
        !read.complete,
        "event 2 expired: recovering from 1 would leave a gap"
    );
    let p3 = b
        .publish_with_history("app", "chat-2", Bytes::from_static(b"{}"), None, short)
        .await
        .expect("ok");
    assert_eq!((p3.epoch.as_str(), p3.offset), (p2.epoch.as_str(), 3));
}

/// Runs every check, each on a fresh broker from `make`.
pub async fn run_all<B: Broker, F: Fn() -> B>(make: F) {
    publish_reaches_only_nodes_subscribed_to_the_channel(&make()).await;
    publish_order_is_kept_per_channel(&make()).await;
    control_reaches_every_node(&make()).await;
    subscription_counts_report_occupied_and_vacated(&make()).await;
    channels_filter_by_prefix(&make()).await;
    presence_counts_one_member_per_user_across_sockets(&make()).await;
    user_sockets_and_connection_counts(&make()).await;
    cache_keeps_last_event_until_ttl(&make()).await;
    history_positions_follow_delivery_order(&make()).await;
    history_events_expire_but_the_position_stays(&make()).await;
}
