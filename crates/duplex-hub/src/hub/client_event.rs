//! Client events (`client-*`): the checks (enabled for the app, name length, channel kind,
//! size, subscribed), the per-connection rate limit (a `TokenBucket`), and the publish that
//! skips the sender and carries `user_id` on presence channels.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::local::Subscriber;
use super::{Hub, HubError};
use crate::channel::ChannelKind;
use crate::config::App;
use crate::protocol::{self, codes, ClientEvent, ServerMessage};
use crate::socket_id::SocketId;
use crate::webhooks::WebhookEvent;

/// Per-connection token bucket for client events.
#[derive(Debug, Clone, Default)]
pub(super) struct TokenBucket {
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn try_take(&mut self, now: Instant, rate: u32) -> bool {
        let cap = f64::from(rate.max(1));
        self.tokens = match self.last {
            None => cap,
            Some(last) => {
                let refill = now.saturating_duration_since(last).as_secs_f64() * cap;
                (self.tokens + refill).min(cap)
            }
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Result of one client-facing check: either go on, or an error to send.
type Check<T> = Result<T, (Option<u16>, String)>;

impl Hub {
    pub(super) async fn client_event(
        &self,
        socket: &SocketId,
        app: &App,
        sub: &Subscriber,
        e: ClientEvent,
        now: Instant,
    ) -> Result<(), HubError> {
        let checked: Check<Option<String>> = (|| {
            if !app.enable_client_events {
                return Err((
                    None,
                    "Client events are not enabled for this app (enable_client_events)".into(),
                ));
            }
            if e.event.chars().count() > protocol::MAX_EVENT_NAME_LEN {
                return Err((
                    None,
                    format!(
                        "Event name is longer than {} characters",
                        protocol::MAX_EVENT_NAME_LEN
                    ),
                ));
            }
            match ChannelKind::of(&e.channel) {
                k if k.allows_client_events() => {}
                ChannelKind::PrivateEncrypted => {
                    return Err((
                        None,
                        "Client events are not allowed on encrypted channels".into(),
                    ))
                }
                _ => {
                    return Err((
                        None,
                        "Client events are only supported on private and presence channels".into(),
                    ))
                }
            }
            if e.data.as_ref().map_or(0, String::len) > app.max_message_size {
                return Err((
                    None,
                    format!(
                        "Client event data is larger than {} bytes",
                        app.max_message_size
                    ),
                ));
            }
            let mut conns = self.inner.local.conns();
            let Some(conn) = conns.get_mut(socket) else {
                return Err((None, "Unknown connection".into()));
            };
            let Some(presence_user) = conn.channels.get(&e.channel).cloned() else {
                return Err((
                    None,
                    format!("Client event rejected: not subscribed to {}", e.channel),
                ));
            };
            if !conn.bucket.try_take(now, app.client_event_rate) {
                self.inner
                    .metrics
                    .client_events_rate_limited_total
                    .fetch_add(1, Relaxed);
                return Err((
                    Some(codes::CLIENT_EVENT_RATE_LIMIT),
                    format!(
                        "Client event rejected due to rate limit ({} per second)",
                        app.client_event_rate
                    ),
                ));
            }
            Ok(presence_user)
        })();
        let user_id = match checked {
            Ok(u) => u,
            Err((code, msg)) => {
                self.send_error(sub, code, &msg);
                return Ok(());
            }
        };
        let payload = ServerMessage::Event {
            event: &e.event,
            channel: &e.channel,
            data: e.data.as_deref(),
            user_id: user_id.as_deref(),
        }
        .to_bytes();
        self.publish_payload(app, &e.channel, payload, Some(socket.clone()))
            .await?;
        self.inner
            .metrics
            .events_published_total
            .fetch_add(1, Relaxed);
        self.webhook(
            app,
            WebhookEvent::ClientEvent {
                channel: e.channel,
                event: e.event,
                data: e.data,
                socket_id: socket.as_str().to_owned(),
                user_id,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn token_bucket_allows_burst_of_rate_then_refills() {
        let mut b = TokenBucket::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(b.try_take(t0, 10));
        }
        assert!(!b.try_take(t0, 10));
        assert!(b.try_take(t0 + Duration::from_millis(100), 10));
        assert!(!b.try_take(t0 + Duration::from_millis(100), 10));
        let t1 = t0 + Duration::from_secs(5);
        for _ in 0..10 {
            assert!(b.try_take(t1, 10));
        }
        assert!(!b.try_take(t1, 10));
    }
}
