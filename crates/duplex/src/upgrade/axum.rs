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
use crate::error::Error;
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
pub struct WebSocketUpgrade {
    offer: ClientOffer,
    on_upgrade: OnUpgrade,
    config: ServerConfig,
    on_failed: Option<Box<dyn FnOnce(Error) + Send + 'static>>,
}

impl std::fmt::Debug for WebSocketUpgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketUpgrade")
            .field("offer", &self.offer)
            .field("config", &self.config)
            .field("on_failed_upgrade", &self.on_failed.is_some())
            .finish_non_exhaustive()
    }
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
            on_failed: None,
        })
    }
}

impl WebSocketUpgrade {
    /// Sets the subprotocols we speak, most preferred first: the first one the client also
    /// offered is selected (none if there is no overlap). Replaces
    /// [`ServerConfig::subprotocols`], whether set before or after [`config`](Self::config)
    /// (which keeps them unless its own list is not empty).
    pub fn protocols<I>(mut self, protocols: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.config.subprotocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Replaces the configuration. Subprotocols set before with
    /// [`protocols`](Self::protocols) are kept when `config.subprotocols` is empty, so the two
    /// calls work in either order; a non-empty `config.subprotocols` replaces them.
    ///
    /// ```
    /// # use duplex::upgrade::axum::WebSocketUpgrade;
    /// # fn handler(upgrade: WebSocketUpgrade) -> WebSocketUpgrade {
    /// use duplex::ServerConfig;
    /// use std::time::Duration;
    /// upgrade
    ///     .protocols(["chat.v2"]) // kept: the config names no subprotocol
    ///     .config(ServerConfig::new().idle_timeout(Duration::from_secs(60)))
    /// # }
    /// ```
    pub fn config(mut self, mut config: ServerConfig) -> Self {
        if config.subprotocols.is_empty() {
            config.subprotocols = std::mem::take(&mut self.config.subprotocols);
        }
        self.config = config;
        self
    }

    /// Calls `callback` with the error if the connection cannot be handed over after the
    /// `101` (the client went away first, or the server does not support upgrades): then
    /// the [`on_upgrade`](Self::on_upgrade) callback is not called. Without it the failure is
    /// only logged (tracing, debug level).
    ///
    /// ```no_run
    /// use duplex::upgrade::axum::WebSocketUpgrade;
    /// async fn handler(upgrade: WebSocketUpgrade) -> axum::response::Response {
    ///     upgrade
    ///         .on_failed_upgrade(|e| eprintln!("WebSocket upgrade failed: {e}"))
    ///         .on_upgrade(|mut ws| async move {
    ///             let _ = ws.send("hi").await;
    ///         })
    /// }
    /// ```
    pub fn on_failed_upgrade<F>(mut self, callback: F) -> Self
    where
        F: FnOnce(Error) + Send + 'static,
    {
        self.on_failed = Some(Box::new(callback));
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
    /// If the connection is lost before it is handed over, `callback` is not called: the
    /// failure goes to [`on_failed_upgrade`](Self::on_failed_upgrade)'s callback (logged at
    /// debug level without one).
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
        let on_failed = self.on_failed;
        tokio::spawn(async move {
            match pending.await {
                Ok(ws) => callback(ws).await,
                Err(e) => match on_failed {
                    Some(on_failed) => on_failed(e),
                    None => tracing::debug!("WebSocket upgrade not completed: {e}"),
                },
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
