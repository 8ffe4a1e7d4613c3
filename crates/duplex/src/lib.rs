//! # duplex: async WebSocket client and server for tokio
//!
//! A thin runtime over the sans-IO [`duplex_proto`] core: this crate owns sockets, buffers and
//! wake-ups; every protocol decision is made in the core.
#![warn(missing_docs)]

pub mod client;
mod driver;
pub mod error;
pub mod proxy;
pub mod reconnect;
pub mod server;
pub mod split;
#[cfg(feature = "rustls")]
pub mod tls;
#[cfg(feature = "hyper")]
pub mod upgrade;
pub mod websocket;

pub use duplex_proto as proto;
pub use duplex_proto::{
    CloseCode, CloseFrame, Compression, Config, Event, Message, MessageKind, Role, Utf8Bytes,
};
pub use error::{Error, Result};
pub use reconnect::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
pub use split::{WsReader, WsWriter};
#[cfg(feature = "rustls")]
pub use tls::MaybeTlsStream;
pub use websocket::{Chunk, TrySendError, WebSocket};
