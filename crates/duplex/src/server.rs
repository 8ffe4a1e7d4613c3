//! Accepting WebSocket connections: the server side of the opening handshake over any stream.

use crate::error::{Error, Result};
use crate::websocket::WebSocket;
use bytes::BytesMut;
use duplex_proto::deflate::{negotiate_server, DeflateCodec, DeflateConfig};
use duplex_proto::handshake::{
    accept_response, parse_request, reject_response, select_protocol, validate_request, Accept,
    HandshakeLimits, Request,
};
use duplex_proto::{Config, Connection, Role};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Server settings: the protocol limits plus handshake policy.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Limits and timers of each connection.
    pub protocol: Config,
    /// Limits on the request head.
    pub handshake_limits: HandshakeLimits,
    /// Subprotocols we speak, most preferred first.
    pub subprotocols: Vec<String>,
    /// How long a client may take to send its request. Default 10 s.
    pub handshake_timeout: Duration,
    /// permessage-deflate policy (off by default: see [`DeflateConfig`]).
    pub deflate: DeflateConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            protocol: Config::default(),
            handshake_limits: HandshakeLimits::default(),
            subprotocols: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            deflate: DeflateConfig::default(),
        }
    }
}

/// The builder methods for the connection settings (`protocol: Config`) that `ClientConfig`
/// and `ServerConfig` share.
macro_rules! protocol_builders {
    () => {
        /// Replaces all the connection settings (limits and timers) at once.
        pub fn protocol(mut self, protocol: duplex_proto::Config) -> Self {
            self.protocol = protocol;
            self
        }

        /// Sends a heartbeat ping when nothing was received for this long (`Config::ping_interval`;
        /// default none). With no answer (pong or any frame) within
        /// [`pong_timeout`](Self::pong_timeout), the connection fails with 1011.
        ///
        /// When a dead peer (holding the connection open, sending nothing) is reported: the
        /// failure happens `ping_interval + pong_timeout` after the last frame received; our
        /// 1011 close frame is queued, and `recv` returns
        /// `Err(Error::Protocol(ProtocolError::PongTimeout(_)))` once the closing procedure is
        /// over. A server shuts its side down at once and then reads what the peer still
        /// sends for up to `min(close_timeout, 2 s)`; a client first waits up to
        /// `close_timeout` for the server to close TCP, then does the same. So the error comes
        /// `ping_interval + pong_timeout + min(close_timeout, 2 s)` after the last traffic on a
        /// server, and `ping_interval + pong_timeout + close_timeout + min(close_timeout, 2 s)`
        /// on a client (sooner if the peer closes the connection); lower
        /// [`close_timeout`](Self::close_timeout) to shorten it. Afterwards `close_reason()`
        /// is `CloseReason::Failed(ProtocolError::PongTimeout(_))`.
        pub fn ping_interval(mut self, interval: std::time::Duration) -> Self {
            self.protocol.ping_interval = Some(interval);
            self
        }

        /// How long to wait for the answer to a heartbeat ping (`Config::pong_timeout`;
        /// default 20 s). See [`ping_interval`](Self::ping_interval).
        pub fn pong_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.protocol.pong_timeout = timeout;
            self
        }

        /// Closes the connection with 1001 `"idle timeout"` after this long without a message
        /// either way (`Config::idle_timeout`; default none).
        pub fn idle_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.protocol.idle_timeout = Some(timeout);
            self
        }

        /// How long the closing handshake may take before the connection is dropped
        /// (`Config::close_timeout`).
        pub fn close_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.protocol.close_timeout = timeout;
            self
        }

        /// Largest message accepted, in bytes (`Config::max_message_size`).
        pub fn max_message_size(mut self, bytes: usize) -> Self {
            self.protocol.max_message_size = bytes;
            self
        }

        /// Largest frame accepted, in bytes (`Config::max_frame_size`).
        pub fn max_frame_size(mut self, bytes: usize) -> Self {
            self.protocol.max_frame_size = bytes;
            self
        }
    };
}
pub(crate) use protocol_builders;

impl ServerConfig {
    /// Default settings, to refine with the builder methods below.
    ///
    /// ```
    /// use duplex::ServerConfig;
    /// use std::time::Duration;
    /// let config = ServerConfig::new()
    ///     .subprotocol("chat.v2")
    ///     .handshake_timeout(Duration::from_secs(5))
    ///     .ping_interval(Duration::from_secs(20))
    ///     .pong_timeout(Duration::from_secs(10))
    ///     .idle_timeout(Duration::from_secs(300))
    ///     .close_timeout(Duration::from_secs(5))
    ///     .max_message_size(1 << 20)
    ///     .deflate(true);
    /// assert_eq!(config.protocol.pong_timeout, Duration::from_secs(10));
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a subprotocol we speak (call again for more, most preferred first).
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocols.push(protocol.into());
        self
    }

    /// How long a client may take to send its request.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Accepts permessage-deflate when offered, with the default parameters (or refuses it).
    pub fn deflate(mut self, enabled: bool) -> Self {
        self.deflate.enabled = enabled;
        self
    }

    protocol_builders!();
}

/// An application's refusal of an upgrade request (e.g. a bad `Origin` or missing auth).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status, e.g. 403.
    pub status: u16,
    /// Plain-text body explaining why.
    pub body: String,
    /// Extra response headers (e.g. `WWW-Authenticate`).
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    /// A rejection with this status and explanation.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Rejection {
            status,
            body: body.into(),
            headers: Vec::new(),
        }
    }
}

/// Runs the server side of the opening handshake on `stream` and returns the connection.
///
/// A bad request is answered with the HTTP status its error maps to (400, 405, 426, 431)
/// before the error is returned.
///
/// Cancel-safety: dropping it drops the stream mid-handshake; nothing else is affected.
pub async fn accept<S>(stream: S, config: &ServerConfig) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_with(stream, config, |_| Ok(Vec::new())).await
}

/// Like [`accept`], letting the application inspect the request (path, `Origin`, cookies...)
/// once it is a valid upgrade: return extra response headers to accept, or a [`Rejection`]
/// to answer with that status (the error then names it).
///
/// ```no_run
/// # async fn demo(stream: tokio::net::TcpStream) -> duplex::Result<()> {
/// use duplex::server::{accept_with, Rejection, ServerConfig};
/// let ws = accept_with(stream, &ServerConfig::default(), |request| {
///     match request.origin() {
///         Some("https://example.com") => Ok(Vec::new()),
///         _ => Err(Rejection::new(403, "origin not allowed")),
///     }
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// Cancel-safety: as `accept`.
pub async fn accept_with<S, F>(stream: S, config: &ServerConfig, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> std::result::Result<Vec<(String, String)>, Rejection>,
{
    tokio::time::timeout(
        config.handshake_timeout,
        accept_inner(stream, config, decide),
    )
    .await
    .map_err(|_| Error::HandshakeTimeout(config.handshake_timeout))?
}

async fn accept_inner<S, F>(mut stream: S, config: &ServerConfig, decide: F) -> Result<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&Request) -> std::result::Result<Vec<(String, String)>, Rejection>,
{
    let mut buf = BytesMut::with_capacity(1024);
    let (request, consumed) = loop {
        match parse_request(&buf, &config.handshake_limits) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => {
                let _ = stream.write_all(&e.to_response()).await;
                let _ = stream.shutdown().await;
                return Err(e.into());
            }
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Error::Handshake(
                "connection closed before the request head ended".into(),
            ));
        }
    };
    let offer = match validate_request(&request) {
        Ok(offer) => offer,
        Err(e) => {
            let _ = stream.write_all(&e.to_response()).await;
            let _ = stream.shutdown().await;
            return Err(e.into());
        }
    };
    let extra_headers = match decide(&request) {
        Ok(headers) => headers,
        Err(rejection) => {
            let response = reject_response(rejection.status, &rejection.body, &rejection.headers)
                .map_err(|e| Error::Handshake(e.to_string()))?;
            let _ = stream.write_all(&response).await;
            let _ = stream.shutdown().await;
            return Err(Error::Rejected {
                status: rejection.status,
                reason: rejection.body,
            });
        }
    };
    let supported: Vec<&str> = config.subprotocols.iter().map(String::as_str).collect();
    let deflate = if config.deflate.enabled {
        negotiate_server(&offer.extensions, &config.deflate)
    } else {
        None
    };
    let accept = Accept {
        protocol: select_protocol(&offer.protocols, &supported).map(str::to_owned),
        extensions: deflate.iter().map(|(_, ext)| ext.clone()).collect(),
        headers: extra_headers,
    };
    let response = accept_response(&offer, &accept).map_err(|e| Error::Handshake(e.to_string()))?;
    stream.write_all(&response).await?;
    let mut conn = Connection::new(
        Role::Server,
        crate::websocket::shared_config(&config.protocol),
        tokio::time::Instant::now().into_std(),
    );
    if let Some((agreed, _)) = deflate {
        conn.set_deflate(DeflateCodec::new(agreed, &config.deflate));
    }
    Ok(
        WebSocket::from_connection(stream, conn, &buf[consumed..])
            .with_subprotocol(accept.protocol),
    )
}
