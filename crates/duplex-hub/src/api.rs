//! The Pusher HTTP API as a function: typed request in, typed response out.
//!
//! Owns routing, request signing checks, body validation and the JSON answers of
//! `/apps/{id}/...`. It never touches HTTP itself: the CLI turns its router's request into an
//! [`ApiRequest`] (method, raw path, raw query, body) and writes the [`ApiResponse`] back.
//!
//! | route | answer |
//! | --- | --- |
//! | `POST /apps/{id}/events` | `{}` (or `{"channels":{..}}` with `info`) |
//! | `POST /apps/{id}/batch_events` | `{}` (or `{"batch":[..]}` with `info`) |
//! | `GET /apps/{id}/channels` | `{"channels":{name:{attrs}}}` |
//! | `GET /apps/{id}/channels/{name}` | `{"occupied":bool, ..attrs}` |
//! | `GET /apps/{id}/channels/{name}/users` | `{"users":[{"id":..}]}` |
//! | `POST /apps/{id}/users/{user}/terminate_connections` | `{}` |
//! | `POST /users/{user}/terminate_connections` | `{}`: the same, app named by `auth_key` |
//!
//! The last route is what the official Python SDK (`pusher` 3.3) requests for
//! `terminate_user_connections`: it leaves out `/apps/{id}`. The signed `auth_key` names the
//! app instead, and the signature is checked over that path as sent.
//!
//! Errors are `{"error":"..."}` with 400 (bad request), 401 (signature), 403 (app disabled),
//! 404 (unknown app or route), 405 (method), 413 (event data over `max_message_size`).

use std::fmt::Write as _;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::auth;
use crate::channel::{self, ChannelKind};
use crate::config::App;
use crate::hub::{Hub, HubError};
use crate::protocol::MAX_EVENT_NAME_LEN;
use crate::socket_id::SocketId;

/// An HTTP request as the API sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// `GET`, `POST`...
    pub method: String,
    /// The path exactly as requested (still percent-encoded): it is what was signed.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl ApiRequest {
    /// Builds a request from its raw parts, decoding the query string.
    ///
    /// ```
    /// let r = duplex_hub::api::ApiRequest::new("GET", "/apps/1/channels", Some("info=user_count&filter_by_prefix=presence-"), "");
    /// assert_eq!(r.query[1], ("filter_by_prefix".to_string(), "presence-".to_string()));
    /// ```
    pub fn new(
        method: &str,
        path: &str,
        raw_query: Option<&str>,
        body: impl Into<Bytes>,
    ) -> ApiRequest {
        ApiRequest {
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            query: raw_query.map(parse_query).unwrap_or_default(),
            body: body.into(),
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits and decodes `a=1&b=x%20y` (`+` is a space).
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An HTTP response: status and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body (`Content-Type: application/json`).
    pub body: Bytes,
}

impl ApiResponse {
    fn json(status: u16, v: &Value) -> ApiResponse {
        ApiResponse {
            status,
            body: Bytes::from(v.to_string()),
        }
    }

    fn error(status: u16, message: impl Into<String>) -> ApiResponse {
        ApiResponse::json(status, &json!({ "error": message.into() }))
    }

    /// The body parsed back (for tests and logs).
    pub fn json_body(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// An error answer before it becomes a response.
struct ApiError(u16, String);

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Broker(b) => b.into(),
            other => ApiError(500, other.to_string()),
        }
    }
}

/// The broker failing (in a cluster: Redis unreachable) is a 503: the request was not carried
/// out, and the client may retry; never a 200 for an event nobody will get.
impl From<crate::broker::BrokerError> for ApiError {
    fn from(e: crate::broker::BrokerError) -> Self {
        ApiError(503, format!("Service unavailable, retry later: {}", e.0))
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(400, msg.into())
}

enum Route {
    Events,
    BatchEvents,
    Channels,
    Channel(String),
    ChannelUsers(String),
    ChannelHistory(String),
    TerminateUser(String),
}

/// Which app a request is for: the `{id}` of `/apps/{id}/...`, or, for the unprefixed route,
/// the app whose key is the request's `auth_key`.
enum AppRef {
    Id(String),
    ByAuthKey,
}

fn parse_route(path: &str) -> Option<(AppRef, Route)> {
    let segs: Vec<String> = path
        .strip_prefix('/')?
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let route = match seg.as_slice() {
        ["apps", _, "events"] => Route::Events,
        ["apps", _, "batch_events"] => Route::BatchEvents,
        ["apps", _, "channels"] => Route::Channels,
        ["apps", _, "channels", name] => Route::Channel((*name).to_owned()),
        ["apps", _, "channels", name, "users"] => Route::ChannelUsers((*name).to_owned()),
        ["apps", _, "channels", name, "history"] => Route::ChannelHistory((*name).to_owned()),
        ["apps", _, "users", user, "terminate_connections"] => {
            Route::TerminateUser((*user).to_owned())
        }
        ["users", user, "terminate_connections"] => {
            return Some((AppRef::ByAuthKey, Route::TerminateUser((*user).to_owned())));
        }
        _ => return None,
    };
    Some((AppRef::Id(seg[1].to_owned()), route))
}

/// Answers one API request at server time `now_unix_secs` (for the timestamp check).
pub async fn handle(hub: &Hub, req: &ApiRequest, now_unix_secs: u64) -> ApiResponse {
    let resp = match handle_inner(hub, req, now_unix_secs).await {
        Ok(v) => ApiResponse::json(200, &v),
        Err(ApiError(status, msg)) => ApiResponse::error(status, msg),
    };
    hub.metrics().api_response(resp.status);
    resp
}

async fn handle_inner(hub: &Hub, req: &ApiRequest, now: u64) -> Result<Value, ApiError> {
    let (app_ref, route) =
        parse_route(&req.path).ok_or_else(|| ApiError(404, "Not found".into()))?;
    let app = match app_ref {
        AppRef::Id(app_id) => hub
            .app_by_id(&app_id)
            .ok_or_else(|| ApiError(404, format!("Unknown app {app_id:?}")))?,
        AppRef::ByAuthKey => {
            let key = req
                .query
                .iter()
                .find_map(|(k, v)| (k == "auth_key").then_some(v.as_str()))
                .ok_or_else(|| ApiError(401, "Missing auth_key".into()))?;
            hub.app_by_key(key)
                .ok_or_else(|| ApiError(404, format!("Unknown app key {key:?}")))?
        }
    };
    auth::verify_request(
        &app.key,
        &app.secret,
        &req.method,
        &req.path,
        &req.query,
        &req.body,
        now,
    )
    .map_err(|e| ApiError(401, e.to_string()))?;
    if !app.enabled {
        return Err(ApiError(403, "Application disabled".into()));
    }
    let want = match route {
        Route::Events | Route::BatchEvents | Route::TerminateUser(_) => "POST",
        _ => "GET",
    };
    if req.method != want {
        return Err(ApiError(405, format!("Use {want} for this resource")));
    }
    match route {
        Route::Events => trigger(hub, &app, req).await,
        Route::BatchEvents => batch(hub, &app, req).await,
        Route::Channels => channels(hub, &app, req).await,
        Route::Channel(name) => channel_info(hub, &app, req, &name).await,
        Route::ChannelUsers(name) => users(hub, &app, &name).await,
        Route::ChannelHistory(name) => history(hub, &app, req, &name).await,
        Route::TerminateUser(user) => {
            if user.is_empty() {
                return Err(bad("Missing user id"));
            }
            hub.terminate_user(&app.id, &user).await?;
            Ok(json!({}))
        }
    }
}

/// Most events one history request returns.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// `GET /apps/{id}/channels/{name}/history?since=OFFSET&limit=N`: the kept events after
/// `since` (default 0) with their positions, oldest first, at most `limit` (default 100, at
/// most 1000), and the channel's current position. `complete` is false when events after
/// `since` were already dropped (size or TTL), so the list has a gap at its start.
async fn history(hub: &Hub, app: &App, req: &ApiRequest, channel: &str) -> Result<Value, ApiError> {
    crate::channel::validate(channel).map_err(|e| bad(format!("Invalid channel name: {e}")))?;
    let number = |name: &str, default: u64, max: u64| -> Result<u64, ApiError> {
        match req.param(name) {
            None => Ok(default),
            Some(v) => match v.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                _ => Err(bad(format!("{name} must be an integer from 0 to {max}"))),
            },
        }
    };
    let since = number("since", 0, crate::protocol::MAX_OFFSET)?;
    let limit = number("limit", 100, MAX_HISTORY_LIMIT as u64)?;
    if limit == 0 {
        return Err(bad(format!("limit must be from 1 to {MAX_HISTORY_LIMIT}")));
    }
    let Some(read) = hub.history(app, channel, since, limit as usize).await? else {
        return Err(ApiError(
            404,
            format!("Channel {channel} keeps no history (see the app's history setting)"),
        ));
    };
    if since > read.position.offset {
        return Err(bad(format!(
            "since ({since}) is ahead of the channel's offset ({})",
            read.position.offset
        )));
    }
    let events: Vec<Value> = read
        .events
        .iter()
        .filter_map(|e| serde_json::from_slice(e).ok())
        .collect();
    Ok(json!({
        "channel": channel,
        "position": read.position,
        "complete": read.complete,
        "events": events,
    }))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Attr {
    UserCount,
    SubscriptionCount,
    Cache,
}

fn parse_info(info: Option<&str>, allow_cache: bool) -> Result<Vec<Attr>, ApiError> {
    let mut out = Vec::new();
    for a in info
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        let attr = match a {
            "user_count" => Attr::UserCount,
            "subscription_count" => Attr::SubscriptionCount,
            "cache" if allow_cache => Attr::Cache,
            other => return Err(bad(format!("Unknown info attribute {other:?}"))),
        };
        if !out.contains(&attr) {
            out.push(attr);
        }
    }
    Ok(out)
}

/// Attributes of one channel. `strict`: an attribute that does not apply is an error (GET
/// channel) rather than omitted (trigger `info`).
async fn attrs(
    hub: &Hub,
    app: &App,
    channel: &str,
    wanted: &[Attr],
    strict: bool,
) -> Result<Map<String, Value>, ApiError> {
    let broker = hub.broker();
    let mut m = Map::new();
    for attr in wanted {
        match attr {
            Attr::UserCount => {
                if ChannelKind::of(channel) == ChannelKind::Presence {
                    let n = broker.presence_user_count(&app.id, channel).await?;
                    m.insert("user_count".into(), json!(n));
                } else if strict {
                    return Err(bad("user_count is only available for presence channels"));
                }
            }
            Attr::SubscriptionCount => {
                let n = broker.subscription_count(&app.id, channel).await?;
                m.insert("subscription_count".into(), json!(n));
            }
            Attr::Cache => {
                if !channel::is_cache(channel) {
                    return Err(bad("cache is only available for cache channels"));
                }
                if let Some((payload, ttl)) = broker.cache_get(&app.id, channel).await? {
                    let event: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    m.insert(
                        "cache".into(),
                        json!({ "event": event, "ttl": ttl.as_secs() }),
                    );
                }
            }
        }
    }
    Ok(m)
}

/// One event to publish, validated.
struct Event {
    name: String,
    data: String,
    channels: Vec<String>,
    except: Option<SocketId>,
    info: Vec<Attr>,
}

#[derive(Deserialize)]
struct RawEvent {
    name: Option<String>,
    data: Option<Box<RawValue>>,
    channels: Option<Vec<String>>,
    channel: Option<String>,
    socket_id: Option<String>,
    info: Option<String>,
}

fn validate_event(app: &App, raw: RawEvent, single_channel: bool) -> Result<Event, ApiError> {
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("Missing event name"))?;
    if name.chars().count() > MAX_EVENT_NAME_LEN {
        return Err(bad(format!(
            "Event name is longer than {MAX_EVENT_NAME_LEN} characters"
        )));
    }
    let channels = match (raw.channels, raw.channel) {
        (Some(_), _) if single_channel => return Err(bad("Batch events take one channel each")),
        (Some(cs), None) => cs,
        (None, Some(c)) => vec![c],
        (Some(_), Some(_)) => return Err(bad("Give either channel or channels, not both")),
        (None, None) => return Err(bad("Missing channel or channels")),
    };
    if channels.is_empty() {
        return Err(bad("channels must not be empty"));
    }
    if channels.len() > app.max_event_channels {
        return Err(bad(format!(
            "Too many channels: at most {} per event",
            app.max_event_channels
        )));
    }
    for c in &channels {
        channel::validate(c).map_err(|e| bad(format!("Invalid channel name {c:?}: {e}")))?;
    }
    let raw_data = raw.data.ok_or_else(|| bad("Missing data"))?;
    let data = if raw_data.get().starts_with('"') {
        serde_json::from_str::<String>(raw_data.get()).map_err(|_| bad("Invalid data"))?
    } else {
        raw_data.get().to_owned()
    };
    if data.len() > app.max_message_size {
        return Err(ApiError(
            413,
            format!("Event data is larger than {} bytes", app.max_message_size),
        ));
    }
    let except = match raw.socket_id {
        None => None,
        Some(s) => Some(SocketId::parse(&s).map_err(|e| bad(e.to_string()))?),
    };
    let info = parse_info(raw.info.as_deref(), false)?;
    Ok(Event {
        name,
        data,
        channels,
        except,
        info,
    })
}

fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad(format!("Invalid JSON body: {e}")))
}

async fn publish(hub: &Hub, app: &App, ev: &Event) -> Result<(), ApiError> {
    for c in &ev.channels {
        hub.publish(app, c, &ev.name, &ev.data, ev.except.as_ref())
            .await?;
    }
    Ok(())
}

async fn trigger(hub: &Hub, app: &App, req: &ApiRequest) -> Result<Value, ApiError> {
    let raw: RawEvent = parse_body(&req.body)?;
    let ev = validate_event(app, raw, false)?;
    publish(hub, app, &ev).await?;
    if ev.info.is_empty() {
        return Ok(json!({}));
    }
    let mut out = Map::new();
    for c in &ev.channels {
        out.insert(
            c.clone(),
            Value::Object(attrs(hub, app, c, &ev.info, false).await?),
        );
    }
    Ok(json!({ "channels": out }))
}

async fn batch(hub: &Hub, app: &App, req: &ApiRequest) -> Result<Value, ApiError> {
    #[derive(Deserialize)]
    struct Batch {
        batch: Vec<RawEvent>,
    }
    let raw: Batch = parse_body(&req.body)?;
    if raw.batch.len() > app.max_batch_size {
        return Err(bad(format!(
            "Batch too large: at most {} events",
            app.max_batch_size
        )));
    }
    let mut events = Vec::with_capacity(raw.batch.len());
    for (i, r) in raw.batch.into_iter().enumerate() {
        events.push(validate_event(app, r, true).map_err(|ApiError(s, m)| {
            let mut msg = String::new();
            let _ = write!(msg, "batch[{i}]: {m}");
            ApiError(s, msg)
        })?);
    }
    for ev in &events {
        publish(hub, app, ev).await?;
    }
    if events.iter().all(|e| e.info.is_empty()) {
        return Ok(json!({}));
    }
    let mut out = Vec::with_capacity(events.len());
    for ev in &events {
        out.push(Value::Object(
            attrs(hub, app, &ev.channels[0], &ev.info, false).await?,
        ));
    }
    Ok(json!({ "batch": out }))
}

async fn channels(hub: &Hub, app: &App, req: &ApiRequest) -> Result<Value, ApiError> {
    let prefix = req.param("filter_by_prefix").filter(|p| !p.is_empty());
    let info = parse_info(req.param("info"), false)?;
    if info.contains(&Attr::UserCount) && !prefix.is_some_and(|p| p.starts_with("presence-")) {
        return Err(bad(
            "user_count requires filter_by_prefix=presence- (only presence channels have users)",
        ));
    }
    let list = hub.broker().channels(&app.id, prefix).await?;
    let mut out = Map::new();
    for (name, _count) in list {
        let a = attrs(hub, app, &name, &info, false).await?;
        out.insert(name, Value::Object(a));
    }
    Ok(json!({ "channels": out }))
}

async fn channel_info(
    hub: &Hub,
    app: &App,
    req: &ApiRequest,
    name: &str,
) -> Result<Value, ApiError> {
    channel::validate(name).map_err(|e| bad(format!("Invalid channel name: {e}")))?;
    let info = parse_info(req.param("info"), true)?;
    let count = hub.broker().subscription_count(&app.id, name).await?;
    let mut m = Map::new();
    m.insert("occupied".into(), json!(count > 0));
    m.extend(attrs(hub, app, name, &info, true).await?);
    Ok(Value::Object(m))
}

async fn users(hub: &Hub, app: &App, name: &str) -> Result<Value, ApiError> {
    channel::validate(name).map_err(|e| bad(format!("Invalid channel name: {e}")))?;
    if ChannelKind::of(name) != ChannelKind::Presence {
        return Err(bad("Users are only available for presence channels"));
    }
    let members = hub.broker().presence_members(&app.id, name).await?;
    let users: Vec<Value> = members.iter().map(|m| json!({ "id": m.user_id })).collect();
    Ok(json!({ "users": users }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_decoded() {
        assert_eq!(
            parse_query("a=1&b=x%20y+z&c&d=%zz&e=%41"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), "".into()),
                ("d".into(), "%zz".into()),
                ("e".into(), "A".into()),
            ]
        );
        assert_eq!(percent_decode("100%", false), "100%");
        assert_eq!(percent_decode("a%2", false), "a%2");
    }

    #[test]
    fn routes_are_recognized_and_segments_decoded() {
        assert!(
            matches!(parse_route("/apps/1/events"), Some((AppRef::Id(id), Route::Events)) if id == "1")
        );
        assert!(matches!(
            parse_route("/apps/1/channels/%23server-to-user-1"),
            Some((_, Route::Channel(c))) if c == "#server-to-user-1"
        ));
        assert!(matches!(
            parse_route("/apps/1/users/u%201/terminate_connections"),
            Some((_, Route::TerminateUser(u))) if u == "u 1"
        ));
        assert!(matches!(
            parse_route("/users/u9/terminate_connections"),
            Some((AppRef::ByAuthKey, Route::TerminateUser(u))) if u == "u9"
        ));
        assert!(parse_route("/users/u9").is_none());
        assert!(parse_route("/apps/1/nope").is_none());
        assert!(parse_route("apps/1/events").is_none());
    }
}
