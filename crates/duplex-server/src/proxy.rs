//! Behind load balancers: which address is the client's.
//!
//! A node behind nginx or HAProxy sees the balancer as its TCP peer. Two ways carry the real
//! client's address, and both are believed only from peers listed in `--trust-proxy`:
//!
//! - **`X-Forwarded-For`** (L7 balancers): when the TCP peer is trusted, the header's addresses
//!   are walked from the right, skipping trusted ones; the first untrusted address is the
//!   client (nginx's `real_ip_recursive on`). From an untrusted peer the header is ignored, so a
//!   client cannot spoof its address.
//! - **PROXY protocol v1/v2** (`--proxy-protocol`, L4 balancers such as HAProxy `mode tcp`
//!   with `send-proxy`/`send-proxy-v2`): every accepted connection must start with a PROXY
//!   header from a trusted peer; others are closed. The header's source address replaces the
//!   TCP peer (then `X-Forwarded-For` applies as above, if that address is itself trusted).
//!
//! The header is read with `peek` and then consumed to its exact length, so the bytes after it
//! (the HTTP request or the TLS handshake) stay in the socket untouched. Parsing is the `ppp`
//! crate's.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use ppp::{HeaderResult, PartialResult};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a peer may take to send its PROXY header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest PROXY header accepted (v1 is at most 107 bytes; v2 is 16 bytes plus addresses and
/// TLVs, which balancers keep small).
const MAX_HEADER: usize = 4096;

/// An IPv4 or IPv6 network: `10.0.0.0/8`, `::1/128`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        Ok(Cidr {
            net: normalize(net),
            prefix: if net.is_ipv4() || normalize(net).is_ipv6() {
                prefix
            } else {
                // An IPv4-mapped IPv6 network: its prefix counts the 96 mapping bits.
                prefix.saturating_sub(96)
            },
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4.
fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Cidr {
    /// Whether `ip` is in this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, normalize(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The `--trust-proxy` / `--proxy-protocol` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustProxy {
    /// Trusted peers.
    pub nets: Vec<Cidr>,
    /// Expect a PROXY header on every connection.
    pub proxy_protocol: bool,
}

impl TrustProxy {
    /// Parses the configured CIDRs; the error names the bad entry.
    pub fn new(cidrs: &[String], proxy_protocol: bool) -> Result<TrustProxy, String> {
        let nets = cidrs
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<Cidr>, String>>()?;
        if proxy_protocol && nets.is_empty() {
            return Err(
                "--proxy-protocol needs --trust-proxy: a PROXY header is accepted only \
                 from the load balancers listed there"
                    .into(),
            );
        }
        Ok(TrustProxy {
            nets,
            proxy_protocol,
        })
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// The client's address for a request that came from `peer` (the TCP peer, or the PROXY
    /// header's source) with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = normalize(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        // Every X-Forwarded-For line, in order, is one comma-separated list.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage: keep the last address we could vouch for.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, `1.2.3.4:5678` or `[2001:db8::1]:80`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(normalize(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| normalize(s.ip()))
}

/// Who is on the other end of one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// The TCP peer (the balancer, when there is one).
    pub tcp: SocketAddr,
    /// The source address of a PROXY header, when one named it.
    pub proxied: Option<SocketAddr>,
}

impl Peer {
    /// The address requests on this connection come from, as far as the transport knows.
    pub fn addr(&self) -> SocketAddr {
        self.proxied.unwrap_or(self.tcp)
    }
}

/// Why a connection was refused before HTTP.
#[derive(Debug)]
pub enum ProxyHeaderError {
    /// The peer is not in `--trust-proxy`.
    Untrusted,
    /// No valid header within [`HEADER_TIMEOUT`], or a malformed one.
    Invalid(String),
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::Untrusted => f.write_str("peer is not in --trust-proxy"),
            ProxyHeaderError::Invalid(e) => write!(f, "PROXY header: {e}"),
        }
    }
}

/// Reads and consumes the PROXY header that must start `tcp` (trusted peers only), leaving
/// every byte after it in the socket. Returns the source address it names (`None` for
/// `LOCAL`/`UNKNOWN`, e.g. a balancer's own health check).
pub async fn accept_header(
    tcp: &mut TcpStream,
    peer: SocketAddr,
    trust: &TrustProxy,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    if !trust.trusts(peer.ip()) {
        return Err(ProxyHeaderError::Untrusted);
    }
    match tokio::time::timeout(HEADER_TIMEOUT, read_header(tcp)).await {
        Ok(r) => r.map_err(ProxyHeaderError::Invalid),
        Err(_) => Err(ProxyHeaderError::Invalid(format!(
            "none within {HEADER_TIMEOUT:?}"
        ))),
    }
}

async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, String> {
    let mut buf = vec![0u8; MAX_HEADER];
    let mut seen = 0;
    loop {
        let n = tcp.peek(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the header".into());
        }
        let parsed = HeaderResult::parse(&buf[..n]);
        if parsed.is_complete() {
            let (len, source) = match parsed {
                HeaderResult::V1(Ok(h)) => (h.header.len(), v1_source(&h.addresses)),
                HeaderResult::V2(Ok(h)) => (h.len(), v2_source(&h)),
                HeaderResult::V1(Err(e)) => return Err(format!("v1: {e}")),
                HeaderResult::V2(Err(e)) => return Err(format!("v2: {e}")),
            };
            // Consume exactly the header: what follows is the HTTP request (or TLS).
            tcp.read_exact(&mut buf[..len])
                .await
                .map_err(|e| e.to_string())?;
            return Ok(source);
        }
        if n == buf.len() {
            return Err(format!("longer than {MAX_HEADER} bytes"));
        }
        if n == seen {
            // `peek` returns at once while data is buffered: wait for more to arrive.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen = n;
    }
}

fn v1_source(addresses: &ppp::v1::Addresses) -> Option<SocketAddr> {
    match addresses {
        ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &ppp::v2::Header<'_>) -> Option<SocketAddr> {
    if header.command == ppp::v2::Command::Local {
        return None;
    }
    match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn trust(cidrs: &[&str]) -> TrustProxy {
        TrustProxy::new(
            &cidrs.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            false,
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped IPv6");
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::1")));
        assert!("::1".parse::<Cidr>().unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "x", "10.0.0.0/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let none = TrustProxy::default();
        let spoofed = xff(&["6.6.6.6"]);
        assert_eq!(none.client_ip(ip("127.0.0.1"), &spoofed), ip("127.0.0.1"));
        let t = trust(&["10.0.0.0/8"]);
        assert_eq!(t.client_ip(ip("203.0.113.9"), &spoofed), ip("203.0.113.9"));
    }

    #[test]
    fn forwarded_for_from_trusted_peers_is_walked_from_the_right() {
        let t = trust(&["10.0.0.0/8", "127.0.0.1/32"]);
        assert_eq!(t.client_ip(ip("127.0.0.1"), &xff(&[])), ip("127.0.0.1"));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &xff(&["203.0.113.5"])),
            ip("203.0.113.5")
        );
        // The client put a fake entry first; the balancers appended the real hops.
        assert_eq!(
            t.client_ip(
                ip("127.0.0.1"),
                &xff(&["6.6.6.6, 198.51.100.7", "10.0.0.2"])
            ),
            ip("198.51.100.7")
        );
        // All trusted: the leftmost.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &xff(&["10.0.0.3, 10.0.0.2"])),
            ip("10.0.0.3")
        );
        // Garbage stops the walk at the last address vouched for.
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &xff(&["198.51.100.7, junk, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &xff(&["198.51.100.7:5000"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn proxy_protocol_needs_trusted_peers() {
        assert!(TrustProxy::new(&[], true).is_err());
        assert!(TrustProxy::new(&["nope".into()], false)
            .unwrap_err()
            .contains("nope"));
    }

    /// Sends `bytes` (in two writes, to exercise partial headers) and returns what the server
    /// side parsed and the bytes left after the header.
    async fn roundtrip(
        bytes: Vec<u8>,
        trust: TrustProxy,
    ) -> (Result<Option<SocketAddr>, ProxyHeaderError>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let half = bytes.len() / 3;
            c.write_all(&bytes[..half]).await.unwrap();
            c.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.write_all(&bytes[half..]).await.unwrap();
            c.shutdown().await.unwrap();
            c
        });
        let (mut tcp, peer) = listener.accept().await.unwrap();
        let r = accept_header(&mut tcp, peer, &trust).await;
        let mut rest = Vec::new();
        if r.is_ok() {
            tcp.read_to_end(&mut rest).await.unwrap();
        }
        drop(client.await);
        (r, rest)
    }

    #[tokio::test]
    async fn v1_and_v2_headers_are_consumed_exactly() {
        let t = trust(&["127.0.0.1"]);
        let mut v1 = b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 6001\r\n".to_vec();
        v1.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (r, rest) = roundtrip(v1, t.clone()).await;
        assert_eq!(r.unwrap(), Some("198.51.100.7:51000".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n\r\n");

        let src: SocketAddr = "[2001:db8::7]:40000".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:6001".parse().unwrap();
        let mut v2 = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Proxy,
            ppp::v2::Protocol::Stream,
            (src, dst),
        )
        .write_tlv(ppp::v2::Type::NoOp, b"xx")
        .unwrap()
        .build()
        .unwrap();
        v2.extend_from_slice(b"after");
        let (r, rest) = roundtrip(v2, t.clone()).await;
        assert_eq!(r.unwrap(), Some(src));
        assert_eq!(rest, b"after");

        let local = ppp::v2::Builder::with_addresses(
            ppp::v2::Version::Two | ppp::v2::Command::Local,
            ppp::v2::Protocol::Unspecified,
            ppp::v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        let (r, rest) = roundtrip(local, t.clone()).await;
        assert_eq!(r.unwrap(), None, "LOCAL (health checks) keeps the TCP peer");
        assert!(rest.is_empty());

        let (r, _) = roundtrip(b"PROXY UNKNOWN\r\nrest".to_vec(), t).await;
        assert_eq!(r.unwrap(), None);
    }

    #[tokio::test]
    async fn missing_or_untrusted_headers_are_refused() {
        let t = trust(&["127.0.0.1"]);
        let (r, _) = roundtrip(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), t).await;
        assert!(matches!(r, Err(ProxyHeaderError::Invalid(_))), "{r:?}");
        let (r, _) = roundtrip(
            b"PROXY TCP4 198.51.100.7 10.0.0.1 1 2\r\n".to_vec(),
            trust(&["10.0.0.0/8"]),
        )
        .await;
        assert!(matches!(r, Err(ProxyHeaderError::Untrusted)), "{r:?}");
    }
}
