//! A new subscriber gets its `subscription_succeeded` before any event of the channel, even
//! when an event (here a `member_added`) is published while its member list is being read: the
//! event is held and follows the confirmation, so clients that reset their member list on the
//! confirmation (pusher-js) do not lose the newcomer.

mod common;

use std::sync::Arc;

use common::*;
use tokio::sync::oneshot;

#[tokio::test]
async fn a_member_added_during_the_member_list_read_follows_the_confirmation() {
    let (open_gate, gate) = oneshot::channel();
    let broker = Arc::new(HookedBroker::new());
    *broker.member_gate.lock().expect("lock") = Some(gate);
    let hub = hub_on(broker, config(|_| {}));
    let mut alice = Client::connect(&hub).await;
    let mut bob = Client::connect(&hub).await;
    alice.drain();
    bob.drain();
    let alice_joins = alice.subscribe_presence("presence-room", "alice");
    let bob_joins_meanwhile = async {
        // Alice's subscription is now waiting for its (stale) member list.
        tokio::task::yield_now().await;
        bob.subscribe_presence("presence-room", "bob").await;
        let _ = open_gate.send(());
    };
    tokio::join!(alice_joins, bob_joins_meanwhile);
    let got = alice.drain();
    assert_eq!(
        events(&got),
        vec![
            "pusher_internal:subscription_succeeded",
            "pusher_internal:member_added"
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0]["data"]["presence"]["ids"],
        serde_json::json!(["alice"])
    );
    assert_eq!(got[1]["data"]["user_id"], "bob");
}
