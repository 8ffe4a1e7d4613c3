//! A primary, one replica and three real `redis-sentinel` processes.

use std::process::Command;
use std::time::Duration;

use crate::process::poll_until;
use crate::{free_port, require_tool, resp_command, Process, RedisServer, TempDir};

/// How long [`SentinelSet::start`] waits for each readiness condition.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A Redis Sentinel deployment on loopback: a primary [`RedisServer`], one replica
/// (`--replicaof 127.0.0.1 <primary port>`) and three `redis-sentinel` processes with quorum 2,
/// `down-after-milliseconds 1000`, `failover-timeout 5000`, `parallel-syncs 1`.
///
/// Each sentinel has its own writable config file in the set's temporary directory (Sentinel
/// rewrites it to persist what it learns). Everything is killed on drop.
#[derive(Debug)]
pub struct SentinelSet {
    master_name: String,
    primary: RedisServer,
    replica: RedisServer,
    sentinels: Vec<(u16, Process)>,
    _dir: TempDir,
}

impl SentinelSet {
    /// Starts the primary, the replica, then the three sentinels monitoring `master_name`, and
    /// waits (each condition at most 15 s) until the replica's link is up, every sentinel
    /// reports the primary for `SENTINEL get-master-addr-by-name`, and every sentinel sees the
    /// replica and the two other sentinels (`SENTINEL CKQUORUM` says 3 usable), so that a
    /// failover can happen right after this returns.
    ///
    /// # Panics
    ///
    /// If a binary is missing or a condition is not met in time (with the log tail).
    pub fn start(master_name: &str) -> SentinelSet {
        let primary = RedisServer::start();
        let primary_port = primary.port().to_string();
        let mut replica =
            RedisServer::start_with_args(&["--replicaof", "127.0.0.1", &primary_port]);
        let replica_port = replica.port();
        // The replica must be synced before the sentinels look, so their first INFO of the
        // primary already lists it (later INFOs come only every 10 s outside a failover).
        let link = poll_until(
            "replica master_link_status:up",
            READY_TIMEOUT,
            Duration::from_millis(50),
            || {
                replica
                    .try_command(&["INFO", "replication"])
                    .ok()
                    .filter(|info| info.contains("master_link_status:up"))
            },
        );
        if let Err(e) = link {
            panic!(
                "SentinelSet: {e}\n---- replica log ----\n{}",
                crate::process::tail(&replica.log_text(), 4000)
            );
        }
        assert!(replica.is_running(), "SentinelSet: the replica exited");

        let dir = TempDir::new("sentinel");
        let sentinel_bin = require_tool("redis-sentinel");
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let log = dir.path().join(format!("sentinel-{i}.log"));
            let text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 protected-mode no\n\
                 daemonize no\n\
                 dir {dir}\n\
                 logfile {log}\n\
                 sentinel monitor {master_name} 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds {master_name} 1000\n\
                 sentinel failover-timeout {master_name} 5000\n\
                 sentinel parallel-syncs {master_name} 1\n",
                dir = dir.path().display(),
                log = log.display(),
            );
            std::fs::write(&conf, text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", conf.display()));
            let mut cmd = Command::new(&sentinel_bin);
            cmd.current_dir(dir.path()).arg(&conf);
            sentinels.push((
                port,
                Process::spawn(&format!("redis-sentinel:{port}"), cmd, &log),
            ));
        }

        let master = master_name.to_owned();
        for (port, process) in &mut sentinels {
            let port = *port;
            let want_port = primary_port.clone();
            process.wait_for("get-master-addr-by-name = primary", READY_TIMEOUT, || {
                let reply = resp_command(
                    port,
                    None,
                    &["SENTINEL", "get-master-addr-by-name", &master],
                )
                .map_err(|e| e.to_string())?;
                match parse_addr_reply(&reply) {
                    Some(p) if p.to_string() == want_port => Ok(()),
                    _ => Err(format!("reply {reply:?}")),
                }
            });
            let replica_text = replica_port.to_string();
            process.wait_for("the replica known to the sentinel", READY_TIMEOUT, || {
                let reply = resp_command(port, None, &["SENTINEL", "replicas", &master])
                    .map_err(|e| e.to_string())?;
                if reply.contains(&format!("\r\n{replica_text}\r\n")) {
                    Ok(())
                } else {
                    Err(format!("SENTINEL replicas: {reply:?}"))
                }
            });
            process.wait_for("CKQUORUM with 3 usable sentinels", READY_TIMEOUT, || {
                let reply = resp_command(port, None, &["SENTINEL", "ckquorum", &master])
                    .map_err(|e| e.to_string())?;
                if reply.starts_with("+OK 3 usable") {
                    Ok(())
                } else {
                    Err(format!("reply {reply:?}"))
                }
            });
        }

        SentinelSet {
            master_name: master,
            primary,
            replica,
            sentinels,
            _dir: dir,
        }
    }

    /// The monitored master name given to [`SentinelSet::start`].
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The sentinels' ports on 127.0.0.1.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|(port, _)| *port).collect()
    }

    /// The sentinels' addresses as URLs: `redis://127.0.0.1:PORT`.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_ports()
            .into_iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The port of the original primary.
    pub fn primary_port(&self) -> u16 {
        self.primary.port()
    }

    /// The port of the replica (the primary after a failover).
    pub fn replica_port(&self) -> u16 {
        self.replica.port()
    }

    /// The original primary.
    pub fn primary(&self) -> &RedisServer {
        &self.primary
    }

    /// The replica.
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// Sends one command to sentinel `index` (0..3) and returns the raw reply.
    ///
    /// # Panics
    ///
    /// On an I/O error or an index out of range.
    pub fn sentinel_command(&self, index: usize, args: &[&str]) -> String {
        let (port, process) = &self.sentinels[index];
        resp_command(*port, None, args).unwrap_or_else(|e| {
            panic!(
                "sentinel {index} (port {port}): {args:?} failed: {e}\n---- log (tail) ----\n{}",
                process.log_tail()
            )
        })
    }

    /// The master port some sentinel currently reports (`None` if none answers).
    pub fn current_master_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|(port, _)| {
            resp_command(
                *port,
                None,
                &["SENTINEL", "get-master-addr-by-name", &self.master_name],
            )
            .ok()
            .and_then(|reply| parse_addr_reply(&reply))
        })
    }

    /// SIGKILLs the primary (the sentinels notice after `down-after-milliseconds` = 1 s).
    pub fn kill_primary(&mut self) {
        self.primary.kill();
    }

    /// Polls the sentinels (every 100 ms, at most `timeout`) until they report a master port
    /// other than the original primary's, and returns it (normally the replica's).
    ///
    /// # Panics
    ///
    /// If no failover is reported in time; the message has the sentinels' log tails.
    pub fn wait_for_failover(&self, timeout: Duration) -> u16 {
        let old = self.primary.port();
        let result = poll_until(
            "sentinel failover",
            timeout,
            Duration::from_millis(100),
            || {
                self.sentinels.iter().find_map(|(port, _)| {
                    let reply = resp_command(
                        *port,
                        None,
                        &["SENTINEL", "get-master-addr-by-name", &self.master_name],
                    )
                    .ok()?;
                    parse_addr_reply(&reply).filter(|p| *p != old)
                })
            },
        );
        result.unwrap_or_else(|e| {
            let logs: Vec<String> = self
                .sentinels
                .iter()
                .map(|(port, p)| {
                    format!(
                        "---- sentinel {port} log (tail) ----\n{}",
                        crate::process::tail(&p.log_text(), 2000)
                    )
                })
                .collect();
            panic!("SentinelSet {}: {e}\n{}", self.master_name, logs.join("\n"))
        })
    }
}

/// Parses the port out of a `get-master-addr-by-name` reply
/// (`*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n`).
fn parse_addr_reply(reply: &str) -> Option<u16> {
    let lines: Vec<&str> = reply.split("\r\n").collect();
    if lines.first() != Some(&"*2") {
        return None;
    }
    lines.get(4)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_addr_reply;

    #[test]
    fn parses_master_addr() {
        assert_eq!(
            parse_addr_reply("*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"),
            Some(6380)
        );
        assert_eq!(parse_addr_reply("*-1\r\n"), None);
    }
}
