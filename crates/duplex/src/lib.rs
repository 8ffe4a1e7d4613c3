//! # duplex: async WebSocket client and server for tokio
//!
//! A thin runtime over the sans-IO [`duplex_proto`] core: this crate owns sockets, buffers and
//! wake-ups; every protocol decision is made in the core.
#![warn(missing_docs)]

pub mod client;
mod close_reason;
mod driver;
pub mod error;
pub mod proxy;
pub mod reconnect;
pub mod server;
pub mod split;
mod stream;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;
pub mod websocket;

pub use client::ClientConfig;
pub use close_reason::CloseReason;
pub use duplex_proto as proto;
pub use duplex_proto::{
    CloseCode, CloseFrame, Compression, Config, Event, Message, MessageKind, Role, Utf8Bytes,
};
pub use error::{Error, Result};
pub use reconnect::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
pub use server::ServerConfig;
pub use split::{ReuniteError, WsReader, WsWriter};
pub use stream::MaybeTlsStream;
pub use websocket::{Chunk, TrySendError, WebSocket};

/// Connects to a `ws://` or `wss://` URL and runs the opening handshake: the one client
/// entry point for both schemes, with one return type ([`MaybeTlsStream`]: plain TCP or TLS).
///
/// `wss://` checks the server's certificate against [`ClientConfig::tls`] (the Mozilla roots
/// when `None`); it needs the `rustls` feature (on by default). The connection goes through
/// [`ClientConfig::proxy`] when one is set. TCP connect, proxy tunnel, TLS and the WebSocket
/// handshake together must finish within [`ClientConfig::handshake_timeout`].
///
/// ```no_run
/// # async fn demo() -> duplex::Result<()> {
/// use duplex::ClientConfig;
/// for url in ["ws://127.0.0.1:9001/", "wss://example.com/chat"] {
///     let (mut ws, _negotiated) = duplex::connect(url, &ClientConfig::default()).await?;
///     println!("{url}: TLS {}", ws.get_ref().is_tls());
///     ws.send("hello").await?;
/// }
/// # Ok(()) }
/// ```
///
/// [`client::connect`] (`ws://` only, a bare `TcpStream`) and [`client::connect_tls`] (this
/// function under its older name) remain.
///
/// Cancel-safety: cancel-safe: dropping it closes the half-open connection.
pub async fn connect(
    url: &str,
    config: &ClientConfig,
) -> Result<(
    WebSocket<MaybeTlsStream<tokio::net::TcpStream>>,
    proto::handshake::Negotiated,
)> {
    client::connect_any(url, config).await
}
