//! Opening and closing benchmark connections.

use bytes::BytesMut;
use duplex::client::{handshake, handshake_raw, ClientConfig, Target};
use duplex::{CloseCode, WebSocket};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Where and how every connection connects.
pub struct ConnectPlan {
    pub target: Target,
    pub addr: SocketAddr,
    pub config: ClientConfig,
    pub sources: Vec<IpAddr>,
    pub timeout: Duration,
}

impl ConnectPlan {
    /// The source address of connection `index` (round-robin), if any were given.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        (!self.sources.is_empty()).then(|| self.sources[index % self.sources.len()])
    }
}

/// Resolves the URL's host once; with source addresses, to an address of their family.
pub async fn resolve(target: &Target, sources: &[IpAddr]) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let wanted_v4 = sources.first().map(IpAddr::is_ipv4);
    addrs
        .iter()
        .find(|a| wanted_v4.is_none_or(|v4| a.is_ipv4() == v4))
        .copied()
        .ok_or_else(|| match wanted_v4 {
            Some(_) => format!(
                "{} has no address of the source addresses' family",
                target.host
            ),
            None => format!("{} resolved to no address", target.host),
        })
}

/// A connection whose opening handshake is done, without the WebSocket layer: for the lean
/// closed-loop engine ([`super::raw_loop`]), which runs the frames itself.
pub struct RawConn {
    pub stream: TcpStream,
    /// Bytes the server sent right after its handshake response.
    pub leftover: BytesMut,
}

/// TCP connect (from `source` when given) plus the opening handshake, within the plan's
/// timeout. Returns the connection and whether permessage-deflate was agreed.
pub async fn connect(
    plan: &ConnectPlan,
    source: Option<IpAddr>,
) -> Result<(WebSocket<TcpStream>, bool), String> {
    within_timeout(plan, source, async {
        let stream = tcp_connect(plan, source).await?;
        let (ws, negotiated) = handshake(stream, &plan.target, &plan.config).await?;
        Ok((ws, !negotiated.extensions.is_empty()))
    })
    .await
}

/// As [`connect`], but hands the TCP stream back after the handshake. The plan must not offer
/// permessage-deflate (the raw engine has no codec).
pub async fn connect_raw(plan: &ConnectPlan, source: Option<IpAddr>) -> Result<RawConn, String> {
    debug_assert!(!plan.config.deflate.enabled);
    within_timeout(plan, source, async {
        let stream = tcp_connect(plan, source).await?;
        let raw = handshake_raw(stream, &plan.target, &plan.config).await?;
        Ok(RawConn {
            stream: raw.stream,
            leftover: raw.leftover,
        })
    })
    .await
}

async fn tcp_connect(plan: &ConnectPlan, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if plan.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        bind_address_no_port(&socket);
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(plan.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs `attempt` within the plan's timeout, naming the source address in errors.
async fn within_timeout<T>(
    plan: &ConnectPlan,
    source: Option<IpAddr>,
    attempt: impl std::future::Future<Output = Result<T, duplex::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(plan.timeout, attempt).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(match source {
            Some(s) => format!("from {s}: {e}"),
            None => e.to_string(),
        }),
        Err(_) => Err(format!(
            "connect and handshake not done within {:?}",
            plan.timeout
        )),
    }
}

/// Lets the kernel pick the source port at connect time, per destination, instead of at bind
/// time: each source address then offers its whole ephemeral port range to every target.
fn bind_address_no_port(socket: &TcpSocket) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket descriptor and a pointer to a c_int of the given length.
        // Failure only means the port is chosen at bind time; nothing to handle.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// Runs the closing handshake (1000) within `limit`.
pub async fn close(ws: &mut WebSocket<TcpStream>, limit: Duration) -> Result<(), String> {
    match tokio::time::timeout(limit, ws.close(CloseCode::NORMAL, "")).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("closing handshake not done within {limit:?}")),
    }
}

/// Raises the open-files limit to the hard limit, so that many connections fit. Returns the
/// soft limit in force afterwards.
pub fn raise_nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid pointers to an rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return None;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: lim.rlim_max,
                    rlim_max: lim.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere.
        Some(lim.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    None
}
