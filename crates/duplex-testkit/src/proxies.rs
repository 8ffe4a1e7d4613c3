//! Real client-side proxies in the foreground: `tinyproxy` (HTTP `CONNECT` with Basic auth)
//! and `microsocks` (SOCKS5 with user/password), for the client proxy tests.
//!
//! Both come from Debian apt; `tests/services/install.sh` installs them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::process::read_lossy;
use crate::{free_port, poll_until, port_accepts, Process, TempDir};

/// How long a proxy may take to accept TCP on its port.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The executable `name` in `PATH`, `/usr/bin` or `/usr/sbin`.
///
/// # Panics
///
/// If it is missing, naming the script that installs it.
fn require_proxy_tool(name: &str) -> PathBuf {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(["/usr/bin", "/usr/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| {
            panic!(
                "required test tool `{name}` was not found in PATH, /usr/bin or /usr/sbin; \
                 `bash scripts/test.sh` installs it (tests/services/install.sh: apt-get install \
                 tinyproxy microsocks)"
            )
        })
}

/// Waits until `process` accepts TCP on `port`, or panics with its log.
fn wait_listening(process: &mut Process, port: u16) {
    process.wait_for(
        &format!("TCP accept on 127.0.0.1:{port}"),
        START_TIMEOUT,
        || {
            if port_accepts(port) {
                Ok(())
            } else {
                Err("connection refused".to_owned())
            }
        },
    );
}

/// Polls `read` (every 50 ms, up to 5 s) until its text contains `needle`; returns the text.
///
/// # Panics
///
/// With `what`, the needle and the last text read.
fn wait_for_text(what: &str, needle: &str, read: impl Fn() -> String) -> String {
    let mut last = String::new();
    let found = poll_until(
        what,
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            last = read();
            last.contains(needle).then(|| last.clone())
        },
    );
    found.unwrap_or_else(|_| panic!("{what}: {needle:?} never appeared in:\n{last}"))
}

/// A `tinyproxy -d` on a free loopback port with Basic auth, its own config and log file.
#[derive(Debug)]
pub struct Tinyproxy {
    process: Process,
    port: u16,
    log_file: PathBuf,
    // Dropped last: the process is killed before its directory goes.
    _dir: TempDir,
}

impl Tinyproxy {
    /// Starts tinyproxy on `127.0.0.1:<free port>` requiring `BasicAuth user password`, and
    /// allowing `CONNECT` to exactly `connect_ports` (tinyproxy allows every port when the
    /// list is empty, so it must not be). Log level `Info` into `tinyproxy.log` in the temp
    /// dir: each tunnel shows as `Request (file descriptor N): CONNECT host:port HTTP/1.1`.
    ///
    /// # Panics
    ///
    /// If tinyproxy is missing, `connect_ports` is empty, or it does not listen in time.
    pub fn start(user: &str, password: &str, connect_ports: &[u16]) -> Tinyproxy {
        assert!(
            !connect_ports.is_empty(),
            "tinyproxy allows CONNECT to every port without a ConnectPort line"
        );
        let binary = require_proxy_tool("tinyproxy");
        let dir = TempDir::new("tinyproxy");
        let port = free_port();
        let log_file = dir.path().join("tinyproxy.log");
        let mut config = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nMaxClients 50\n\
             LogFile \"{}\"\nLogLevel Info\nBasicAuth {user} {password}\n",
            log_file.display()
        );
        for connect_port in connect_ports {
            config.push_str(&format!("ConnectPort {connect_port}\n"));
        }
        let config_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&config_path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
        let mut command = Command::new(binary);
        command.arg("-d").arg("-c").arg(&config_path);
        let mut process = Process::spawn("tinyproxy", command, &dir.path().join("stdout.log"));
        wait_listening(&mut process, port);
        Tinyproxy {
            process,
            port,
            log_file,
            _dir: dir,
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://user:password@127.0.0.1:<port>`.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Its log file (`LogFile`), as text.
    pub fn log_text(&self) -> String {
        read_lossy(&self.log_file)
    }

    /// Waits (up to 5 s) until its log contains `needle`; returns the log.
    ///
    /// # Panics
    ///
    /// If it never does, with the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_text("tinyproxy log", needle, || self.log_text())
    }

    /// The process, e.g. to check it still runs.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// A `microsocks` on a free loopback port with user/password authentication. It prints one
/// line per tunnel on stderr: `client[N] 127.0.0.1: connected to HOST:PORT`, where HOST is
/// what the client asked for (an address for `socks5://`, the name for `socks5h://`).
#[derive(Debug)]
pub struct Microsocks {
    process: Process,
    port: u16,
    _dir: TempDir,
}

impl Microsocks {
    /// Starts `microsocks -i 127.0.0.1 -p <free port> -u user -P password`.
    ///
    /// # Panics
    ///
    /// If microsocks is missing or does not listen in time.
    pub fn start(user: &str, password: &str) -> Microsocks {
        let binary = require_proxy_tool("microsocks");
        let dir = TempDir::new("microsocks");
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(["-u", user, "-P", password]);
        let mut process = Process::spawn("microsocks", command, &dir.path().join("microsocks.log"));
        wait_listening(&mut process, port);
        Microsocks {
            process,
            port,
            _dir: dir,
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `<scheme>://user:password@127.0.0.1:<port>` (`scheme`: `socks5` or `socks5h`).
    pub fn url(&self, scheme: &str, user: &str, password: &str) -> String {
        format!("{scheme}://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// What it printed (stdout and stderr).
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Waits (up to 5 s) until its output contains `needle`; returns the output.
    ///
    /// # Panics
    ///
    /// If it never does, with the output.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_text("microsocks output", needle, || self.log_text())
    }

    /// The process, e.g. to check it still runs.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}
