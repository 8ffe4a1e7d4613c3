//! `duplex connect`: the real binary end to end, against `duplex echo`, `duplex serve` over
//! TLS, and through real proxies (tinyproxy, microsocks). Every wait is bounded.

mod serve_support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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
    connect_until(args, stdin, env, None)
}

/// Like [`connect`], but stdin stays open (after `stdin` is written) until stdout contains
/// `hold_until`, so the server's first messages are read before the client closes.
fn connect_until(
    args: &[&str],
    stdin: &[u8],
    env: &[(&str, String)],
    hold_until: Option<&str>,
) -> Run {
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
    let mut input = child.stdin.take();
    if let Some(input) = input.as_mut() {
        let _ = input.write_all(stdin);
        let _ = input.flush();
    }
    if hold_until.is_none() {
        input = None; // EOF
    }
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let out_reader = {
        let stdout = Arc::clone(&stdout);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                stdout.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
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
        if let Some(needle) = hold_until {
            if String::from_utf8_lossy(&stdout.lock().unwrap()).contains(needle) {
                input = None; // EOF
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "duplex connect {args:?} did not finish within {LIMIT:?}; stdout: {}; stderr: {}",
                String::from_utf8_lossy(&stdout.lock().unwrap()),
                err_reader.join().unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(20));
    };
    drop(input);
    let _ = out_reader.join();
    let stdout = std::mem::take(&mut *stdout.lock().unwrap());
    Run {
        status,
        stdout,
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
        run.stderr
            .starts_with("error: cannot connect to 127.0.0.1:")
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
    for needle in [
        "Exit codes:",
        "3  cannot connect",
        "4  TLS",
        "5  proxy",
        "--cacert",
    ] {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
}

/// A CA and a leaf for `localhost` and 127.0.0.1 signed by it, written as PEM files in a
/// fresh directory: (dir, ca.pem, cert.pem (leaf + CA), key.pem).
struct Pki {
    dir: std::path::PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let dir = std::env::temp_dir().join(format!(
            "duplex-connect-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        // A CA certificate (for localhost) used as the server's own: a classic mistake.
        let mut bad = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        bad.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let bad_key = KeyPair::generate().unwrap();
        let bad = bad.self_signed(&bad_key).unwrap();
        std::fs::write(dir.join("ca-as-leaf.pem"), bad.pem()).unwrap();
        std::fs::write(dir.join("ca-as-leaf-key.pem"), bad_key.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).to_str().unwrap().to_owned()
    }

    fn tls_server(&self) -> serve_support::Server {
        serve_support::Server::start(&[
            "--tls-cert",
            &self.path("cert.pem"),
            "--tls-key",
            &self.path("key.pem"),
        ])
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap()
}

const ESTABLISHED: &str = "pusher:connection_established";

#[test]
fn wss_with_cacert_prints_the_hubs_first_message() {
    let pki = Pki::new("cacert");
    let server = pki.tls_server();
    let url = format!(
        "wss://localhost:{}/app/app-key?protocol=7",
        port_of(&server.addr)
    );
    let run = connect_until(
        &["--cacert", &pki.path("ca.pem"), &url],
        b"",
        &[],
        Some(ESTABLISHED),
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert!(
        run.stdout_text().contains(ESTABLISHED),
        "{}",
        run.stdout_text()
    );
}

#[test]
fn wss_without_cacert_exits_4_with_a_hint() {
    let pki = Pki::new("nocacert");
    let server = pki.tls_server();
    let url = format!(
        "wss://localhost:{}/app/app-key?protocol=7",
        port_of(&server.addr)
    );
    let run = connect(&[&url], b"", &[]);
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with("error: TLS handshake with localhost:"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--cacert FILE"), "{}", run.stderr);
    assert!(run.stderr.trim_end().lines().count() <= 2, "{}", run.stderr);
    assert_no_backtrace(&run);

    // --insecure connects anyway, loudly.
    let run = connect_until(&["--insecure", &url], b"", &[], Some(ESTABLISHED));
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert!(
        run.stdout_text().contains(ESTABLISHED),
        "{}",
        run.stdout_text()
    );
    assert!(run.stderr.contains("WARNING: --insecure"), "{}", run.stderr);
}

#[test]
fn a_ca_certificate_served_as_the_leaf_gets_its_own_hint() {
    let pki = Pki::new("caleaf");
    let server = serve_support::Server::start(&[
        "--tls-cert",
        &pki.path("ca-as-leaf.pem"),
        "--tls-key",
        &pki.path("ca-as-leaf-key.pem"),
    ]);
    let url = format!(
        "wss://localhost:{}/app/app-key?protocol=7",
        port_of(&server.addr)
    );
    let run = connect(&["--cacert", &pki.path("ca-as-leaf.pem"), &url], b"", &[]);
    assert_eq!(run.status.code(), Some(4), "{}", run.stderr);
    assert!(run.stderr.contains("marked CA"), "{}", run.stderr);
    assert_no_backtrace(&run);
}

#[test]
fn handshake_refused_exits_6_with_the_status() {
    // An HTTP server that answers every request with 403.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            stream.set_read_timeout(Some(LIMIT)).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = stream.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let run = connect(&[&format!("ws://127.0.0.1:{port}/")], b"", &[]);
    assert_eq!(run.status.code(), Some(6), "{}", run.stderr);
    assert!(
        run.stderr.contains("refused") && run.stderr.contains("403"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.trim_end().lines().count(), 1, "{}", run.stderr);
    assert_no_backtrace(&run);
}

const USER: &str = "duplex";
const PASSWORD: &str = "s3cret-pw";

#[test]
fn through_tinyproxy_with_the_proxy_option() {
    let (_server, port) = echo_server();
    let proxy = duplex_testkit::Tinyproxy::start(USER, PASSWORD, &[port]);
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(
        &["--proxy", &proxy.url(USER, PASSWORD), &url],
        b"via http
",
        &[],
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert_eq!(
        run.stdout_text(),
        "via http
"
    );
    proxy.wait_for_log(&format!("CONNECT 127.0.0.1:{port}"));

    // A port the proxy forbids: its status, exit 5.
    let other = free_port();
    let url = format!("ws://127.0.0.1:{other}/");
    let run = connect(&["--proxy", &proxy.url(USER, PASSWORD), &url], b"", &[]);
    assert_eq!(run.status.code(), Some(5), "{}", run.stderr);
    assert!(run.stderr.contains("HTTP 403"), "{}", run.stderr);
    assert_no_backtrace(&run);
}

#[test]
fn through_microsocks_with_the_proxy_option() {
    let (_server, port) = echo_server();
    let proxy = duplex_testkit::Microsocks::start(USER, PASSWORD);
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(
        &["--proxy", &proxy.url("socks5h", USER, PASSWORD), &url],
        b"via socks\n",
        &[],
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert_eq!(run.stdout_text(), "via socks\n");
    proxy.wait_for_log(&format!("connected to 127.0.0.1:{port}"));
}

#[test]
fn https_proxy_from_the_environment_and_no_proxy() {
    let pki = Pki::new("envproxy");
    let server = pki.tls_server();
    let port: u16 = port_of(&server.addr).parse().unwrap();
    let proxy = duplex_testkit::Tinyproxy::start(USER, PASSWORD, &[port]);
    let url = format!("wss://127.0.0.1:{port}/app/app-key?protocol=7");
    let cacert = pki.path("ca.pem");
    let env = [("HTTPS_PROXY", proxy.url(USER, PASSWORD))];
    let run = connect_until(&["--cacert", &cacert, &url], b"", &env, Some(ESTABLISHED));
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert!(
        run.stdout_text().contains(ESTABLISHED),
        "{}",
        run.stdout_text()
    );
    let tunnel = format!("CONNECT 127.0.0.1:{port}");
    let log = proxy.wait_for_log(&tunnel);
    let tunnels = log.matches(&tunnel).count();

    // NO_PROXY matching the host: direct, the proxy sees nothing new.
    let env = [
        ("HTTPS_PROXY", proxy.url(USER, PASSWORD)),
        ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
    ];
    let run = connect_until(&["--cacert", &cacert, &url], b"", &env, Some(ESTABLISHED));
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert!(
        run.stdout_text().contains(ESTABLISHED),
        "{}",
        run.stdout_text()
    );
    // --no-proxy: direct as well.
    let env = [("HTTPS_PROXY", proxy.url(USER, PASSWORD))];
    let run = connect_until(
        &["--no-proxy", "--cacert", &cacert, &url],
        b"",
        &env,
        Some(ESTABLISHED),
    );
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    sleep(Duration::from_millis(300));
    assert_eq!(
        proxy.log_text().matches(&tunnel).count(),
        tunnels,
        "NO_PROXY / --no-proxy went through the proxy:\n{}",
        proxy.log_text()
    );
}

#[test]
fn reconnect_mode_echoes_and_exits_0_at_eof() {
    let (_server, port) = echo_server();
    let url = format!("ws://127.0.0.1:{port}/");
    let run = connect(&["--reconnect", &url], b"a\nb\n", &[]);
    assert!(run.status.success(), "{:?}: {}", run.status, run.stderr);
    assert_eq!(run.stdout_text(), "a\nb\n", "{}", run.stderr);
}
