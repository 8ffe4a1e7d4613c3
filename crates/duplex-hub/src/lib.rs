//! duplex-hub (work in progress)
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod channel;
pub mod protocol;
pub mod socket_id;
