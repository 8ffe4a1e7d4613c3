//! Webhooks: what the hub reports to app servers, batched, signed, retried.
//!
//! The hub pushes [`AppWebhookEvent`]s into a bounded queue (dropping and counting when full;
//! it never waits). A [`WebhookDispatcher`] drains the queue, groups events per app and per
//! endpoint into `{"time_ms":..,"events":[..]}` bodies, signs them (`X-Pusher-Key`,
//! `X-Pusher-Signature` = hex HMAC-SHA256 of the body with the app secret) and POSTs them through
//! an injected [`WebhookSender`], retrying non-2xx answers by a [`RetryPolicy`]. This module
//! never opens a connection: the CLI provides the sender.
//!
//! **Endpoints are independent.** Each endpoint URL has its own worker and its own bounded queue
//! of requests ([`WebhookDispatcher::with_endpoint_queue`]); a worker delivers its requests in
//! order, one at a time, retrying as long as the policy says. So an endpoint that refuses
//! connections or hangs only delays its own webhooks; when its queue is full, new requests for
//! it are dropped and counted (`webhooks_dropped_total`).
//!
//! **Vacate delay.** Like Pusher, `channel_vacated` and `member_removed` are held for a few
//! seconds ([`WebhookDispatcher::with_vacate_delay`], `webhook_vacate_delay_ms`, 3 s by
//! default): if the channel is occupied again (or the user rejoins) in that time, both events
//! are dropped, so a page reload does not produce a vacated/occupied pair.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

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

/// Default length of each endpoint's request queue.
pub const DEFAULT_ENDPOINT_QUEUE: usize = 1000;

/// Default hold time for `channel_vacated` / `member_removed`.
pub const DEFAULT_VACATE_DELAY: Duration = Duration::from_secs(3);

/// Most events held back by the vacate delay at once; beyond it the oldest go out early.
const MAX_HELD: usize = 10_000;

/// What delivering needs, shared by the endpoint workers.
#[derive(Clone)]
struct Deliverer {
    sender: Arc<dyn WebhookSender>,
    policy: RetryPolicy,
    metrics: Arc<Metrics>,
}

impl Deliverer {
    async fn deliver(&self, req: &WebhookRequest) -> DeliveryOutcome {
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
}

/// Which event a later one cancels during the vacate delay.
type HoldKey = (Arc<str>, String, Option<String>);

/// `channel_vacated` / `member_removed` held back until their deadline.
#[derive(Default)]
struct Held {
    /// In arrival order; deadlines are increasing because the delay is fixed.
    queue: VecDeque<(Instant, u64, AppWebhookEvent)>,
    /// Key → sequence number of the live held event; an entry missing here was cancelled.
    live: HashMap<HoldKey, u64>,
    next_seq: u64,
}

impl Held {
    fn hold_key(e: &AppWebhookEvent) -> Option<HoldKey> {
        match &e.event {
            WebhookEvent::ChannelVacated { channel } => {
                Some((e.app_id.clone(), channel.clone(), None))
            }
            WebhookEvent::MemberRemoved { channel, user_id } => {
                Some((e.app_id.clone(), channel.clone(), Some(user_id.clone())))
            }
            _ => None,
        }
    }

    fn cancel_key(e: &AppWebhookEvent) -> Option<HoldKey> {
        match &e.event {
            WebhookEvent::ChannelOccupied { channel } => {
                Some((e.app_id.clone(), channel.clone(), None))
            }
            WebhookEvent::MemberAdded { channel, user_id } => {
                Some((e.app_id.clone(), channel.clone(), Some(user_id.clone())))
            }
            _ => None,
        }
    }

    /// Sorts one incoming event: held, cancelled with a held one (both vanish), or passed on.
    fn admit(
        &mut self,
        e: AppWebhookEvent,
        delay: Duration,
        now: Instant,
    ) -> Option<AppWebhookEvent> {
        if delay.is_zero() {
            return Some(e);
        }
        if let Some(key) = Self::cancel_key(&e) {
            if self.live.remove(&key).is_some() {
                return None;
            }
        }
        match Self::hold_key(&e) {
            Some(key) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.live.insert(key, seq);
                self.queue.push_back((now + delay, seq, e));
                None
            }
            None => Some(e),
        }
    }

    /// Moves every held event due at `now` (or all, or the excess over [`MAX_HELD`]) to `out`.
    fn release(&mut self, now: Instant, all: bool, out: &mut Vec<AppWebhookEvent>) {
        while let Some((due, _, _)) = self.queue.front() {
            if !(all || *due <= now || self.queue.len() > MAX_HELD) {
                break;
            }
            let Some((_, seq, e)) = self.queue.pop_front() else {
                break;
            };
            let Some(key) = Self::hold_key(&e) else {
                continue;
            };
            if self.live.get(&key) == Some(&seq) {
                self.live.remove(&key);
                out.push(e);
            }
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(due, _, _)| *due)
    }
}

/// Drains the hub's webhook queue and delivers batches, each endpoint on its own worker.
pub struct WebhookDispatcher {
    apps: Vec<App>,
    deliverer: Deliverer,
    batch_size: usize,
    endpoint_queue: usize,
    vacate_delay: Duration,
}

impl WebhookDispatcher {
    /// A dispatcher for `apps` (their `webhooks` lists) sending through `sender`, with
    /// [`DEFAULT_ENDPOINT_QUEUE`] and [`DEFAULT_VACATE_DELAY`].
    pub fn new(
        apps: Vec<App>,
        sender: Arc<dyn WebhookSender>,
        policy: RetryPolicy,
        batch_size: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        WebhookDispatcher {
            apps,
            deliverer: Deliverer {
                sender,
                policy,
                metrics,
            },
            batch_size,
            endpoint_queue: DEFAULT_ENDPOINT_QUEUE,
            vacate_delay: DEFAULT_VACATE_DELAY,
        }
    }

    /// Requests waiting per endpoint before new ones for it are dropped (at least 1).
    pub fn with_endpoint_queue(mut self, requests: usize) -> Self {
        self.endpoint_queue = requests.max(1);
        self
    }

    /// How long `channel_vacated` / `member_removed` wait for a cancelling
    /// `channel_occupied` / `member_added`; zero sends them at once.
    pub fn with_vacate_delay(mut self, delay: Duration) -> Self {
        self.vacate_delay = delay;
        self
    }

    /// POSTs `req`, retrying by the policy (sleeping with tokio's timer).
    pub async fn deliver(&self, req: &WebhookRequest) -> DeliveryOutcome {
        self.deliverer.deliver(req).await
    }

    /// Runs until the queue's senders are all dropped: takes what is queued (up to the batch
    /// size), holds back vacate events, builds the requests and hands each to its endpoint's
    /// worker. At the end, releases what is held and waits for the workers to finish.
    pub async fn run(&self, mut rx: mpsc::Receiver<AppWebhookEvent>) {
        let cap = self.batch_size.max(1);
        let mut held = Held::default();
        let mut endpoints: HashMap<String, mpsc::Sender<WebhookRequest>> = HashMap::new();
        let mut workers = JoinSet::new();
        let mut open = true;
        while open || held.next_due().is_some() {
            let mut batch = Vec::new();
            let due = held.next_due();
            tokio::select! {
                () = sleep_until_opt(due) => {}
                item = rx.recv(), if open => match item {
                    Some(e) => {
                        let now = Instant::now();
                        batch.extend(held.admit(e, self.vacate_delay, now));
                        let mut taken = 1;
                        while taken < cap {
                            match rx.try_recv() {
                                Ok(e) => {
                                    taken += 1;
                                    batch.extend(held.admit(e, self.vacate_delay, now));
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    None => open = false,
                },
            }
            held.release(Instant::now(), !open, &mut batch);
            if batch.is_empty() {
                continue;
            }
            let time_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            for req in build_requests(&self.apps, &batch, time_ms, cap) {
                self.enqueue(&mut endpoints, &mut workers, req);
            }
        }
        drop(endpoints);
        while workers.join_next().await.is_some() {}
    }

    fn enqueue(
        &self,
        endpoints: &mut HashMap<String, mpsc::Sender<WebhookRequest>>,
        workers: &mut JoinSet<()>,
        req: WebhookRequest,
    ) {
        let tx = endpoints.entry(req.url.clone()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<WebhookRequest>(self.endpoint_queue);
            let deliverer = self.deliverer.clone();
            workers.spawn(async move {
                while let Some(req) = rx.recv().await {
                    deliverer.deliver(&req).await;
                }
            });
            tx
        });
        if let Err(e) = tx.try_send(req) {
            let url = match &e {
                mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => {
                    r.url.clone()
                }
            };
            tracing::warn!(%url, "webhook endpoint queue full: dropping a request");
            self.deliverer
                .metrics
                .webhooks_dropped_total
                .fetch_add(1, Relaxed);
        }
    }
}

/// Sleeps until `due`, or forever without one.
async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
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

    /// Hangs forever on `dead` URLs, answers 200 at once elsewhere; records (url, body).
    struct DeadAndLive {
        seen: Mutex<Vec<(String, serde_json::Value)>>,
    }

    #[async_trait::async_trait]
    impl WebhookSender for DeadAndLive {
        async fn post(&self, req: &WebhookRequest) -> Result<u16, WebhookSendError> {
            if req.url.contains("dead") {
                std::future::pending::<()>().await;
            }
            let body = serde_json::from_slice(&req.body).expect("JSON body");
            self.seen
                .lock()
                .expect("lock")
                .push((req.url.clone(), body));
            Ok(200)
        }
    }

    fn two_endpoints() -> App {
        App {
            webhooks: vec![
                Webhook {
                    url: "http://dead.test/hooks".into(),
                    events: vec![],
                },
                Webhook {
                    url: "http://live.test/hooks".into(),
                    events: vec![],
                },
            ],
            ..app(vec![])
        }
    }

    fn occupied(channel: &str) -> AppWebhookEvent {
        ev(
            "1",
            WebhookEvent::ChannelOccupied {
                channel: channel.into(),
            },
        )
    }

    fn vacated(channel: &str) -> AppWebhookEvent {
        ev(
            "1",
            WebhookEvent::ChannelVacated {
                channel: channel.into(),
            },
        )
    }

    #[tokio::test]
    async fn a_hanging_endpoint_does_not_delay_another() {
        let sender = Arc::new(DeadAndLive {
            seen: Mutex::new(vec![]),
        });
        let d = WebhookDispatcher::new(
            vec![two_endpoints()],
            sender.clone(),
            RetryPolicy::default(),
            50,
            Arc::new(Metrics::default()),
        );
        let (tx, rx) = mpsc::channel(16);
        let run = tokio::spawn(async move { d.run(rx).await });
        for i in 0..3 {
            tx.send(occupied(&format!("c{i}"))).await.expect("open");
            // Each event becomes its own request to each endpoint.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let n = sender.seen.lock().expect("lock").len();
            if n >= 3 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "live endpoint got {n} of 3 webhooks in 2 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = sender.seen.lock().expect("lock").clone();
        assert!(seen.iter().all(|(url, _)| url.contains("live")));
        let channels: Vec<_> = seen
            .iter()
            .flat_map(|(_, b)| b["events"].as_array().cloned().unwrap_or_default())
            .map(|e| e["channel"].clone())
            .collect();
        assert_eq!(channels, vec!["c0", "c1", "c2"], "in order");
        run.abort();
    }

    #[tokio::test]
    async fn a_full_endpoint_queue_drops_and_counts() {
        let sender = Arc::new(DeadAndLive {
            seen: Mutex::new(vec![]),
        });
        let metrics = Arc::new(Metrics::default());
        let d = WebhookDispatcher::new(
            vec![two_endpoints()],
            sender.clone(),
            RetryPolicy::default(),
            1,
            metrics.clone(),
        )
        .with_endpoint_queue(2);
        let (tx, rx) = mpsc::channel(64);
        let run = tokio::spawn(async move { d.run(rx).await });
        for i in 0..10 {
            tx.send(occupied(&format!("c{i}"))).await.expect("open");
            // Give the live worker time to keep its own queue short.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while sender.seen.lock().expect("lock").len() < 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "live endpoint starved"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The dead endpoint holds one request in flight and two queued: 7 dropped.
        assert_eq!(metrics.webhooks_dropped_total.load(Relaxed), 7);
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn vacated_then_reoccupied_within_the_delay_sends_neither() {
        let sender = Arc::new(FakeSender {
            statuses: Mutex::new(vec![200; 8]),
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
        let run = tokio::spawn(async move { d.run(rx).await });
        tx.send(vacated("quick")).await.expect("open");
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.send(occupied("quick")).await.expect("open");
        tx.send(vacated("gone")).await.expect("open");
        tokio::time::sleep(Duration::from_millis(2900)).await;
        assert!(
            sender.seen.lock().expect("lock").is_empty(),
            "vacated is held for 3 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(tx);
        run.await.expect("dispatcher ends");
        let seen = sender.seen.lock().expect("lock");
        let events: Vec<serde_json::Value> = seen
            .iter()
            .flat_map(|r| {
                serde_json::from_slice::<serde_json::Value>(&r.body).expect("JSON")["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(
            events,
            vec![serde_json::json!({"name":"channel_vacated","channel":"gone"})]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn member_removed_then_added_within_the_delay_sends_neither_and_zero_delay_sends_all() {
        for (delay, expected) in [(DEFAULT_VACATE_DELAY, 0), (Duration::ZERO, 2)] {
            let sender = Arc::new(FakeSender {
                statuses: Mutex::new(vec![200; 8]),
                seen: Mutex::new(vec![]),
            });
            let d = WebhookDispatcher::new(
                vec![app(vec![])],
                sender.clone(),
                RetryPolicy::default(),
                1,
                Arc::new(Metrics::default()),
            )
            .with_vacate_delay(delay);
            let (tx, rx) = mpsc::channel(16);
            let member = |removed: bool| {
                let (channel, user_id) = ("presence-a".to_string(), "u".to_string());
                ev(
                    "1",
                    if removed {
                        WebhookEvent::MemberRemoved { channel, user_id }
                    } else {
                        WebhookEvent::MemberAdded { channel, user_id }
                    },
                )
            };
            tx.send(member(true)).await.expect("open");
            tx.send(member(false)).await.expect("open");
            drop(tx);
            d.run(rx).await;
            assert_eq!(
                sender.seen.lock().expect("lock").len(),
                expected,
                "{delay:?}"
            );
        }
    }
}
