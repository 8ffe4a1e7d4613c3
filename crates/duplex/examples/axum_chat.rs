//! A chat server on axum: every text message a client sends to `/chat` goes to every client.
//!
//! ```text
//! cargo run -p duplex --features axum --example axum_chat -- 127.0.0.1:3000
//! cargo run -p duplex --example client -- ws://127.0.0.1:3000/chat   (in two terminals)
//! ```

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use duplex::upgrade::axum::WebSocketUpgrade;
use duplex::upgrade::UpgradedIo;
use duplex::{CloseCode, Message, ServerConfig, WebSocket};
use std::time::Duration;
use tokio::sync::broadcast;

async fn chat(State(hub): State<broadcast::Sender<String>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .protocols(["chat.v1"])
        // Drop clients that vanish: ping after 30 s of silence, give up 10 s later.
        .config(
            ServerConfig::new()
                .ping_interval(Duration::from_secs(30))
                .pong_timeout(Duration::from_secs(10)),
        )
        .on_failed_upgrade(|e| eprintln!("upgrade failed: {e}"))
        .on_upgrade(move |ws| member(ws, hub))
}

async fn member(ws: WebSocket<UpgradedIo>, hub: broadcast::Sender<String>) {
    let (mut reader, mut writer) = ws.into_split();
    let mut feed = hub.subscribe();
    let forward = tokio::spawn(async move {
        loop {
            match feed.recv().await {
                Ok(line) => {
                    if writer.send(Message::text(line)).await.is_err() {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let _ = writer.close(CloseCode::POLICY_VIOLATION, "too slow").await;
                    break;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    while let Some(Ok(message)) = reader.recv().await {
        if let Some(text) = message.as_text() {
            let _ = hub.send(text.to_owned());
        }
    }
    if let Some(reason) = reader.close_reason() {
        eprintln!("member left: {reason:?}");
    }
    forward.abort();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let (hub, _) = broadcast::channel::<String>(1024);
    let app = Router::new().route("/chat", get(chat)).with_state(hub);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("chat server on ws://{}/chat", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
