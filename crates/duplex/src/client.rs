//! Connecting to WebSocket servers: the client side of the opening handshake.

use crate::error::{Error, Result};
use crate::proxy::{is_secure, Proxy, ProxyConfig};
use crate::stream::MaybeTlsStream;
use crate::websocket::WebSocket;
use bytes::BytesMut;
use duplex_proto::deflate::{
    client_offer, negotiate_client, DeflateCodec, DeflateConfig, PERMESSAGE_DEFLATE,
};
use duplex_proto::handshake::{
    build_request, parse_response, validate_response, ClientRequest, HandshakeLimits, Negotiated,
};
use duplex_proto::{Config, Connection, Role};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Limits and timers of the connection.
    pub protocol: Config,
    /// Limits on the response head.
    pub handshake_limits: HandshakeLimits,
    /// Subprotocols to offer, most preferred first.
    pub subprotocols: Vec<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// The `Origin` header (browsers send one; servers may check it). Default `None`.
    pub origin: Option<String>,
    /// Time allowed for TCP connect (and the proxy's tunnel, TLS) plus the opening handshake.
    /// Default 10 s.
    pub handshake_timeout: Duration,
    /// permessage-deflate: offered when `enabled` (off by default: see [`DeflateConfig`]).
    pub deflate: DeflateConfig,
    /// TLS settings for `wss://` URLs in [`connect_tls`]. `None` (the default) trusts the
    /// Mozilla roots ([`webpki_client_config`](crate::tls::webpki_client_config)). Set it
    /// to trust a private CA ([`client_config_with_roots`](crate::tls::client_config_with_roots))
    /// or the system store. A configuration you build yourself should offer ALPN `http/1.1`
    /// or nothing.
    #[cfg(feature = "rustls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Which proxy to connect through: [`ProxyConfig::Direct`] (the default: the environment
    /// is not read), [`ProxyConfig::Always`] or [`ProxyConfig::FromEnv`] (see the
    /// [`proxy`](crate::proxy) module).
    pub proxy: ProxyConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            protocol: Config::default(),
            handshake_limits: HandshakeLimits::default(),
            subprotocols: Vec::new(),
            headers: Vec::new(),
            origin: None,
            handshake_timeout: Duration::from_secs(10),
            deflate: DeflateConfig::default(),
            #[cfg(feature = "rustls")]
            tls: None,
            proxy: ProxyConfig::Direct,
        }
    }
}

impl ClientConfig {
    /// Default settings, to refine with the builder methods below.
    ///
    /// ```
    /// use duplex::client::ClientConfig;
    /// use std::time::Duration;
    /// let config = ClientConfig::new()
    ///     .header("Authorization", "Bearer t0k3n")
    ///     .subprotocol("chat.v2")
    ///     .origin("https://example.com")
    ///     .handshake_timeout(Duration::from_secs(5))
    ///     .ping_interval(Duration::from_secs(20))
    ///     .pong_timeout(Duration::from_secs(10))
    ///     .idle_timeout(Duration::from_secs(300))
    ///     .close_timeout(Duration::from_secs(5))
    ///     .deflate(true);
    /// assert_eq!(config.subprotocols, ["chat.v2"]);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Offers a subprotocol (call again for more, most preferred first).
    pub fn subprotocol(mut self, protocol: impl Into<String>) -> Self {
        self.subprotocols.push(protocol.into());
        self
    }

    /// Sets the `Origin` header.
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// Time allowed for connecting (TCP, TLS) and the opening handshake.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    crate::server::protocol_builders!();

    /// Offers permessage-deflate with the default parameters (or stops offering it).
    pub fn deflate(mut self, enabled: bool) -> Self {
        self.deflate.enabled = enabled;
        self
    }

    /// Uses this TLS configuration for `wss://` (default: webpki roots).
    #[cfg(feature = "rustls")]
    pub fn tls(mut self, config: std::sync::Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects through this proxy, whatever the URL.
    ///
    /// ```
    /// use duplex::client::ClientConfig;
    /// use duplex::proxy::Proxy;
    /// let config = ClientConfig::new().proxy(Proxy::parse("http://user:pass@10.0.0.1:3128")?);
    /// # Ok::<(), duplex::Error>(())
    /// ```
    pub fn proxy(mut self, proxy: Proxy) -> Self {
        self.proxy = ProxyConfig::Always(proxy);
        self
    }

    /// Chooses the proxy from `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` (and
    /// their lower-case forms) at each connection, as curl does: see
    /// [`Proxy::from_env_for`].
    ///
    /// ```
    /// use duplex::client::ClientConfig;
    /// use duplex::proxy::ProxyConfig;
    /// let config = ClientConfig::new().proxy_from_env();
    /// assert_eq!(config.proxy, ProxyConfig::FromEnv);
    /// ```
    pub fn proxy_from_env(mut self) -> Self {
        self.proxy = ProxyConfig::FromEnv;
        self
    }
}

/// The parts of a `ws://` URL the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name or address, without brackets.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `Host` header value (with `:port` when not the default).
    pub host_header: String,
    /// Path and query.
    pub path_and_query: String,
}

impl Target {
    /// Parses a `ws://` URL (`wss://` needs TLS, which the TLS-enabled API handles).
    pub fn parse(url: &str) -> Result<Target> {
        let url = url::Url::parse(url).map_err(|e| Error::Url(format!("{url}: {e}")))?;
        let default_port = match url.scheme() {
            "ws" => 80,
            "wss" => 443,
            other => return Err(Error::Url(format!("scheme {other:?} is not ws or wss"))),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(h) => h.to_string(),
            None => return Err(Error::Url("URL has no host".into())),
        };
        let port = url.port().unwrap_or(default_port);
        let bracketed = match url.host() {
            Some(url::Host::Ipv6(_)) => format!("[{host}]"),
            _ => host.clone(),
        };
        let host_header = if port == default_port {
            bracketed
        } else {
            format!("{bracketed}:{port}")
        };
        let mut path_and_query = url.path().to_owned();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Ok(Target {
            host,
            port,
            host_header,
            path_and_query,
        })
    }
}

/// Connects to a `ws://` URL over TCP (directly, or through [`ClientConfig::proxy`]) and runs
/// the opening handshake, giving the bare `TcpStream`.
///
/// `wss://` URLs are refused: use [`crate::connect`] (or its older name [`connect_tls`]), which
/// takes both schemes and returns a [`MaybeTlsStream`].
///
/// Cancel-safety: cancel-safe: dropping it closes the half-open connection; nothing is shared.
pub async fn connect(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<TcpStream>, Negotiated)> {
    let target = Target::parse(url)?;
    if is_secure(url) {
        return Err(Error::Url(
            "wss:// needs TLS: use duplex::connect (or client::connect_tls), which takes both \
             ws:// and wss:// (feature \"rustls\")"
                .into(),
        ));
    }
    let proxy = config.proxy.proxy_for(url)?;
    let timeout = config.handshake_timeout;
    tokio::time::timeout(timeout, async {
        let stream = open_tcp(&target, proxy.as_ref()).await?;
        handshake_inner(stream, &target, config).await
    })
    .await
    .map_err(|_| Error::HandshakeTimeout(timeout))?
}

/// Connects to a `wss://` URL over TLS, or to a `ws://` URL over plain TCP, and runs the
/// opening handshake: the same function as [`crate::connect`], under its older name (kept,
/// not deprecated).
///
/// For `wss://` the certificate is checked against [`ClientConfig::tls`] (the Mozilla roots
/// when `None`) and must be valid for the URL's host, which is also sent as SNI (not for an
/// IP address). ALPN offers `http/1.1`. TCP connect, the proxy's tunnel when
/// [`ClientConfig::proxy`] names one (TLS then runs inside it, to the URL's host), TLS and the
/// WebSocket handshake together must finish within [`ClientConfig::handshake_timeout`]. A
/// certificate or TLS failure is
/// [`Error::Tls`].
///
/// ```no_run
/// # async fn demo() -> duplex::Result<()> {
/// use duplex::client::{connect_tls, ClientConfig};
/// let (mut ws, _) = connect_tls("wss://example.com/chat", &ClientConfig::default()).await?;
/// ws.send("hello").await?;
/// println!("{:?}", ws.recv().await);
/// # Ok(()) }
/// ```
///
/// Cancel-safety: cancel-safe, as `connect`.
#[cfg(feature = "rustls")]
pub async fn connect_tls(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Negotiated)> {
    connect_any(url, config).await
}

/// What [`crate::connect`] does: one return type for `ws://` and `wss://`.
pub(crate) async fn connect_any(
    url: &str,
    config: &ClientConfig,
) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Negotiated)> {
    let target = Target::parse(url)?;
    let secure = is_secure(url);
    #[cfg(not(feature = "rustls"))]
    if secure {
        return Err(Error::Url(
            "wss:// needs TLS: build duplex with the \"rustls\" feature".into(),
        ));
    }
    let proxy = config.proxy.proxy_for(url)?;
    #[cfg(feature = "rustls")]
    let tls_config = match (&config.tls, secure) {
        (_, false) => None,
        (Some(tls), true) => Some(tls.clone()),
        (None, true) => Some(crate::tls::webpki_client_config()?),
    };
    let timeout = config.handshake_timeout;
    tokio::time::timeout(timeout, async {
        let tcp = open_tcp(&target, proxy.as_ref()).await?;
        #[cfg(feature = "rustls")]
        let stream = match tls_config {
            Some(tls) => MaybeTlsStream::Tls(Box::new(
                crate::tls::tls_connect(tcp, &target.host, tls).await?,
            )),
            None => MaybeTlsStream::Plain(tcp),
        };
        #[cfg(not(feature = "rustls"))]
        let stream = MaybeTlsStream::Plain(tcp);
        handshake_inner(stream, &target, config).await
    })
    .await
    .map_err(|_| Error::HandshakeTimeout(timeout))?
}

/// A TCP connection to the target: direct, or a tunnel through `proxy`.
async fn open_tcp(target: &Target, proxy: Option<&Proxy>) -> Result<TcpStream> {
    match proxy {
        Some(proxy) => proxy.tunnel(target).await,
        None => {
            let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
    }
}

/// The outcome of [`handshake_raw`]: the stream right after the server's 101 response.
#[derive(Debug)]
pub struct RawHandshake<S> {
    /// The stream, positioned after the handshake response.
    pub stream: S,
    /// Bytes read past the response: the start of the server's first frames (usually empty).
    pub leftover: BytesMut,
    /// What was agreed (subprotocol, extensions).
    pub negotiated: Negotiated,
}

/// Runs the opening handshake only, and gives the stream back instead of wrapping it in a
/// [`WebSocket`]: for callers that run the frame protocol themselves (a load generator with a
/// hand-tuned loop built on [`duplex_proto::frame`] and [`duplex_proto::mask`]).
///
/// The response is validated as in [`handshake`], and must arrive within
/// [`ClientConfig::handshake_timeout`]. When `config.deflate.enabled` the offer is
/// sent, and an agreement shows in `negotiated.extensions`: the caller must then implement
/// permessage-deflate itself, so leave it off unless it does.
///
/// Cancel-safety: as [`handshake`].
pub async fn handshake_raw<S>(
    stream: S,
    target: &Target,
    config: &ClientConfig,
) -> Result<RawHandshake<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = config.handshake_timeout;
    let (stream, mut buf, consumed, negotiated) =
        tokio::time::timeout(timeout, exchange(stream, target, config))
            .await
            .map_err(|_| Error::HandshakeTimeout(timeout))??;
    Ok(RawHandshake {
        stream,
        leftover: buf.split_off(consumed),
        negotiated,
    })
}

/// Sends the request and validates the response: the stream, the bytes read, how many of them
/// the response took, and what was agreed.
async fn exchange<S>(
    mut stream: S,
    target: &Target,
    config: &ClientConfig,
) -> Result<(S, BytesMut, usize, Negotiated)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = ClientRequest {
        host: target.host_header.clone(),
        path_and_query: target.path_and_query.clone(),
        protocols: config.subprotocols.clone(),
        headers: config.headers.clone(),
        origin: config.origin.clone(),
        extensions: if config.deflate.enabled {
            vec![client_offer(&config.deflate)]
        } else {
            Vec::new()
        },
    };
    let (bytes, key) = build_request(&request).map_err(|e| Error::Handshake(e.to_string()))?;
    stream.write_all(&bytes).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let (response, consumed) = loop {
        match parse_response(&buf, &config.handshake_limits) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(Error::Handshake(
                "server closed the connection before its response ended".into(),
            ));
        }
    };
    let offered: &[&str] = if config.deflate.enabled {
        &[PERMESSAGE_DEFLATE]
    } else {
        &[]
    };
    let negotiated = validate_response(&response, &key, &config.subprotocols, offered)?;
    Ok((stream, buf, consumed, negotiated))
}

/// Runs the client handshake over a stream the caller connected (TCP, TLS, a proxy tunnel).
///
/// The handshake must finish within [`ClientConfig::handshake_timeout`], else
/// [`Error::HandshakeTimeout`] (the time spent connecting `stream` is not counted: wrap that
/// in your own timeout).
///
/// ```no_run
/// # async fn demo() -> duplex::Result<()> {
/// use duplex::client::{handshake, ClientConfig, Target};
/// use std::time::Duration;
/// let target = Target::parse("ws://127.0.0.1:9001/chat")?;
/// let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await?;
/// let config = ClientConfig::new().handshake_timeout(Duration::from_secs(3));
/// let (mut ws, _) = handshake(tcp, &target, &config).await?;
/// ws.send("hello").await?;
/// # Ok(()) }
/// ```
///
/// Cancel-safety: dropping it leaves `stream` (consumed) mid-handshake: the connection is lost, nothing else.
pub async fn handshake<S>(
    stream: S,
    target: &Target,
    config: &ClientConfig,
) -> Result<(WebSocket<S>, Negotiated)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let timeout = config.handshake_timeout;
    tokio::time::timeout(timeout, handshake_inner(stream, target, config))
        .await
        .map_err(|_| Error::HandshakeTimeout(timeout))?
}

/// [`handshake`] without its timeout (the callers here have one around the connect too).
async fn handshake_inner<S>(
    stream: S,
    target: &Target,
    config: &ClientConfig,
) -> Result<(WebSocket<S>, Negotiated)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (stream, buf, consumed, negotiated) = exchange(stream, target, config).await?;
    let mut conn = Connection::new(
        Role::Client,
        crate::websocket::shared_config(&config.protocol),
        tokio::time::Instant::now().into_std(),
    );
    if config.deflate.enabled {
        // An invalid permessage-deflate response fails the connection (RFC 7692 §5.1).
        let agreed = negotiate_client(&negotiated.extensions, &config.deflate)
            .map_err(|e| Error::Handshake(e.to_string()))?;
        if let Some(agreed) = agreed {
            conn.set_deflate(DeflateCodec::new(agreed, &config.deflate));
        }
    }
    let ws = WebSocket::from_connection(stream, conn, &buf[consumed..])
        .with_subprotocol(negotiated.protocol.clone());
    Ok((ws, negotiated))
}
