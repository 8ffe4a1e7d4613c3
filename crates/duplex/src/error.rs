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
    /// A proxy URL (in [`ProxyConfig`](crate::proxy::ProxyConfig) or a proxy environment
    /// variable) is not usable. The message never repeats the password.
    #[error("invalid proxy URL {0}")]
    ProxyUrl(String),
    /// The proxy could not be reached (TCP connect to the proxy failed).
    #[error("cannot reach the proxy {proxy}: {source}; check its address and port (or HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)")]
    ProxyConnect {
        /// The proxy, password hidden.
        proxy: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP proxy answered `CONNECT` with a non-2xx status other than 401/407: e.g. 403
    /// when its rules forbid the target (tinyproxy without a `ConnectPort` for the target's
    /// port), 502 or 504 when it cannot reach the target.
    #[error("the proxy refused the tunnel with HTTP {status} {reason:?}: it may forbid this host or port (ask its administrator) or be unable to reach it")]
    ProxyRefused {
        /// The HTTP status.
        status: u16,
        /// The proxy's reason phrase (control characters replaced, at most 120 characters).
        reason: String,
    },
    /// The HTTP proxy wants credentials (HTTP 407, or 401 as some proxies answer `CONNECT`)
    /// and none were given, or those given were refused.
    #[error("the proxy requires authentication (HTTP {status}) and {}", if *.credentials_sent { "refused the user name and password given: check them" } else { "none were given: put them in the proxy URL (http://user:password@host:port)" })]
    ProxyAuthRequired {
        /// 407, or 401.
        status: u16,
        /// Whether a `Proxy-Authorization` header was sent.
        credentials_sent: bool,
    },
    /// The proxy broke its protocol: a truncated, oversized or malformed reply, a wrong
    /// version byte (e.g. a SOCKS URL pointing at an HTTP proxy, or the other way round).
    #[error("proxy protocol error: {0}")]
    ProxyProtocol(String),
    /// The SOCKS5 proxy refused `CONNECT` with this reply code (RFC 1928 §6).
    #[error("the SOCKS5 proxy refused the connection: {reply}")]
    SocksRefused {
        /// The reply code.
        reply: crate::proxy::SocksReply,
    },
    /// The SOCKS5 proxy refused the user name and password (RFC 1929 status not 0).
    #[error("the SOCKS5 proxy refused the user name and password: check them in the proxy URL (socks5://user:password@host:port)")]
    SocksAuthFailed,
    /// The SOCKS5 proxy accepts none of the authentication methods offered (reply `X'FF'`).
    #[error("the SOCKS5 proxy accepts none of the authentication methods offered ({}): {}", if *.credentials_sent { "none, user/password" } else { "none" }, if *.credentials_sent { "it needs a method this client lacks (e.g. GSSAPI)" } else { "it probably needs a user name and password in the proxy URL" })]
    SocksNoAcceptableAuth {
        /// Whether user/password authentication was offered.
        credentials_sent: bool,
    },
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
