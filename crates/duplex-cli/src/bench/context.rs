//! State shared by every connection of a run, and each connection's view of it.

use super::connect::ConnectPlan;
use super::fanout;
use super::options::Mode;
use super::stats::{ConnOutcome, ErrorKind, ErrorLog, Live, Recorder};
use duplex::Message;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Shared by every connection task.
pub struct RunShared {
    pub plan: ConnectPlan,
    pub mode: Mode,
    /// The message every connection sends (cloning it is a reference count).
    pub message: Message,
    /// Open loop: messages per second per connection.
    pub rate: f64,
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub drain_timeout: Duration,
    /// Set at the end of the window (or on Ctrl-C): connections stop sending.
    pub stop: AtomicBool,
    pub live: Live,
    pub recorder: Recorder,
    pub errors: ErrorLog,
    /// Connect + handshake times, in nanoseconds.
    pub connect_times: Mutex<Histogram<u64>>,
    /// Bounds the connection attempts in progress.
    pub connect_slots: Semaphore,
    /// Fan-out mode: the publisher's target and the delivery bookkeeping.
    pub fanout: Option<fanout::Shared>,
}

/// One connection's view of the run: its index and the run's instants.
pub struct ConnCtx<'a> {
    pub index: usize,
    pub run: &'a RunShared,
    /// When load starts (warm-up included).
    pub start: Instant,
    /// Start of the measured window (after the warm-up).
    pub window_start: Instant,
    /// End of the measured window: no message is sent for a later time.
    pub end: Instant,
    /// `end` plus the drain timeout: outstanding echoes are given up on then.
    pub hard_deadline: Instant,
}

impl ConnCtx<'_> {
    pub fn in_window(&self, t: Instant) -> bool {
        t >= self.window_start && t < self.end
    }

    pub fn stopped(&self) -> bool {
        self.run.stop.load(Relaxed)
    }

    pub fn record(&self, latency: Duration) {
        self.run.recorder.record(self.index, latency);
    }

    pub fn record_open(&self, latency: Duration, service: Duration, send_lag: Duration) {
        self.run
            .recorder
            .record_open(self.index, latency, service, send_lag);
    }

    pub fn error(&self, out: &mut ConnOutcome, kind: ErrorKind, n: u64, message: &str) {
        out.error(&self.run.live, &self.run.errors, kind, n, message);
    }
}
