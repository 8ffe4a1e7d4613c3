//! The report: one JSON object (`--json`) or a summary for people.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Serialize, Debug)]
pub struct Report {
    /// Always "duplex bench".
    pub tool: &'static str,
    /// Version of the duplex command.
    pub version: &'static str,
    /// "closed-loop", "open-loop" or "fan-out". In fan-out mode the echo figures are about
    /// deliveries: `messages.sent` counts the window's events the API accepted,
    /// `messages.echoes` their deliveries, `us_per_echo` is per delivery.
    pub mode: &'static str,
    pub options: Options,
    pub connections: Connections,
    /// Length of the measured window actually run (shorter than `options.duration_s` after
    /// Ctrl-C).
    pub window_s: f64,
    /// The run was interrupted (Ctrl-C) before the window ended.
    pub stopped_early: bool,
    pub messages: Messages,
    pub rates: Rates,
    /// Round trip (closed loop) or from intended send time to echo (open loop), in window.
    pub latency_us: Latency,
    /// Open loop: from each message's actual send to its echo (what the latency would be
    /// without counting the sender's delays: coordinated omission hidden).
    pub service_latency_us: Option<Latency>,
    /// Open loop: how late each send started after its intended time (the runtime's timer
    /// has millisecond granularity, so up to ~1 ms of it is the client's own scheduling).
    pub send_lag_us: Option<Latency>,
    /// TCP connect plus opening handshake (fan-out: plus the subscription), per connection
    /// established.
    pub connect_ms: Latency,
    pub errors: Errors,
    pub client_cpu: ClientCpu,
    /// With `--server-pid`: summed over every PID given.
    pub server_cpu: Option<ServerCpu>,
    /// With `--redis-pid` (fan-out): the Redis server's CPU time per event published.
    pub redis_cpu: Option<RedisCpu>,
    /// Fan-out mode only.
    pub fanout: Option<Fanout>,
}

/// Fan-out figures. Events and deliveries are those of the events whose intended send time
/// fell in the window.
#[derive(Serialize, Debug, Default)]
pub struct Fanout {
    /// Path and query the subscribers connected to.
    pub ws_path: String,
    /// Where events were triggered (the first hub's).
    pub rest_url: String,
    /// Every hub, in the order given (subscriber i is on hub i mod N).
    pub hubs: Vec<Hub>,
    /// Events went to the hubs in turn (`--publish-round-robin`), else all to the first.
    pub publish_round_robin: bool,
    pub app_id: String,
    pub channel: String,
    /// The events' name.
    pub event: &'static str,
    /// Size of each event's data.
    pub data_bytes: u64,
    /// Connections subscribed to the channel.
    pub subscribers: usize,
    /// Events due in the window.
    pub events_scheduled: u64,
    /// Events of the window the API accepted (HTTP 200).
    pub events_published: u64,
    /// Publish requests that failed, warm-up included.
    pub events_failed: u64,
    /// events_published x subscribers.
    pub deliveries_expected: u64,
    /// Distinct deliveries of the window's events.
    pub deliveries_received: u64,
    /// Accepted events that a subscriber never received (by the drain deadline).
    pub missing: u64,
    /// Deliveries of an event a subscriber had already received.
    pub duplicates: u64,
    /// Deliveries of an event after a later one.
    pub out_of_order: u64,
    pub target_events_per_s: f64,
    /// Target events per second x subscribers.
    pub target_deliveries_per_s: f64,
    /// deliveries_received over the window.
    pub deliveries_per_s: f64,
    /// Round trip of each accepted publish request (warm-up included).
    pub publish_ms: Latency,
}

/// One hub of a fan-out run.
#[derive(Serialize, Debug, Default)]
pub struct Hub {
    pub url: String,
    pub rest_url: String,
    /// Subscriptions it confirmed.
    pub subscribers: u64,
}

#[derive(Serialize, Debug)]
pub struct Options {
    pub url: String,
    pub connections: usize,
    pub payload_size: usize,
    /// "binary" or "text".
    pub message_type: &'static str,
    /// "random" or "json" (`--payload`).
    pub payload: &'static str,
    pub deflate: bool,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// Open loop: target messages per second per connection.
    pub rate_per_connection: Option<f64>,
    pub sources: Vec<String>,
    pub threads: usize,
    pub connect_timeout_s: f64,
    pub connect_concurrency: usize,
    pub drain_timeout_s: f64,
    /// The first `--server-pid`.
    pub server_pid: Option<u32>,
    /// Every `--server-pid`.
    pub server_pids: Vec<u32>,
    pub redis_pid: Option<u32>,
}

#[derive(Serialize, Debug, Default)]
pub struct Connections {
    pub requested: usize,
    pub established: usize,
    /// Connections on which permessage-deflate was agreed.
    pub deflate_negotiated: usize,
    /// Connections that failed after being established.
    pub failed_during_run: usize,
    /// Connections that ended with a completed closing handshake.
    pub closed_cleanly: usize,
}

#[derive(Serialize, Debug, Default)]
pub struct Messages {
    pub payload_bytes: usize,
    /// Open loop: messages whose intended send time fell in the window.
    pub scheduled: Option<u64>,
    /// Messages whose send started (closed loop) or completed (open loop) in the window.
    pub sent: u64,
    /// Echoes received in the window.
    pub echoes: u64,
}

#[derive(Serialize, Debug, Default)]
pub struct Rates {
    /// Open loop: rate per connection x connections established.
    pub target_per_s: Option<f64>,
    pub sent_per_s: f64,
    pub echoes_per_s: f64,
    /// Echoed payload, MiB/s each way (before compression).
    pub payload_mib_per_s: f64,
}

#[derive(Serialize, Debug, Default)]
pub struct Latency {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub stdev: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    /// From a histogram of nanoseconds, in units of `unit_ns` nanoseconds.
    pub fn from_histogram(h: &Histogram<u64>, unit_ns: f64) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let u = |v: u64| round3(v as f64 / unit_ns);
        Latency {
            count: h.len(),
            min: u(h.min()),
            mean: round3(h.mean() / unit_ns),
            stdev: round3(h.stdev() / unit_ns),
            p50: u(h.value_at_quantile(0.5)),
            p90: u(h.value_at_quantile(0.9)),
            p99: u(h.value_at_quantile(0.99)),
            p99_9: u(h.value_at_quantile(0.999)),
            max: u(h.max()),
        }
    }
}

#[derive(Serialize, Debug, Default)]
pub struct Errors {
    pub total: u64,
    pub connect: u64,
    pub io: u64,
    pub mismatch: u64,
    pub unanswered: u64,
    pub close: u64,
    /// The first distinct error messages.
    pub samples: Vec<String>,
}

#[derive(Serialize, Debug, Default)]
pub struct ClientCpu {
    /// CPU time of this process over the window (/proc/self/stat, 10 ms ticks).
    pub user_s: f64,
    pub system_s: f64,
    pub total_s: f64,
    pub wall_s: f64,
    /// total_s / wall_s: 1.0 is one core busy all the time.
    pub utilization: f64,
    pub us_per_echo: Option<f64>,
    /// CPU time of the whole run, connecting and closing included.
    pub process_total_s: f64,
}

/// CPU time over the window, summed over `pids` (one entry of `per_pid` each).
#[derive(Serialize, Debug, Default)]
pub struct ServerCpu {
    /// The first PID.
    pub pid: u32,
    pub pids: Vec<u32>,
    pub user_s: f64,
    pub system_s: f64,
    pub total_s: f64,
    /// total_s / wall time: 1.0 is one core busy all the time.
    pub utilization: f64,
    pub us_per_echo: Option<f64>,
    /// With several PIDs: each one's figures.
    pub per_pid: Vec<ProcessCpu>,
}

/// One process's CPU time over the window.
#[derive(Serialize, Debug, Default)]
pub struct ProcessCpu {
    pub pid: u32,
    pub user_s: f64,
    pub system_s: f64,
    pub total_s: f64,
    pub utilization: f64,
    pub us_per_echo: Option<f64>,
}

/// The Redis server's CPU time over the window.
#[derive(Serialize, Debug, Default)]
pub struct RedisCpu {
    pub pid: u32,
    pub user_s: f64,
    pub system_s: f64,
    pub total_s: f64,
    pub utilization: f64,
    /// Per event of the window the API accepted.
    pub us_per_event: Option<f64>,
    /// Per delivery (for comparison with the servers' figure).
    pub us_per_delivery: Option<f64>,
}

pub fn round3(x: f64) -> f64 {
    if x.is_finite() {
        (x * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// A rate per second, 0 over an empty window.
pub fn per_second(count: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        round3(count / seconds)
    } else {
        0.0
    }
}

impl Report {
    /// A few lines for people.
    pub fn human(&self) -> String {
        let o = &self.options;
        let c = &self.connections;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "duplex bench: {}, {} connection(s), {} B {}, deflate {}, {}",
            self.mode,
            o.connections,
            o.payload_size,
            if self.fanout.is_some() {
                "event data"
            } else if o.message_type == "text" {
                "text messages"
            } else {
                "binary messages"
            },
            match (o.deflate, c.deflate_negotiated) {
                (false, _) => "off".to_owned(),
                (true, n) => format!("on ({n} agreed)"),
            },
            o.url
        );
        let _ = writeln!(
            s,
            "window        {:.2} s after {:.2} s warm-up{}",
            self.window_s,
            o.warmup_s,
            if self.stopped_early {
                " (stopped early)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "connections   {} established of {}, {} failed during the run, {} closed cleanly",
            c.established, c.requested, c.failed_during_run, c.closed_cleanly
        );
        let r = &self.rates;
        let m = &self.messages;
        if self.fanout.is_some() {
            // Its own lines below.
        } else if let (Some(target), Some(scheduled)) = (r.target_per_s, m.scheduled) {
            let _ = writeln!(
                s,
                "rate          target {:.0}/s, sent {:.0}/s, echoed {:.0}/s ({} due, {} sent, {} echoes)",
                target, r.sent_per_s, r.echoes_per_s, scheduled, m.sent, m.echoes
            );
        } else {
            let _ = writeln!(
                s,
                "echoes        {} ({:.0}/s, {:.2} MiB/s each way)",
                m.echoes, r.echoes_per_s, r.payload_mib_per_s
            );
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                s,
                "fan-out       {} subscriber(s) of {:?}, {} B event data; events {} due, {} published, {} failed",
                f.subscribers, f.channel, f.data_bytes, f.events_scheduled, f.events_published, f.events_failed
            );
            let _ = writeln!(
                s,
                "deliveries    {} of {} expected ({:.0}/s, target {:.0}/s); missing {}, duplicate {}, out of order {}",
                f.deliveries_received,
                f.deliveries_expected,
                f.deliveries_per_s,
                f.target_deliveries_per_s,
                f.missing,
                f.duplicates,
                f.out_of_order
            );
            if f.hubs.len() > 1 {
                let hubs: Vec<String> = f
                    .hubs
                    .iter()
                    .map(|h| format!("{} ({})", h.url, h.subscribers))
                    .collect();
                let _ = writeln!(
                    s,
                    "hubs          {} (subscribers); events triggered on {}",
                    hubs.join(", "),
                    if f.publish_round_robin {
                        "each hub in turn"
                    } else {
                        "the first"
                    }
                );
            }
            let p = &f.publish_ms;
            let _ = writeln!(
                s,
                "publish (ms)  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  (HTTP round trip)",
                p.p50, p.p90, p.p99, p.max
            );
        }
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "latency (µs)  p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1}, n {})",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean, l.count
        );
        for (name, l) in [
            ("service (µs)", &self.service_latency_us),
            ("send lag (µs)", &self.send_lag_us),
        ] {
            if let Some(l) = l {
                let _ = writeln!(
                    s,
                    "{name:<14}p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                    l.p50, l.p90, l.p99, l.p99_9, l.max
                );
            }
        }
        let e = &self.errors;
        let _ = writeln!(
            s,
            "errors        {} (connect {}, io {}, mismatch {}, unanswered {}, close {})",
            e.total, e.connect, e.io, e.mismatch, e.unanswered, e.close
        );
        for sample in &e.samples {
            let _ = writeln!(s, "              {sample}");
        }
        let cpu = &self.client_cpu;
        let _ = writeln!(
            s,
            "client CPU    {:.2} s over {:.2} s wall ({:.0} %){}",
            cpu.total_s,
            cpu.wall_s,
            cpu.utilization * 100.0,
            per_echo(cpu.us_per_echo, self.fanout.is_some())
        );
        if let Some(srv) = &self.server_cpu {
            let pids: Vec<String> = srv.pids.iter().map(u32::to_string).collect();
            let _ = writeln!(
                s,
                "server CPU    {:.2} s ({:.0} %, pid {}){}",
                srv.total_s,
                srv.utilization * 100.0,
                pids.join("+"),
                per_echo(srv.us_per_echo, self.fanout.is_some())
            );
            if srv.per_pid.len() > 1 {
                for p in &srv.per_pid {
                    let _ = writeln!(
                        s,
                        "  pid {:<9} {:.2} s ({:.0} %){}",
                        p.pid,
                        p.total_s,
                        p.utilization * 100.0,
                        per_echo(p.us_per_echo, self.fanout.is_some())
                    );
                }
            }
        }
        if let Some(r) = &self.redis_cpu {
            let _ = writeln!(
                s,
                "redis CPU     {:.2} s ({:.0} %, pid {}){}",
                r.total_s,
                r.utilization * 100.0,
                r.pid,
                r.us_per_event
                    .map(|us| format!(", {us:.2} µs per event"))
                    .unwrap_or_default()
            );
        }
        s
    }
}

fn per_echo(us: Option<f64>, fanout: bool) -> String {
    let what = if fanout { "delivery" } else { "echo" };
    us.map(|us| format!(", {us:.2} µs per {what}"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_from_histogram_is_ordered() {
        let mut h = crate::bench::stats::new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = Latency::from_histogram(&h, 1000.0);
        assert_eq!(l.count, 10_000);
        assert!(l.min <= l.p50 && l.p50 <= l.p90 && l.p90 <= l.p99);
        assert!(l.p99 <= l.p99_9 && l.p99_9 <= l.max);
        assert!((l.p50 - 5000.0).abs() < 10.0);
    }

    #[test]
    fn empty_window_gives_zero_rates() {
        assert_eq!(per_second(10.0, 0.0), 0.0);
        assert_eq!(per_second(10.0, 2.0), 5.0);
    }
}
