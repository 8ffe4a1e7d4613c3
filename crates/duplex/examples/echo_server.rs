//! A WebSocket echo server.
//!
//! ```text
//! cargo run -p duplex --example echo_server -- 127.0.0.1:9002
//! ```

use duplex::server::{accept, ServerConfig};
use std::sync::Arc;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9002".into());
    let listener = TcpListener::bind(&addr).await?;
    let config = Arc::new(ServerConfig::default());
    println!("echo server on ws://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            let mut ws = match accept(stream, &config).await {
                Ok(ws) => ws,
                Err(e) => return eprintln!("{peer}: handshake failed: {e}"),
            };
            while let Some(message) = ws.recv().await {
                match message {
                    Ok(m) => {
                        if ws.send(m).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("{peer}: {e}");
                        break;
                    }
                }
            }
        });
    }
}
