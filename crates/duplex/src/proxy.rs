//! Connecting through proxies: HTTP `CONNECT` and SOCKS5, for `ws://` and `wss://`.
//!
//! This module owns the choice of a proxy for a URL ([`ProxyConfig`], [`Proxy`], the
//! environment rules of [`Proxy::from_env_for`]) and the two tunnel exchanges
//! (`http_connect`, `socks5`), each a few pure functions that build requests and parse replies,
//! plus a small driver that moves the bytes. It never touches the WebSocket handshake or TLS:
//! once the tunnel is open, [`connect`](crate::client::connect) and
//! [`connect_tls`](crate::client::connect_tls) run them over it exactly as over a direct TCP
//! connection, so for `wss://` the TLS handshake, SNI and certificate check are for the
//! target host, never the proxy. The proxy step counts against
//! [`ClientConfig::handshake_timeout`](crate::client::ClientConfig::handshake_timeout).
//!
//! | URL scheme  | Protocol | Target name resolved by |
//! |-------------|----------|-------------------------|
//! | `http://`   | HTTP `CONNECT host:port` (RFC 9110), `Proxy-Authorization: Basic` with credentials | the proxy |
//! | `socks5://` | SOCKS5 (RFC 1928), user/password (RFC 1929) with credentials | the client (the proxy gets an IP address) |
//! | `socks5h://`| SOCKS5, as above | the proxy (it gets the host name) |
//!
//! Credentials come from the proxy URL (`http://user:pass@host:port`, percent-decoded) or
//! [`Proxy::with_credentials`]. A proxy URL without a port uses 1080, as curl does.
//! `https://` proxies (TLS to the proxy itself) are not supported.
//!
//! ```no_run
//! # async fn demo() -> duplex::Result<()> {
//! use duplex::client::{connect_tls, ClientConfig};
//! use duplex::proxy::Proxy;
//!
//! // Always through this proxy:
//! let config = ClientConfig::new().proxy(Proxy::parse("socks5h://user:secret@10.0.0.1:1080")?);
//! let (mut ws, _) = connect_tls("wss://example.com/chat", &config).await?;
//!
//! // Or as curl would: HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, minus NO_PROXY.
//! let config = ClientConfig::new().proxy_from_env();
//! let (mut ws, _) = connect_tls("wss://example.com/chat", &config).await?;
//! # let _ = ws.send("hi").await; Ok(()) }
//! ```
//!
//! # Limits
//!
//! An HTTP proxy's response head may be at most 16 KiB ([`MAX_RESPONSE_HEAD`]) and 64 header
//! lines; a SOCKS5 reply is read to its exact length (262 bytes at most). Nothing the proxy
//! sends is trusted: a truncated, oversized or malformed reply is [`Error::ProxyProtocol`].

mod http_connect;
mod socks5;

pub use http_connect::MAX_RESPONSE_HEAD;
pub use socks5::SocksReply;

use crate::client::Target;
use crate::error::{Error, Result};
use std::fmt;
use std::net::IpAddr;
use tokio::net::TcpStream;

/// The proxy protocol of a [`Proxy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyKind {
    /// An HTTP proxy, asked with `CONNECT` (`http://`).
    HttpConnect,
    /// A SOCKS5 proxy. `remote_dns`: the proxy resolves the target's host name
    /// (`socks5h://`); otherwise the client resolves it and sends an address (`socks5://`).
    Socks5 {
        /// Whether the proxy resolves host names.
        remote_dns: bool,
    },
}

/// A user name and password for a proxy.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub(crate) username: String,
    pub(crate) password: String,
}

/// One proxy server: its protocol, address and credentials.
///
/// `Debug` and `Display` never show the password.
///
/// ```
/// use duplex::proxy::{Proxy, ProxyKind};
/// let proxy = Proxy::parse("http://alice:s%40cret@proxy.internal:3128")?;
/// assert_eq!(proxy.kind(), ProxyKind::HttpConnect);
/// assert_eq!((proxy.host(), proxy.port()), ("proxy.internal", 3128));
/// assert_eq!(proxy.username(), Some("alice"));
/// assert_eq!(proxy.to_string(), "http://alice:***@proxy.internal:3128");
/// # Ok::<(), duplex::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    kind: ProxyKind,
    host: String,
    port: u16,
    credentials: Option<Credentials>,
}

/// Which proxy, if any, [`connect`](crate::client::connect) and
/// [`connect_tls`](crate::client::connect_tls) use ([`ClientConfig::proxy`](crate::client::ClientConfig::proxy)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyConfig {
    /// Connect directly (the default). The environment is not read.
    #[default]
    Direct,
    /// Always through this proxy.
    Always(Proxy),
    /// Choose from the environment for each URL, as [`Proxy::from_env_for`] does; the
    /// variables are read at every connection.
    FromEnv,
}

impl ProxyConfig {
    /// The proxy to use for `url` (`ws://` or `wss://`), `None` for a direct connection.
    ///
    /// # Errors
    ///
    /// [`Error::Url`] for an unusable `url`; with [`ProxyConfig::FromEnv`], [`Error::ProxyUrl`]
    /// when the chosen variable does not hold a usable proxy URL.
    pub fn proxy_for(&self, url: &str) -> Result<Option<Proxy>> {
        match self {
            ProxyConfig::Direct => Ok(None),
            ProxyConfig::Always(proxy) => Ok(Some(proxy.clone())),
            ProxyConfig::FromEnv => Proxy::from_env_for(url),
        }
    }
}

impl Proxy {
    /// Parses a proxy URL: `http://[user:password@]host[:port]`, `socks5://...` or
    /// `socks5h://...`. The user name and password are percent-decoded; the port defaults to
    /// 1080. A path, if any, is ignored.
    ///
    /// # Errors
    ///
    /// [`Error::ProxyUrl`] naming what is wrong (the password is never repeated).
    pub fn parse(url: &str) -> Result<Proxy> {
        let bad = |why: String| Error::ProxyUrl(format!("{}: {why}", redact(url)));
        let parsed = url::Url::parse(url.trim()).map_err(|e| bad(e.to_string()))?;
        let kind = match parsed.scheme() {
            "http" => ProxyKind::HttpConnect,
            "socks5" => ProxyKind::Socks5 { remote_dns: false },
            "socks5h" => ProxyKind::Socks5 { remote_dns: true },
            "https" => {
                return Err(bad(
                    "https:// proxies (TLS to the proxy) are not supported; use an http:// \
                     proxy (wss:// stays end-to-end encrypted through it)"
                        .into(),
                ))
            }
            other => {
                return Err(bad(format!(
                    "scheme {other:?} is not supported; use http://, socks5:// or socks5h://"
                )))
            }
        };
        let host = match parsed.host() {
            Some(url::Host::Ipv6(addr)) => addr.to_string(),
            Some(url::Host::Ipv4(addr)) => addr.to_string(),
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            _ => return Err(bad("no proxy host".into())),
        };
        let port = match parsed.port() {
            Some(0) => return Err(bad("port 0".into())),
            Some(port) => port,
            None => 1080,
        };
        let credentials = if parsed.username().is_empty() && parsed.password().is_none() {
            None
        } else {
            Some(Credentials {
                username: percent_decode(parsed.username()).ok_or_else(|| {
                    bad("the user name is not valid percent-encoded UTF-8".into())
                })?,
                password: percent_decode(parsed.password().unwrap_or(""))
                    .ok_or_else(|| bad("the password is not valid percent-encoded UTF-8".into()))?,
            })
        };
        Ok(Proxy {
            kind,
            host,
            port,
            credentials,
        })
    }

    /// Sets (replaces) the user name and password, e.g. when they hold characters awkward
    /// to percent-encode.
    pub fn with_credentials(
        mut self,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Proxy {
        self.credentials = Some(Credentials {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// The protocol.
    pub fn kind(&self) -> ProxyKind {
        self.kind
    }

    /// The proxy's host name or address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name, when there are credentials.
    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|c| c.username.as_str())
    }

    /// The proxy for `url` (`ws://` or `wss://`) from the environment, as curl chooses it:
    ///
    /// - `ws://` uses `http_proxy` or `HTTP_PROXY`, `wss://` uses `https_proxy` or
    ///   `HTTPS_PROXY`; either falls back to `all_proxy` or `ALL_PROXY`. The lower-case name
    ///   wins when both are set; empty values count as unset. (curl ignores upper-case
    ///   `HTTP_PROXY`, because CGI servers put a request's `Proxy:` header there; this reads it,
    ///   so do not use `FromEnv` in a CGI program.)
    /// - A value without `scheme://` is an `http://` proxy.
    /// - `no_proxy` or `NO_PROXY` (lower-case wins) then lists hosts to reach directly:
    ///   [`NoProxy`] says how entries match.
    ///
    /// `Ok(None)` means connect directly.
    ///
    /// ```
    /// use duplex::proxy::Proxy;
    /// let env = |name: &str| match name {
    ///     "HTTPS_PROXY" => Some("http://proxy.internal:3128".to_owned()),
    ///     "NO_PROXY" => Some("localhost,.internal,10.0.0.0/8".to_owned()),
    ///     _ => None,
    /// };
    /// let proxy = Proxy::from_vars_for("wss://example.com/", env)?.unwrap();
    /// assert_eq!(proxy.host(), "proxy.internal");
    /// assert!(Proxy::from_vars_for("wss://api.internal/", env)?.is_none());
    /// assert!(Proxy::from_vars_for("wss://10.1.2.3/", env)?.is_none());
    /// assert!(Proxy::from_vars_for("ws://example.com/", env)?.is_none()); // no HTTP_PROXY
    /// # Ok::<(), duplex::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Url`] for an unusable `url`; [`Error::ProxyUrl`], naming the variable, when the
    /// chosen variable does not hold a usable proxy URL.
    pub fn from_env_for(url: &str) -> Result<Option<Proxy>> {
        Self::from_vars_for(url, |name| std::env::var(name).ok())
    }

    /// [`from_env_for`](Self::from_env_for) with the variables looked up by `var` instead of
    /// in the process environment.
    pub fn from_vars_for(url: &str, var: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>> {
        let target = Target::parse(url)?;
        let secure = is_secure(url);
        let first = |names: &[&'static str]| {
            names.iter().find_map(|&name| {
                var(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (name, value))
            })
        };
        let proxy_names: &[&'static str] = if secure {
            &["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]
        } else {
            &["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"]
        };
        let Some((name, value)) = first(proxy_names) else {
            return Ok(None);
        };
        if let Some((_, no_proxy)) = first(&["no_proxy", "NO_PROXY"]) {
            if NoProxy::parse(&no_proxy).matches(&target.host, target.port) {
                return Ok(None);
            }
        }
        let value = value.trim();
        let with_scheme = if value.contains("://") {
            value.to_owned()
        } else {
            format!("http://{value}")
        };
        Proxy::parse(&with_scheme).map(Some).map_err(|e| match e {
            Error::ProxyUrl(why) => Error::ProxyUrl(format!("{why} (from ${name})")),
            other => other,
        })
    }

    /// Connects to the proxy and opens a tunnel to `target`, within no time limit of its own
    /// (the caller's handshake timeout covers it).
    ///
    /// With `socks5://` and a host name, the name is resolved here and each address is tried
    /// in turn (one proxy connection each) while the proxy reports it unreachable or
    /// refusing, as a direct connection tries each address.
    pub(crate) async fn tunnel(&self, target: &Target) -> Result<TcpStream> {
        let destinations = match (self.kind, target.host.parse::<IpAddr>()) {
            (ProxyKind::HttpConnect, _) => Vec::new(),
            (ProxyKind::Socks5 { .. }, Ok(ip)) => {
                vec![socks5::Destination::Addr((ip, target.port).into())]
            }
            (ProxyKind::Socks5 { remote_dns: true }, Err(_)) => {
                vec![socks5::Destination::Domain(
                    target.host.clone(),
                    target.port,
                )]
            }
            (ProxyKind::Socks5 { remote_dns: false }, Err(_)) => resolve(target)
                .await?
                .into_iter()
                .map(socks5::Destination::Addr)
                .collect(),
        };
        let stream = if destinations.is_empty() {
            let authority = if target.host.contains(':') {
                format!("[{}]:{}", target.host, target.port)
            } else {
                format!("{}:{}", target.host, target.port)
            };
            let mut stream = self.connect().await?;
            http_connect::tunnel(&mut stream, &authority, self.credentials.as_ref()).await?;
            stream
        } else {
            let mut last = None;
            let mut opened = None;
            for destination in &destinations {
                let mut stream = self.connect().await?;
                match socks5::tunnel(&mut stream, destination, self.credentials.as_ref()).await {
                    Ok(()) => {
                        opened = Some(stream);
                        break;
                    }
                    Err(Error::SocksRefused { reply })
                        if matches!(
                            reply,
                            SocksReply::NetworkUnreachable
                                | SocksReply::HostUnreachable
                                | SocksReply::ConnectionRefused
                                | SocksReply::TtlExpired
                        ) =>
                    {
                        last = Some(Error::SocksRefused { reply });
                    }
                    Err(e) => return Err(e),
                }
            }
            match (opened, last) {
                (Some(stream), _) => stream,
                (None, Some(error)) => return Err(error),
                (None, None) => return Err(Error::ProxyProtocol("no destination".into())),
            }
        };
        tracing::debug!(proxy = %self, host = %target.host, port = target.port, "proxy tunnel open");
        Ok(stream)
    }

    /// A TCP connection to the proxy itself.
    async fn connect(&self) -> Result<TcpStream> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::ProxyConnect {
                proxy: self.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Resolves the target locally for `socks5://`: at least one address.
async fn resolve(target: &Target) -> Result<Vec<std::net::SocketAddr>> {
    let context = |detail: String| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "cannot resolve {} for the SOCKS5 proxy ({detail}); socks5:// resolves names \
                 locally, socks5h:// lets the proxy resolve them",
                target.host
            ),
        )
    };
    let addrs: Vec<_> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| context(e.to_string()))?
        .collect();
    if addrs.is_empty() {
        return Err(context("no address".into()).into());
    }
    Ok(addrs)
}

impl fmt::Display for Proxy {
    /// The proxy URL with the password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            ProxyKind::HttpConnect => "http",
            ProxyKind::Socks5 { remote_dns: false } => "socks5",
            ProxyKind::Socks5 { remote_dns: true } => "socks5h",
        };
        write!(f, "{scheme}://")?;
        if let Some(credentials) = &self.credentials {
            write!(f, "{}:***@", credentials.username)?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Proxy").field(&self.to_string()).finish()
    }
}

/// Whether a URL is `wss://`.
pub(crate) fn is_secure(url: &str) -> bool {
    url.trim_start()
        .get(..4)
        .is_some_and(|s| s.eq_ignore_ascii_case("wss:"))
}

/// A URL with anything between `://` and the last `@` of its authority replaced by `***`, for
/// error messages.
fn redact(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

/// Decodes `%XX` escapes; `None` for a bad escape or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The hosts a `NO_PROXY` value exempts from the proxy, matched as curl matches them.
///
/// Entries are separated by commas (or white space), case-insensitive, and are:
/// - `*` alone: every host;
/// - a host name: that host and all its subdomains (`example.com` and `.example.com` both
///   match `example.com` and `api.example.com`, never `badexample.com`; a leading `*.` is
///   read as `.`);
/// - an IP address (`127.0.0.1`, `::1`, `[::1]`): that address, compared as an address;
/// - a CIDR range (`10.0.0.0/8`, `fd00::/8`): every address in it;
/// - any of the above but `*` and a range followed by `:port` (IPv6 in brackets,
///   `[::1]:8080`): only connections to that port.
///
/// Host names are not resolved: `localhost` does not match `127.0.0.1`. Entries that cannot
/// be read are ignored.
///
/// ```
/// use duplex::proxy::NoProxy;
/// let no_proxy = NoProxy::parse("localhost, .corp.example, 192.168.0.0/16, [::1]:9000");
/// assert!(no_proxy.matches("api.corp.example", 443));
/// assert!(no_proxy.matches("192.168.7.7", 80));
/// assert!(no_proxy.matches("::1", 9000));
/// assert!(!no_proxy.matches("::1", 9001));
/// assert!(!no_proxy.matches("example.com", 443));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    entries: Vec<NoProxyEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NoProxyEntry {
    Host { suffix: String, port: Option<u16> },
    Ip { addr: IpAddr, port: Option<u16> },
    Range { net: IpAddr, prefix: u8 },
}

impl NoProxy {
    /// Reads a `NO_PROXY` value.
    pub fn parse(value: &str) -> NoProxy {
        let mut out = NoProxy::default();
        for entry in value
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|e| !e.is_empty())
        {
            if entry == "*" {
                out.all = true;
            } else if let Some(entry) = NoProxyEntry::parse(entry) {
                out.entries.push(entry);
            }
        }
        out
    }

    /// Whether a connection to `host` (a name, or an address without brackets) on `port`
    /// goes direct.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ip = host.parse::<IpAddr>().ok();
        let port_ok = |wanted: &Option<u16>| wanted.is_none_or(|p| p == port);
        self.entries.iter().any(|entry| match (entry, ip) {
            (NoProxyEntry::Ip { addr, port: p }, Some(ip)) => *addr == ip && port_ok(p),
            (NoProxyEntry::Range { net, prefix }, Some(ip)) => in_range(ip, *net, *prefix),
            (NoProxyEntry::Host { suffix, port: p }, None) => {
                port_ok(p)
                    && (host == *suffix
                        || host
                            .strip_suffix(suffix.as_str())
                            .is_some_and(|rest| rest.ends_with('.')))
            }
            _ => false,
        })
    }
}

impl NoProxyEntry {
    fn parse(entry: &str) -> Option<NoProxyEntry> {
        let entry = entry.to_ascii_lowercase();
        if let Some((net, prefix)) = entry.split_once('/') {
            let net: IpAddr = net
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .ok()?;
            let prefix: u8 = prefix.parse().ok()?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            return (prefix <= max).then_some(NoProxyEntry::Range { net, prefix });
        }
        // Split off a port: `[v6]:port`, `host:port`, `v4:port`; a bare IPv6 has 2+ colons.
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let (addr, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?.parse().ok()?),
            };
            (addr.to_owned(), port)
        } else if entry.matches(':').count() == 1 {
            let (host, port) = entry.split_once(':')?;
            (host.to_owned(), Some(port.parse().ok()?))
        } else {
            (entry, None)
        };
        if let Ok(addr) = host.parse::<IpAddr>() {
            return Some(NoProxyEntry::Ip { addr, port });
        }
        let suffix = host
            .trim_start_matches('*')
            .trim_start_matches('.')
            .trim_end_matches('.');
        (!suffix.is_empty() && !suffix.contains(['*', '/', '@'])).then(|| NoProxyEntry::Host {
            suffix: suffix.to_owned(),
            port,
        })
    }
}

fn in_range(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            (u128::from(u32::from(ip)), u128::from(u32::from(net)), 32u32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128),
        // An IPv4-mapped IPv6 address matches IPv4 ranges.
        (IpAddr::V6(ip), IpAddr::V4(_)) => match ip.to_ipv4_mapped() {
            Some(v4) => return in_range(IpAddr::V4(v4), net, prefix),
            None => return false,
        },
        (IpAddr::V4(_), IpAddr::V6(_)) => return false,
    };
    let shift = bits - u32::from(prefix);
    if shift >= bits {
        return true; // prefix 0: everything of that family
    }
    (ip >> shift) == (net >> shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn host_of(proxy: Option<Proxy>) -> Option<String> {
        proxy.map(|p| format!("{}:{}", p.host(), p.port()))
    }

    #[test]
    fn proxy_urls_parse_with_defaults_and_decoded_credentials() {
        let p = Proxy::parse("socks5h://u%3Ax:p%40ss%2Fw@[::1]:9050").unwrap();
        assert_eq!(p.kind(), ProxyKind::Socks5 { remote_dns: true });
        assert_eq!((p.host(), p.port()), ("::1", 9050));
        let c = p.credentials.clone().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("u:x", "p@ss/w")
        );
        assert_eq!(p.to_string(), "socks5h://u:x:***@[::1]:9050");
        assert!(!format!("{p:?}").contains("p@ss"));

        let p = Proxy::parse("socks5://127.0.0.1").unwrap();
        assert_eq!(p.kind(), ProxyKind::Socks5 { remote_dns: false });
        assert_eq!(
            (p.host(), p.port(), p.username()),
            ("127.0.0.1", 1080, None)
        );
        let p = Proxy::parse("HTTP://Proxy.Example:3128/").unwrap();
        assert_eq!(
            (p.kind(), p.host()),
            (ProxyKind::HttpConnect, "proxy.example")
        );
        let p = Proxy::parse("http://user@h:1").unwrap();
        assert_eq!(p.credentials.unwrap().password, "");
        let p = Proxy::parse("http://h:1")
            .unwrap()
            .with_credentials("a", "b:c");
        assert_eq!(p.credentials.unwrap().password, "b:c");
    }

    #[test]
    fn bad_proxy_urls_are_named_without_the_password() {
        for bad in [
            "ftp://h:1",
            "https://user:hunter2@h:1",
            "socks4://h",
            "http://",
            "http://user:hunter2@h:99999",
            "http://h:0",
            "not a url",
            "http://user:%ff@h:1",
            "http://user:%zz@h:1",
        ] {
            match Proxy::parse(bad) {
                Err(Error::ProxyUrl(m)) => assert!(!m.contains("hunter2"), "{m}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(redact("http://u:p@h:1/x@y"), "http://***@h:1/x@y");
        assert_eq!(redact("http://h:1"), "http://h:1");
    }

    #[test]
    fn env_chooses_by_scheme_lower_case_first_then_all_proxy() {
        let vars = [
            ("http_proxy", "http://lower:1"),
            ("HTTP_PROXY", "http://upper:2"),
            ("HTTPS_PROXY", "socks5://secure:3"),
            ("ALL_PROXY", "http://all:4"),
        ];
        let get = env(&vars);
        let for_url = |url| host_of(Proxy::from_vars_for(url, &get).unwrap());
        assert_eq!(for_url("ws://example.com/"), Some("lower:1".into()));
        assert_eq!(for_url("wss://example.com/"), Some("secure:3".into()));

        let vars = [("HTTP_PROXY", "upper:2"), ("all_proxy", "socks5h://all:4")];
        let get = env(&vars);
        let ws = Proxy::from_vars_for("ws://e/", &get).unwrap().unwrap();
        assert_eq!(
            (ws.kind(), ws.host(), ws.port()),
            (ProxyKind::HttpConnect, "upper", 2)
        );
        let wss = Proxy::from_vars_for("wss://e/", &get).unwrap().unwrap();
        assert_eq!(wss.kind(), ProxyKind::Socks5 { remote_dns: true });

        // Empty values count as unset.
        let vars = [("https_proxy", " "), ("HTTPS_PROXY", "h:5")];
        assert_eq!(
            host_of(Proxy::from_vars_for("wss://e/", env(&vars)).unwrap()),
            Some("h:5".into())
        );
        assert_eq!(Proxy::from_vars_for("wss://e/", env(&[])).unwrap(), None);
    }

    #[test]
    fn a_bad_env_proxy_names_its_variable() {
        let vars = [("HTTPS_PROXY", "ftp://user:hunter2@h")];
        match Proxy::from_vars_for("wss://e/", env(&vars)) {
            Err(Error::ProxyUrl(m)) => {
                assert!(m.contains("$HTTPS_PROXY") && !m.contains("hunter2"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // A bad target URL is a URL error, not a proxy one.
        assert!(matches!(
            Proxy::from_vars_for("http://e/", env(&vars)),
            Err(Error::Url(_))
        ));
    }

    #[test]
    fn no_proxy_exempts_matching_targets() {
        let vars = [
            ("ALL_PROXY", "http://p:1"),
            ("NO_PROXY", "example.com, 127.0.0.1 ,[::1]:8080"),
            ("no_proxy", "internal,10.0.0.0/8,localhost:9000"),
        ];
        let get = env(&vars);
        let direct = |url| Proxy::from_vars_for(url, &get).unwrap().is_none();
        // Lower-case no_proxy wins over NO_PROXY.
        assert!(direct("ws://a.internal/"));
        assert!(direct("wss://10.200.0.1:4443/"));
        assert!(direct("ws://localhost:9000/"));
        assert!(!direct("ws://localhost:9001/"));
        assert!(!direct("ws://example.com/"));
        assert!(!direct("ws://127.0.0.1/"));
    }

    #[test]
    fn no_proxy_host_suffixes_match_on_label_boundaries() {
        let np = NoProxy::parse("example.com,.corp.net,*.wild.org,EXACT.Host.");
        for host in [
            "example.com",
            "api.example.com",
            "a.b.example.com",
            "EXAMPLE.COM.",
        ] {
            assert!(np.matches(host, 80), "{host}");
        }
        assert!(np.matches("corp.net", 80));
        assert!(np.matches("x.corp.net", 80));
        assert!(np.matches("wild.org", 80));
        assert!(np.matches("a.wild.org", 80));
        assert!(np.matches("exact.host", 80));
        for host in [
            "badexample.com",
            "example.com.evil",
            "net",
            "com",
            "127.0.0.1",
        ] {
            assert!(!np.matches(host, 80), "{host}");
        }
    }

    #[test]
    fn no_proxy_star_ips_ranges_and_ports() {
        assert!(NoProxy::parse("*").matches("anything", 1));
        assert!(NoProxy::parse("a, *").matches("anything", 1));
        assert!(!NoProxy::parse("").matches("anything", 1));
        assert!(!NoProxy::parse("*.").matches("anything", 1));

        let np = NoProxy::parse("192.168.1.5, ::1, 172.16.0.0/12, fd00::/8, 10.1.1.1:8443");
        assert!(np.matches("192.168.1.5", 1));
        assert!(!np.matches("192.168.1.50", 1));
        assert!(np.matches("::1", 1));
        assert!(np.matches("[::1]", 1));
        assert!(np.matches("0:0:0:0:0:0:0:1", 1));
        assert!(np.matches("172.31.255.255", 1));
        assert!(!np.matches("172.32.0.0", 1));
        assert!(np.matches("fd12::1", 1));
        assert!(!np.matches("fe80::1", 1));
        assert!(np.matches("::ffff:172.16.0.1", 1));
        assert!(np.matches("10.1.1.1", 8443));
        assert!(!np.matches("10.1.1.1", 443));

        let np = NoProxy::parse("[2001:db8::1]:443 host.example:80 0.0.0.0/0");
        assert!(np.matches("2001:db8::1", 443));
        assert!(!np.matches("2001:db8::1", 80));
        assert!(np.matches("host.example", 80));
        assert!(!np.matches("host.example", 81));
        assert!(np.matches("8.8.8.8", 53));
        assert!(!np.matches("2001:db8::2", 53));
    }

    #[test]
    fn unreadable_no_proxy_entries_are_ignored() {
        let np = NoProxy::parse("10.0.0.0/33,host:notaport,[::1,a/b,,:,ok.example");
        assert_eq!(np.entries.len(), 1, "{np:?}");
        assert!(np.matches("ok.example", 1));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2F").unwrap(), "a b/");
        assert_eq!(percent_decode("%C3%A9").unwrap(), "é");
        assert!(percent_decode("%").is_none());
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%ff").is_none());
    }
}
