//! Protocol-level liveness for one connection: when to send `pusher:ping`, when to give up.
//!
//! A pure timer state machine in the quinn-proto style: the connection task reports activity
//! with [`Heartbeat::on_activity`], sleeps until [`Heartbeat::poll_timeout`], then calls
//! [`Heartbeat::handle_timeout`] and does what it says. Any frame from the client counts as
//! activity (protocol docs: "any messages received from the other party are considered to mean
//! that the connection is alive"). After `activity_timeout` of silence the server pings; if
//! nothing arrives within `pong_timeout` the connection is closed with 4201.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{codes, ServerMessage};

/// What the connection task must do after a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatAction {
    /// Nothing yet.
    None,
    /// Send this `pusher:ping`.
    SendPing(Bytes),
    /// Close with this code (4201, pong not received) and reason.
    Close(u16, &'static str),
}

/// Liveness state of one connection.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    activity_timeout: Duration,
    pong_timeout: Duration,
    last_activity: Instant,
    ping_sent_at: Option<Instant>,
}

impl Heartbeat {
    /// Starts at `now` with the hub's `activity_timeout` and `pong_timeout`.
    pub fn new(activity_timeout: Duration, pong_timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            activity_timeout,
            pong_timeout,
            last_activity: now,
            ping_sent_at: None,
        }
    }

    /// The client sent something (any frame, including `pusher:pong` or a WebSocket pong).
    pub fn on_activity(&mut self, now: Instant) {
        self.last_activity = now;
        self.ping_sent_at = None;
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called.
    pub fn poll_timeout(&self) -> Instant {
        match self.ping_sent_at {
            Some(sent) => sent + self.pong_timeout,
            None => self.last_activity + self.activity_timeout,
        }
    }

    /// Advances the timers to `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> HeartbeatAction {
        if now < self.poll_timeout() {
            return HeartbeatAction::None;
        }
        match self.ping_sent_at {
            Some(_) => HeartbeatAction::Close(codes::PONG_NOT_RECEIVED, "Pong reply not received"),
            None => {
                self.ping_sent_at = Some(now);
                HeartbeatAction::SendPing(ServerMessage::Ping.to_bytes())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Duration = Duration::from_secs(120);
    const P: Duration = Duration::from_secs(30);

    #[test]
    fn silence_for_activity_timeout_sends_a_ping() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(A, P, t0);
        assert_eq!(h.poll_timeout(), t0 + A);
        assert_eq!(
            h.handle_timeout(t0 + A - Duration::from_secs(1)),
            HeartbeatAction::None
        );
        assert!(matches!(
            h.handle_timeout(t0 + A),
            HeartbeatAction::SendPing(_)
        ));
        assert_eq!(h.poll_timeout(), t0 + A + P);
    }

    #[test]
    fn no_pong_within_pong_timeout_closes_with_4201() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(A, P, t0);
        let _ = h.handle_timeout(t0 + A);
        assert_eq!(
            h.handle_timeout(t0 + A + P),
            HeartbeatAction::Close(4201, "Pong reply not received")
        );
    }

    #[test]
    fn any_activity_resets_the_timers() {
        let t0 = Instant::now();
        let mut h = Heartbeat::new(A, P, t0);
        let _ = h.handle_timeout(t0 + A);
        h.on_activity(t0 + A + Duration::from_secs(5));
        assert_eq!(h.poll_timeout(), t0 + A + Duration::from_secs(5) + A);
        assert_eq!(h.handle_timeout(t0 + A + P), HeartbeatAction::None);
    }
}
