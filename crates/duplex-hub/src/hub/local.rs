//! The node-local state: this node's connections (`Conn`), which of them are subscribed to
//! which channel (`ChannelSub`, with what is `Held` until the subscription is confirmed),
//! and the webhook queue. `Local` is the broker's [`NodeSink`]: it fans deliveries out to
//! the bounded local queues (closing slow consumers), turns cluster changes into webhooks
//! and applies control messages. It never calls the broker.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::client_event::TokenBucket;
use super::outbound::{CloseSignal, Outbound};
use crate::broker::{ClusterChange, Control, NodeSink};
use crate::config::App;
use crate::metrics::Metrics;
use crate::protocol::codes;
use crate::socket_id::SocketId;
use crate::webhooks::{AppWebhookEvent, WebhookEvent};

#[derive(Clone)]
pub(super) struct Subscriber {
    pub(super) tx: mpsc::Sender<Outbound>,
    pub(super) close: Arc<CloseSignal>,
}

pub(super) struct Conn {
    pub(super) app: Arc<App>,
    pub(super) sub: Subscriber,
    /// Channel → presence user id (for presence channels).
    pub(super) channels: HashMap<String, Option<String>>,
    pub(super) user_id: Option<String>,
    pub(super) bucket: TokenBucket,
}

/// Events for a channel that reach a new subscriber before its `subscription_succeeded` was
/// queued: they wait here, so the confirmation (and the member list it carries, read after
/// the subscriber began to receive) always comes first. A `member_added` published meanwhile
/// then adds to that list instead of being wiped by it.
#[derive(Default)]
pub(super) struct Held {
    pub(super) items: Vec<Bytes>,
    pub(super) released: bool,
}

/// One local subscriber of one channel.
#[derive(Clone)]
pub(super) struct ChannelSub {
    pub(super) sub: Subscriber,
    /// Until the confirmation is queued (then `None`, so deliveries take no lock).
    pub(super) held: Option<Arc<Mutex<Held>>>,
}

pub(super) type ChannelMap = HashMap<String, HashMap<String, HashMap<SocketId, ChannelSub>>>;

pub(super) fn lock_held(h: &Mutex<Held>) -> MutexGuard<'_, Held> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// This node's connections and local channel membership; the broker's sink.
pub(super) struct Local {
    pub(super) conns: Mutex<HashMap<SocketId, Conn>>,
    /// app id → channel → local subscribers.
    pub(super) channels: RwLock<ChannelMap>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) webhook_tx: mpsc::Sender<AppWebhookEvent>,
    /// Ids of the apps that have webhooks.
    pub(super) webhook_apps: std::collections::HashSet<String>,
}

impl Local {
    pub(super) fn conns(&self) -> MutexGuard<'_, HashMap<SocketId, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a webhook event for `app_id` (dropped and counted when the queue is full).
    pub(super) fn webhook(&self, app_id: &str, event: WebhookEvent) {
        if !self.webhook_apps.contains(app_id) {
            return;
        }
        let item = AppWebhookEvent {
            app_id: app_id.into(),
            event,
        };
        if self.webhook_tx.try_send(item).is_err() {
            self.metrics.webhooks_dropped_total.fetch_add(1, Relaxed);
        }
    }

    /// Queues `payload` for one subscriber; a full queue closes it as a slow consumer.
    pub(super) fn send(&self, sub: &Subscriber, payload: Bytes) {
        let len = payload.len();
        match sub.tx.try_send(Outbound::Text(payload)) {
            Ok(()) => self.metrics.message_out(len),
            Err(mpsc::error::TrySendError::Full(_)) => {
                if sub
                    .close
                    .close(codes::OVER_CAPACITY, "Slow consumer: outbound queue full")
                {
                    self.metrics.slow_consumers_total.fetch_add(1, Relaxed);
                    tracing::warn!("closing slow consumer: outbound queue full");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

impl NodeSink for Local {
    fn deliver(&self, app_id: &str, channel: &str, payload: &Bytes, except: Option<&SocketId>) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let Some(subs) = channels.get(app_id).and_then(|c| c.get(channel)) else {
            return;
        };
        for (socket, cs) in subs {
            if Some(socket) == except {
                continue;
            }
            match &cs.held {
                None => self.send(&cs.sub, payload.clone()),
                Some(held) => {
                    let mut h = lock_held(held);
                    if h.released {
                        drop(h);
                        self.send(&cs.sub, payload.clone());
                    } else if h.items.len() < cs.sub.tx.max_capacity() {
                        h.items.push(payload.clone());
                    } else {
                        drop(h);
                        if cs
                            .sub
                            .close
                            .close(codes::OVER_CAPACITY, "Slow consumer: outbound queue full")
                        {
                            self.metrics.slow_consumers_total.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }
    }

    fn cluster_change(&self, app_id: &str, change: &ClusterChange) {
        let event = match change.clone() {
            ClusterChange::ChannelOccupied { channel } => WebhookEvent::ChannelOccupied { channel },
            ClusterChange::ChannelVacated { channel } => WebhookEvent::ChannelVacated { channel },
            ClusterChange::MemberAdded { channel, user_id } => {
                WebhookEvent::MemberAdded { channel, user_id }
            }
            ClusterChange::MemberRemoved { channel, user_id } => {
                WebhookEvent::MemberRemoved { channel, user_id }
            }
        };
        self.webhook(app_id, event);
    }

    fn control(&self, app_id: &str, control: &Control) {
        match control {
            Control::CloseSockets {
                sockets,
                code,
                reason,
            } => {
                let conns = self.conns();
                for s in sockets {
                    if let Some(conn) = conns.get(s).filter(|c| *c.app.id == *app_id) {
                        conn.sub.close.close(*code, reason);
                    }
                }
            }
        }
    }
}
