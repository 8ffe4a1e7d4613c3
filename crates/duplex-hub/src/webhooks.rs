//! Webhooks: what the hub reports to app servers, batched, signed, retried.
//!
//! The hub pushes [`AppWebhookEvent`]s into a bounded queue (dropping and counting when full;
//! it never waits). A [`WebhookDispatcher`] drains the queue, groups events per app and per
//! endpoint into `{"time_ms":..,"events":[..]}` bodies, signs them (`X-Pusher-Key`,
//! `X-Pusher-Signature` = hex HMAC-SHA256 of the body with the app secret) and POSTs them through
//! an injected [`WebhookSender`], retrying non-2xx answers by a [`RetryPolicy`]. This module
//! never opens a connection: the CLI provides the sender.
//!
//! Not yet: Pusher's 3-second delay before `channel_vacated`/`member_removed` (which swallows
//! quick reconnects).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::auth;
use crate::config::App;
use crate::metrics::Metrics;

/// Webhook event names, as configured in `webhooks[].events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookKind {
    /// A channel got its first subscriber.
    ChannelOccupied,
    /// A channel lost its last subscriber.
    ChannelVacated,
    /// A user joined a presence channel (first connection of that user).
    MemberAdded,
    /// A user left a presence channel (last connection of that user).
    MemberRemoved,
    /// A client sent a `client-*` event.
    ClientEvent,
    /// A client subscribed to a cache channel with nothing cached.
    CacheMiss,
}

/// One webhook event, serialized as the docs show (`{"name":"channel_occupied",...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum WebhookEvent {
    /// `channel_occupied`.
    ChannelOccupied {
        /// Channel name.
        channel: String,
    },
    /// `channel_vacated`.
    ChannelVacated {
        /// Channel name.
        channel: String,
    },
    /// `member_added`.
    MemberAdded {
        /// Channel name.
        channel: String,
        /// User id.
        user_id: String,
    },
    /// `member_removed`.
    MemberRemoved {
        /// Channel name.
        channel: String,
        /// User id.
        user_id: String,
    },
    /// `client_event`.
    ClientEvent {
        /// Channel name.
        channel: String,
        /// Event name.
        event: String,
        /// Event data as sent.
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<String>,
        /// Sender's socket id.
        socket_id: String,
        /// Sender's user id (presence channels only).
        #[serde(skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
    },
    /// `cache_miss`.
    CacheMiss {
        /// Channel name.
        channel: String,
    },
}

impl WebhookEvent {
    /// The kind, for endpoint filtering.
    pub fn kind(&self) -> WebhookKind {
        match self {
            WebhookEvent::ChannelOccupied { .. } => WebhookKind::ChannelOccupied,
            WebhookEvent::ChannelVacated { .. } => WebhookKind::ChannelVacated,
            WebhookEvent::MemberAdded { .. } => WebhookKind::MemberAdded,
            WebhookEvent::MemberRemoved { .. } => WebhookKind::MemberRemoved,
            WebhookEvent::ClientEvent { .. } => WebhookKind::ClientEvent,
            WebhookEvent::CacheMiss { .. } => WebhookKind::CacheMiss,
        }
    }
}

/// A queued webhook event and the app it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppWebhookEvent {
    /// App id.
    pub app_id: Arc<str>,
    /// The event.
    pub event: WebhookEvent,
}

/// One signed POST to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRequest {
    /// Endpoint.
    pub url: String,
    /// `Content-Type`, `X-Pusher-Key`, `X-Pusher-Signature`.
    pub headers: Vec<(String, String)>,
    /// `{"time_ms":..,"events":[..]}`.
    pub body: Bytes,
}

/// The body of one webhook POST.
pub fn payload(time_ms: u64, events: &[&WebhookEvent]) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        time_ms: u64,
        events: &'a [&'a WebhookEvent],
    }
    // Strings and integers only: serialization cannot fail.
    Bytes::from(serde_json::to_vec(&Body { time_ms, events }).unwrap_or_default())
}

/// Groups `events` into signed requests: per app, per endpoint (keeping only the kinds it
/// asked for), at most `batch_size` events per request, in queue order.
pub fn build_requests(
    apps: &[App],
    events: &[AppWebhookEvent],
    time_ms: u64,
    batch_size: usize,
) -> Vec<WebhookRequest> {
    let mut out = Vec::new();
    for app in apps {
        for hook in &app.webhooks {
            let selected: Vec<&WebhookEvent> = events
                .iter()
                .filter(|e| *e.app_id == *app.id)
                .map(|e| &e.event)
                .filter(|e| hook.events.is_empty() || hook.events.contains(&e.kind()))
                .collect();
            for chunk in selected.chunks(batch_size.max(1)) {
                let body = payload(time_ms, chunk);
                let signature = auth::webhook_signature(&app.secret, &body);
                out.push(WebhookRequest {
                    url: hook.url.clone(),
                    headers: vec![
                        ("Content-Type".into(), "application/json".into()),
                        ("X-Pusher-Key".into(), app.key.clone()),
                        ("X-Pusher-Signature".into(), signature),
                    ],
                    body,
                });
            }
        }
    }
    out
}

/// When to retry a failed POST: exponential backoff from `first_delay`, capped at `max_delay`,
/// for at most `give_up_after` in total (Pusher retries for 5 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub first_delay: Duration,
    /// Factor between consecutive delays.
    pub multiplier: u32,
    /// Longest single delay.
    pub max_delay: Duration,
    /// Stop retrying once this much time has been spent.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            first_delay: Duration::from_secs(1),
            multiplier: 2,
            max_delay: Duration::from_secs(60),
            give_up_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1 = first retry), or `None` to give up, given
    /// the time already `elapsed` since the first attempt.
    pub fn delay_before_retry(&self, retry: u32, elapsed: Duration) -> Option<Duration> {
        let factor = self
            .multiplier
            .checked_pow(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let delay = self
            .first_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay);
        (elapsed + delay <= self.give_up_after).then_some(delay)
    }
}

/// Why a POST attempt failed before any status came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook POST failed: {0}")]
pub struct WebhookSendError(pub String);

/// Sends one POST; the CLI implements it with its HTTP client, tests with a fake.
#[async_trait::async_trait]
pub trait WebhookSender: Send + Sync {
    /// POSTs `req`, returning the HTTP status.
    async fn post(&self, req: &WebhookRequest) -> Result<u16, WebhookSendError>;
}

/// The result of delivering one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// A 2xx came back.
    Delivered {
        /// Attempts made, ≥ 1.
        attempts: u32,
    },
    /// The policy gave up.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last status or error.
        last_error: String,
    },
}

/// Drains the hub's webhook queue and delivers batches.
pub struct WebhookDispatcher {
    apps: Vec<App>,
    sender: Arc<dyn WebhookSender>,
    policy: RetryPolicy,
    batch_size: usize,
    metrics: Arc<Metrics>,
}

impl WebhookDispatcher {
    /// A dispatcher for `apps` (their `webhooks` lists) sending through `sender`.
    pub fn new(
        apps: Vec<App>,
        sender: Arc<dyn WebhookSender>,
        policy: RetryPolicy,
        batch_size: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        WebhookDispatcher {
            apps,
            sender,
            policy,
            batch_size,
            metrics,
        }
    }

    /// POSTs `req`, retrying by the policy (sleeping with tokio's timer).
    pub async fn deliver(&self, req: &WebhookRequest) -> DeliveryOutcome {
        let start = tokio::time::Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let last_error = match self.sender.post(req).await {
                Ok(status) if (200..300).contains(&status) => {
                    self.metrics.webhooks_delivered_total.fetch_add(1, Relaxed);
                    return DeliveryOutcome::Delivered { attempts };
                }
                Ok(status) => format!("HTTP {status}"),
                Err(e) => e.to_string(),
            };
            match self.policy.delay_before_retry(attempts, start.elapsed()) {
                Some(delay) => {
                    tracing::debug!(url = %req.url, attempts, %last_error, ?delay, "webhook retry");
                    self.metrics.webhooks_retried_total.fetch_add(1, Relaxed);
                    tokio::time::sleep(delay).await;
                }
                None => {
                    tracing::warn!(url = %req.url, attempts, %last_error, "webhook abandoned");
                    self.metrics.webhooks_failed_total.fetch_add(1, Relaxed);
                    return DeliveryOutcome::GaveUp {
                        attempts,
                        last_error,
                    };
                }
            }
        }
    }

    /// Runs until the queue's senders are all dropped: takes what is queued (up to the batch
    /// size), builds the requests, delivers them in order.
    ///
    /// Requests are delivered one after another, so a failing endpoint delays the others for
    /// up to the retry window; spawn one dispatcher per app if that matters.
    pub async fn run(&self, mut rx: mpsc::Receiver<AppWebhookEvent>) {
        let cap = self.batch_size.max(1);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < cap {
                match rx.try_recv() {
                    Ok(e) => batch.push(e),
                    Err(_) => break,
                }
            }
            let time_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            for req in build_requests(&self.apps, &batch, time_ms, cap) {
                self.deliver(&req).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Webhook;
    use std::sync::Mutex;

    fn app(events: Vec<WebhookKind>) -> App {
        App {
            id: "1".into(),
            key: "k".into(),
            secret: "s".into(),
            webhooks: vec![Webhook {
                url: "http://hooks.test/a".into(),
                events,
            }],
            ..App::default()
        }
    }

    fn ev(app_id: &str, event: WebhookEvent) -> AppWebhookEvent {
        AppWebhookEvent {
            app_id: app_id.into(),
            event,
        }
    }

    #[test]
    fn events_serialize_as_documented() {
        let v = serde_json::to_value(WebhookEvent::MemberAdded {
            channel: "presence-a".into(),
            user_id: "u".into(),
        })
        .expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({"name":"member_added","channel":"presence-a","user_id":"u"})
        );
        let v = serde_json::to_value(WebhookEvent::ClientEvent {
            channel: "private-a".into(),
            event: "client-x".into(),
            data: Some("{}".into()),
            socket_id: "1.2".into(),
            user_id: None,
        })
        .expect("serializes");
        assert_eq!(
            v,
            serde_json::json!({"name":"client_event","channel":"private-a","event":"client-x","data":"{}","socket_id":"1.2"})
        );
    }

    #[test]
    fn batch_body_has_time_ms_and_events_and_is_signed_with_the_secret() {
        let events = vec![
            ev(
                "1",
                WebhookEvent::ChannelOccupied {
                    channel: "a".into(),
                },
            ),
            ev(
                "1",
                WebhookEvent::ChannelVacated {
                    channel: "a".into(),
                },
            ),
        ];
        let reqs = build_requests(&[app(vec![])], &events, 1327078148132, 50);
        assert_eq!(reqs.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).expect("JSON");
        assert_eq!(
            body,
            serde_json::json!({"time_ms":1327078148132u64,"events":[
                {"name":"channel_occupied","channel":"a"},{"name":"channel_vacated","channel":"a"}]})
        );
        let header = |n: &str| {
            reqs[0]
                .headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("X-Pusher-Key").as_deref(), Some("k"));
        assert_eq!(
            header("X-Pusher-Signature"),
            Some(auth::webhook_signature("s", &reqs[0].body))
        );
    }

    #[test]
    fn endpoints_get_only_the_kinds_they_asked_for_and_only_their_app() {
        let events = vec![
            ev(
                "1",
                WebhookEvent::ChannelOccupied {
                    channel: "a".into(),
                },
            ),
            ev(
                "1",
                WebhookEvent::MemberAdded {
                    channel: "presence-a".into(),
                    user_id: "u".into(),
                },
            ),
            ev(
                "2",
                WebhookEvent::MemberAdded {
                    channel: "presence-b".into(),
                    user_id: "v".into(),
                },
            ),
        ];
        let reqs = build_requests(&[app(vec![WebhookKind::MemberAdded])], &events, 0, 50);
        assert_eq!(reqs.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).expect("JSON");
        assert_eq!(body["events"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["events"][0]["channel"], "presence-a");
    }

    #[test]
    fn batches_are_split_at_batch_size() {
        let events: Vec<_> = (0..5)
            .map(|i| {
                ev(
                    "1",
                    WebhookEvent::ChannelOccupied {
                        channel: format!("c{i}"),
                    },
                )
            })
            .collect();
        assert_eq!(build_requests(&[app(vec![])], &events, 0, 2).len(), 3);
    }

    #[test]
    fn retry_policy_backs_off_exponentially_and_gives_up_after_five_minutes() {
        let p = RetryPolicy::default();
        assert_eq!(
            p.delay_before_retry(1, Duration::ZERO),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.delay_before_retry(2, Duration::from_secs(1)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.delay_before_retry(3, Duration::from_secs(3)),
            Some(Duration::from_secs(4))
        );
        assert_eq!(
            p.delay_before_retry(10, Duration::from_secs(100)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            p.delay_before_retry(40, Duration::from_secs(100)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(p.delay_before_retry(9, Duration::from_secs(290)), None);
    }

    struct FakeSender {
        statuses: Mutex<Vec<u16>>,
        seen: Mutex<Vec<WebhookRequest>>,
    }

    #[async_trait::async_trait]
    impl WebhookSender for FakeSender {
        async fn post(&self, req: &WebhookRequest) -> Result<u16, WebhookSendError> {
            self.seen.lock().expect("lock").push(req.clone());
            let mut s = self.statuses.lock().expect("lock");
            if s.is_empty() {
                Err(WebhookSendError("connection refused".into()))
            } else {
                Ok(s.remove(0))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn non_2xx_is_retried_until_2xx() {
        let sender = Arc::new(FakeSender {
            statuses: Mutex::new(vec![500, 503, 200]),
            seen: Mutex::new(vec![]),
        });
        let metrics = Arc::new(Metrics::default());
        let d = WebhookDispatcher::new(
            vec![app(vec![])],
            sender.clone(),
            RetryPolicy::default(),
            50,
            metrics.clone(),
        );
        let req = build_requests(
            &[app(vec![])],
            &[ev(
                "1",
                WebhookEvent::CacheMiss {
                    channel: "cache-a".into(),
                },
            )],
            0,
            50,
        )
        .remove(0);
        assert_eq!(
            d.deliver(&req).await,
            DeliveryOutcome::Delivered { attempts: 3 }
        );
        assert_eq!(metrics.webhooks_retried_total.load(Relaxed), 2);
        assert_eq!(metrics.webhooks_delivered_total.load(Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_endpoint_is_abandoned_within_the_window() {
        let sender = Arc::new(FakeSender {
            statuses: Mutex::new(vec![]),
            seen: Mutex::new(vec![]),
        });
        let metrics = Arc::new(Metrics::default());
        let d = WebhookDispatcher::new(
            vec![app(vec![])],
            sender.clone(),
            RetryPolicy::default(),
            50,
            metrics.clone(),
        );
        let req = WebhookRequest {
            url: "http://hooks.test/a".into(),
            headers: vec![],
            body: Bytes::from_static(b"{}"),
        };
        let start = tokio::time::Instant::now();
        let out = d.deliver(&req).await;
        assert!(matches!(out, DeliveryOutcome::GaveUp { .. }));
        assert!(start.elapsed() <= Duration::from_secs(300));
        assert_eq!(metrics.webhooks_failed_total.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn run_batches_queued_events_into_one_post() {
        let sender = Arc::new(FakeSender {
            statuses: Mutex::new(vec![200, 200]),
            seen: Mutex::new(vec![]),
        });
        let d = WebhookDispatcher::new(
            vec![app(vec![])],
            sender.clone(),
            RetryPolicy::default(),
            50,
            Arc::new(Metrics::default()),
        );
        let (tx, rx) = mpsc::channel(16);
        for i in 0..3 {
            tx.send(ev(
                "1",
                WebhookEvent::ChannelOccupied {
                    channel: format!("c{i}"),
                },
            ))
            .await
            .expect("queue open");
        }
        drop(tx);
        d.run(rx).await;
        let seen = sender.seen.lock().expect("lock");
        assert_eq!(seen.len(), 1);
        let body: serde_json::Value = serde_json::from_slice(&seen[0].body).expect("JSON");
        assert_eq!(body["events"].as_array().map(Vec::len), Some(3));
    }
}
