//! `duplex connect`: the real binary end to end, against `duplex echo`, `duplex serve` over
//! TLS, and through real proxies (tinyproxy, microsocks). Every wait is bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_duplex");
/// Longest any `duplex connect` run may take.
const LIMIT: Duration = Duration::from_secs(20);

/// Proxy and backtrace variables removed from every child's environment.
const SCRUBBED: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `duplex echo` on a free port; returns the process and its port once it accepts TCP.
fn echo_server() -> (Killed, u16) {
    for _ in 0..5 {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["echo", "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start duplex echo");
        let mut server = Killed(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (server, port);
            }
            if let Ok(Some(_)) = server.0.try_wait() {
                break;
            }
            sleep(Duration::from_millis(20));
        }
    }
    panic!("duplex echo did not start listening");
}

/// What a finished `duplex connect` run left.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `duplex connect ARGS` with `stdin` as its input and `env` added to a scrubbed
/// environment; kills it after [`LIMIT`].
fn connect(args: &[&str], stdin: &[u8], env: &[(&str, String)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.arg("connect").args(args);
    for var in SCRUBBED {
        cmd.env_remove(var);
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duplex connect");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
        // Dropping `input` closes stdin: EOF.
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = String::new();
        let _ = err.read_to_string(&mut buf);
        buf
    });
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "duplex connect {args:?} did not finish within {LIMIT:?}; stderr: {}",
                err_reader.join().unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Run {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

fn assert_no_backtrace(run: &Run) {
    assert!(
        !run.stderr.contains("panicked") && !run.stderr.contains("backtrace"),
        "{}",
        run.stderr
    );
}

#[test]
fn lines_in_same_lines_out_and_eof_closes_with_exit_0() {
    let (_server, port) = echo_server();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(&[&url], b"hello\nsecond line\n\xc3\xa9t\xc3\xa9\n", &[]);
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert_eq!(run.stdout_text(), "hello\nsecond line\nété\n");
    assert_eq!(run.stderr, "", "nothing on stderr when all goes well");
}

#[test]
fn json_prints_one_object_per_event() {
    let (_server, port) = echo_server();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(&["--json", &url], b"one\ntwo\n", &[]);
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    let events: Vec<serde_json::Value> = run
        .stdout_text()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON object per line"))
        .collect();
    let texts: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "text")
        .map(|e| e["data"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["one", "two"], "{events:?}");
    assert_eq!(events[0]["type"], "open", "{events:?}");
    let close = events.last().unwrap();
    assert_eq!(close["type"], "close", "{events:?}");
    assert_eq!(close["code"], 1000, "{events:?}");
}

#[test]
fn binary_with_hex_output() {
    let (_server, port) = echo_server();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(
        &["--binary", "--binary-output", "hex", &url],
        &[0x00, 0xff, 0x10, b'A'],
        &[],
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert_eq!(run.stdout_text(), "00ff1041\n");

    let run = connect(&["--binary", "--json", &url], b"AB", &[]);
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert!(
        run.stdout_text()
            .contains(r#""base64":"QUI=","type":"binary""#),
        "{}",
        run.stdout_text()
    );
}

#[test]
fn refused_connection_exits_3_with_one_line() {
    let port = free_port(); // nothing listens there once the probe is dropped
    let run = connect(&[&format!("ws://127.0.0.1:{port}/")], b"", &[]);
    assert_eq!(run.status.code(), Some(3), "{}", run.stderr);
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.starts_with("error: cannot connect to 127.0.0.1:")
            && run.stderr.contains("refused"),
        "{}",
        run.stderr
    );
    assert_no_backtrace(&run);
}

#[test]
fn help_documents_the_exit_codes() {
    let out = Command::new(BIN)
        .args(["connect", "--help"])
        .output()
        .expect("duplex connect --help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in ["Exit codes:", "3  cannot connect", "4  TLS", "5  proxy", "--cacert"] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}
