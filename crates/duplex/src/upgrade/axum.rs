//! The axum 0.8 extractor for WebSocket upgrades.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use duplex::upgrade::axum::WebSocketUpgrade;
//! use duplex::upgrade::UpgradedIo;
//! use duplex::WebSocket;
//!
//! async fn ws_handler(upgrade: WebSocketUpgrade) -> axum::response::Response {
//!     upgrade.protocols(["echo.v1"]).on_upgrade(echo)
//! }
//!
//! async fn echo(mut ws: WebSocket<UpgradedIo>) {
//!     while let Some(Ok(message)) = ws.recv().await {
//!         if ws.send(message).await.is_err() {
//!             break;
//!         }
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let app: Router = Router::new().route("/ws", get(ws_handler));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

use super::{accept, validate, UpgradeError, UpgradedIo};
use crate::server::ServerConfig;
use crate::websocket::WebSocket;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use duplex_proto::handshake::{select_protocol, ClientOffer};
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use std::future::Future;

/// Extracts a WebSocket opening handshake from the request; answer it with
/// [`on_upgrade`](Self::on_upgrade).
///
/// Extraction fails, and axum answers with [`UpgradeError`]'s response, when the request is
/// not a valid handshake: 405 (with `Allow: GET`) for another method, 426 (with
/// `Sec-WebSocket-Version: 13`) for a missing or unsupported version, 400 for other broken
/// rules (no `Upgrade: websocket`, bad key, HTTP/1.0 or HTTP/2, ...), and 500 if the server
/// cannot hand the connection over.
///
/// Settings come from [`ServerConfig`] ([`ServerConfig::default`] unless
/// [`config`](Self::config) is called): its subprotocols, permessage-deflate policy and
/// protocol limits apply; its handshake timeout and head limits do not (axum and hyper read
/// the request).
#[derive(Debug)]
pub struct WebSocketUpgrade {
    offer: ClientOffer,
    on_upgrade: OnUpgrade,
    config: ServerConfig,
}

impl<S: Send + Sync> FromRequestParts<S> for WebSocketUpgrade {
    type Rejection = UpgradeError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let offer = validate(&parts.method, &parts.uri, parts.version, &parts.headers)?;
        let on_upgrade = parts
            .extensions
            .remove::<OnUpgrade>()
            .ok_or(UpgradeError::NotUpgradable)?;
        Ok(WebSocketUpgrade {
            offer,
            on_upgrade,
            config: ServerConfig::default(),
        })
    }
}

impl WebSocketUpgrade {
    /// Sets the subprotocols we speak, most preferred first: the first one the client also
    /// offered is selected (none if there is no overlap). Replaces
    /// [`ServerConfig::subprotocols`]; call it after [`config`](Self::config).
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.config.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the whole configuration (subprotocols included).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// What the client offered: key, subprotocols and extensions, in its order.
    pub fn offer(&self) -> &ClientOffer {
        &self.offer
    }

    /// The subprotocol the response will select with the current settings, if any.
    pub fn selected_protocol(&self) -> Option<&str> {
        let supported: Vec<&str> = self
            .config
            .subprotocols
            .iter()
            .map(String::as_str)
            .collect();
        select_protocol(&self.offer.protocols, &supported)
            .and_then(|chosen| self.offer.protocols.iter().find(|p| *p == chosen))
            .map(String::as_str)
    }

    /// Accepts the handshake: returns the `101 Switching Protocols` response and spawns a
    /// tokio task that runs `callback` with the connection once axum has sent it.
    ///
    /// If the connection is lost before it is handed over, `callback` is not called (the
    /// failure is logged at debug level).
    pub fn on_upgrade<F, Fut>(self, callback: F) -> Response
    where
        F: FnOnce(WebSocket<UpgradedIo>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (response, accepted) = match accept(&self.offer, &self.config) {
            Ok(accepted) => accepted,
            Err(refused) => return refused.into_response(),
        };
        let pending = accepted.with(self.on_upgrade);
        tokio::spawn(async move {
            match pending.await {
                Ok(ws) => callback(ws).await,
                Err(e) => tracing::debug!("WebSocket upgrade not completed: {e}"),
            }
        });
        response.map(axum::body::Body::new)
    }
}

impl IntoResponse for UpgradeError {
    fn into_response(self) -> Response {
        self.to_response().map(axum::body::Body::new)
    }
}
