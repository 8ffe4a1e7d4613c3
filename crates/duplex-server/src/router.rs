//! The axum router: one port for everything.
//!
//! | route | what |
//! | --- | --- |
//! | `GET /app/{key}` | Pusher WebSocket endpoint (`?protocol=7`) |
//! | `/apps/{id}/...` | Pusher HTTP API ([`duplex_hub::api::handle`]), body ≤ 100 KB |
//! | `/users/{user}/terminate_connections` | the same API: the Python SDK's path for it |
//! | `GET /metrics` | Prometheus text |
//! | `GET /health` | 200 while the process serves |
//! | `GET /ready` | 200 while accepting connections; 503 while draining or while the cluster's Redis is unreachable |
//! | `GET /`, `/app.js`, `/style.css` | the demo chat (embedded) |
//! | `GET /js/duplex-recovery.js` | the pusher-js add-on for channel history recovery (always served) |
//! | `POST /demo/auth` | **demo only**: signs any channel for the first app |
//! | anything else | 404; a WebSocket upgrade gets `pusher:error` + close 4005 |

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State as AxumState};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Extension;
use axum::Router;
use duplex::upgrade::axum::WebSocketUpgrade;
use duplex::upgrade::UpgradeError;
use duplex_hub::api::{self, ApiRequest};
use duplex_hub::auth;
use duplex_hub::hub::ConnectError;

use super::proxy::Peer;
use super::{conn, State};

/// Largest REST request body.
pub const MAX_API_BODY: usize = 100 * 1024;

const INDEX_HTML: &str = include_str!("../../../web/index.html");
const APP_JS: &str = include_str!("../../../web/app.js");
const STYLE_CSS: &str = include_str!("../../../web/style.css");
const RECOVERY_JS: &str = include_str!("../../../web/js/duplex-recovery.js");

/// Builds the router over `state`.
pub fn router(state: Arc<State>) -> Router {
    let mut r = Router::new()
        .route("/app/{key}", get(websocket))
        .route(
            "/apps/{*rest}",
            any(rest_api).layer(DefaultBodyLimit::max(MAX_API_BODY)),
        )
        .route(
            "/users/{user}/terminate_connections",
            any(rest_api).layer(DefaultBodyLimit::max(MAX_API_BODY)),
        )
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route(
            "/js/duplex-recovery.js",
            get(|| async { asset("text/javascript; charset=utf-8", RECOVERY_JS) }),
        )
        .fallback(not_found);
    if state.demo {
        r = r
            .route(
                "/",
                get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
            )
            .route(
                "/app.js",
                get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
            )
            .route(
                "/style.css",
                get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
            )
            .route("/demo/config.json", get(demo_config))
            .route(
                "/demo/auth",
                post(demo_auth).layer(DefaultBodyLimit::max(16 * 1024)),
            );
    }
    r.with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json(status: u16, body: impl Into<axum::body::Body>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.into(),
    )
        .into_response()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The client's address: the peer (or its PROXY header), or what `X-Forwarded-For` says when
/// that peer is a trusted proxy.
fn client_ip(state: &State, peer: Option<&Extension<Peer>>, headers: &HeaderMap) -> Option<IpAddr> {
    peer.map(|Extension(p)| state.trust.client_ip(p.addr().ip(), headers))
}

async fn websocket(
    AxumState(state): AxumState<Arc<State>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if state.hub.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response();
    }
    let param = query.as_deref().and_then(|q| {
        api::parse_query(q)
            .into_iter()
            .find(|(k, _)| k == "protocol")
            .map(|(_, v)| v)
    });
    let client = client_ip(&state, peer.as_ref(), &headers);
    let tracker = state.tracker.clone();
    upgrade
        .config(state.ws_config.clone())
        .on_upgrade(move |ws| tracker.track_future(conn::run(ws, state, key, param, client)))
}

/// Anything unrouted: 404, except that a WebSocket upgrade is accepted and answered the
/// Pusher way (`pusher:error` + close 4005, "path not found"), which clients understand.
async fn not_found(
    AxumState(state): AxumState<Arc<State>>,
    upgrade: Result<WebSocketUpgrade, UpgradeError>,
) -> Response {
    match upgrade {
        Ok(upgrade) => {
            let tracker = state.tracker.clone();
            let refused = state.hub.refuse(ConnectError::PathNotFound);
            upgrade
                .config(state.ws_config.clone())
                .on_upgrade(move |ws| tracker.track_future(conn::refuse(ws, refused, state)))
        }
        Err(_) => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn rest_api(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // The REST API answers errors in JSON, including a body over the limit (axum's own
    // rejection is plain text).
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("Request body is larger than {MAX_API_BODY} bytes")
            } else {
                rejection.body_text()
            };
            state.hub.metrics().api_response(status.as_u16());
            return json(
                status.as_u16(),
                serde_json::json!({ "error": message }).to_string(),
            );
        }
    };
    let req = ApiRequest::new(method.as_str(), uri.path(), uri.query(), body);
    let resp = api::handle(&state.hub, &req, unix_now()).await;
    let client = client_ip(&state, peer.as_ref(), &headers);
    tracing::debug!(method = %method, path = uri.path(), status = resp.status, client = ?client, "api");
    json(resp.status, resp.body)
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.hub.metrics().render(),
    )
        .into_response()
}

async fn ready(AxumState(state): AxumState<Arc<State>>) -> Response {
    if state.hub.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !state.hub.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the cluster's Redis is unreachable or this node is re-registering\n",
        )
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

/// The first app's key, for the demo page (it connects to `/app/{key}`).
async fn demo_config(AxumState(state): AxumState<Arc<State>>) -> Response {
    let app = &state.hub.config().apps[0];
    json(
        200,
        serde_json::json!({ "key": app.key, "clientEvents": app.enable_client_events }).to_string(),
    )
}

/// DEMO ONLY: signs a subscription to any private or presence channel of the first app, with
/// the user name the page sends. A real app authenticates its users before signing.
async fn demo_auth(AxumState(state): AxumState<Arc<State>>, body: Bytes) -> Response {
    let form = api::parse_query(&String::from_utf8_lossy(&body));
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let (socket_id, channel) = (get("socket_id"), get("channel_name"));
    if socket_id.is_empty()
        || !(channel.starts_with("private-") || channel.starts_with("presence-"))
        || channel.starts_with("private-encrypted-")
    {
        return json(
            400,
            r#"{"error":"socket_id and a private- or presence- channel_name are required"}"#,
        );
    }
    let app = &state.hub.config().apps[0];
    let channel_data = channel.starts_with("presence-").then(|| {
        let name: String = get("user_name").chars().take(32).collect();
        let name = if name.trim().is_empty() {
            "guest".into()
        } else {
            name
        };
        serde_json::json!({ "user_id": socket_id, "user_info": { "name": name } }).to_string()
    });
    let sig = auth::channel_auth(
        &app.key,
        &app.secret,
        socket_id,
        channel,
        channel_data.as_deref(),
    );
    let mut out = serde_json::json!({ "auth": sig });
    if let Some(d) = channel_data {
        out["channel_data"] = d.into();
    }
    json(200, out.to_string())
}
