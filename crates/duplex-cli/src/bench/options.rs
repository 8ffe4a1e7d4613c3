//! Command-line options of `duplex bench` and their checks.

use std::net::IpAddr;
use std::time::Duration;

/// Longest measured window accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Longest warm-up accepted.
pub const MAX_WARMUP: Duration = Duration::from_secs(600);
/// Longest connection-attempt, drain or close wait accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most connections one run opens.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Largest payload (the echo server's default message limit).
pub const MAX_PAYLOAD: usize = 64 << 20;
/// Highest rate per connection in open-loop mode.
pub const MAX_RATE: f64 = 1_000_000.0;
/// Most source addresses.
pub const MAX_SOURCES: usize = 4096;
/// Most events one fan-out run publishes (each subscriber keeps a bit per event).
pub const MAX_FANOUT_EVENTS: u64 = 1_000_000;

/// Most hub URLs in fan-out mode, and most `--server-pid`s.
pub const MAX_HUBS: usize = 256;

/// How messages are paced.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One message in flight per connection: send, wait for the whole echo, send again.
    #[value(name = "closed", alias = "closed-loop")]
    Closed,
    /// A fixed rate per connection (`--rate`), whatever the echoes do; latency is measured
    /// from each message's intended send time.
    #[value(name = "open", alias = "open-loop")]
    Open,
    /// One publisher, every connection a subscriber of one channel of a Pusher-protocol
    /// server (`duplex serve`): events triggered through the REST API at `--rate` per second,
    /// delivery latency measured at each subscriber.
    #[value(name = "fanout", alias = "fan-out")]
    Fanout,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed-loop",
            Mode::Open => "open-loop",
            Mode::Fanout => "fan-out",
        }
    }
}

/// What the messages hold.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Random bytes (binary) or random alphanumerics (`--text`): incompressible.
    Random,
    /// JSON-like text (arrays of event objects with repeated keys and random values, as a
    /// hub pushes), deterministic; compresses several-fold. Sent as text messages.
    Json,
}

/// One `--source` value: an address or an inclusive range `A-B` of addresses.
#[derive(Clone, Debug)]
pub struct SourceRange(pub Vec<IpAddr>);

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// WebSocket URL of an echo server (`ws://` only); with `--mode fanout`, of a
    /// Pusher-protocol server (`ws://HOST:PORT`: the path `/app/KEY?protocol=7&..` is added).
    #[arg(default_value = "ws://127.0.0.1:9001/")]
    pub url: String,
    /// closed: one message in flight per connection, report echoes/s; open: a fixed rate per
    /// connection (--rate), report latency percentiles and achieved vs target rate; fanout: every
    /// connection subscribes to one channel of `duplex serve`, events are published at --rate
    /// per second (the --payload-size is the event data's), report delivery latency.
    #[arg(short, long, value_enum, default_value_t = Mode::Closed)]
    pub mode: Mode,
    /// Connections to open.
    #[arg(short, long, default_value_t = 10)]
    pub connections: usize,
    /// Message payload size in bytes.
    #[arg(short = 's', long, default_value_t = 64)]
    pub payload_size: usize,
    /// Send text messages (random alphanumerics) instead of binary ones (random bytes).
    #[arg(long)]
    pub text: bool,
    /// Message content: random, or json (JSON-like text for permessage-deflate runs;
    /// implies text messages).
    #[arg(long, value_enum, default_value_t = Payload::Random)]
    pub payload: Payload,
    /// Offer permessage-deflate (the server must accept it: `duplex echo --deflate`). The
    /// closed loop then runs through the full WebSocket layer (its codec) instead of the lean
    /// raw-frame engine, so the client costs more per echo.
    #[arg(long)]
    pub deflate: bool,
    /// Length of the measured window (e.g. 10s, 500ms, 2m; a bare number is seconds).
    #[arg(short, long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load applied before the measured window, excluded from every figure.
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Open-loop mode: messages per second per connection. Fan-out mode: events per second.
    #[arg(short, long)]
    pub rate: Option<f64>,
    /// Source address(es) to bind client sockets to, used round-robin, e.g.
    /// `127.0.0.2,127.0.0.3` or `127.0.0.2-127.0.0.9` (each source address has its own
    /// ephemeral ports). Repeatable.
    #[arg(long = "source", value_name = "ADDR[-ADDR]", value_delimiter = ',', value_parser = parse_source)]
    pub sources: Vec<SourceRange>,
    /// Runtime worker threads; 1 (the default) runs everything on one thread, so the client
    /// can be pinned to one core (taskset -c N).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Time allowed for each connection's TCP connect plus opening handshake.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// After the window: time allowed for outstanding echoes, then again for the closing
    /// handshake.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Also report this process's CPU time over the window (from /proc/PID/stat), per echo.
    /// Repeatable (or a comma list): the CPU times of every PID are summed (the nodes of a
    /// cluster), and reported per PID too.
    #[arg(long = "server-pid", value_name = "PID", value_delimiter = ',')]
    pub server_pids: Vec<u32>,
    /// Print one JSON object with every figure and the options on stdout.
    #[arg(long)]
    pub json: bool,
    /// No live progress line on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Idle connections (memory measurements): open --connections plain connections, send
    /// nothing, answer pings, print `{"event":"established","connections":N,"failed":F}` on
    /// stdout once every attempt has finished, then hold them until --duration elapses, a
    /// SIGTERM/SIGINT arrives or stdin reaches end of file (so `</dev/null` ends at once: keep
    /// stdin open), and close them.
    #[arg(long)]
    pub idle: bool,
    #[command(flatten)]
    pub fanout: FanoutArgs,
}

/// Options of `--mode fanout` (the defaults are `duplex serve`'s default app).
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Fan-out mode")]
pub struct FanoutArgs {
    /// App id: events are triggered with `POST /apps/ID/events`.
    #[arg(long, default_value = "app-id")]
    pub app_id: String,
    /// App key: subscribers connect to `/app/KEY` (unless the URL has a path) and requests are
    /// signed with it.
    #[arg(long, default_value = "app-key")]
    pub app_key: String,
    /// App secret, to sign the REST requests.
    #[arg(long, default_value = "app-secret")]
    pub app_secret: String,
    /// The public channel every connection subscribes to.
    #[arg(long, default_value = "duplex-bench")]
    pub channel: String,
    /// Another hub of the same cluster (`ws://HOST:PORT`; repeatable or a comma list; the
    /// positional URL may be a comma list too). Subscribers are spread round robin over the
    /// positional URL(s) then these: subscriber i connects to hub i mod N.
    #[arg(long = "url", value_name = "URL", value_delimiter = ',')]
    pub extra_urls: Vec<String>,
    /// Trigger event k on hub k mod N instead of always on the first hub.
    #[arg(long)]
    pub publish_round_robin: bool,
    /// Also report this process's CPU time over the window per event published (the Redis
    /// server a cluster shares).
    #[arg(long, value_name = "PID")]
    pub redis_pid: Option<u32>,
}

impl BenchArgs {
    /// Checks the options against each other and the caps; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(format!("--connections must be 1..={MAX_CONNECTIONS}"));
        }
        if self.payload_size > MAX_PAYLOAD {
            return Err(format!("--payload-size must be at most {MAX_PAYLOAD}"));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return Err(format!(
                "--duration must be above 0 and at most {}s",
                MAX_DURATION.as_secs()
            ));
        }
        if self.warmup > MAX_WARMUP {
            return Err(format!(
                "--warmup must be at most {}s",
                MAX_WARMUP.as_secs()
            ));
        }
        for (name, value) in [
            ("--connect-timeout", self.connect_timeout),
            ("--drain-timeout", self.drain_timeout),
        ] {
            if value.is_zero() || value > MAX_WAIT {
                return Err(format!(
                    "{name} must be above 0 and at most {}s",
                    MAX_WAIT.as_secs()
                ));
            }
        }
        if self.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        if self.threads > 1024 {
            return Err("--threads must be at most 1024".into());
        }
        match (self.mode, self.rate) {
            (Mode::Open, None) => return Err("--mode open needs --rate".into()),
            (Mode::Fanout, None) => {
                return Err("--mode fanout needs --rate (events per second)".into())
            }
            (Mode::Open | Mode::Fanout, Some(r)) if !(r > 0.0 && r <= MAX_RATE) => {
                return Err(format!("--rate must be above 0 and at most {MAX_RATE}"))
            }
            (Mode::Closed, Some(_)) => {
                return Err(
                    "--rate is for --mode open (closed loop sends as fast as echoes come back)"
                        .into(),
                )
            }
            _ => {}
        }
        if self.mode == Mode::Fanout {
            self.validate_fanout()?;
        } else {
            let f = &self.fanout;
            if self.hub_urls().len() > 1 || f.publish_round_robin || f.redis_pid.is_some() {
                return Err(
                    "several URLs, --url, --publish-round-robin and --redis-pid are for --mode fanout"
                        .into(),
                );
            }
        }
        if self.idle {
            if self.mode != Mode::Closed || self.rate.is_some() {
                return Err("--idle sends nothing: drop --mode and --rate".into());
            }
            if self.deflate {
                return Err("--idle opens plain connections: drop --deflate".into());
            }
        }
        if self.server_pids.len() > MAX_HUBS {
            return Err(format!("at most {MAX_HUBS} --server-pid"));
        }
        let sources = self.source_addrs();
        if sources.len() > MAX_SOURCES {
            return Err(format!("at most {MAX_SOURCES} source addresses"));
        }
        if let Some(first) = sources.first() {
            if sources.iter().any(|a| a.is_ipv4() != first.is_ipv4()) {
                return Err("source addresses must all be IPv4 or all IPv6".into());
            }
        }
        Ok(())
    }

    /// Fan-out: the events fit the per-subscriber bookkeeping, the names are usable as is.
    fn validate_fanout(&self) -> Result<(), String> {
        let events = self.fanout_events();
        if events > MAX_FANOUT_EVENTS {
            return Err(format!(
                "--rate x (--warmup + --duration) is {events} events; at most {MAX_FANOUT_EVENTS}"
            ));
        }
        let f = &self.fanout;
        // Pusher's channel name rule; public channels only (no auth in the bench).
        let channel_ok = !f.channel.is_empty()
            && f.channel.len() <= 164
            && f.channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_=@,.;".contains(&b));
        if !channel_ok {
            return Err(format!(
                "--channel {:?}: 1 to 164 of A-Z a-z 0-9 - _ = @ , . ;",
                f.channel
            ));
        }
        if ["private-", "presence-", "cache-"]
            .iter()
            .any(|p| f.channel.starts_with(p))
        {
            return Err(format!(
                "--channel {:?}: the bench subscribes without auth; use a public channel name",
                f.channel
            ));
        }
        let hubs = self.hub_urls().len();
        if hubs == 0 || hubs > MAX_HUBS {
            return Err(format!("1 to {MAX_HUBS} hub URLs"));
        }
        // Both go into URLs unescaped.
        for (name, value) in [("--app-id", &f.app_id), ("--app-key", &f.app_key)] {
            let ok = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b));
            if !ok {
                return Err(format!("{name} {value:?}: use A-Z a-z 0-9 - _ . ~"));
            }
        }
        Ok(())
    }

    /// Every hub URL: the positional one(s) (a comma list), then each `--url`. One URL outside
    /// fan-out mode.
    pub fn hub_urls(&self) -> Vec<String> {
        self.url
            .split(',')
            .chain(self.fanout.extra_urls.iter().flat_map(|u| u.split(',')))
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The first PID of `--server-pid`, if any.
    pub fn server_pid(&self) -> Option<u32> {
        self.server_pids.first().copied()
    }

    /// Fan-out: events the publisher will schedule, warm-up included (rounded up).
    pub fn fanout_events(&self) -> u64 {
        let seconds = (self.warmup + self.duration).as_secs_f64();
        (self.rate.unwrap_or(0.0) * seconds).ceil() as u64 + 1
    }

    /// Messages are sent as text frames.
    pub fn sends_text(&self) -> bool {
        self.text || self.payload == Payload::Json
    }

    /// Every source address, in order.
    pub fn source_addrs(&self) -> Vec<IpAddr> {
        self.sources
            .iter()
            .flat_map(|r| r.0.iter().copied())
            .collect()
    }
}

/// Parses `10s`, `500ms`, `2m`, `1.5` (seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let bad = || format!("invalid duration {s:?} (examples: 10s, 500ms, 2m, 1.5)");
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(value * unit).map_err(|_| bad())
}

/// Parses `ADDR` or `ADDR-ADDR` (inclusive, same family, at most [`MAX_SOURCES`]).
pub fn parse_source(s: &str) -> Result<SourceRange, String> {
    let parse = |a: &str| {
        a.trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("invalid source address {a:?}"))
    };
    let Some((from, to)) = s.split_once('-') else {
        return Ok(SourceRange(vec![parse(s)?]));
    };
    let (from, to) = (parse(from)?, parse(to)?);
    let (lo, hi) = match (from, to) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b))),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
        _ => return Err(format!("{s:?}: both ends must be of one address family")),
    };
    if hi < lo {
        return Err(format!("{s:?}: the range is empty"));
    }
    if hi - lo >= MAX_SOURCES as u128 {
        return Err(format!("{s:?}: at most {MAX_SOURCES} addresses"));
    }
    let addrs = (lo..=hi)
        .map(|n| match from {
            // In range of u32: both ends are IPv4 here.
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(n)),
        })
        .collect();
    Ok(SourceRange(addrs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("inf").is_err());
    }

    #[test]
    fn hub_urls_join_the_positional_list_and_url_options() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
                .unwrap()
                .bench
        };
        let a = parse(&[
            "ws://a:1,ws://b:2",
            "--url",
            "ws://c:3",
            "--url=ws://d:4,ws://e:5",
        ]);
        assert_eq!(
            a.hub_urls(),
            ["ws://a:1", "ws://b:2", "ws://c:3", "ws://d:4", "ws://e:5"]
        );
        assert!(a.validate().is_err(), "several hubs outside fan-out mode");
        let b = parse(&["ws://a:1", "--server-pid", "1,2", "--server-pid", "3"]);
        assert_eq!(b.server_pids, [1, 2, 3]);
        assert_eq!(b.server_pid(), Some(1));
        assert_eq!(parse(&[]).hub_urls(), ["ws://127.0.0.1:9001/"]);
        let c = parse(&[
            "ws://a:1", "--mode", "fanout", "--rate", "1", "--url", "ws://b:2",
        ]);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn sources() {
        let r = parse_source("127.0.0.2-127.0.0.4").unwrap();
        let want: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(r.0, want);
        assert_eq!(parse_source("127.0.0.9").unwrap().0.len(), 1);
        assert!(parse_source("127.0.0.9-127.0.0.2").is_err());
        assert!(parse_source("127.0.0.1-::1").is_err());
        assert!(parse_source("127.0.0.1-127.1.0.0").is_err());
    }
}
