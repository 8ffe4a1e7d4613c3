//! WebSocket upgrades inside a real hyper 1.x server and a real axum 0.8 `Router` on
//! 127.0.0.1, driven by our own client.

use axum::routing::{any, get};
use axum::Router;
use duplex::client::{connect, ClientConfig};
use duplex::proto::handshake::Negotiated;
use duplex::server::ServerConfig;
use duplex::upgrade::axum::WebSocketUpgrade;
use duplex::upgrade::{upgrade, ResponseBody, UpgradedIo};
use duplex::{CloseCode, Error, Message, WebSocket};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);

/// Echoes every message until the peer closes.
async fn echo(mut ws: WebSocket<UpgradedIo>) {
    while let Some(Ok(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

// ---- plain hyper ----

async fn hyper_service(
    mut req: Request<Incoming>,
    config: ServerConfig,
) -> Result<Response<ResponseBody>, Infallible> {
    if req.uri().path() != "/ws" {
        let mut not_found = Response::new(ResponseBody::default());
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return Ok(not_found);
    }
    match upgrade(&mut req, &config) {
        Ok((response, pending)) => {
            tokio::spawn(async move {
                if let Ok(ws) = pending.await {
                    echo(ws).await;
                }
            });
            Ok(response)
        }
        Err(refused) => Ok(refused.to_response()),
    }
}

async fn hyper_server(config: ServerConfig) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| hyper_service(req, config.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Sends a raw HTTP/1.1 request and returns the whole response as text.
async fn raw_request(addr: SocketAddr, head: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(LIMIT, tcp.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn handshake_head(method: &str, version_header: &str) -> String {
    format!(
        "{method} /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, close\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         {version_header}\r\n"
    )
}

async fn echo_round_trip(url: &str, config: &ClientConfig) -> Negotiated {
    let (mut ws, negotiated) = tokio::time::timeout(LIMIT, connect(url, config))
        .await
        .unwrap()
        .unwrap();
    ws.send("hello through hyper").await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::from("hello through hyper")
    );
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i % 7) as u8).collect();
    ws.send(binary.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from(binary));
    tokio::time::timeout(LIMIT, ws.close(CloseCode(4321), "bye"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ws.close_frame().map(|f| f.code), Some(CloseCode(4321)));
    negotiated
}

#[tokio::test]
async fn hyper_server_echoes_through_upgrade() {
    let addr = hyper_server(ServerConfig::default()).await;
    let negotiated = echo_round_trip(&format!("ws://{addr}/ws"), &ClientConfig::default()).await;
    assert_eq!(negotiated.protocol, None);
    assert!(negotiated.extensions.is_empty());
}

#[tokio::test]
async fn hyper_server_negotiates_deflate_and_subprotocol() {
    let mut server = ServerConfig {
        subprotocols: vec!["v2.echo".into(), "v1.echo".into()],
        ..ServerConfig::default()
    };
    server.deflate.enabled = true;
    let addr = hyper_server(server).await;
    let mut client = ClientConfig {
        subprotocols: vec!["v1.echo".into(), "v2.echo".into()],
        ..ClientConfig::default()
    };
    client.deflate.enabled = true;
    let negotiated = echo_round_trip(&format!("ws://{addr}/ws"), &client).await;
    assert_eq!(negotiated.protocol.as_deref(), Some("v2.echo"));
    assert_eq!(negotiated.extensions.len(), 1);
    assert_eq!(negotiated.extensions[0].name, "permessage-deflate");
}

#[tokio::test]
async fn hyper_server_refuses_bad_requests_with_the_right_status() {
    let addr = hyper_server(ServerConfig::default()).await;

    // A plain GET, no upgrade.
    let plain = raw_request(
        addr,
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{plain}");
    assert!(plain.contains("no Upgrade header"), "{plain}");

    // An unsupported version: 426 naming the one we speak.
    let old = raw_request(addr, &handshake_head("GET", "Sec-WebSocket-Version: 8\r\n")).await;
    assert!(
        old.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{old}"
    );
    assert!(
        old.to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13\r\n"),
        "{old}"
    );

    // Not GET: 405 with Allow.
    let post = raw_request(
        addr,
        &handshake_head("POST", "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n"),
    )
    .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(
        post.to_ascii_lowercase().contains("\r\nallow: get\r\n"),
        "{post}"
    );

    // Our client sees a refusal as a handshake error.
    let err = connect(&format!("ws://{addr}/elsewhere"), &ClientConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadResponse(_)), "{err:?}");
    assert!(err.to_string().contains("404"), "{err}");
}

// ---- axum ----

async fn axum_echo(upgrade: WebSocketUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(echo)
}

async fn axum_chat(upgrade: WebSocketUpgrade) -> axum::response::Response {
    let upgrade = upgrade.protocols(["v2.chat", "v1.chat"]);
    let chosen = upgrade.selected_protocol().map(str::to_owned);
    upgrade.on_upgrade(move |mut ws| async move {
        // Tell the client which protocol the handler saw, then echo.
        assert_eq!(ws.subprotocol(), chosen.as_deref());
        let _ = ws.send(format!("protocol={chosen:?}")).await;
        echo(ws).await;
    })
}

async fn axum_deflate(upgrade: WebSocketUpgrade) -> axum::response::Response {
    let mut config = ServerConfig::default();
    config.deflate.enabled = true;
    upgrade.config(config).on_upgrade(echo)
}

async fn axum_server() -> SocketAddr {
    let app = Router::new()
        .route("/ws", any(axum_echo))
        .route("/chat", get(axum_chat))
        .route("/deflate", get(axum_deflate));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

#[tokio::test]
async fn axum_router_echoes() {
    let addr = axum_server().await;
    let negotiated = echo_round_trip(&format!("ws://{addr}/ws"), &ClientConfig::default()).await;
    assert_eq!(negotiated.protocol, None);
}

#[tokio::test]
async fn axum_negotiates_subprotocol_in_server_order() {
    let addr = axum_server().await;
    let client = ClientConfig {
        subprotocols: vec!["v1.chat".into(), "v2.chat".into(), "v3.chat".into()],
        ..ClientConfig::default()
    };
    let (mut ws, negotiated) = connect(&format!("ws://{addr}/chat"), &client)
        .await
        .unwrap();
    assert_eq!(negotiated.protocol.as_deref(), Some("v2.chat"));
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::from("protocol=Some(\"v2.chat\")")
    );
    ws.send("after").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from("after"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();

    // No overlap: accepted without a subprotocol.
    let client = ClientConfig {
        subprotocols: vec!["v9.chat".into()],
        ..ClientConfig::default()
    };
    let (mut ws, negotiated) = connect(&format!("ws://{addr}/chat"), &client)
        .await
        .unwrap();
    assert_eq!(negotiated.protocol, None);
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::from("protocol=None")
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
}

#[tokio::test]
async fn axum_negotiates_deflate() {
    let addr = axum_server().await;
    let mut client = ClientConfig::default();
    client.deflate.enabled = true;
    let negotiated = echo_round_trip(&format!("ws://{addr}/deflate"), &client).await;
    assert_eq!(negotiated.extensions.len(), 1);
    assert_eq!(negotiated.extensions[0].name, "permessage-deflate");
}

#[tokio::test]
async fn axum_refuses_non_upgrade_requests() {
    let addr = axum_server().await;

    let plain = raw_request(
        addr,
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(plain.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{plain}");
    assert!(plain.contains("no Upgrade header"), "{plain}");

    let old = raw_request(
        addr,
        &handshake_head("GET", "Sec-WebSocket-Version: 12\r\n"),
    )
    .await;
    assert!(
        old.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
        "{old}"
    );
    assert!(
        old.to_ascii_lowercase()
            .contains("\r\nsec-websocket-version: 13\r\n"),
        "{old}"
    );

    // `any` route: our extractor answers 405 itself.
    let post = raw_request(
        addr,
        &handshake_head("POST", "Sec-WebSocket-Version: 13\r\nContent-Length: 0\r\n"),
    )
    .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(
        post.to_ascii_lowercase().contains("\r\nallow: get\r\n"),
        "{post}"
    );

    // A bad key: 400.
    let bad_key = raw_request(
        addr,
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, close\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert!(
        bad_key.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{bad_key}"
    );
    assert!(bad_key.contains("Sec-WebSocket-Key"), "{bad_key}");
}

/// A valid handshake request whose connection can never be upgraded (not served by hyper).
fn unservable_upgrade_parts() -> http::request::Parts {
    let mut request = Request::builder()
        .method("GET")
        .uri("/ws")
        .header("host", "example.com")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-protocol", "v1.chat, v2.chat")
        .body(())
        .unwrap();
    let on_upgrade = hyper::upgrade::on(&mut request);
    request.extensions_mut().insert(on_upgrade);
    request.into_parts().0
}

/// Issue 14 item 7: a failed hand-over reaches `on_failed_upgrade`, and the `on_upgrade`
/// callback is not called.
#[tokio::test]
async fn axum_on_failed_upgrade_gets_the_error() {
    use axum::extract::FromRequestParts;
    let mut parts = unservable_upgrade_parts();
    let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .unwrap();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
    let response = upgrade
        .on_failed_upgrade(move |e| {
            let _ = failed_tx.send(e);
        })
        .on_upgrade(|_ws| async { panic!("the upgrade cannot succeed") });
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let error = tokio::time::timeout(LIMIT, failed_rx)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(error, Error::Upgrade(_)), "{error:?}");
}

/// Issue 14 item 4: `config` no longer drops subprotocols set before it with `protocols`;
/// a config with its own subprotocols replaces them; `protocols` after `config` replaces.
#[tokio::test]
async fn axum_config_keeps_protocols_set_before_it() {
    use axum::extract::FromRequestParts;
    let upgrade = || async {
        WebSocketUpgrade::from_request_parts(&mut unservable_upgrade_parts(), &())
            .await
            .unwrap()
    };
    let timers = ServerConfig::new().idle_timeout(Duration::from_secs(60));
    let kept = upgrade()
        .await
        .protocols(["v2.chat"])
        .config(timers.clone());
    assert_eq!(kept.selected_protocol(), Some("v2.chat"));
    let after = upgrade()
        .await
        .config(timers.clone())
        .protocols(["v2.chat"]);
    assert_eq!(after.selected_protocol(), Some("v2.chat"));
    let replaced = upgrade()
        .await
        .protocols(["v2.chat"])
        .config(timers.subprotocol("v1.chat"));
    assert_eq!(replaced.selected_protocol(), Some("v1.chat"));
}
