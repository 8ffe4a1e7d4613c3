//! Why the hub says no: [`ConnectError`], the [`Refused`] answer built from it (the
//! `pusher:error` and close every front end sends alike), and [`HubError`] for calls that
//! fail through no fault of the client.

use super::outbound::{truncate_utf8, Outbound};
use crate::broker::BrokerError;
use crate::protocol::{codes, ServerMessage};
use crate::socket_id::SocketId;

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The `protocol` query parameter is missing (4008).
    #[error("No protocol version supplied")]
    NoProtocolVersion,
    /// The `protocol` query parameter is not a number (4006).
    #[error("Invalid version string format")]
    InvalidVersionFormat,
    /// The protocol version is not one this server speaks (4007).
    #[error("Unsupported protocol version")]
    UnsupportedProtocol,
    /// No app has this key (4001).
    #[error("App key {0} does not exist")]
    AppNotFound(String),
    /// The app is disabled (4003).
    #[error("Application disabled")]
    AppDisabled,
    /// The app is at `max_connections` (4004).
    #[error("Application is over connection quota")]
    OverConnectionQuota,
    /// A WebSocket upgrade on a path other than `/app/{key}` (4005).
    #[error("Path not found: WebSocket connections go to /app/{{key}}")]
    PathNotFound,
    /// The node is draining (4200: reconnect at once, to another node).
    #[error("Server shutting down, reconnect")]
    Draining,
    /// The broker failed (4100: try again later).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ConnectError {
    /// The close code to send.
    pub fn close_code(&self) -> u16 {
        match self {
            ConnectError::NoProtocolVersion => codes::NO_PROTOCOL_VERSION,
            ConnectError::InvalidVersionFormat => codes::INVALID_VERSION_FORMAT,
            ConnectError::UnsupportedProtocol => codes::UNSUPPORTED_PROTOCOL,
            ConnectError::AppNotFound(_) => codes::APP_NOT_FOUND,
            ConnectError::AppDisabled => codes::APP_DISABLED,
            ConnectError::OverConnectionQuota => codes::OVER_CONNECTION_QUOTA,
            ConnectError::PathNotFound => codes::PATH_NOT_FOUND,
            ConnectError::Draining => codes::RECONNECT_IMMEDIATELY,
            ConnectError::Broker(_) => codes::OVER_CAPACITY,
        }
    }

    pub(super) fn from_protocol_code(code: u16) -> ConnectError {
        match code {
            codes::NO_PROTOCOL_VERSION => ConnectError::NoProtocolVersion,
            codes::INVALID_VERSION_FORMAT => ConnectError::InvalidVersionFormat,
            _ => ConnectError::UnsupportedProtocol,
        }
    }
}

/// A refused connection: why, and exactly what to send before dropping the socket.
///
/// The hub builds the messages so every front end answers the same way: a `pusher:error`
/// `{code, message}` (which pusher-js reads during its handshake) followed by a close with the
/// same code (which it reads once connected, and which tells other clients the range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection refused ({}): {error}", error.close_code())]
pub struct Refused {
    /// The reason.
    pub error: ConnectError,
    /// `[Outbound::Text(pusher:error), Outbound::Close]`: send in order, then drop the socket.
    pub outbound: Vec<Outbound>,
}

impl From<ConnectError> for Refused {
    fn from(error: ConnectError) -> Refused {
        Refused::new(error)
    }
}

impl Refused {
    /// The answer to send for `error`; front ends use it for refusals decided before the hub
    /// is asked (e.g. [`ConnectError::PathNotFound`]).
    pub fn new(error: ConnectError) -> Refused {
        let code = error.close_code();
        let mut reason = error.to_string();
        truncate_utf8(&mut reason, 123);
        let text = ServerMessage::Error {
            code: Some(code),
            message: &reason,
        }
        .to_bytes();
        Refused {
            error,
            outbound: vec![Outbound::Text(text), Outbound::Close { code, reason }],
        }
    }

    /// The close code to send.
    pub fn close_code(&self) -> u16 {
        self.error.close_code()
    }
}

/// Failures of hub calls that are not the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The socket is not connected (already disconnected or never was).
    #[error("unknown socket {0}")]
    UnknownSocket(SocketId),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}
