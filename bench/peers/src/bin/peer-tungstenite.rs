//! Echo server on tokio-tungstenite: `peer-tungstenite --listen IP:PORT`.

use futures_util::{SinkExt, StreamExt};
use peers::{Peer, MAX_MESSAGE};
use std::process::ExitCode;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Error;

fn main() -> ExitCode {
    peers::main(
        Peer {
            name: "peer-tungstenite",
            library: "tokio-tungstenite",
        },
        |stream| async move {
            let _ = echo(stream).await;
        },
    )
}

async fn echo(stream: TcpStream) -> Result<(), Error> {
    // Defaults otherwise (128 KiB read and write buffers); the frame limit defaults to 16 MiB,
    // raised so that a 64 MiB message may come in one frame.
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    // Pings are answered and the closing handshake completed by tungstenite itself; the
    // stream ends after the close.
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            // `send` flushes: one message in flight per connection, it must go out now.
            ws.send(message).await?;
        }
    }
    Ok(())
}
