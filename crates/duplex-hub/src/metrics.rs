//! Counters, gauges and a latency histogram, rendered in the Prometheus text exposition format.
//!
//! Owns the numbers only: the hub, API and webhook dispatcher bump them with relaxed atomics
//! (no locks on the fan-out path); the CLI serves [`Metrics::render`] at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the delivery latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }
}

/// Every metric the hub exposes.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused at connect (unknown app, quota...).
    pub connections_refused_total: AtomicU64,
    /// Connections open now (gauge).
    pub connections_current: AtomicU64,
    /// Channel subscriptions held by local connections now (gauge).
    pub subscriptions_current: AtomicU64,
    /// Frames received from clients.
    pub messages_in_total: AtomicU64,
    /// Bytes received from clients.
    pub bytes_in_total: AtomicU64,
    /// Messages queued to clients.
    pub messages_out_total: AtomicU64,
    /// Bytes queued to clients.
    pub bytes_out_total: AtomicU64,
    /// Events published (API or client events), counted once per channel.
    pub events_published_total: AtomicU64,
    /// Client events refused by the rate limit.
    pub client_events_rate_limited_total: AtomicU64,
    /// `pusher:error`s sent to clients.
    pub client_errors_total: AtomicU64,
    /// Connections closed because their outbound queue overflowed.
    pub slow_consumers_total: AtomicU64,
    /// REST calls answered 2xx.
    pub api_requests_2xx: AtomicU64,
    /// REST calls answered 4xx.
    pub api_requests_4xx: AtomicU64,
    /// REST calls answered 5xx.
    pub api_requests_5xx: AtomicU64,
    /// Webhook POSTs that got a 2xx.
    pub webhooks_delivered_total: AtomicU64,
    /// Webhook POST attempts that failed and will be retried.
    pub webhooks_retried_total: AtomicU64,
    /// Webhook batches abandoned after the retry policy gave up.
    pub webhooks_failed_total: AtomicU64,
    /// Webhook events dropped because the queue was full.
    pub webhooks_dropped_total: AtomicU64,
    /// Time from publish to the message sitting in every local subscriber's queue.
    pub delivery_latency: Histogram,
}

impl Metrics {
    /// Counts an API response by status class.
    pub fn api_response(&self, status: u16) {
        match status {
            200..=299 => self.api_requests_2xx.fetch_add(1, Relaxed),
            400..=499 => self.api_requests_4xx.fetch_add(1, Relaxed),
            _ => self.api_requests_5xx.fetch_add(1, Relaxed),
        };
    }

    /// Counts one client frame of `len` bytes.
    pub fn message_in(&self, len: usize) {
        self.messages_in_total.fetch_add(1, Relaxed);
        self.bytes_in_total.fetch_add(len as u64, Relaxed);
    }

    /// Counts one queued outbound message of `len` bytes.
    pub fn message_out(&self, len: usize) {
        self.messages_out_total.fetch_add(1, Relaxed);
        self.bytes_out_total.fetch_add(len as u64, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    ///
    /// ```
    /// let m = duplex_hub::metrics::Metrics::default();
    /// let text = m.render();
    /// assert!(text.contains("# TYPE duplex_connections_current gauge"));
    /// ```
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP duplex_{name} {help}");
            let _ = writeln!(out, "# TYPE duplex_{name} {kind}");
            let _ = writeln!(out, "duplex_{name} {value}");
        };
        let c = |a: &AtomicU64| a.load(Relaxed);
        one(
            "connections_total",
            "counter",
            "WebSocket connections accepted.",
            c(&self.connections_total),
        );
        one(
            "connections_refused_total",
            "counter",
            "WebSocket connections refused at connect.",
            c(&self.connections_refused_total),
        );
        one(
            "connections_current",
            "gauge",
            "WebSocket connections open now.",
            c(&self.connections_current),
        );
        one(
            "subscriptions_current",
            "gauge",
            "Channel subscriptions held by local connections.",
            c(&self.subscriptions_current),
        );
        one(
            "messages_in_total",
            "counter",
            "Frames received from clients.",
            c(&self.messages_in_total),
        );
        one(
            "bytes_in_total",
            "counter",
            "Bytes received from clients.",
            c(&self.bytes_in_total),
        );
        one(
            "messages_out_total",
            "counter",
            "Messages queued to clients.",
            c(&self.messages_out_total),
        );
        one(
            "bytes_out_total",
            "counter",
            "Bytes queued to clients.",
            c(&self.bytes_out_total),
        );
        one(
            "events_published_total",
            "counter",
            "Events published, once per channel.",
            c(&self.events_published_total),
        );
        one(
            "client_events_rate_limited_total",
            "counter",
            "Client events refused by the per-connection rate limit.",
            c(&self.client_events_rate_limited_total),
        );
        one(
            "client_errors_total",
            "counter",
            "pusher:error messages sent to clients.",
            c(&self.client_errors_total),
        );
        one(
            "slow_consumers_total",
            "counter",
            "Connections closed because their outbound queue overflowed.",
            c(&self.slow_consumers_total),
        );
        one(
            "webhooks_delivered_total",
            "counter",
            "Webhook POSTs answered 2xx.",
            c(&self.webhooks_delivered_total),
        );
        one(
            "webhooks_retried_total",
            "counter",
            "Failed webhook attempts that were retried.",
            c(&self.webhooks_retried_total),
        );
        one(
            "webhooks_failed_total",
            "counter",
            "Webhook batches abandoned after retries.",
            c(&self.webhooks_failed_total),
        );
        one(
            "webhooks_dropped_total",
            "counter",
            "Webhook events dropped because the queue was full.",
            c(&self.webhooks_dropped_total),
        );
        let _ = writeln!(
            out,
            "# HELP duplex_api_requests_total REST API requests by status class."
        );
        let _ = writeln!(out, "# TYPE duplex_api_requests_total counter");
        for (class, v) in [
            ("2xx", &self.api_requests_2xx),
            ("4xx", &self.api_requests_4xx),
            ("5xx", &self.api_requests_5xx),
        ] {
            let _ = writeln!(
                out,
                "duplex_api_requests_total{{status=\"{class}\"}} {}",
                c(v)
            );
        }
        let h = &self.delivery_latency;
        let _ = writeln!(
            out,
            "# HELP duplex_delivery_latency_seconds Publish to queued-for-every-local-subscriber."
        );
        let _ = writeln!(out, "# TYPE duplex_delivery_latency_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += c(&h.buckets[i]);
            let _ = writeln!(
                out,
                "duplex_delivery_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = c(&h.count);
        let _ = writeln!(
            out,
            "duplex_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "duplex_delivery_latency_seconds_sum {}",
            c(&h.sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "duplex_delivery_latency_seconds_count {count}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the exposition grammar line by line: comments are HELP/TYPE, samples are
    /// `name{labels} value` with a numeric value, every sample's family has a TYPE.
    fn assert_valid_exposition(text: &str) {
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().expect("name");
                let kind = it.next().expect("kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                typed.insert(name.to_string());
            } else if line.starts_with("# HELP ") {
            } else {
                let (name_labels, value) = line.rsplit_once(' ').expect("sample");
                value.parse::<f64>().expect("numeric value");
                let name = name_labels.split('{').next().expect("name");
                let family = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_sum"))
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|f| typed.contains(*f))
                    .unwrap_or(name);
                assert!(typed.contains(family), "untyped sample {line}");
                assert!(
                    name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn render_is_valid_prometheus_text() {
        let m = Metrics::default();
        m.connections_total.fetch_add(3, Relaxed);
        m.api_response(202);
        m.api_response(401);
        m.delivery_latency.observe(Duration::from_micros(300));
        m.delivery_latency.observe(Duration::from_secs(5));
        let text = m.render();
        assert_valid_exposition(&text);
        assert!(text.contains("duplex_connections_total 3\n"));
        assert!(text.contains("duplex_api_requests_total{status=\"4xx\"} 1\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inf_counts_everything() {
        let m = Metrics::default();
        m.delivery_latency.observe(Duration::from_micros(50));
        m.delivery_latency.observe(Duration::from_millis(3));
        m.delivery_latency.observe(Duration::from_secs(2));
        let text = m.render();
        assert!(text.contains("duplex_delivery_latency_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("duplex_delivery_latency_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("duplex_delivery_latency_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("duplex_delivery_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("duplex_delivery_latency_seconds_count 3\n"));
    }
}
