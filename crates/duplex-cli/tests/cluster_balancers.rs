//! A `duplex serve` cluster behind real load balancers, run from the deployable files in
//! docs/deploy: nginx (L7), HAProxy `mode http` and HAProxy `mode tcp` with the PROXY protocol.
//!
//! Each balancer test starts its own `redis-server`, three `duplex serve --redis` nodes and the
//! balancer, then runs tests/pusher/cluster_lb.mjs: real pusher-js clients connect through the
//! balancer (round robin spreads them over the nodes), share one presence channel, exchange
//! client events, receive an event the `pusher` SDK triggers through the balancer, and after a
//! node is SIGKILLed reconnect through the balancer while presence settles.
//!
//! The other tests check what a node believes about the client's address: a spoofed
//! `X-Forwarded-For` is ignored without `--trust-proxy`; PROXY v1/v2 headers are required and
//! believed only from trusted peers with `--proxy-protocol`.
//!
//! Needs redis-server, nginx, haproxy (tests/services/install.sh) and node with
//! tests/pusher/node_modules (tests/pusher/install.sh); a missing one fails, never skips.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duplex_testkit::{free_port, Haproxy, Nginx, RedisServer, TempDir};
use serde_json::Value;

const NODE_TIMEOUT: &str = "3";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `duplex serve` node with JSON logs (debug for the server edge) in a file; killed on drop.
struct Node {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Node {
    fn start(dir: &Path, name: &str, extra: &[&str]) -> Node {
        let log = dir.join(format!("{name}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_duplex"));
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(["--log-format", "json", "--enable-client-events"])
            .args(extra)
            .env("DUPLEX_LOG", "info,duplex_server=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(&log).expect("create the node log"),
            ));
        for (k, _) in std::env::vars() {
            if k.starts_with("DUPLEX_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("DUPLEX_LOG", "info,duplex_server=debug");
        let mut child = cmd.spawn().expect("spawn duplex serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("duplex serve: listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.trim().to_string());
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "{name} did not print its address; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Node { child, addr, log }
    }

    fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The `client` field of the `connected` line of socket `id` (waits up to 5 s for it).
    fn logged_client(&self, id: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            for line in self.log_text().lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                if v["fields"]["message"] == "connected" && v["span"]["socket"] == id {
                    return v["span"]["client"].as_str().unwrap_or("").to_owned();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no `connected` line for socket {id} in {}:\n{}",
                self.log.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens a Pusher WebSocket on `addr` by hand (after `prefix`, e.g. a PROXY header) with
/// `headers`; returns the socket id, or `None` when the server closed without answering.
fn raw_connect(addr: &str, prefix: &[u8], headers: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(prefix).unwrap();
    let req = format!(
        "GET /app/app-key?protocol=7 HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{headers}\r\n"
    );
    // A server that closes at once may reset the connection while we write.
    if s.write_all(req.as_bytes()).is_err() {
        return None;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let marker = b"socket_id\\\":\\\"";
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
        };
        got.extend_from_slice(&buf[..n]);
        if let Some(at) = got.windows(marker.len()).position(|w| w == marker) {
            let rest = &got[at + marker.len()..];
            if let Some(end) = rest.iter().position(|&b| b == b'\\') {
                return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
            }
        }
        assert!(
            got.len() < 64 * 1024,
            "no connection_established: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
}

/// A PROXY v2 header (TCP over IPv4) naming `src` as the client.
fn proxy_v2(src: [u8; 4], src_port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&[127, 0, 0, 1]);
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&6001u16.to_be_bytes());
    h
}

#[test]
fn spoofed_forwarded_for_is_ignored_without_trust_proxy() {
    let dir = TempDir::new("xff");
    let plain = Node::start(dir.path(), "plain", &[]);
    let id = raw_connect(&plain.addr, b"", "X-Forwarded-For: 6.6.6.6\r\n").expect("connects");
    assert_eq!(
        plain.logged_client(&id),
        "127.0.0.1",
        "spoofed header ignored"
    );

    // Trusting another network changes nothing for a peer outside it.
    let other = Node::start(dir.path(), "other", &["--trust-proxy", "10.0.0.0/8"]);
    let id = raw_connect(&other.addr, b"", "X-Forwarded-For: 6.6.6.6\r\n").expect("connects");
    assert_eq!(other.logged_client(&id), "127.0.0.1");

    // From a trusted peer the header names the client (rightmost untrusted hop).
    let trusting = Node::start(dir.path(), "trusting", &["--trust-proxy", "127.0.0.1/32"]);
    let id = raw_connect(
        &trusting.addr,
        b"",
        "X-Forwarded-For: 6.6.6.6, 198.51.100.7\r\n",
    )
    .expect("connects");
    assert_eq!(trusting.logged_client(&id), "198.51.100.7");
}

#[test]
fn proxy_protocol_headers_only_from_trusted_peers() {
    let dir = TempDir::new("ppv");
    let node = Node::start(
        dir.path(),
        "pp",
        &["--proxy-protocol", "--trust-proxy", "127.0.0.1/32"],
    );
    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 6001\r\n";
    let id = raw_connect(&node.addr, v1, "").expect("v1 accepted");
    assert_eq!(node.logged_client(&id), "203.0.113.9");
    let id = raw_connect(&node.addr, &proxy_v2([192, 0, 2, 44], 40001), "").expect("v2");
    assert_eq!(node.logged_client(&id), "192.0.2.44");
    // The PROXY header names the peer; X-Forwarded-For from that (untrusted) client is ignored.
    let id = raw_connect(&node.addr, v1, "X-Forwarded-For: 6.6.6.6\r\n").expect("v1 + xff");
    assert_eq!(node.logged_client(&id), "203.0.113.9");
    // No header: closed without an answer.
    assert_eq!(raw_connect(&node.addr, b"", ""), None, "no PROXY header");
    // Plain HTTP without the header is refused too, e.g. a health check not sending one.
    let mut s = TcpStream::connect(&node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    // With the header, the same request is served.
    let mut s = TcpStream::connect(&node.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 6001\r\nGET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // A peer outside --trust-proxy may not send one: closed.
    let strict = Node::start(
        dir.path(),
        "strict",
        &["--proxy-protocol", "--trust-proxy", "10.0.0.0/8"],
    );
    assert_eq!(raw_connect(&strict.addr, v1, ""), None, "untrusted peer");
    assert!(
        strict.log_text().contains("peer is not in --trust-proxy"),
        "{}",
        strict.log_text()
    );
}

#[derive(Clone, Copy, Debug)]
enum Balancer {
    Nginx,
    HaproxyHttp,
    HaproxyTcp,
}

enum Running {
    Nginx(Nginx),
    Haproxy(Haproxy),
}

impl Running {
    fn port(&self) -> u16 {
        match self {
            Running::Nginx(n) => n.port(),
            Running::Haproxy(h) => h.port(),
        }
    }

    fn log_text(&self) -> String {
        match self {
            Running::Nginx(n) => n.log_text(),
            Running::Haproxy(h) => h.log_text(),
        }
    }
}

fn cluster_behind(balancer: Balancer) {
    let started = Instant::now();
    let label = format!("{balancer:?}");
    let redis = RedisServer::start();
    let dir = TempDir::new("balancers");
    let url = redis.url();
    let mut extra = vec!["--redis", &url, "--node-timeout", NODE_TIMEOUT];
    match balancer {
        Balancer::Nginx | Balancer::HaproxyHttp => extra.extend(["--trust-proxy", "127.0.0.1/32"]),
        Balancer::HaproxyTcp => extra.extend(["--proxy-protocol", "--trust-proxy", "127.0.0.1/32"]),
    }
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::start(dir.path(), &format!("node{i}"), &extra))
        .collect();
    let ports: Vec<String> = nodes.iter().map(|n| n.port().to_string()).collect();
    let mut vars: Vec<(&str, String)> = vec![
        ("NODE1_PORT", ports[0].clone()),
        ("NODE2_PORT", ports[1].clone()),
        ("NODE3_PORT", ports[2].clone()),
    ];
    let lb = match balancer {
        Balancer::Nginx => {
            Running::Nginx(Nginx::start(&repo().join("docs/deploy/nginx.conf"), &vars))
        }
        Balancer::HaproxyHttp | Balancer::HaproxyTcp => {
            // One file, two frontends: the one under test gets these nodes and is waited on.
            let (http, tcp) = (free_port(), free_port());
            let listen = if matches!(balancer, Balancer::HaproxyHttp) {
                http
            } else {
                tcp
            };
            vars.extend([
                ("TCP_NODE1_PORT", ports[0].clone()),
                ("TCP_NODE2_PORT", ports[1].clone()),
                ("TCP_NODE3_PORT", ports[2].clone()),
                ("HTTP_PORT", http.to_string()),
                ("TCP_PORT", tcp.to_string()),
                ("LISTEN_PORT", listen.to_string()),
            ]);
            Running::Haproxy(Haproxy::start(
                &repo().join("docs/deploy/haproxy.cfg"),
                &vars,
            ))
        }
    };
    let lb_addr = format!("127.0.0.1:{}", lb.port());

    // The client address a node logs for a connection through the balancer. L7: the
    // rightmost X-Forwarded-For hop not trusted (the test client's own entry is believed here
    // only because the client itself is on the trusted loopback). mode tcp: the nodes refuse
    // any connection without a PROXY header, so being served shows HAProxy sent one, naming
    // the TCP client (PROXY v1/v2 addresses are checked directly in another test).
    let (xff, expected) = match balancer {
        Balancer::Nginx | Balancer::HaproxyHttp => {
            ("X-Forwarded-For: 198.51.100.7\r\n", "198.51.100.7")
        }
        Balancer::HaproxyTcp => ("", "127.0.0.1"),
    };
    let id = raw_connect(&lb_addr, b"", xff)
        .unwrap_or_else(|| panic!("no connection through {label}:\n{}", lb.log_text()));
    let node = nodes
        .iter()
        .find(|n| n.log_text().contains(&format!("\"socket\":\"{id}\"")))
        .unwrap_or_else(|| panic!("no node logged socket {id}"));
    assert_eq!(node.logged_client(&id), expected, "{label}");

    let script_dir = repo().join("tests/pusher");
    assert!(
        script_dir.join("node_modules/pusher-js").is_dir()
            && script_dir.join("node_modules/pusher").is_dir(),
        "pusher-js / pusher not installed: run tests/pusher/install.sh (needs node and npm)"
    );
    let out_path = dir.path().join("node.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut script = Command::new("node")
        .arg("cluster_lb.mjs")
        .current_dir(&script_dir)
        .env("LB_PORT", lb.port().to_string())
        .env(
            "NODES",
            nodes
                .iter()
                .map(|n| n.addr.clone())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env(
            "NODE_PIDS",
            nodes
                .iter()
                .map(|n| n.child.id().to_string())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env("NODE_TIMEOUT", NODE_TIMEOUT)
        .env(
            "PROXY_PROTOCOL",
            if matches!(balancer, Balancer::HaproxyTcp) {
                "1"
            } else {
                "0"
            },
        )
        .env("LABEL", &label)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("running node (is Node 20 installed?): {e}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = script.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = script.kill();
            let _ = script.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    print!("{output}");
    let ok = status.is_some_and(|s| s.success()) && output.contains(&format!("{label}: ok"));
    if !ok {
        for (i, n) in nodes.iter().enumerate() {
            let text = n.log_text();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- node{} log (last lines, newest first):", i + 1);
            for l in tail {
                eprintln!("{l}");
            }
        }
        eprintln!("--- {label} log:\n{}", lb.log_text());
    }
    assert!(ok, "{label}: the node script failed ({status:?})");
    eprintln!("{label}: {:?}", started.elapsed());
}

#[test]
fn nginx_round_robin_cluster_with_failover() {
    cluster_behind(Balancer::Nginx);
}

#[test]
fn haproxy_http_mode_cluster_with_failover() {
    cluster_behind(Balancer::HaproxyHttp);
}

#[test]
fn haproxy_tcp_mode_proxy_protocol_cluster_with_failover() {
    cluster_behind(Balancer::HaproxyTcp);
}
