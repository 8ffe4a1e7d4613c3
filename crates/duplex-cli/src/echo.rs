//! `duplex echo`: a WebSocket echo server.

use anyhow::Context as _;
use duplex::server::{accept, ServerConfig};
use duplex::WebSocket;
use futures_core::Stream;
use futures_sink::Sink;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
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
        tokio::spawn(connection_task(stream, peer, Arc::clone(&config)));
    }
}

/// The task serving one connection.
///
/// Written by hand rather than as an `async` block: an idle connection is mostly this future
/// (it lives in the task's allocation), and a compiler-made one keeps room for every value
/// held across an `.await` (the stream and config arguments, the message being echoed, the
/// send and receive futures) next to the `WebSocket`, which made it 400 bytes larger. For the
/// same reason the peer's address is not kept once the handshake is done (32 bytes, only for a
/// debug message): it is asked of the socket when needed.
///
/// The handshake is boxed at the task's first poll rather than here: allocated after the task
/// instead of before it, it leaves fewer holes in the heap once freed (measured with
/// `bench/idle_rss.py`: about 30 bytes less per idle connection with glibc's allocator).
fn connection_task(stream: TcpStream, peer: SocketAddr, config: Arc<ServerConfig>) -> EchoTask {
    EchoTask::Start(stream, peer, config)
}

/// The handshake, boxed so that its state is freed once it is done instead of sizing the task
/// for the connection's whole life.
type Handshake = Pin<Box<dyn Future<Output = Option<WebSocket<TcpStream>>> + Send>>;

// The large variant is the one that lives long; boxing it would add an allocation.
#[allow(clippy::large_enum_variant)]
enum EchoTask {
    /// Not polled yet (see `connection_task`).
    Start(TcpStream, SocketAddr, Arc<ServerConfig>),
    Accepting(Handshake),
    Echoing(WebSocket<TcpStream>),
    Done,
}

impl Future for EchoTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this {
                EchoTask::Start(..) => {
                    if let EchoTask::Start(stream, peer, config) =
                        std::mem::replace(this, EchoTask::Done)
                    {
                        *this = EchoTask::Accepting(Box::pin(async move {
                            accept(stream, &config)
                                .await
                                .map_err(|e| tracing::debug!(%peer, "handshake failed: {e}"))
                                .ok()
                        }));
                    }
                }
                EchoTask::Done => return Poll::Ready(()),
                EchoTask::Accepting(handshake) => match ready!(handshake.as_mut().poll(cx)) {
                    Some(ws) => *this = EchoTask::Echoing(ws),
                    None => return Poll::Ready(()),
                },
                EchoTask::Echoing(ws) => {
                    if let Err(e) = ready!(poll_echo(ws, cx)) {
                        // After a reset the socket may no longer know its peer.
                        let peer = ws.get_ref().peer_addr().ok();
                        tracing::debug!(?peer, "connection ended: {e}");
                    }
                    return Poll::Ready(());
                }
            }
        }
    }
}

/// Echoes messages until the connection ends. The next message is read only once the echo of
/// the previous one is written, so a peer that does not read cannot make us buffer.
fn poll_echo(ws: &mut WebSocket<TcpStream>, cx: &mut Context<'_>) -> Poll<duplex::Result<()>> {
    loop {
        // A failed write means the peer is gone or closing; receiving reported the rest.
        if ready!(Pin::new(&mut *ws).poll_flush(cx)).is_err() {
            return Poll::Ready(Ok(()));
        }
        match ready!(Pin::new(&mut *ws).poll_next(cx)) {
            None => return Poll::Ready(Ok(())),
            Some(Err(e)) => return Poll::Ready(Err(e)),
            Some(Ok(message)) => {
                if Pin::new(&mut *ws).start_send(message).is_err() {
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle echo connection costs its task: tokio's task header and trailer (96 bytes) plus
    /// this future, in an allocation rounded up to 128 bytes. Keeping the future at most 288
    /// bytes keeps the task in 384 (it was 1048 bytes with an `async` block, 1152 in all).
    #[tokio::test]
    async fn connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let task = connection_task(stream, addr, Arc::new(ServerConfig::default()));
        let size = std::mem::size_of_val(&task);
        assert!(size <= 288, "echo connection task is {size} bytes");
    }
}
