//! Dev-only test harness for the `duplex serve` cluster tests: it runs the REAL services a
//! deployment uses (`redis-server`, `redis-sentinel`, `nginx`, `haproxy`, from Debian apt) as
//! child processes on loopback free ports, each in its own temporary directory.
//!
//! Rules the harness follows, so tests fail loudly and never hang:
//! - a missing binary panics, naming it and the command that installs it ([`require_tool`]);
//!   nothing is ever skipped;
//! - everything listens on `127.0.0.1` only, on ports from [`free_port`];
//! - every wait is bounded in time and in attempts ([`poll_until`]), and a failed wait panics
//!   with the tail of the service's log;
//! - every process is killed, and its temporary directory removed, on drop (set
//!   `DUPLEX_TESTKIT_KEEP=1` to keep the directories for a post-mortem).
//!
//! Only std is used: RESP is spoken over a plain [`std::net::TcpStream`] ([`resp_command`]).

#![warn(missing_docs)]

mod process;
mod proxies;
mod proxy;
mod redis;
mod resp;
mod sentinel;

pub use process::{poll_until, Process, TempDir};
pub use proxies::{Microsocks, Tinyproxy};
pub use proxy::{render_template, Haproxy, Nginx};
pub use redis::RedisServer;
pub use resp::resp_command;
pub use sentinel::SentinelSet;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// The loopback address every service of the harness binds to.
pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read the port, drop).
///
/// Another process could take it before the caller binds it; the window is tiny in practice.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((LOOPBACK, 0))
        .expect("free_port: cannot bind 127.0.0.1:0 to obtain a free port");
    listener
        .local_addr()
        .expect("free_port: cannot read the local address of a bound listener")
        .port()
}

/// Whether something accepts TCP connections on `127.0.0.1:port` right now (1 s connect
/// timeout).
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((LOOPBACK, port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// The absolute path of the executable `name`, searched in `PATH`, then `/usr/sbin`, `/usr/bin`
/// and `/sbin` (Debian puts `nginx` and `haproxy` in `/usr/sbin`, often not in a user's PATH).
///
/// # Panics
///
/// If it is nowhere to be found: the message names the tool and says that
/// `bash scripts/test.sh` installs it with apt-get. Tests must fail loudly, never skip.
pub fn require_tool(name: &str) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let fixed = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from);
    let found = std::env::split_paths(&path_var)
        .chain(fixed)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate));
    match found {
        Some(path) => path,
        None => panic!(
            "required test tool `{name}` was not found in PATH, /usr/sbin or /usr/bin; \
             `bash scripts/test.sh` installs it (tests/services/install.sh: apt-get install \
             redis-server redis-sentinel nginx haproxy)"
        ),
    }
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
