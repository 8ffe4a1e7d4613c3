//! An axum 0.8 app with a WebSocket echo route, using `duplex::upgrade::axum::WebSocketUpgrade`.
//!
//! ```text
//! cargo run -p duplex --features axum --example axum_echo -- 127.0.0.1:3000
//! # then, e.g.: websocat ws://127.0.0.1:3000/ws
//! ```
//!
//! `GET /` answers with a short text; `GET /ws` upgrades (offering the `echo` subprotocol
//! and permessage-deflate) and echoes every message until the client closes.

use axum::routing::get;
use axum::Router;
use duplex::server::ServerConfig;
use duplex::upgrade::axum::WebSocketUpgrade;
use duplex::upgrade::UpgradedIo;
use duplex::WebSocket;

async fn ws_handler(upgrade: WebSocketUpgrade) -> axum::response::Response {
    let mut config = ServerConfig::default();
    config.deflate.enabled = true;
    upgrade.config(config).protocols(["echo"]).on_upgrade(echo)
}

async fn echo(mut ws: WebSocket<UpgradedIo>) {
    while let Some(message) = ws.recv().await {
        match message {
            Ok(message) => {
                if ws.send(message).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                eprintln!("axum_echo: connection failed: {e}");
                return;
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let app = Router::new()
        .route("/", get(|| async { "WebSocket echo at /ws\n" }))
        .route("/ws", get(ws_handler));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("axum_echo: listening on ws://{}/ws", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
