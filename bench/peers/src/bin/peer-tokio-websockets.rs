//! Echo server on tokio-websockets: `peer-tokio-websockets --listen IP:PORT`.

use futures_util::{SinkExt, StreamExt};
use peers::{Peer, MAX_MESSAGE};
use std::process::ExitCode;
use tokio::net::TcpStream;
use tokio_websockets::{Config, Error, Limits, ServerBuilder};

fn main() -> ExitCode {
    peers::main(
        Peer {
            name: "peer-tokio-websockets",
            library: "tokio-websockets",
        },
        // The crate's own benchmark server runs each connection unconstrained by tokio's
        // cooperative budget; so does this one.
        |stream| {
            tokio::task::unconstrained(async move {
                let _ = echo(stream).await;
            })
        },
    )
}

async fn echo(stream: TcpStream) -> Result<(), Error> {
    let (_request, mut ws) = ServerBuilder::new()
        // Echo a message as one frame, as received (the default splits at 4 MiB).
        .config(Config::default().frame_size(MAX_MESSAGE))
        .limits(Limits::default().max_payload_len(Some(MAX_MESSAGE)))
        .accept(stream)
        .await?;
    // Pings and the closing handshake are handled by the stream itself.
    while let Some(message) = ws.next().await {
        let message = message?;
        if message.is_text() || message.is_binary() {
            ws.send(message).await?;
        }
    }
    Ok(())
}
