//! # duplex-proto: a sans-IO WebSocket protocol core
//!
//! This crate owns every protocol decision of RFC 6455 (and RFC 7692 permessage-deflate) and
//! performs no I/O: no sockets, no runtime, no clock of its own. A runtime feeds it the bytes it
//! read and the current time, and takes back events for the application and bytes to write.
//!
//! ```text
//! bytes read ──► receive_data(bytes, now) ──► poll_event() ──► application
//! application ──► send_*/close ──► poll_transmit() ──► bytes to write
//! timers: sleep until poll_timeout() ──► handle_timeout(now)
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod deflate;
pub mod extension;
pub mod handshake;

/// Which end of the connection this protocol object plays.
///
/// The role decides the masking rules (RFC 6455 §5.1: a client masks every frame, a server
/// never does) and who closes the TCP connection first (§7.1.1: the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The end that sent the opening handshake request.
    Client,
    /// The end that accepted it.
    Server,
}

pub mod close;
pub mod config;
pub mod connection;
pub mod error;
pub mod frame;
pub mod mask;
pub mod message;
pub mod prepared;
pub mod transmit;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::Config;
pub use connection::{Compression, Connection, Event, MessageKind, State};
pub use error::{ProtocolError, SendError};
pub use message::{Message, Utf8Bytes};
