//! The async layer's error type.

use duplex_proto::{ProtocolError, SendError};

/// Anything that can go wrong on a WebSocket connection.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol (or a limit/timeout hit); the connection was failed with
    /// the close code the error maps to.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The application asked for something the protocol does not allow now.
    #[error("cannot send: {0}")]
    Send(#[from] SendError),
    /// The client's upgrade request was invalid (server side); it was answered with the HTTP
    /// status the error maps to.
    #[error("invalid upgrade request: {0}")]
    BadRequest(#[from] duplex_proto::handshake::HandshakeError),
    /// The server's handshake response was refused (client side), e.g. a non-101 status.
    #[error("handshake refused: {0}")]
    BadResponse(#[from] duplex_proto::handshake::ClientHandshakeError),
    /// The handshake could not be built (invalid header name/value, subprotocol...), or the
    /// extension negotiation failed.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The application (server side) refused the upgrade request with this HTTP status.
    #[error("upgrade refused with HTTP {status}: {reason}")]
    Rejected {
        /// The HTTP status sent.
        status: u16,
        /// Why.
        reason: String,
    },
    /// The opening handshake did not finish in time.
    #[error("handshake timed out after {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// The URL is not a usable `ws://` or `wss://` URL.
    #[error("invalid URL: {0}")]
    Url(String),
    /// `recv` was used with `Config::chunked_receive` on: messages arrive as chunks; use
    /// `recv_chunk` or `next_event`.
    #[error("chunked receive is on: read messages with recv_chunk() or next_event()")]
    ChunkedReceive,
    /// The connection is closed; nothing more can be sent or received.
    #[error("connection closed")]
    Closed,
    /// The TLS handshake failed: e.g. the server's certificate is not trusted or not valid
    /// for the host name, or the peer sent a TLS alert.
    #[cfg(feature = "rustls")]
    #[error("TLS handshake failed: {0}{hint}", hint = crate::tls::error_hint(.0))]
    Tls(#[source] rustls::Error),
    /// TLS certificates, keys or trust roots could not be loaded or were refused.
    #[cfg(feature = "rustls")]
    #[error(transparent)]
    TlsConfig(#[from] crate::tls::TlsConfigError),
    /// hyper could not hand over the connection after the `101 Switching Protocols`.
    #[cfg(feature = "hyper")]
    #[error("HTTP upgrade failed: {0}")]
    Upgrade(#[source] hyper::Error),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;
