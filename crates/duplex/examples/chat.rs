//! A broadcast chat server: every text message a client sends goes to every client.
//!
//! Each connection is split: its reader forwards messages to a shared broadcast channel, its
//! writer sends what the channel carries. A message is framed once ([`PreparedMessage`]) and
//! the same bytes go to every connection. A client too slow to keep up is closed with 1008
//! instead of slowing the others down.
//!
//! ```text
//! cargo run -p duplex --example chat -- 127.0.0.1:9003
//! cargo run -p duplex --example client -- ws://127.0.0.1:9003/   (in two terminals)
//! ```

use duplex::proto::prepared::PreparedMessage;
use duplex::server::{accept, ServerConfig};
use duplex::{CloseCode, Message};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9003".into());
    let listener = TcpListener::bind(&addr).await?;
    let config = Arc::new(ServerConfig::default());
    // Up to 1024 messages may wait for the slowest reader before it is dropped.
    let (hub, _) = broadcast::channel::<Arc<PreparedMessage>>(1024);
    println!("chat server on ws://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let config = Arc::clone(&config);
        let hub = hub.clone();
        tokio::spawn(async move {
            let Ok(ws) = accept(stream, &config).await else {
                return;
            };
            let (mut reader, mut writer) = ws.into_split();
            let mut feed = hub.subscribe();
            let forward = tokio::spawn(async move {
                loop {
                    match feed.recv().await {
                        Ok(prepared) => {
                            if writer.send_prepared(&prepared).await.is_err() {
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
                if let Message::Text(text) = message {
                    let line = Message::from(format!("{peer}: {text}"));
                    let _ = hub.send(Arc::new(PreparedMessage::new(&line)));
                }
            }
            forward.abort();
        });
    }
}
