//! What the connections measure: latency histograms, live counters for the progress line,
//! per-connection outcomes, and the errors seen.

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Latencies are recorded in nanoseconds, 3 significant digits, up to an hour (larger values
/// are clamped: every run is bounded well below that).
const HIST_MAX_NS: u64 = 3_600_000_000_000;
/// Distinct error messages kept for the report.
const ERROR_SAMPLES: usize = 8;

pub fn new_histogram() -> Histogram<u64> {
    // Fixed, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, HIST_MAX_NS, 3).expect("valid histogram bounds")
}

/// Locks `m`, ignoring poisoning (a panicked holder leaves counts, nothing inconsistent).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The histograms of one shard.
pub struct Hists {
    /// Closed loop: round trip. Open loop: from the intended send time to the echo. Fan-out:
    /// from the event's intended send time to its delivery.
    pub latency: Histogram<u64>,
    /// Open loop: from the actual send to the echo. Fan-out: from the publish request's start
    /// to the delivery.
    pub service: Histogram<u64>,
    /// Open loop and fan-out: how late each send started after its intended time.
    pub send_lag: Histogram<u64>,
}

impl Hists {
    fn new() -> Self {
        Hists {
            latency: new_histogram(),
            service: new_histogram(),
            send_lag: new_histogram(),
        }
    }

    fn add(&mut self, other: &Hists) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        let _ = self.send_lag.add(&other.send_lag);
    }
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Latency histograms shared by the connections: one shard per worker thread or so, so
/// recording is one uncontended lock (histograms per connection would cost ~800 KiB each).
pub struct Recorder {
    shards: Vec<Mutex<Hists>>,
}

impl Recorder {
    pub fn new(shards: usize) -> Self {
        Recorder {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Hists::new()))
                .collect(),
        }
    }

    fn shard(&self, connection: usize) -> MutexGuard<'_, Hists> {
        lock(&self.shards[connection % self.shards.len()])
    }

    /// A closed-loop round trip.
    pub fn record(&self, connection: usize, latency: Duration) {
        self.shard(connection)
            .latency
            .saturating_record(ns(latency));
    }

    /// Closed-loop round trips in nanoseconds, recorded under one lock.
    pub fn record_ns(&self, connection: usize, latencies: &[u64]) {
        if latencies.is_empty() {
            return;
        }
        let mut h = self.shard(connection);
        for &ns in latencies {
            h.latency.saturating_record(ns.max(1));
        }
    }

    /// An open-loop echo: latency from the intended time, from the actual send, and the lag
    /// between the two.
    pub fn record_open(
        &self,
        connection: usize,
        latency: Duration,
        service: Duration,
        send_lag: Duration,
    ) {
        let mut h = self.shard(connection);
        h.latency.saturating_record(ns(latency));
        h.service.saturating_record(ns(service));
        h.send_lag.saturating_record(ns(send_lag));
    }

    /// A fan-out delivery: latency from the event's intended send time and from its actual
    /// send (the publisher's lag is recorded once per event, with [`Self::record_send_lag`]).
    pub fn record_delivery(&self, connection: usize, latency: Duration, service: Duration) {
        let mut h = self.shard(connection);
        h.latency.saturating_record(ns(latency));
        h.service.saturating_record(ns(service));
    }

    /// Fan-out: how late the publisher sent one event after its intended time.
    pub fn record_send_lag(&self, connection: usize, lag: Duration) {
        self.shard(connection).send_lag.saturating_record(ns(lag));
    }

    pub fn merged(&self) -> Hists {
        let mut all = Hists::new();
        for shard in &self.shards {
            all.add(&lock(shard));
        }
        all
    }
}

/// Counters the progress line reads while the run goes on (all phases, warm-up included).
#[derive(Default)]
pub struct Live {
    pub echoes: AtomicU64,
    pub errors: AtomicU64,
    pub connected: AtomicUsize,
    pub active: AtomicUsize,
}

/// Kinds of error, each counted in the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// TCP connect or opening handshake failed or timed out.
    Connect,
    /// The connection failed while running (send or receive error, closed by the server).
    Io,
    /// An echo differed from what was sent (or came with nothing in flight).
    Mismatch,
    /// A message sent (or due) in the window got no echo before the drain deadline.
    Unanswered,
    /// The closing handshake failed or timed out.
    Close,
}

impl ErrorKind {
    fn name(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Io => "io",
            ErrorKind::Mismatch => "mismatch",
            ErrorKind::Unanswered => "unanswered",
            ErrorKind::Close => "close",
        }
    }
}

/// Error counts by kind.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorCounts {
    pub connect: u64,
    pub io: u64,
    pub mismatch: u64,
    pub unanswered: u64,
    pub close: u64,
}

impl ErrorCounts {
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.mismatch + self.unanswered + self.close
    }

    fn slot(&mut self, kind: ErrorKind) -> &mut u64 {
        match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Io => &mut self.io,
            ErrorKind::Mismatch => &mut self.mismatch,
            ErrorKind::Unanswered => &mut self.unanswered,
            ErrorKind::Close => &mut self.close,
        }
    }

    pub fn add(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.io += other.io;
        self.mismatch += other.mismatch;
        self.unanswered += other.unanswered;
        self.close += other.close;
    }
}

/// The first distinct error messages, for the report.
#[derive(Default)]
pub struct ErrorLog {
    samples: Mutex<Vec<String>>,
}

impl ErrorLog {
    fn note(&self, kind: ErrorKind, message: &str) {
        let mut samples = lock(&self.samples);
        if samples.len() < ERROR_SAMPLES {
            let line = format!("{}: {message}", kind.name());
            if !samples.contains(&line) {
                samples.push(line);
            }
        }
    }

    pub fn samples(&self) -> Vec<String> {
        lock(&self.samples).clone()
    }
}

/// What one connection did. Counts with "window" are within the measured window only.
#[derive(Debug, Default)]
pub struct ConnOutcome {
    pub connected: bool,
    pub deflate: bool,
    /// Open loop: messages whose intended send time fell in the window.
    pub scheduled: u64,
    /// Messages whose send completed in the window.
    pub sent: u64,
    /// Echoes received in the window.
    pub echoes: u64,
    pub errors: ErrorCounts,
    /// The connection failed while running (not counted as a clean close).
    pub failed: bool,
    pub closed_cleanly: bool,
}

impl ConnOutcome {
    /// Counts the connection as failed because the server closed it (`close`: its close
    /// frame, if any).
    pub fn closed_by_server(
        &mut self,
        live: &Live,
        log: &ErrorLog,
        close: Option<&duplex::CloseFrame>,
    ) {
        let why = match close {
            Some(c) => format!("server closed the connection ({} {})", c.code.0, c.reason),
            None => "server closed the connection".to_owned(),
        };
        self.error(live, log, ErrorKind::Io, 1, &why);
        self.failed = true;
    }

    /// Counts `n` errors of `kind`, in the outcome, the live counter and the samples.
    pub fn error(&mut self, live: &Live, log: &ErrorLog, kind: ErrorKind, n: u64, message: &str) {
        if n == 0 {
            return;
        }
        *self.errors.slot(kind) += n;
        live.errors.fetch_add(n, Relaxed);
        log.note(kind, message);
    }
}

/// Sum of the connections' outcomes.
#[derive(Debug, Default)]
pub struct Totals {
    pub established: usize,
    pub deflate: usize,
    pub failed: usize,
    pub closed_cleanly: usize,
    pub scheduled: u64,
    pub sent: u64,
    pub echoes: u64,
    pub errors: ErrorCounts,
}

impl Totals {
    pub fn add(&mut self, o: &ConnOutcome) {
        self.established += usize::from(o.connected);
        self.deflate += usize::from(o.deflate);
        self.failed += usize::from(o.failed);
        self.closed_cleanly += usize::from(o.closed_cleanly);
        self.scheduled += o.scheduled;
        self.sent += o.sent;
        self.echoes += o.echoes;
        self.errors.add(&o.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_merge() {
        let r = Recorder::new(3);
        for i in 0..300u64 {
            r.record(i as usize, Duration::from_micros(i + 1));
        }
        let h = r.merged().latency;
        assert_eq!(h.len(), 300);
        assert!(h.value_at_quantile(0.5) <= h.value_at_quantile(0.99));
    }

    #[test]
    fn errors_counted_and_sampled() {
        let (live, log) = (Live::default(), ErrorLog::default());
        let mut o = ConnOutcome::default();
        o.error(&live, &log, ErrorKind::Io, 1, "reset");
        o.error(&live, &log, ErrorKind::Io, 1, "reset");
        o.error(&live, &log, ErrorKind::Unanswered, 5, "late");
        assert_eq!(o.errors.total(), 7);
        assert_eq!(live.errors.load(Relaxed), 7);
        assert_eq!(log.samples(), vec!["io: reset", "unanswered: late"]);
    }
}
