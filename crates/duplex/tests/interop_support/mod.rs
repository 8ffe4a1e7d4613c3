//! Plumbing of the interop tests: finding and running the peers (tests/interop/), reading
//! their JSON reports, serving the Chromium page, counting bytes on the wire, the test
//! data every peer generates identically, and (`pki`) the throw-away CA of the wss:// tests.

#![allow(dead_code)]

pub mod pki;

use duplex::tls::TlsAcceptor;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Longest any single wait may take (a message, a handshake, a process start). Generous: the
/// machine may be a loaded 2-core box running Chromium next to other tests.
pub const STEP: Duration = Duration::from_secs(25);
/// Longest a peer may take to start and connect or listen (Chromium's launch is the slow one).
pub const START: Duration = Duration::from_secs(45);
/// Backstop for a whole scenario.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(100);

// ------------------------------------------------------------------------- test data
// Must match tests/interop/peer.py, peer.js and web/index.html.

pub const TEXT: &str = "hello, ünïcødé ✓";
pub const US_TEXT: &str = "duplex says hi ✓";
pub const US_BIN: &[u8] = b"\x00\xffduplex";
pub const FRAG_TEXT: &str = "fragmented ✓ text";
pub const FRAG_BIN: &[u8] = &[1, 2, 3, 4, 5, 6, 7, 8, 9];
pub const US_FRAG_TEXT: &str = "split ✓ code point";
pub const MIB: usize = 1 << 20;
pub const RANDOM_LEN: usize = 256 << 10;
pub const SMALL: &str = "hello hello hello";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789 ";

pub fn bin_a() -> Vec<u8> {
    (0..=255u8).collect()
}

pub fn bin_b() -> Vec<u8> {
    (0..=255u8).rev().collect()
}

/// Binary test pattern: byte i = (31 i + (i >> 11)) mod 256.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 31 + (i >> 11)) & 0xff) as u8)
        .collect()
}

/// ASCII test text: char i = ALPHABET[(7 i + i / 1000) mod 37].
pub fn text_pattern(n: usize) -> String {
    (0..n)
        .map(|i| ALPHABET[(i * 7 + i / 1000) % ALPHABET.len()] as char)
        .collect()
}

/// Incompressible bytes (xorshift64*), reproducible from `seed`.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(n);
    out
}

// ------------------------------------------------------------------------- the peers

/// Who is on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    /// Python `websockets` (tests/interop/peer.py).
    Python,
    /// Node `ws` (tests/interop/peer.js).
    Node,
    /// Chromium's WebSocket in a page (tests/interop/browser.js + web/index.html).
    Chromium,
}

impl PeerKind {
    /// Whether the peer's API can send a ping (a page cannot).
    pub fn can_ping(self) -> bool {
        self != PeerKind::Chromium
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

pub fn interop_dir() -> PathBuf {
    repo_root().join("tests/interop")
}

#[track_caller]
fn missing(what: &str) -> ! {
    panic!(
        "interop peer not installed: {what}\n\
         => run tests/interop/install.sh (from the repository root), then re-run the tests"
    )
}

fn python() -> PathBuf {
    let python = repo_root().join(".interop/venv/bin/python");
    if !python.exists() {
        missing(&format!("no Python venv at {}", python.display()));
    }
    python
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn node() -> PathBuf {
    let node = on_path("node").unwrap_or_else(|| missing("`node` is not on PATH"));
    for module in ["ws", "playwright-core"] {
        let manifest = interop_dir()
            .join("node_modules")
            .join(module)
            .join("package.json");
        if !manifest.exists() {
            missing(&format!(
                "Node module {module} ({} is missing)",
                manifest.display()
            ));
        }
    }
    node
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("DUPLEX_INTEROP_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !path.exists() {
        missing(&format!("Chromium ({} is missing)", path.display()));
    }
    path
}

/// A peer process. Its stdout is read line by line (JSON reports), its stderr kept for
/// diagnostics. Dropping it terminates it (SIGTERM, then SIGKILL after a grace period) and,
/// unless it reported success, prints what it said.
pub struct PeerProcess {
    label: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    /// The peer's output need not be printed again (it passed, or a panic message has it).
    quiet: bool,
}

impl PeerProcess {
    fn spawn(label: String, program: &Path, args: &[String]) -> PeerProcess {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(interop_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({}): {e}", program.display()));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = child.stdout.take().expect("piped stdout");
        let log = Arc::clone(&stdout);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let log = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                log.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        PeerProcess {
            label,
            child,
            lines,
            stdout,
            stderr,
            quiet: false,
        }
    }

    /// The peer's Python or Node client: `client URL --scenario NAME --origin ORIGIN`, plus
    /// `--tls CA_FILE` to trust that CA for a wss:// URL (without it, a wss:// client trusts
    /// only its default roots).
    pub fn client(
        peer: PeerKind,
        url: &str,
        scenario: &str,
        origin: &str,
        ca_file: Option<&Path>,
    ) -> PeerProcess {
        let mut args = ["client", url, "--scenario", scenario, "--origin", origin]
            .map(String::from)
            .to_vec();
        if let Some(ca) = ca_file {
            args.extend(["--tls".into(), pki::arg(ca)]);
        }
        Self::script(peer, &args, scenario)
    }

    /// The peer's Python or Node server: `server --port 0 --scenario NAME`, plus
    /// `--cert CHAIN_FILE --key KEY_FILE` to serve wss:// with that certificate.
    pub fn server(peer: PeerKind, scenario: &str, cert_key: Option<(&Path, &Path)>) -> PeerProcess {
        let mut args = ["server", "--port", "0", "--scenario", scenario]
            .map(String::from)
            .to_vec();
        if let Some((cert, key)) = cert_key {
            args.extend([
                "--cert".into(),
                pki::arg(cert),
                "--key".into(),
                pki::arg(key),
            ]);
        }
        Self::script(peer, &args, scenario)
    }

    fn script(peer: PeerKind, args: &[String], scenario: &str) -> PeerProcess {
        let (program, script) = match peer {
            PeerKind::Python => (python(), "peer.py"),
            PeerKind::Node => (node(), "peer.js"),
            PeerKind::Chromium => unreachable!("Chromium runs through PeerProcess::browser"),
        };
        let mut all = vec![interop_dir().join(script).display().to_string()];
        all.extend_from_slice(args);
        Self::spawn(format!("{peer:?} {} {scenario}", args[0]), &program, &all)
    }

    /// The Chromium driver: opens `page_url`, runs the scenario against `ws_url` in it. With
    /// `trust_cert` (a PEM file, leaf first), Chromium accepts that server certificate: its
    /// launch gets `--ignore-certificate-errors-spki-list` with the leaf's SPKI hash.
    pub fn browser(
        page_url: &str,
        ws_url: &str,
        scenario: &str,
        trust_cert: Option<&Path>,
    ) -> PeerProcess {
        chromium();
        let node = node();
        let mut args = vec![
            interop_dir().join("browser.js").display().to_string(),
            "--page".into(),
            page_url.into(),
            "--ws".into(),
            ws_url.into(),
            "--scenario".into(),
            scenario.into(),
        ];
        if let Some(cert) = trust_cert {
            args.extend(["--trust-cert".into(), pki::arg(cert)]);
        }
        Self::spawn(format!("Chromium {scenario}"), &node, &args)
    }

    /// The next JSON object the peer prints, within [`STEP`].
    pub async fn next_json(&mut self, what: &str) -> Value {
        self.next_json_within(STEP, what).await
    }

    /// The next JSON object the peer prints, within `limit`.
    pub async fn next_json_within(&mut self, limit: Duration, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Err(_) => {
                    self.quiet = true;
                    panic!(
                        "{}: timed out after {limit:?} waiting for {what}\n{}",
                        self.label,
                        self.diagnostics()
                    )
                }
                Ok(None) => {
                    // Give the stderr thread a moment to collect the last words.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let status = self.exit_status_text();
                    self.quiet = true;
                    panic!(
                        "{}: exited ({status}) before {what}\n{}",
                        self.label,
                        self.diagnostics()
                    )
                }
                Ok(Some(line)) => match serde_json::from_str::<Value>(&line) {
                    Ok(value) if value.is_object() => return value,
                    _ => continue,
                },
            }
        }
    }

    /// Server mode: the port the peer bound (its `{"event":"listening"}` line).
    pub async fn listening_port(&mut self) -> u16 {
        let v = self.next_json_within(START, "its listening port").await;
        assert_eq!(
            v["event"], "listening",
            "{}: unexpected first report {v}",
            self.label
        );
        v["port"].as_u64().expect("port number") as u16
    }

    /// Waits for the peer's final report and its exit; panics (with the peer's output) unless
    /// the peer's own checks passed.
    pub async fn success(&mut self) -> Value {
        let report = loop {
            let v = self.next_json("its final report").await;
            if v["event"] == "result" {
                break v;
            }
        };
        let status = self.wait_exit().await;
        if report["ok"] != true || !status.success() {
            self.quiet = true;
            panic!(
                "{}: the peer reports a failure ({status}): {}\n{}",
                self.label,
                report["error"],
                self.diagnostics()
            );
        }
        self.quiet = true;
        eprintln!("{}: ok: {report}", self.label);
        report
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                return status;
            }
            if Instant::now() > deadline {
                self.quiet = true;
                panic!(
                    "{}: did not exit within {STEP:?} of its report\n{}",
                    self.label,
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn exit_status_text(&mut self) -> String {
        match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => "still running, stdout closed".into(),
        }
    }

    /// Everything the peer printed so far.
    pub fn diagnostics(&self) -> String {
        format!(
            "----- {} stdout -----\n{}\n----- {} stderr -----\n{}\n-----",
            self.label,
            self.stdout.lock().unwrap().join("\n"),
            self.label,
            self.stderr.lock().unwrap().trim_end()
        )
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if !self.quiet {
            // Our side gave up first (a failed assertion, a timeout): the peer usually has a
            // report of its own on the way (our socket is already closed), so let it finish.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Let the reader threads catch up with the last lines.
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first: the Chromium driver then closes the browser it launched (which
            // runs in its own process group) before exiting.
            // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.quiet {
            eprintln!("{}", self.diagnostics());
        }
    }
}

// ------------------------------------------------------------------------- the page

/// A tiny HTTP server for tests/interop/web/index.html on 127.0.0.1, so the page has a real
/// `http://127.0.0.1:PORT` origin, or `https://` with `tls` (the wss:// tests serve the page
/// with the same certificate as the WebSocket). Stops when dropped.
pub struct PageServer {
    port: u16,
    secure: bool,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    pub async fn start(tls: Option<TlsAcceptor>) -> PageServer {
        let secure = tls.is_some();
        let page = std::fs::read(interop_dir().join("web/index.html")).expect("web/index.html");
        let page: Arc<[u8]> = page.into();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let page = Arc::clone(&page);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut stream: BoxedIo = match tls {
                        None => Box::new(stream),
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => Box::new(stream),
                            Err(_) => return,
                        },
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split_whitespace().nth(1).unwrap_or("");
                    let (status, kind, body): (&str, &str, &[u8]) = match path {
                        "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", &page),
                        _ => ("404 Not Found", "text/plain", b"not found\n"),
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        PageServer { port, secure, task }
    }

    /// The page's origin, as Chromium sends it in `Origin`.
    pub fn origin(&self) -> String {
        let scheme = if self.secure { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("{}/index.html", self.origin())
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------------------- the wire

/// Any byte stream: TCP, or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection whichever transport carries it (ws:// or wss://), so one runner serves both.
pub type BoxedIo = Box<dyn Io>;

/// Bytes that crossed the socket, as seen by our side.
#[derive(Debug, Default)]
pub struct WireStats {
    pub read: AtomicU64,
    pub written: AtomicU64,
}

impl WireStats {
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// A stream that counts the bytes read and written through it (to see compression on the
/// wire without any hook in the library).
#[derive(Debug)]
pub struct Counting<S> {
    inner: S,
    stats: Arc<WireStats>,
}

impl<S> Counting<S> {
    pub fn new(inner: S) -> (Counting<S>, Arc<WireStats>) {
        let stats = Arc::new(WireStats::default());
        (
            Counting {
                inner,
                stats: Arc::clone(&stats),
            },
            stats,
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.stats.read.fetch_add(n as u64, Ordering::Relaxed);
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = result {
            self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = result {
            self.stats.written.fetch_add(n as u64, Ordering::Relaxed);
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
