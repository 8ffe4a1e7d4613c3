//! The logic of `duplex serve`: a Pusher Channels (protocol 7) server, with no sockets.
//!
//! This crate knows nothing of frames, sockets or HTTP servers. The CLI wires it up: each
//! WebSocket on `/app/{key}` becomes a [`hub::Hub::connect`] + a loop of
//! [`hub::Hub::handle_client_message`] + [`hub::Hub::disconnect`], its writer drains the
//! [`hub::OutboundReceiver`]; each `/apps/{id}/...` request becomes an [`api::ApiRequest`] for
//! [`api::handle`]. Existing clients (pusher-js 8, Laravel Echo) and server SDKs (the `pusher`
//! npm package...) work unchanged.
//!
//! ```text
//!   WebSocket text frame                          HTTP request
//!          │                                           │
//!          ▼                                           ▼
//!   hub::Hub::handle_client_message             api::handle ── auth::verify_request
//!     protocol::parse_client_message               │
//!     auth (channel / user signatures)             │ hub::Hub::publish
//!     limits, presence, client events              │
//!          │                                       │
//!          └──────────────► broker::Broker ◄────────┘
//!                 publish · counts · presence · users · cache      (MemoryBroker now,
//!                            │                                      Redis next)
//!                            ▼ NodeSink::deliver (one Bytes per event)
//!          per-connection bounded queue ── hub::OutboundReceiver ──► CLI frames & sends
//!                            │ full? → Outbound::Close(4100)
//!   hub events ──► webhooks queue ──► webhooks::WebhookDispatcher ──► injected sender
//! ```
//!
//! Modules, each owning one thing:
//! - [`protocol`]: client→server and server→client messages as types, error/close codes.
//! - [`socket_id`]: `"<digits>.<digits>"` ids.
//! - [`channel`]: channel kinds (public, private, encrypted, presence, cache, server-to-user)
//!   and naming rules.
//! - [`auth`]: every HMAC: channel auth, user sign-in, REST signing, webhook signatures.
//! - [`config`]: apps, limits, webhooks; TOML, env overrides, validation naming the bad key.
//! - [`broker`]: the [`broker::Broker`] trait (everything shared between nodes) and
//!   [`broker::MemoryBroker`].
//! - [`hub`]: the per-node core.
//! - [`heartbeat`]: ping/pong timers for one connection.
//! - [`api`]: the REST API as a function.
//! - [`webhooks`]: webhook events, batching, signing, retry policy, dispatcher.
//! - [`metrics`]: counters and a latency histogram in Prometheus text format.
//!
//! Out of scope for now: message recovery after reconnect (Pusher has none), the Redis
//! broker, watchlist events, "authorized connections" (sign-in deadline).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod heartbeat;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod socket_id;
pub mod webhooks;
