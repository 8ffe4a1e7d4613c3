//! What the three peer echo servers share: the command line, the runtime and the accept loop.
//!
//! Every server is started as `BIN --listen 127.0.0.1:PORT`, runs a single-threaded tokio
//! runtime (so it can be pinned to one core like `duplex echo --threads 1`), sets TCP_NODELAY on
//! every accepted socket and echoes whole text/binary messages of up to [`MAX_MESSAGE`] bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Largest message accepted (and echoed), as `duplex echo` does by default.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Pause after a failed accept (e.g. out of file descriptors) before trying again, so that
/// the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// What a peer binary says about itself in `--help` and errors.
pub struct Peer {
    /// Binary name, e.g. `peer-tungstenite`.
    pub name: &'static str,
    /// The crate and version it wraps, e.g. `tokio-tungstenite 0.30`.
    pub library: &'static str,
}

/// Parses `--listen ADDR` (required). `--deflate` is refused: none of the peer crates
/// implements permessage-deflate in its latest release.
fn parse_args(peer: &Peer) -> Result<Option<SocketAddr>, String> {
    let mut listen = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args
                    .next()
                    .ok_or("--listen needs an address, e.g. --listen 127.0.0.1:9002")?;
                let addr = value
                    .parse()
                    .map_err(|_| format!("--listen: {value:?} is not an IP:PORT address"))?;
                listen = Some(addr);
            }
            "--deflate" => {
                return Err(format!(
                    "--deflate: {} does not implement permessage-deflate",
                    peer.library
                ))
            }
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    listen
        .map(Some)
        .ok_or_else(|| "--listen ADDR is required".to_owned())
}

/// Runs the peer: parses the command line, then accepts connections on a single-threaded
/// runtime forever, handing each (TCP_NODELAY set) to `handle` in its own task.
pub fn main<F, Fut>(peer: Peer, handle: F) -> ExitCode
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let usage = format!(
        "usage: {} --listen IP:PORT\nA WebSocket echo server on {} for the side-by-side benchmark.",
        peer.name, peer.library
    );
    let listen = match parse_args(&peer) {
        Ok(Some(addr)) => addr,
        Ok(None) => {
            println!("{usage}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}: {e}\n{usage}", peer.name);
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the tokio runtime: {e}", peer.name);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}: cannot listen on {listen}: {e}", peer.name);
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "{} ({}) listening on ws://{listen}",
            peer.name, peer.library
        );
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    // Small echoes must not wait for Nagle's algorithm; ours sets it too.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(handle(stream));
                }
                Err(e) => {
                    eprintln!("{}: accept failed: {e}", peer.name);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}
