//! Fan-out: every connection subscribes to one public channel of a Pusher-protocol server
//! (`duplex serve`), and one publisher triggers events through the signed REST API
//! (`POST /apps/{id}/events`) at a fixed rate.
//!
//! Each event's data carries its sequence number and its intended and actual send times, in
//! nanoseconds since the run's start `Instant`: publisher and subscribers are in this one
//! process, so they read the same monotonic clock. Each subscriber measures the delivery
//! latency from the intended time (so a publisher that falls behind shows in the latency, as
//! in the open loop) and from the actual send.
//!
//! Subscribing is part of connecting: a connection counts as established once the server has
//! confirmed its subscription (`pusher_internal:subscription_succeeded`), and the first event
//! is published when every connection is. Each subscriber keeps a bit per event received: it
//! counts the events received twice or after a later one (duplicates, out of order: `mismatch`
//! errors) and, at the end, the window's events the API accepted that never arrived (missing:
//! `unanswered` errors). A subscriber ends once the publisher is done and every accepted event
//! arrived, or at the drain deadline.
//!
//! The publisher uses one keep-alive HTTP/1.1 connection (a new one after a failure) and waits
//! for each response before the next request: if the server answers slower than the rate,
//! events go out late, which `send_lag_us` shows.

use super::connect::{self, ConnectPlan};
use super::context::{ConnCtx, RunShared};
use super::pacer::Pacer;
use super::report::{self, round3, Latency};
use super::stats::{self, lock, ConnOutcome, ErrorKind, Totals};
use bytes::Bytes;
use duplex::{Event, Message, WebSocket};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

/// The name of the events the publisher triggers.
pub const EVENT: &str = "duplex-bench";
/// Messages a connection may receive before the one it waits for while subscribing.
const MAX_SKIPPED: usize = 16;
/// Bytes of an error response body kept in an error message.
const ERROR_BODY_CHARS: usize = 200;

/// A set of sequence numbers, a bit each.
#[derive(Default)]
struct Bits(Vec<u64>);

impl Bits {
    /// Adds `i`; false if it was already there.
    fn insert(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, i % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !was
    }

    fn word(&self, index: usize) -> u64 {
        self.0.get(index).copied().unwrap_or(0)
    }

    /// How many of self's members `other` lacks.
    fn count_not_in(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.word(i)).count_ones()))
            .sum()
    }
}

/// One hub's REST endpoint.
pub struct PublishTarget {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host_header: String,
}

/// Where and how the publisher triggers events.
pub struct Publish {
    /// One per hub, in the order of the hub URLs; at least one.
    pub targets: Vec<PublishTarget>,
    /// Event k goes to hub k mod N; otherwise every event goes to the first hub.
    pub round_robin: bool,
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
}

impl Publish {
    fn path(&self) -> String {
        format!("/apps/{}/events", self.app_id)
    }

    /// The REST URL of hub `hub`, for the report.
    pub fn url(&self, hub: usize) -> String {
        format!("http://{}{}", self.targets[hub].host_header, self.path())
    }

    /// The hub event `seq` is triggered on.
    fn hub_of(&self, seq: u64) -> usize {
        if self.round_robin {
            (seq % self.targets.len() as u64) as usize
        } else {
            0
        }
    }

    /// Path and signed query of a POST of `body` (Pusher REST authentication).
    fn signed_target(&self, body: &str) -> Result<String, String> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970: cannot sign requests".to_owned())?
            .as_secs();
        let path = self.path();
        let query: Vec<(String, String)> = vec![
            ("auth_key".into(), self.app_key.clone()),
            ("auth_timestamp".into(), timestamp.to_string()),
            ("auth_version".into(), "1.0".into()),
            (
                "body_md5".into(),
                duplex_hub::auth::body_md5(body.as_bytes()),
            ),
        ];
        let signature = duplex_hub::auth::sign_request(&self.app_secret, "POST", &path, &query);
        // Every value is URL-safe: the key is checked by the options, the rest is digits/hex.
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Ok(format!(
            "{path}?{}&auth_signature={signature}",
            query.join("&")
        ))
    }
}

/// State of a fan-out run shared by the publisher and the subscribers.
pub struct Shared {
    pub publish: Publish,
    pub channel: String,
    /// Path and query the subscribers connect to (of the first hub).
    pub ws_path: String,
    /// The hub URLs, as given.
    hub_urls: Vec<String>,
    /// How to reach hubs 2..N (the first is the run's own plan).
    other_hubs: Vec<ConnectPlan>,
    /// Subscriptions confirmed, per hub.
    subscribed: Vec<AtomicU64>,
    /// Size of each event's data (at least what the sequence number and times take).
    pub payload_size: usize,
    /// Between two events' intended send times.
    interval: Duration,
    /// The publisher schedules at most this many events; larger sequence numbers are refused.
    max_events: u64,
    /// Events of the measured window the API accepted.
    accepted_window: Mutex<Bits>,
    /// Events of the whole run the API accepted.
    accepted: AtomicU64,
    /// Set when the publisher is done.
    done: watch::Sender<bool>,
    /// Events whose request failed (whole run).
    failed: AtomicU64,
    duplicates: AtomicU64,
    out_of_order: AtomicU64,
    missing: AtomicU64,
    /// Largest event data size seen, in bytes.
    data_bytes: AtomicU64,
    /// Round trip of each accepted publish request, in nanoseconds.
    publish_times: Mutex<Histogram<u64>>,
    /// Whether a subscriber saw a delivery it could not parse (logged once).
    warned_bad: AtomicBool,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        publish: Publish,
        channel: String,
        ws_path: String,
        hub_urls: Vec<String>,
        other_hubs: Vec<ConnectPlan>,
        payload_size: usize,
        rate: f64,
        max_events: u64,
    ) -> Shared {
        Shared {
            publish,
            channel,
            ws_path,
            subscribed: (0..=other_hubs.len()).map(|_| AtomicU64::new(0)).collect(),
            hub_urls,
            other_hubs,
            payload_size,
            interval: Duration::from_nanos(((1e9 / rate).round() as u64).max(1)),
            max_events,
            accepted_window: Mutex::default(),
            accepted: AtomicU64::new(0),
            done: watch::Sender::new(false),
            failed: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            missing: AtomicU64::new(0),
            data_bytes: AtomicU64::new(0),
            publish_times: Mutex::new(stats::new_histogram()),
            warned_bad: AtomicBool::new(false),
        }
    }
}

impl Shared {
    /// Subscriber `index`'s hub: index mod N.
    pub fn hub_of(&self, index: usize) -> usize {
        index % (self.other_hubs.len() + 1)
    }

    /// How subscriber `index` connects: `first` is the plan of the first hub.
    pub fn plan<'a>(&'a self, index: usize, first: &'a ConnectPlan) -> &'a ConnectPlan {
        match self.hub_of(index) {
            0 => first,
            hub => &self.other_hubs[hub - 1],
        }
    }
}

/// The subscribers' URL path when the bench URL has none: `duplex serve`'s endpoint.
pub fn subscriber_path(app_key: &str) -> String {
    format!(
        "/app/{app_key}?protocol=7&client=duplex-bench&version={}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The event data: sequence number, intended and actual send times (ns since the start),
/// padded with `x` to `size` bytes. Only ASCII without quotes or backslashes, so the server's
/// JSON carries it unescaped.
fn event_data(seq: u64, intended: Duration, actual: Duration, size: usize) -> String {
    let mut data = format!(
        "seq={seq} t={} a={} ",
        intended.as_nanos(),
        actual.as_nanos()
    );
    if data.len() < size {
        data.extend(std::iter::repeat_n('x', size - data.len()));
    }
    data
}

/// The sequence number and times of an event's data.
fn parse_event_data(data: &str) -> Option<(u64, Duration, Duration)> {
    let mut fields = data.split_ascii_whitespace();
    let mut field = |name: &str| -> Option<u64> { fields.next()?.strip_prefix(name)?.parse().ok() };
    let seq = field("seq=")?;
    let t = field("t=")?;
    let a = field("a=")?;
    Some((seq, Duration::from_nanos(t), Duration::from_nanos(a)))
}

/// A Pusher message whose `data` is a string (events, connection_established).
#[derive(Deserialize)]
struct StringData<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<Cow<'a, str>>,
}

/// Any Pusher message (`pusher:error` has an object as `data`).
#[derive(Deserialize)]
struct AnyData<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(default)]
    data: serde_json::Value,
}

/// What a subscriber received.
enum Incoming<'a> {
    /// One of the publisher's events on our channel: sequence number, intended and actual
    /// send times since the start.
    Delivery(u64, Duration, Duration),
    Ping,
    Error(String),
    Other {
        event: Cow<'a, str>,
        channel: Option<Cow<'a, str>>,
    },
}

fn parse<'a>(text: &'a str, channel: &str) -> Result<Incoming<'a>, String> {
    let (event, channel_got, data) = match serde_json::from_str::<StringData<'a>>(text) {
        Ok(m) => (m.event, m.channel, m.data),
        Err(_) => {
            let m: AnyData<'a> = serde_json::from_str(text)
                .map_err(|e| format!("not a Pusher message ({e}): {}", clip(text)))?;
            if m.event == "pusher:error" {
                return Ok(Incoming::Error(format!("pusher:error {}", m.data)));
            }
            (m.event, m.channel, None::<Cow<'a, str>>)
        }
    };
    if event == EVENT && channel_got.as_deref() == Some(channel) {
        let data = data.ok_or("event without data")?;
        return parse_event_data(&data)
            .map(|(s, t, a)| Incoming::Delivery(s, t, a))
            .ok_or_else(|| format!("event data not from this bench: {}", clip(&data)));
    }
    Ok(match &*event {
        "pusher:ping" => Incoming::Ping,
        "pusher:error" => Incoming::Error(format!("pusher:error {}", data.unwrap_or_default())),
        _ => Incoming::Other {
            event,
            channel: channel_got,
        },
    })
}

fn clip(s: &str) -> &str {
    let mut end = s.len().min(ERROR_BODY_CHARS);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Connects like [`connect::connect`], then waits for `pusher:connection_established`,
/// subscribes to the channel and waits for the server's confirmation, all within the plan's
/// timeout.
pub async fn connect_and_subscribe(
    first: &ConnectPlan,
    index: usize,
    source: Option<std::net::IpAddr>,
    fanout: &Shared,
) -> Result<(WebSocket<TcpStream>, bool), String> {
    let plan = fanout.plan(index, first);
    let began = Instant::now();
    let (mut ws, deflate) = connect::connect(plan, source).await?;
    let left = plan.timeout.saturating_sub(began.elapsed());
    let steps = async {
        expect(&mut ws, "pusher:connection_established", None).await?;
        let subscribe = serde_json::json!({
            "event": "pusher:subscribe",
            "data": { "channel": fanout.channel },
        });
        ws.send(subscribe.to_string())
            .await
            .map_err(|e| format!("sending pusher:subscribe: {e}"))?;
        expect(
            &mut ws,
            "pusher_internal:subscription_succeeded",
            Some(&fanout.channel),
        )
        .await
    };
    match tokio::time::timeout(left, steps).await {
        Ok(Ok(())) => {
            fanout.subscribed[fanout.hub_of(index)].fetch_add(1, Relaxed);
            Ok((ws, deflate))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!(
            "connect, handshake and subscription not done within {:?}",
            plan.timeout
        )),
    }
}

/// Waits for `event` (on `channel`, if given), skipping a few other messages.
async fn expect(
    ws: &mut WebSocket<TcpStream>,
    event: &str,
    channel: Option<&str>,
) -> Result<(), String> {
    for _ in 0..MAX_SKIPPED {
        match ws.next_event().await {
            Some(Ok(Event::Message(Message::Text(text)))) => {
                match parse(&text, channel.unwrap_or_default())? {
                    Incoming::Error(e) => return Err(format!("waiting for {event}: {e}")),
                    Incoming::Other {
                        event: got,
                        channel: on,
                    } if got == event && (channel.is_none() || on.as_deref() == channel) => {
                        return Ok(())
                    }
                    _ => {}
                }
            }
            Some(Ok(Event::Close(frame))) => {
                return Err(format!(
                    "waiting for {event}: the server closed the connection{}",
                    frame
                        .map(|f| format!(" ({} {})", f.code.0, f.reason))
                        .unwrap_or_default()
                ))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("waiting for {event}: {e}")),
            None => return Err(format!("waiting for {event}: connection closed")),
        }
    }
    Err(format!("no {event} among the first {MAX_SKIPPED} messages"))
}

/// One subscriber, from the start of the load to its close.
pub async fn run(mut ws: WebSocket<TcpStream>, ctx: &ConnCtx<'_>) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let Some(f) = ctx.run.fanout.as_ref() else {
        return out;
    };
    let mut received = Bits::default();
    let mut distinct = 0u64;
    let mut highest: Option<u64> = None;
    let mut done = f.done.subscribe();
    let deadline = tokio::time::sleep_until(ctx.hard_deadline);
    tokio::pin!(deadline);
    loop {
        if *done.borrow() && distinct >= f.accepted.load(Relaxed) {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            r = done.changed(), if !*done.borrow() => {
                if r.is_err() {
                    break;
                }
            }
            event = ws.next_event() => {
                let now = Instant::now();
                let text = match event {
                    Some(Ok(Event::Message(Message::Text(text)))) => text,
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        ctx.error(&mut out, ErrorKind::Io, 1, &format!("receive: {e}"));
                        out.failed = true;
                        break;
                    }
                    None => {
                        out.closed_by_server(&ctx.run.live, &ctx.run.errors, ws.close_frame());
                        break;
                    }
                };
                match parse(&text, &f.channel) {
                    Ok(Incoming::Delivery(seq, t, a)) => {
                        if seq >= f.max_events {
                            ctx.error(&mut out, ErrorKind::Mismatch, 1, &format!("event with sequence number {seq}, never published"));
                            continue;
                        }
                        ctx.run.live.echoes.fetch_add(1, Relaxed);
                        let intended = ctx.start + t;
                        let in_window = ctx.in_window(intended);
                        let first_time = received.insert(seq);
                        if !first_time {
                            if in_window {
                                f.duplicates.fetch_add(1, Relaxed);
                                ctx.error(&mut out, ErrorKind::Mismatch, 1, "event delivered twice");
                            }
                            continue;
                        }
                        distinct += 1;
                        if highest.is_some_and(|h| seq < h) {
                            if in_window {
                                f.out_of_order.fetch_add(1, Relaxed);
                                ctx.error(&mut out, ErrorKind::Mismatch, 1, "event delivered after a later one");
                            }
                        } else {
                            highest = Some(seq);
                        }
                        if in_window {
                            out.echoes += 1;
                            ctx.run.recorder.record_delivery(
                                ctx.index,
                                now.saturating_duration_since(intended),
                                now.saturating_duration_since(ctx.start + a),
                            );
                        }
                    }
                    Ok(Incoming::Ping) => {
                        // The server pings after its activity timeout without client frames.
                        let pong = r#"{"event":"pusher:pong","data":{}}"#;
                        if let Err(e) = ws.send(pong).await {
                            ctx.error(&mut out, ErrorKind::Io, 1, &format!("send pusher:pong: {e}"));
                            out.failed = true;
                            break;
                        }
                    }
                    Ok(Incoming::Error(e)) => ctx.error(&mut out, ErrorKind::Io, 1, &e),
                    Ok(Incoming::Other { .. }) => {}
                    Err(e) => {
                        if !f.warned_bad.swap(true, Relaxed) {
                            tracing::warn!("unexpected message: {e}");
                        }
                        ctx.error(&mut out, ErrorKind::Mismatch, 1, &e);
                    }
                }
            }
        }
    }
    let missing = lock(&f.accepted_window).count_not_in(&received);
    f.missing.fetch_add(missing, Relaxed);
    ctx.error(
        &mut out,
        ErrorKind::Unanswered,
        missing,
        "event accepted by the API never delivered (before the drain deadline)",
    );
    if !out.failed {
        match connect::close(&mut ws, ctx.run.drain_timeout).await {
            Ok(()) => out.closed_cleanly = true,
            Err(e) => ctx.error(&mut out, ErrorKind::Close, 1, &e),
        }
    }
    out
}

/// An HTTP/1.1 connection to the server.
struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("publisher connection: {e}");
            }
        });
        Ok(Client { sender, driver })
    }
}

/// POSTs one event to hub `hub`, (re)connecting first if needed.
async fn trigger(
    f: &Shared,
    client: &mut Option<Client>,
    hub: usize,
    body: String,
) -> Result<(), String> {
    let target = f.publish.signed_target(&body)?;
    let hub = &f.publish.targets[hub];
    let request = http::Request::post(target)
        .header(http::header::HOST, &hub.host_header)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "duplex-bench")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let c = match client {
        Some(c) => c,
        None => client.insert(Client::connect(hub.addr).await?),
    };
    c.sender
        .ready()
        .await
        .map_err(|e| format!("HTTP connection: {e}"))?;
    let response = c
        .sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("HTTP response body: {e}"))?
        .to_bytes();
    if status == http::StatusCode::OK {
        Ok(())
    } else {
        Err(format!(
            "HTTP {status}: {}",
            clip(&String::from_utf8_lossy(&body))
        ))
    }
}

/// The publisher: from the start of the load to the end of the window, one event per interval.
pub async fn publisher(
    run: Arc<RunShared>,
    mut start_rx: watch::Receiver<Option<Instant>>,
) -> ConnOutcome {
    let mut out = ConnOutcome::default();
    let Some(f) = run.fanout.as_ref() else {
        return out;
    };
    let start = match start_rx.wait_for(Option::is_some).await {
        Ok(start) => *start,
        Err(_) => None,
    };
    if let Some(start) = start {
        publish_all(&run, f, start, &mut out).await;
    }
    f.done.send_replace(true);
    out
}

async fn publish_all(run: &RunShared, f: &Shared, start: Instant, out: &mut ConnOutcome) {
    let window_start = start + run.warmup;
    let end = window_start + run.duration;
    let hard_deadline = end + run.drain_timeout;
    // The publisher's own histogram shard.
    let shard = run.connections;
    // One keep-alive connection per hub.
    let mut clients: Vec<Option<Client>> = f.publish.targets.iter().map(|_| None).collect();
    let mut pacer = Pacer::new();
    for seq in 0..f.max_events {
        let intended = start + f.interval * u32::try_from(seq).unwrap_or(u32::MAX);
        if intended >= end || run.stop.load(Relaxed) {
            break;
        }
        pacer.sleep_until(intended).await;
        let in_window = intended >= window_start;
        if in_window {
            out.scheduled += 1;
        }
        let actual = Instant::now();
        if actual >= hard_deadline {
            let why = "publisher still behind schedule at the drain deadline";
            ctx_error(run, out, ErrorKind::Unanswered, 1, why);
            break;
        }
        if in_window {
            run.recorder
                .record_send_lag(shard, actual.saturating_duration_since(intended));
        }
        let data = event_data(seq, intended - start, actual - start, f.payload_size);
        f.data_bytes.fetch_max(data.len() as u64, Relaxed);
        let body = serde_json::json!({ "name": EVENT, "channel": f.channel, "data": data });
        let limit = run.drain_timeout;
        let hub = f.publish.hub_of(seq);
        let client = &mut clients[hub];
        let result = tokio::time::timeout(limit, trigger(f, client, hub, body.to_string()))
            .await
            .unwrap_or_else(|_| Err(format!("no response within {limit:?}")));
        match result {
            Ok(()) => {
                let ns = u64::try_from(actual.elapsed().as_nanos()).unwrap_or(u64::MAX);
                lock(&f.publish_times).saturating_record(ns.max(1));
                if in_window {
                    lock(&f.accepted_window).insert(seq);
                    out.sent += 1;
                }
                // After the bit: a subscriber seeing the count has the bit too.
                f.accepted.fetch_add(1, Relaxed);
            }
            Err(e) => {
                f.failed.fetch_add(1, Relaxed);
                ctx_error(run, out, ErrorKind::Io, 1, &format!("publish: {e}"));
                // A failed request may leave the connection unusable: start a new one.
                *client = None;
            }
        }
    }
}

fn ctx_error(run: &RunShared, out: &mut ConnOutcome, kind: ErrorKind, n: u64, message: &str) {
    out.error(&run.live, &run.errors, kind, n, message);
}

/// The fan-out section of the report.
pub fn report(f: &Shared, totals: &Totals, rate: f64, window_s: f64) -> report::Fanout {
    let subscribers = totals.established;
    let published = totals.sent;
    let expected = published * subscribers as u64;
    let hubs = f
        .hub_urls
        .iter()
        .enumerate()
        .map(|(i, url)| report::Hub {
            url: url.clone(),
            rest_url: f.publish.url(i),
            subscribers: f.subscribed[i].load(Relaxed),
        })
        .collect();
    report::Fanout {
        ws_path: f.ws_path.clone(),
        rest_url: f.publish.url(0),
        hubs,
        publish_round_robin: f.publish.round_robin,
        app_id: f.publish.app_id.clone(),
        channel: f.channel.clone(),
        event: EVENT,
        data_bytes: f.data_bytes.load(Relaxed),
        subscribers,
        events_scheduled: totals.scheduled,
        events_published: published,
        events_failed: f.failed.load(Relaxed),
        deliveries_expected: expected,
        deliveries_received: totals.echoes,
        missing: f.missing.load(Relaxed),
        duplicates: f.duplicates.load(Relaxed),
        out_of_order: f.out_of_order.load(Relaxed),
        target_events_per_s: round3(rate),
        target_deliveries_per_s: round3(rate * subscribers as f64),
        deliveries_per_s: report::per_second(totals.echoes as f64, window_s),
        publish_ms: Latency::from_histogram(&lock(&f.publish_times), 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_data_round_trips_and_is_padded() {
        let d = event_data(
            42,
            Duration::from_nanos(1_500),
            Duration::from_nanos(2_000),
            100,
        );
        assert_eq!(d.len(), 100);
        assert!(d
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"= ".contains(&b)));
        let got = parse_event_data(&d).unwrap();
        assert_eq!(
            got,
            (42, Duration::from_nanos(1_500), Duration::from_nanos(2_000))
        );
        // Smaller than the fields: not truncated.
        assert!(parse_event_data(&event_data(7, Duration::ZERO, Duration::ZERO, 1)).is_some());
        assert!(parse_event_data("seq=1 t=x a=2").is_none());
    }

    #[test]
    fn parses_server_messages() {
        let ev = r#"{"event":"duplex-bench","channel":"c","data":"seq=3 t=10 a=12 xx"}"#;
        assert!(matches!(
            parse(ev, "c"),
            Ok(Incoming::Delivery(3, t, a)) if t == Duration::from_nanos(10) && a == Duration::from_nanos(12)
        ));
        // Another channel's event is not ours.
        assert!(matches!(parse(ev, "d"), Ok(Incoming::Other { .. })));
        let err = r#"{"event":"pusher:error","data":{"code":4001,"message":"no"}}"#;
        assert!(matches!(parse(err, "c"), Ok(Incoming::Error(e)) if e.contains("4001")));
        assert!(matches!(
            parse(r#"{"event":"pusher:ping","data":{}}"#, "c"),
            Ok(Incoming::Ping)
        ));
        let ok = r#"{"event":"pusher_internal:subscription_succeeded","channel":"c","data":"{}"}"#;
        assert!(
            matches!(parse(ok, "c"), Ok(Incoming::Other { event, channel }) if event == "pusher_internal:subscription_succeeded" && channel.as_deref() == Some("c"))
        );
        assert!(parse("not json", "c").is_err());
        let bad = r#"{"event":"duplex-bench","channel":"c","data":"hello"}"#;
        assert!(parse(bad, "c").is_err());
    }

    #[test]
    fn bits_count_what_is_missing() {
        let mut published = Bits::default();
        let mut got = Bits::default();
        for i in [0, 5, 64, 200] {
            assert!(published.insert(i));
        }
        assert!(!published.insert(5));
        got.insert(5);
        got.insert(200);
        got.insert(300);
        assert_eq!(published.count_not_in(&got), 2);
        assert_eq!(got.count_not_in(&published), 1);
    }

    #[test]
    fn signed_target_verifies() {
        let p = Publish {
            targets: vec![PublishTarget {
                addr: "127.0.0.1:1".parse().unwrap(),
                host_header: "127.0.0.1:1".into(),
            }],
            round_robin: false,
            app_id: "app-id".into(),
            app_key: "app-key".into(),
            app_secret: "app-secret".into(),
        };
        let body = r#"{"name":"e","channels":["c"],"data":"x"}"#;
        let target = p.signed_target(body).unwrap();
        let (path, query) = target.split_once('?').unwrap();
        assert_eq!(path, "/apps/app-id/events");
        let query: Vec<(String, String)> = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        duplex_hub::auth::verify_request(
            "app-key",
            "app-secret",
            "POST",
            path,
            &query,
            body.as_bytes(),
            now,
        )
        .unwrap();
    }
}
