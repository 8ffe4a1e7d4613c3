//! Connection settings, with the reason for each default.

use std::time::Duration;

/// Limits and timers of one connection. Every field has a documented, safe default.
///
/// ```
/// use duplex_proto::Config;
/// let config = Config { max_message_size: 1 << 20, ..Config::default() };
/// assert_eq!(config.max_frame_size, 16 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Largest frame payload accepted, in bytes; larger fails with 1009 as soon as the header
    /// arrives. Default 16 MiB: a frame is buffered whole before it is handed on, so this bounds
    /// the input buffer.
    pub max_frame_size: usize,
    /// Largest message accepted (all fragments, after decompression), in bytes; larger fails
    /// with 1009 as soon as it is known. Default 64 MiB: large enough for bulk transfers, small
    /// enough that a peer cannot make one connection hold gigabytes.
    pub max_message_size: usize,
    /// How long to wait for the peer's close frame after sending ours, and (on the client) for
    /// the server to close TCP after the closing handshake. Default 10 s.
    pub close_timeout: Duration,
    /// Send a ping when nothing was received for this long. Default `None` (off): heartbeats
    /// are an application choice.
    pub ping_interval: Option<Duration>,
    /// Fail the connection (1011) when a heartbeat ping gets no pong (or any frame) within this
    /// long. Only used with `ping_interval`. Default 20 s.
    pub pong_timeout: Duration,
    /// Answer pings with pongs automatically (§5.5.2). Default `true`.
    pub auto_pong: bool,
    /// Deliver data messages as [`Event::Chunk`](crate::Event::Chunk) pieces, as their bytes
    /// arrive (partial frames included), instead of whole messages: memory then stays bounded
    /// whatever the message size, so `max_frame_size` can be raised freely. `max_message_size`
    /// still caps a message's total. Default `false`.
    pub chunked_receive: bool,
    /// Close with 1001 ("idle timeout") after this long without a message either way
    /// (control frames do not count). Received messages are timed exactly; a sent one is
    /// noticed at the next timer check, so a connection that only sends closes between one and
    /// two timeouts after its last message. Default `None` (off).
    pub idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            close_timeout: Duration::from_secs(10),
            ping_interval: None,
            pong_timeout: Duration::from_secs(20),
            auto_pong: true,
            idle_timeout: None,
            chunked_receive: false,
        }
    }
}
