//! What a connection's writer gets: [`Outbound`] items from its [`OutboundReceiver`], a close
//! requested out of band (`CloseSignal`) that overtakes anything queued, and the
//! [`ConnectionHandle`] that [`Hub::connect`] hands out. Owns no connection state.
//!
//! [`Hub::connect`]: super::Hub::connect

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};

use crate::socket_id::SocketId;

/// One item for a connection's writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// A complete JSON text message, serialized once and shared between recipients.
    Text(Bytes),
    /// Close the WebSocket with this code and reason, then call [`Hub::disconnect`].
    ///
    /// [`Hub::disconnect`]: super::Hub::disconnect
    Close {
        /// 4000–4299 close code.
        code: u16,
        /// Close reason (kept under the 123-byte close-frame limit).
        reason: String,
    },
}

#[derive(Default)]
pub(super) struct CloseSignal {
    slot: Mutex<Option<(u16, String)>>,
    /// Stays set after the receiver took the close.
    requested: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl CloseSignal {
    /// Requests a close; the first request wins. Returns whether this one did.
    pub(super) fn close(&self, code: u16, reason: &str) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if self.requested.swap(true, Relaxed) {
            return false;
        }
        let mut reason = reason.to_owned();
        truncate_utf8(&mut reason, 123);
        *slot = Some((code, reason));
        drop(slot);
        self.notify.notify_one();
        true
    }

    fn take(&self) -> Option<(u16, String)> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) fn is_set(&self) -> bool {
        self.requested.load(Relaxed)
    }
}

pub(super) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// The receiving end of a connection's outbound queue. A requested close is yielded before
/// anything still queued; after it, `recv` returns `None`.
pub struct OutboundReceiver {
    pub(super) rx: mpsc::Receiver<Outbound>,
    pub(super) close: Arc<CloseSignal>,
    pub(super) done: bool,
}

impl OutboundReceiver {
    /// The next item, waiting for one; `None` once closed or disconnected.
    pub async fn recv(&mut self) -> Option<Outbound> {
        loop {
            if self.done {
                return None;
            }
            if let Some((code, reason)) = self.close.take() {
                self.done = true;
                return Some(Outbound::Close { code, reason });
            }
            tokio::select! {
                biased;
                () = self.close.notify.notified() => continue,
                item = self.rx.recv() => {
                    if item.is_none() {
                        self.done = true;
                    }
                    return item;
                }
            }
        }
    }

    /// The next item if one is ready.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        if self.done {
            return None;
        }
        if let Some((code, reason)) = self.close.take() {
            self.done = true;
            return Some(Outbound::Close { code, reason });
        }
        self.rx.try_recv().ok()
    }
}

/// What [`Hub::connect`] hands the connection task.
///
/// [`Hub::connect`]: super::Hub::connect
pub struct ConnectionHandle {
    /// The new socket id (already sent in `pusher:connection_established`).
    pub socket_id: SocketId,
    /// The app's id.
    pub app_id: Arc<str>,
    /// The `activity_timeout` announced to the client.
    pub activity_timeout: Duration,
    /// Everything to send to this client.
    pub outbound: OutboundReceiver,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reason_is_cut_to_fit_a_close_frame() {
        let s = CloseSignal::default();
        assert!(s.close(4100, &"é".repeat(100)));
        assert!(!s.close(4200, "second"));
        let (code, reason) = s.take().expect("set");
        assert_eq!(code, 4100);
        assert!(reason.len() <= 123);
    }

    #[tokio::test]
    async fn close_is_yielded_before_queued_items() {
        let (tx, rx) = mpsc::channel(4);
        let close = Arc::new(CloseSignal::default());
        let mut r = OutboundReceiver {
            rx,
            close: close.clone(),
            done: false,
        };
        tx.try_send(Outbound::Text(Bytes::from_static(b"a")))
            .expect("room");
        close.close(4100, "slow");
        assert_eq!(
            r.recv().await,
            Some(Outbound::Close {
                code: 4100,
                reason: "slow".into()
            })
        );
        assert_eq!(r.recv().await, None);
    }
}
