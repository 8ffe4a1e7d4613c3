//! `duplex echo`: a WebSocket echo server.

use anyhow::Context;
use duplex::server::{accept, ServerConfig};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

#[derive(clap::Args)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Largest message accepted, in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    max_message_size: usize,
    /// Accept permessage-deflate (RFC 7692) when the client offers it.
    #[arg(long)]
    deflate: bool,
    /// Worker threads (0: one per core; 1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub fn run(args: EchoArgs) -> anyhow::Result<()> {
    let runtime = crate::runtime::build(args.threads)?;
    runtime.block_on(serve(args))
}

async fn serve(args: EchoArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let mut config = ServerConfig::default();
    config.protocol.max_message_size = args.max_message_size;
    config.protocol.max_frame_size = args.max_message_size;
    config.deflate.enabled = args.deflate;
    let config = Arc::new(config);
    tracing::info!("echo server listening on ws://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let config = Arc::clone(&config);
        tokio::spawn(async move {
            if let Err(e) = echo_connection(stream, &config).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

async fn echo_connection(stream: TcpStream, config: &ServerConfig) -> duplex::Result<()> {
    // Boxed: the handshake's state is then freed once it is done instead of sizing the
    // connection's task for its whole life (idle connections are mostly that task).
    let mut ws = Box::pin(accept(stream, config)).await?;
    while let Some(message) = ws.recv().await {
        let message = message?;
        // A failed send means the peer is gone or closing; recv reports the rest.
        if ws.send(message).await.is_err() {
            break;
        }
    }
    Ok(())
}
