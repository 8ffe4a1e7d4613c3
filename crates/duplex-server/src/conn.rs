//! One task per WebSocket on `/app/{key}`: hub connect, reader, heartbeat, writer, disconnect.
//!
//! The connection is split; its reader and writer run as two futures of the same task:
//!
//! - reader: every text frame → [`Hub::handle_client_message`]; any frame (pings and pongs
//!   included) counts as activity for the [`Heartbeat`];
//! - writer: drains the hub's [`OutboundReceiver`](duplex_hub::hub::OutboundReceiver) (the same
//!   `Bytes` for every subscriber become a text message without copying), sends `pusher:ping`
//!   when the heartbeat says so, and closes with the hub's code (4100 slow consumer, 4009
//!   terminated, 4200 when [`duplex_hub::hub::Hub::drain`] runs) or 4201 (no pong).
//!
//! A refused connection gets what [`duplex_hub::hub::Refused`] holds: `pusher:error`, then the
//! close with the same code.
//!
//! When the writer is done (it sent a close frame or failed) the reader gets a bounded time to
//! finish the closing handshake; then the socket is dropped and the hub told.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use duplex::upgrade::UpgradedIo;
use duplex::{CloseCode, Event, Message, Utf8Bytes, WebSocket, WsWriter};
use duplex_hub::heartbeat::{Heartbeat, HeartbeatAction};
use duplex_hub::hub::{Outbound, Refused};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::State;

/// Longest wait for one write to a peer that does not read.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one connection to the end. `protocol` is the raw `protocol` query value; `client` the
/// client's address as far as it is known (see [`crate::proxy`]).
pub async fn run(
    ws: WebSocket<UpgradedIo>,
    state: Arc<State>,
    key: String,
    protocol: Option<String>,
    client: Option<IpAddr>,
) {
    let (reader, writer) = ws.into_split();
    match state
        .hub
        .connect_with_protocol(&key, protocol.as_deref())
        .await
    {
        Ok(handle) => {
            // Every line this connection logs names its socket and its client.
            let span = tracing::debug_span!(
                "conn",
                socket = %handle.socket_id,
                client = client.map(tracing::field::display),
            );
            tracing::debug!(parent: &span, "connected");
            serve(reader, writer, state, handle).instrument(span).await
        }
        Err(refused) => refuse_split(reader, writer, refused, state.close_grace).await,
    }
}

/// Answers a WebSocket the hub will not serve (e.g. a path other than `/app/{key}`).
pub async fn refuse(ws: WebSocket<UpgradedIo>, refused: Refused, state: Arc<State>) {
    let (reader, writer) = ws.into_split();
    refuse_split(reader, writer, refused, state.close_grace).await;
}

async fn refuse_split(
    reader: duplex::WsReader<UpgradedIo>,
    mut writer: WsWriter<UpgradedIo>,
    refused: Refused,
    grace: Duration,
) {
    // The hub wrote the answer (pusher:error, then the close); this only sends it.
    for item in refused.outbound {
        let sent = match item {
            Outbound::Text(bytes) => send_text(&mut writer, bytes).await,
            Outbound::Close { code, reason } => {
                writer.close(CloseCode(code), &reason).await.map_err(|_| ())
            }
        };
        if sent.is_err() {
            break;
        }
    }
    finish_close(reader, grace).await;
}

/// Reads until the peer's close frame (or the grace period ends) so the handshake completes.
async fn finish_close(mut reader: duplex::WsReader<UpgradedIo>, grace: Duration) {
    let _ = tokio::time::timeout(grace, async {
        while reader.next_event().await.is_some() {}
    })
    .await;
}

async fn send_text(writer: &mut WsWriter<UpgradedIo>, bytes: Bytes) -> Result<(), ()> {
    // The hub's JSON is UTF-8; checking is cheap and keeps the bytes shared (no copy).
    let text = Utf8Bytes::try_from(bytes).map_err(|_| ())?;
    match tokio::time::timeout(SEND_TIMEOUT, writer.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn serve(
    mut reader: duplex::WsReader<UpgradedIo>,
    mut writer: WsWriter<UpgradedIo>,
    state: Arc<State>,
    handle: duplex_hub::hub::ConnectionHandle,
) {
    let hub = state.hub.clone();
    let socket_id = handle.socket_id.clone();
    let mut outbound = handle.outbound;
    let heartbeat = Mutex::new(Heartbeat::new(
        handle.activity_timeout,
        state.pong_timeout,
        Instant::now().into_std(),
    ));
    let activity = || {
        heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .on_activity(Instant::now().into_std())
    };

    let read = async {
        while let Some(event) = reader.next_event().await {
            match event {
                Ok(Event::Message(Message::Text(text))) => {
                    activity();
                    if let Err(e) = hub
                        .handle_client_message(&socket_id, &text, Instant::now().into_std())
                        .await
                    {
                        tracing::debug!(socket = %socket_id, "client message: {e}");
                    }
                }
                Ok(_) => activity(),
                Err(e) => {
                    tracing::debug!(socket = %socket_id, "read: {e}");
                    break;
                }
            }
        }
    };

    let write = async {
        // One timer for the connection's life, moved only when the heartbeat deadline moves: a
        // fresh `sleep_until` per message would register and deregister a timer per delivery.
        let heartbeat_timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(heartbeat_timer);
        loop {
            let deadline: Instant = heartbeat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .poll_timeout()
                .into();
            if heartbeat_timer.deadline() != deadline {
                heartbeat_timer.as_mut().reset(deadline);
            }
            tokio::select! {
                biased;
                item = outbound.recv() => match item {
                    Some(Outbound::Text(bytes)) => {
                        if send_text(&mut writer, bytes).await.is_err() {
                            return;
                        }
                    }
                    Some(Outbound::Close { code, reason }) => {
                        let _ = writer.close(CloseCode(code), &reason).await;
                        return;
                    }
                    None => return,
                },
                () = &mut heartbeat_timer => {
                    let action = heartbeat
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .handle_timeout(Instant::now().into_std());
                    match action {
                        HeartbeatAction::None => {}
                        HeartbeatAction::SendPing(bytes) => {
                            if send_text(&mut writer, bytes).await.is_err() {
                                return;
                            }
                        }
                        HeartbeatAction::Close(code, reason) => {
                            let _ = writer.close(CloseCode(code), reason).await;
                            return;
                        }
                    }
                }
            }
        }
    };

    let close_grace = state.close_grace;
    tokio::select! {
        () = read => {}
        () = async { write.await; tokio::time::sleep(close_grace).await } => {}
    }
    if let Err(e) = hub.disconnect(&socket_id).await {
        tracing::warn!(socket = %socket_id, "disconnect: {e}");
    }
}
