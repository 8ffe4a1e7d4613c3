//! WebSocket upgrades inside hyper 1.x (and, with the `axum` feature, axum 0.8) servers.
//!
//! The HTTP server parses the request; this module checks it with the same rules as
//! [`server::accept`](crate::server::accept) (those of
//! [`duplex_proto::handshake::validate_request`]), answers `101 Switching Protocols` with the
//! subprotocol and permessage-deflate settings [`ServerConfig`] agrees to, and turns the
//! connection hyper hands over into a [`WebSocket`].
//!
//! With plain hyper, call [`upgrade`] in your service, return the response, and await the
//! [`PendingWebSocket`] in a task. The connection must be served with upgrades enabled
//! (`hyper::server::conn::http1::Builder::serve_connection(..).with_upgrades()`).
//!
//! ```no_run
//! use bytes::Bytes;
//! use duplex::server::ServerConfig;
//! use duplex::upgrade::{upgrade, ResponseBody};
//! use http::{Request, Response};
//!
//! async fn service(
//!     mut req: Request<hyper::body::Incoming>,
//! ) -> Result<Response<ResponseBody>, std::convert::Infallible> {
//!     let (response, pending) = match upgrade(&mut req, &ServerConfig::default()) {
//!         Ok(accepted) => accepted,
//!         Err(refused) => return Ok(refused.to_response()),
//!     };
//!     tokio::spawn(async move {
//!         let Ok(mut ws) = pending.await else { return };
//!         while let Some(Ok(message)) = ws.recv().await {
//!             if ws.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     });
//!     Ok(response)
//! }
//! ```
//!
//! [`ServerConfig::handshake_timeout`] and [`ServerConfig::handshake_limits`] do not apply
//! here: reading the request head is hyper's job, under hyper's own limits.

use crate::error::{Error, Result};
use crate::server::ServerConfig;
use crate::websocket::WebSocket;
use bytes::Bytes;
use duplex_proto::deflate::{negotiate_server, Agreed, DeflateCodec, DeflateConfig};
use duplex_proto::extension::format_extensions;
use duplex_proto::handshake::{
    accept_key, select_protocol, validate_request, ClientOffer, HandshakeError, Headers, Request,
    WEBSOCKET_VERSION,
};
use duplex_proto::{Config, Connection, Role};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use http_body_util::Full;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

#[cfg(feature = "axum")]
pub mod axum;

/// The body type of the responses built here (empty for `101`, the reason for a refusal).
pub type ResponseBody = Full<Bytes>;

/// The stream a WebSocket accepted through hyper runs over.
pub type UpgradedIo = TokioIo<Upgraded>;

/// Checks `req` as a WebSocket opening handshake and, if it is one, builds the
/// `101 Switching Protocols` response and the future that yields the connection.
///
/// The subprotocol is the first of `config.subprotocols` the client offered (none if there
/// is no overlap); permessage-deflate is agreed when `config.deflate.enabled` and the client
/// offered acceptable parameters. Send the response, then await the [`PendingWebSocket`]:
/// hyper hands the connection over once the `101` is written.
///
/// A refused request is left untouched and the error says why; answer it with
/// [`UpgradeError::to_response`] (400, 405 with `Allow: GET`, 426 with
/// `Sec-WebSocket-Version: 13`, ...). The [`OnUpgrade`] handle is taken from the request's
/// extensions only on success.
///
/// See the [module docs](self) for a complete service.
pub fn upgrade<B>(
    req: &mut http::Request<B>,
    config: &ServerConfig,
) -> Result<(http::Response<ResponseBody>, PendingWebSocket), UpgradeError> {
    let offer = validate(req.method(), req.uri(), req.version(), req.headers())?;
    if req.extensions().get::<OnUpgrade>().is_none() {
        return Err(UpgradeError::NotUpgradable);
    }
    let (response, accepted) = accept(&offer, config)?;
    let on_upgrade = hyper::upgrade::on(req);
    Ok((response, accepted.with(on_upgrade)))
}

/// Checks the head of an HTTP request as a WebSocket opening handshake (RFC 6455 §4.2.1),
/// with the rules of [`validate_request`], and returns what the client offers.
///
/// The request must be HTTP/1.x: WebSocket over HTTP/2 (RFC 8441) is not supported.
///
/// ```
/// use duplex::upgrade::validate;
/// use http::{HeaderMap, Method, Uri, Version};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("host", "example.com".parse()?);
/// headers.insert("upgrade", "websocket".parse()?);
/// headers.insert("connection", "Upgrade".parse()?);
/// headers.insert("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==".parse()?);
/// headers.insert("sec-websocket-version", "13".parse()?);
/// headers.insert("sec-websocket-protocol", "chat, superchat".parse()?);
/// let uri = Uri::from_static("/chat");
/// let offer = validate(&Method::GET, &uri, Version::HTTP_11, &headers)?;
/// assert_eq!(offer.protocols, ["chat", "superchat"]);
///
/// headers.remove("sec-websocket-version");
/// let refused = validate(&Method::GET, &uri, Version::HTTP_11, &headers).unwrap_err();
/// assert_eq!(refused.status(), http::StatusCode::UPGRADE_REQUIRED);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn validate(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<ClientOffer, UpgradeError> {
    let minor = match version {
        Version::HTTP_09 | Version::HTTP_10 => 0,
        Version::HTTP_11 => 1,
        other => return Err(UpgradeError::NotHttp1 { version: other }),
    };
    // Origin-form (`/path?query`) is what hyper gives for ordinary requests; an absolute-form
    // target keeps its scheme and authority so the core can check it.
    let target = if uri.scheme().is_some() {
        uri.to_string()
    } else {
        uri.path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
    };
    let mut core_headers = Headers::new();
    for (name, value) in headers {
        core_headers.push(name.as_str(), value.as_bytes());
    }
    let request = Request {
        method: method.as_str().to_owned(),
        target,
        version: minor,
        headers: core_headers,
    };
    Ok(validate_request(&request)?)
}

/// Builds the `101` for a validated offer and the connection settings it commits to.
pub(crate) fn accept(
    offer: &ClientOffer,
    config: &ServerConfig,
) -> Result<(http::Response<ResponseBody>, Accepted), UpgradeError> {
    let supported: Vec<&str> = config.subprotocols.iter().map(String::as_str).collect();
    let protocol = select_protocol(&offer.protocols, &supported).map(str::to_owned);
    let deflate = if config.deflate.enabled {
        negotiate_server(&offer.extensions, &config.deflate)
    } else {
        None
    };
    let mut response = http::Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        header_value(accept_key(offer.key.as_bytes()))?,
    );
    if let Some(protocol) = &protocol {
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            header_value(protocol.clone())?,
        );
    }
    if let Some((_, extension)) = &deflate {
        headers.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            header_value(format_extensions(std::slice::from_ref(extension)))?,
        );
    }
    let accepted = Accepted {
        protocol_config: config.protocol.clone(),
        deflate: deflate.map(|(agreed, _)| (agreed, config.deflate.clone())),
        protocol,
    };
    Ok((response, accepted))
}

fn header_value(value: String) -> Result<HeaderValue, UpgradeError> {
    HeaderValue::try_from(value).map_err(|e| UpgradeError::Response(e.to_string()))
}

/// What a `101` committed to, waiting for hyper's [`OnUpgrade`].
#[derive(Debug)]
pub(crate) struct Accepted {
    protocol_config: Config,
    deflate: Option<(Agreed, DeflateConfig)>,
    protocol: Option<String>,
}

impl Accepted {
    pub(crate) fn with(self, on_upgrade: OnUpgrade) -> PendingWebSocket {
        PendingWebSocket {
            on_upgrade,
            accepted: self,
        }
    }
}

/// The WebSocket an accepted upgrade will become: a future that resolves once hyper has
/// written the `101` and handed the connection over.
///
/// It fails with [`Error::Upgrade`] if the connection ends first (or was never served with
/// upgrades enabled). Await it in a task of its own, not in the service that returns the
/// response: the response must be sent first.
#[derive(Debug)]
#[must_use = "the WebSocket is only available by awaiting the PendingWebSocket"]
pub struct PendingWebSocket {
    on_upgrade: OnUpgrade,
    accepted: Accepted,
}

impl PendingWebSocket {
    /// The subprotocol sent in the `101`, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.accepted.protocol.as_deref()
    }

    /// Whether permessage-deflate was agreed.
    pub fn is_compressed(&self) -> bool {
        self.accepted.deflate.is_some()
    }
}

impl Future for PendingWebSocket {
    type Output = Result<WebSocket<UpgradedIo>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let upgraded = ready!(Pin::new(&mut self.on_upgrade).poll(cx)).map_err(Error::Upgrade)?;
        let mut conn = Connection::new(
            Role::Server,
            crate::websocket::shared_config(&self.accepted.protocol_config),
            tokio::time::Instant::now().into_std(),
        );
        if let Some((agreed, deflate_config)) = &self.accepted.deflate {
            conn.set_deflate(DeflateCodec::new(*agreed, deflate_config));
        }
        // hyper replays bytes it read past the request head through `Upgraded` itself.
        let ws = WebSocket::from_connection(TokioIo::new(upgraded), conn, &[])
            .with_subprotocol(self.accepted.protocol.clone());
        Poll::Ready(Ok(ws))
    }
}

/// Why a request cannot be upgraded. [`status`](Self::status) is the HTTP status to answer
/// with and [`to_response`](Self::to_response) a complete response.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpgradeError {
    /// The request breaks a rule of the opening handshake (400, 405, 426, 431; see
    /// [`HandshakeError::status`]).
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The request is not HTTP/1.x (400).
    #[error("the request is {version:?}; a WebSocket handshake needs HTTP/1.1 (WebSocket over HTTP/2, RFC 8441, is not supported)")]
    NotHttp1 {
        /// The version used.
        version: Version,
    },
    /// The HTTP server offers no way to take over this connection (500): with hyper, serve
    /// the connection with `.with_upgrades()`.
    #[error("this connection cannot be taken over: the HTTP server provided no upgrade handle (serve HTTP/1.1 connections with upgrades enabled)")]
    NotUpgradable,
    /// The `101` could not be built (500).
    #[error("cannot build the 101 response: {0}")]
    Response(String),
}

impl UpgradeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            UpgradeError::Handshake(e) => {
                StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST)
            }
            UpgradeError::NotHttp1 { .. } => StatusCode::BAD_REQUEST,
            UpgradeError::NotUpgradable | UpgradeError::Response(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// A response refusing the upgrade: [`status`](Self::status), the error text as a
    /// `text/plain` body, plus `Allow: GET` for 405 and `Upgrade: websocket` /
    /// `Sec-WebSocket-Version: 13` for 426 (RFC 6455 §4.2.2, RFC 9110 §15.5.22).
    pub fn to_response(&self) -> http::Response<ResponseBody> {
        let status = self.status();
        let mut response = http::Response::new(Full::new(Bytes::from(format!("{self}\n"))));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        match status {
            StatusCode::METHOD_NOT_ALLOWED => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            StatusCode::UPGRADE_REQUIRED => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                headers.insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static(WEBSOCKET_VERSION),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> http::Request<()> {
        http::Request::get("/chat?room=1")
            .header("Host", "example.com")
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Protocol", "v1.chat, v2.chat")
            .header(
                "Sec-WebSocket-Extensions",
                "permessage-deflate; client_max_window_bits",
            )
            .body(())
            .unwrap()
    }

    fn check(req: &http::Request<()>) -> Result<ClientOffer, UpgradeError> {
        validate(req.method(), req.uri(), req.version(), req.headers())
    }

    #[test]
    fn accept_builds_rfc_101_with_protocol_and_deflate() {
        let offer = check(&good()).unwrap();
        let mut config = ServerConfig {
            subprotocols: vec!["v2.chat".into(), "v1.chat".into()],
            ..ServerConfig::default()
        };
        config.deflate.enabled = true;
        let (response, accepted) = accept(&offer, &config).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = response.headers();
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(h["sec-websocket-protocol"], "v2.chat");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "Upgrade");
        assert!(h["sec-websocket-extensions"]
            .to_str()
            .unwrap()
            .starts_with("permessage-deflate"));
        assert_eq!(accepted.protocol.as_deref(), Some("v2.chat"));
        assert!(accepted.deflate.is_some());
    }

    #[test]
    fn no_overlap_means_no_protocol_header_and_deflate_off_by_default() {
        let offer = check(&good()).unwrap();
        let (response, accepted) = accept(&offer, &ServerConfig::default()).unwrap();
        assert!(response.headers().get("sec-websocket-protocol").is_none());
        assert!(response.headers().get("sec-websocket-extensions").is_none());
        assert!(accepted.deflate.is_none());
    }

    #[test]
    fn refusals_carry_status_and_headers() {
        let mut req = good();
        *req.method_mut() = Method::POST;
        let err = check(&req).unwrap_err();
        let resp = err.to_response();
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()["allow"], "GET");

        let mut req = good();
        req.headers_mut()
            .insert("sec-websocket-version", "8".parse().unwrap());
        let resp = check(&req).unwrap_err().to_response();
        assert_eq!(resp.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(resp.headers()["sec-websocket-version"], "13");

        let mut req = good();
        req.headers_mut().remove("upgrade");
        let err = check(&req).unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("Upgrade"));

        let mut req = good();
        *req.version_mut() = Version::HTTP_2;
        assert!(matches!(check(&req), Err(UpgradeError::NotHttp1 { .. })));
        let mut req = good();
        *req.version_mut() = Version::HTTP_10;
        assert_eq!(check(&req).unwrap_err().status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn absolute_form_target_is_accepted() {
        let mut req = good();
        *req.uri_mut() = Uri::from_static("http://example.com/chat");
        assert!(check(&req).is_ok());
    }

    #[test]
    fn upgrade_without_hyper_handle_is_500_and_leaves_request_alone() {
        let mut req = good();
        let err = upgrade(&mut req, &ServerConfig::default()).unwrap_err();
        assert!(matches!(err, UpgradeError::NotUpgradable));
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
