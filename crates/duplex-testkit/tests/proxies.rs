//! Starts real nginx and haproxy from the fixture templates in front of a std TCP backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use duplex_testkit::{Haproxy, Nginx};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A backend on a free port: `http` answers one HTTP request per connection with a fixed body;
/// otherwise it echoes bytes back.
fn backend(http: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let port = listener.local_addr().expect("backend addr").port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                if http {
                    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                    let mut line = String::new();
                    while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                        if line == "\r\n" {
                            break;
                        }
                        line.clear();
                    }
                    let body = "hello from backend";
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                } else {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
    port
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
}

#[test]
fn nginx_proxies_http_to_the_backend() {
    let backend = backend(true);
    let nginx = Nginx::start(
        &fixture("nginx.conf"),
        &[("BACKEND_PORT", backend.to_string())],
    );
    let mut stream = connect(nginx.port());
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "{response}\n{}",
        nginx.log_text()
    );
    assert!(response.ends_with("hello from backend"), "{response}");
    let rendered = std::fs::read_to_string(nginx.config_path()).expect("rendered config");
    assert!(rendered.contains(&format!("listen 127.0.0.1:{};", nginx.port())));
    assert!(
        rendered.contains("$http_upgrade"),
        "nginx variables left alone"
    );
}

#[test]
fn haproxy_proxies_tcp_to_the_backend() {
    let backend = backend(false);
    let haproxy = Haproxy::start(
        &fixture("haproxy.cfg"),
        &[("BACKEND_PORT", backend.to_string())],
    );
    let mut stream = connect(haproxy.port());
    stream.write_all(b"ping through haproxy").expect("send");
    let mut buf = [0u8; 20];
    stream.read_exact(&mut buf).expect("read the echo");
    assert_eq!(&buf, b"ping through haproxy", "{}", haproxy.log_text());
}

#[test]
#[should_panic(expected = "${NO_SUCH_VAR}")]
fn unknown_placeholder_panics() {
    let dir = duplex_testkit::TempDir::new("bad-template");
    let path = dir.path().join("bad.cfg");
    std::fs::write(&path, "frontend f\n    bind 127.0.0.1:${NO_SUCH_VAR}\n").expect("write");
    let _ = Haproxy::start(&path, &[]);
}
