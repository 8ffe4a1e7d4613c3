//! Runs the real `duplex serve` binary on a free loopback port, plus small clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duplex::client::{connect, ClientConfig};
use duplex::{Event, Message, WebSocket};
use serde_json::Value;

pub const KEY: &str = "app-key";
pub const SECRET: &str = "app-secret";
pub const APP_ID: &str = "app-id";

/// A running `duplex serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    /// Starts `duplex serve --host 127.0.0.1 --port 0 <extra>` and waits for its address.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_logged(extra, None)
    }

    /// Like [`Server::start`], with the server's log (stderr) written to `log` when given.
    pub fn start_logged(extra: &[&str], log: Option<&std::path::Path>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_duplex"));
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
            None => Stdio::inherit(),
        };
        cmd.args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(extra)
            .env("DUPLEX_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, _) in std::env::vars() {
            if k.starts_with("DUPLEX_") && k != "DUPLEX_LOG" {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn duplex serve");
        let stdout = child.stdout.take().unwrap();
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
            .expect("duplex serve did not print its address");
        Server { child, addr }
    }

    pub fn ws_url(&self, key: &str, query: &str) -> String {
        format!("ws://{}/app/{key}{query}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "duplex serve did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 request (`Connection: close`): (status, body).
pub fn http(addr: &str, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A signed REST request the way server SDKs sign it: (status, body).
pub fn signed(
    addr: &str,
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut query: Vec<(String, String)> = vec![
        ("auth_key".into(), KEY.into()),
        ("auth_timestamp".into(), ts),
        ("auth_version".into(), "1.0".into()),
    ];
    if !body.is_empty() {
        query.push((
            "body_md5".into(),
            duplex_hub::auth::body_md5(body.as_bytes()),
        ));
    }
    query.extend(params.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let sig = duplex_hub::auth::sign_request(SECRET, method, path, &query);
    let qs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let target = format!("{path}?{}&auth_signature={sig}", qs.join("&"));
    http(addr, method, &target, body)
}

pub type Ws = WebSocket<tokio::net::TcpStream>;

pub async fn ws(url: &str) -> Ws {
    connect(url, &ClientConfig::default())
        .await
        .expect("connect")
        .0
}

/// The next text message as JSON (`data` strings are parsed too), within 10 s.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), ws.next_event())
            .await
            .expect("timed out waiting for a message")
            .expect("connection ended")
            .expect("connection failed");
        if let Event::Message(Message::Text(t)) = ev {
            let mut v: Value = serde_json::from_str(&t).unwrap();
            if let Some(Value::String(d)) = v.get("data") {
                if let Ok(parsed) = serde_json::from_str::<Value>(d) {
                    v["data"] = parsed;
                }
            }
            return v;
        }
        if let Event::Close(frame) = ev {
            panic!("closed while waiting for a message: {frame:?}");
        }
    }
}

/// Waits for the server's close frame and returns its code (skipping messages).
pub async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(15), ws.next_event())
            .await
            .expect("timed out waiting for the close frame");
        match ev {
            Some(Ok(Event::Close(Some(frame)))) => return frame.code.0,
            Some(Ok(Event::Close(None))) => return 1005,
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

/// Connects and returns the socket with its socket id.
pub async fn established(url: &str) -> (Ws, String) {
    let mut ws = ws(url).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["event"], "pusher:connection_established", "{m}");
    let id = m["data"]["socket_id"].as_str().unwrap().to_string();
    (ws, id)
}

pub async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(v.to_string()).await.unwrap();
}
