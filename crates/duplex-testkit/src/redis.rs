//! A real `redis-server` on a loopback free port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, require_tool, resp_command, Process, TempDir};

/// How long [`RedisServer`] waits for a fresh server to answer PING.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` child process on `127.0.0.1:<free port>`, in its own temporary directory,
/// without persistence (`--save "" --appendonly no`), `--protected-mode no`, logging to
/// `redis.log` in that directory. Killed, and its directory removed, on drop.
#[derive(Debug)]
pub struct RedisServer {
    process: Process,
    port: u16,
    password: Option<String>,
    extra_args: Vec<String>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server without a password and waits (at most 10 s) until it answers PING.
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed or does not come up (the message has its log tail).
    pub fn start() -> RedisServer {
        RedisServer::start_inner(None, Vec::new())
    }

    /// Starts a server with `--requirepass password`; [`RedisServer::url`] then carries the
    /// password and [`RedisServer::command`] authenticates first.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_inner(Some(password.to_owned()), Vec::new())
    }

    /// Starts a server with additional command-line arguments (e.g.
    /// `["--replicaof", "127.0.0.1", "6380"]`), no password.
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        RedisServer::start_inner(None, args.iter().map(|s| (*s).to_owned()).collect())
    }

    /// Starts a server with a password and additional arguments (e.g. a TLS port).
    ///
    /// # Panics
    ///
    /// As [`RedisServer::start`].
    pub fn start_with_password_and_args(password: &str, args: &[&str]) -> RedisServer {
        RedisServer::start_inner(
            Some(password.to_owned()),
            args.iter().map(|s| (*s).to_owned()).collect(),
        )
    }

    fn start_inner(password: Option<String>, extra_args: Vec<String>) -> RedisServer {
        let dir = TempDir::new("redis");
        let port = free_port();
        let process = spawn(dir.path(), port, password.as_deref(), &extra_args);
        let mut server = RedisServer {
            process,
            port,
            password,
            extra_args,
            dir,
        };
        server.wait_ready();
        server
    }

    /// The connection URL: `redis://127.0.0.1:PORT/0`, or `redis://:PASSWORD@127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The OS process id of the current server process.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The server's temporary directory (holds `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log (its `--logfile` plus stdout/stderr).
    pub fn log_text(&self) -> String {
        self.process.log_text()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// Sends one command (authenticating first if the server has a password) and returns the
    /// raw reply text, e.g. `command(&["DBSIZE"])` → `":0\r\n"`. An error reply is returned as
    /// text (`"-ERR ..."`).
    ///
    /// # Panics
    ///
    /// On an I/O error (server down, time-out): use [`RedisServer::try_command`] to observe
    /// those.
    pub fn command(&self, args: &[&str]) -> String {
        self.try_command(args).unwrap_or_else(|e| {
            panic!(
                "redis-server on port {}: command {args:?} failed: {e}\n---- log (tail) ----\n{}",
                self.port,
                self.process.log_tail()
            )
        })
    }

    /// As [`RedisServer::command`], returning I/O errors instead of panicking.
    pub fn try_command(&self, args: &[&str]) -> std::io::Result<String> {
        resp_command(self.port, self.password.as_deref(), args)
    }

    /// SIGKILLs the server and waits for it to be gone (clients see the connection drop).
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Kills the server (if running) and starts a new, empty one on the SAME port, with the
    /// same password and arguments, then waits (at most 10 s) until it answers PING.
    ///
    /// # Panics
    ///
    /// If the new server does not come up (e.g. the port was taken meanwhile).
    pub fn restart_empty(&mut self) {
        self.process.kill();
        // Same log file (appended): a post-mortem shows both lives.
        self.process = spawn(
            self.dir.path(),
            self.port,
            self.password.as_deref(),
            &self.extra_args,
        );
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let port = self.port;
        let password = self.password.clone();
        self.process.wait_for("PING -> +PONG", START_TIMEOUT, || {
            match resp_command(port, password.as_deref(), &["PING"]) {
                Ok(reply) if reply.starts_with("+PONG") => Ok(()),
                Ok(reply) => Err(format!("reply {reply:?}")),
                Err(e) => Err(e.to_string()),
            }
        });
    }
}

/// Spawns `redis-server` (no persistence, loopback) in `dir` on `port`.
fn spawn(dir: &Path, port: u16, password: Option<&str>, extra: &[String]) -> Process {
    let log: PathBuf = dir.join("redis.log");
    let mut cmd = Command::new(require_tool("redis-server"));
    cmd.current_dir(dir)
        .arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--protected-mode", "no"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        // Redis 7 waits 5 s before a diskless full sync to batch replicas: one replica here.
        .args(["--repl-diskless-sync-delay", "0"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log);
    if let Some(pw) = password {
        cmd.args(["--requirepass", pw]);
    }
    cmd.args(extra);
    Process::spawn(&format!("redis-server:{port}"), cmd, &log)
}
