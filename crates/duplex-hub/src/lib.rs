//! duplex-hub (work in progress)
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod socket_id;
pub mod webhooks;
