//! `duplex connect URL`: a command-line WebSocket client (like websocat).
//!
//! Lines from stdin go out as text messages (or stdin chunks as binary messages with
//! `--binary`); every message received is printed on stdout. At the end of stdin the client
//! closes with 1000 and exits 0 once the closing handshake is done. Failures print one or two
//! lines on stderr and exit with a code saying what failed (see [`EXIT_CODES`]).

use duplex::client::{connect_tls, ClientConfig};
use duplex::proxy::Proxy;
use duplex::reconnect::{ReconnectConfig, ReconnectEvent, ReconnectSendError, ReconnectingClient};
use duplex::tls::rustls;
use duplex::{CloseCode, CloseFrame, Error, Event, Message};
use std::convert::Infallible;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The exit codes, shown by `duplex connect --help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  stdin ended and the closing handshake finished (or the server closed with 1000/1001)
  1  other error
  2  usage error (bad option or option value)
  3  cannot connect: connection refused, DNS failure, timeout
  4  TLS error (untrusted or invalid certificate, TLS alert)
  5  proxy error (unreachable, refused the tunnel, authentication)
  6  the server refused the WebSocket handshake (e.g. an HTTP status instead of 101)
  7  the connection closed abnormally (no closing handshake, protocol error, or a close code
     other than 1000/1001), or --reconnect gave up

Proxies: HTTP_PROXY (ws://), HTTPS_PROXY (wss://), ALL_PROXY and NO_PROXY are honoured as
curl does, unless --no-proxy or --proxy is given.";

const EXIT_OTHER: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_CONNECT: i32 = 3;
const EXIT_TLS: i32 = 4;
const EXIT_PROXY: i32 = 5;
const EXIT_HANDSHAKE: i32 = 6;
const EXIT_ABNORMAL: i32 = 7;

/// How received binary messages are written on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BinaryOutput {
    /// The bytes as they are (followed by a newline unless `--binary`).
    Raw,
    /// Lower-case hexadecimal, one message per line.
    Hex,
    /// Standard base64, one message per line.
    Base64,
}

#[derive(clap::Args)]
#[command(after_help = EXIT_CODES)]
pub struct ConnectArgs {
    /// The server: ws://host[:port]/path or wss://host[:port]/path.
    url: String,
    /// Send stdin as binary messages (one per chunk read) instead of one text message per line;
    /// received binary messages are then written without an added newline.
    #[arg(long)]
    binary: bool,
    /// How to write received binary messages.
    #[arg(long, value_enum, default_value_t = BinaryOutput::Raw)]
    binary_output: BinaryOutput,
    /// An extra request header, 'Name: value' (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A subprotocol to offer (repeatable, most preferred first).
    #[arg(long = "subprotocol", value_name = "PROTOCOL")]
    subprotocols: Vec<String>,
    /// The Origin header.
    #[arg(long)]
    origin: Option<String>,
    /// Offer permessage-deflate compression.
    #[arg(long)]
    deflate: bool,
    /// Send a ping after this many seconds without traffic.
    #[arg(long, value_name = "SECS")]
    ping_interval: Option<f64>,
    /// Connect through this proxy: http://[user:pass@]host:port, socks5://... or socks5h://...
    /// (the proxy resolves the host name).
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
    /// Ignore HTTP_PROXY, HTTPS_PROXY and ALL_PROXY: connect directly.
    #[arg(long, conflicts_with = "proxy")]
    no_proxy: bool,
    /// Trust the CA certificate(s) in this PEM file for wss:// (instead of the Mozilla roots).
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Do not verify the server's certificate at all (tests only: anyone can intercept).
    #[arg(long, conflicts_with = "cacert")]
    insecure: bool,
    /// Reconnect with exponential backoff when the connection is lost (stdin is read only
    /// while connected; notices about the connection go to stderr). At the end of stdin,
    /// messages still arriving are printed until 300 ms pass without one, then it closes.
    #[arg(long)]
    reconnect: bool,
    /// Largest message accepted, in bytes.
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// One JSON object per event on stdout: {"type":"text","data":..}, {"type":"binary",
    /// "base64":..}, {"type":"ping"}, {"type":"pong"}, {"type":"close","code":..,"reason":..},
    /// {"type":"open","subprotocol":..}; with --reconnect also "disconnected" and
    /// "reconnecting".
    #[arg(long)]
    json: bool,
}

/// A failure with its exit code and the line(s) to print.
struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    fn new(code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Runs the client; exits the process with the documented code on failure.
pub fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let code = match run_inner(args) {
        Ok(()) => 0,
        Err(failure) => {
            let _ = std::io::stdout().flush();
            eprintln!("{}", failure.message);
            failure.code
        }
    };
    let _ = std::io::stdout().flush();
    // Exit here: the thread reading stdin may still be blocked in a read.
    std::process::exit(code);
}

fn run_inner(args: ConnectArgs) -> Result<(), Failure> {
    let config = client_config(&args)?;
    let runtime = crate::runtime::build(1)
        .map_err(|e| Failure::new(EXIT_OTHER, format!("error: cannot start the runtime: {e}")))?;
    let interactive = std::io::stdin().is_terminal();
    let out = Output {
        json: args.json,
        binary: args.binary,
        binary_output: args.binary_output,
        interactive,
    };
    let input = spawn_stdin_reader(args.binary);
    runtime.block_on(async move {
        if args.reconnect {
            run_reconnecting(&args.url, config, input, &out).await
        } else {
            run_once(&args.url, config, input, &out).await
        }
    })
}

/// The client configuration the options describe.
fn client_config(args: &ConnectArgs) -> Result<ClientConfig, Failure> {
    let mut config = ClientConfig::new().deflate(args.deflate);
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("error: invalid header {header:?}: expected 'Name: value'"),
            ));
        };
        if name.trim().is_empty() {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("error: invalid header {header:?}: the name is empty"),
            ));
        }
        config = config.header(name.trim(), value.trim());
    }
    for protocol in &args.subprotocols {
        config = config.subprotocol(protocol.as_str());
    }
    if let Some(origin) = &args.origin {
        config = config.origin(origin.as_str());
    }
    if let Some(secs) = args.ping_interval {
        if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
            return Err(Failure::new(
                EXIT_USAGE,
                format!("error: --ping-interval {secs}: expected a positive number of seconds"),
            ));
        }
        config = config.ping_interval(Duration::from_secs_f64(secs));
    }
    if let Some(bytes) = args.max_message_size {
        config = config.max_message_size(bytes);
        config.protocol.max_frame_size = config.protocol.max_frame_size.min(bytes.max(1));
    }
    if let Some(proxy) = &args.proxy {
        let proxy = Proxy::parse(proxy)
            .map_err(|e| Failure::new(EXIT_USAGE, format!("error: --proxy: {e}")))?;
        config = config.proxy(proxy);
    } else if !args.no_proxy {
        config = config.proxy_from_env();
    }
    if let Some(file) = &args.cacert {
        config = config.tls(cacert_config(file)?);
    } else if args.insecure {
        eprintln!(
            "WARNING: --insecure: the server's certificate is NOT verified; anyone on the path \
             can read and change this connection. Use --cacert FILE instead outside tests."
        );
        config = config.tls(insecure_config()?);
    }
    Ok(config)
}

/// A TLS configuration trusting exactly the certificates in `file`.
fn cacert_config(file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, Failure> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(file).map_err(|e| {
        Failure::new(
            EXIT_USAGE,
            format!("error: --cacert: cannot read {}: {e}", file.display()),
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            Failure::new(
                EXIT_USAGE,
                format!("error: --cacert: {}: malformed PEM: {e}", file.display()),
            )
        })?;
        roots.add(cert).map_err(|e| {
            Failure::new(
                EXIT_USAGE,
                format!(
                    "error: --cacert: {}: unusable certificate: {e}",
                    file.display()
                ),
            )
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(Failure::new(
            EXIT_USAGE,
            format!(
                "error: --cacert: {}: no certificate found (expected a \
                 `-----BEGIN CERTIFICATE-----` section)",
                file.display()
            ),
        ));
    }
    duplex::tls::client_config_with_roots(roots)
        .map_err(|e| Failure::new(EXIT_TLS, format!("error: {e}")))
}

/// A TLS configuration that accepts any certificate (`--insecure`). Handshake signatures are
/// still checked, so the session is at least with the holder of the certificate shown.
fn insecure_config() -> Result<Arc<rustls::ClientConfig>, Failure> {
    let provider = duplex::tls::crypto_provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(EXIT_TLS, format!("error: TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![duplex::tls::ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Reads stdin on its own thread (a blocked read must not hold the runtime): lines, or chunks
/// with `binary`. The channel closes at the end of stdin.
fn spawn_stdin_reader(binary: bool) -> mpsc::Receiver<Message> {
    let (tx, rx) = mpsc::channel::<Message>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        if binary {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = bytes::Bytes::copy_from_slice(&buf[..n]);
                        if tx.blocking_send(Message::Binary(chunk)).is_err() {
                            break;
                        }
                    }
                }
            }
        } else {
            let mut line = Vec::new();
            loop {
                line.clear();
                match stdin.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        let text = String::from_utf8_lossy(&line).into_owned();
                        if tx.blocking_send(Message::from(text)).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    rx
}

/// Where and how events are shown.
struct Output {
    json: bool,
    binary: bool,
    binary_output: BinaryOutput,
    interactive: bool,
}

impl Output {
    fn json_line(&self, value: serde_json::Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{value}");
        let _ = stdout.flush();
    }

    fn prompt(&self) {
        if self.interactive && !self.json {
            eprint!("> ");
            let _ = std::io::stderr().flush();
        }
    }

    fn open(&self, subprotocol: Option<&str>) {
        if self.json {
            self.json_line(serde_json::json!({"type": "open", "subprotocol": subprotocol}));
        } else if self.interactive {
            match subprotocol {
                Some(p) => eprintln!("connected (subprotocol {p}); type messages, Ctrl-D to close"),
                None => eprintln!("connected; type messages, Ctrl-D to close"),
            }
            self.prompt();
        }
    }

    fn message(&self, message: &Message) {
        let mut stdout = std::io::stdout().lock();
        match message {
            Message::Text(text) if self.json => {
                drop(stdout);
                self.json_line(serde_json::json!({"type": "text", "data": text.as_str()}));
                return;
            }
            Message::Binary(data) if self.json => {
                drop(stdout);
                self.json_line(serde_json::json!({"type": "binary", "base64": base64(data)}));
                return;
            }
            Message::Text(text) => {
                let _ = writeln!(stdout, "{}", text.as_str());
            }
            Message::Binary(data) => match self.binary_output {
                BinaryOutput::Raw => {
                    let _ = stdout.write_all(data);
                    if !self.binary {
                        let _ = stdout.write_all(b"\n");
                    }
                }
                BinaryOutput::Hex => {
                    let _ = writeln!(stdout, "{}", hex(data));
                }
                BinaryOutput::Base64 => {
                    let _ = writeln!(stdout, "{}", base64(data));
                }
            },
        }
        let _ = stdout.flush();
    }

    fn control(&self, kind: &str, payload: &[u8]) {
        if self.json {
            let mut value = serde_json::json!({ "type": kind });
            if !payload.is_empty() {
                value["base64"] = base64(payload).into();
            }
            self.json_line(value);
        } else if self.interactive {
            eprintln!(
                "[{kind}{}]",
                if payload.is_empty() {
                    String::new()
                } else {
                    format!(" {}", hex(payload))
                }
            );
        }
    }

    fn close(&self, frame: Option<&CloseFrame>) {
        let (code, reason) = match frame {
            Some(f) => (Some(f.code.0), f.reason.as_str()),
            None => (None, ""),
        };
        if self.json {
            self.json_line(serde_json::json!({"type": "close", "code": code, "reason": reason}));
        } else if self.interactive {
            match code {
                Some(code) => eprintln!("[close {code} {reason:?}]"),
                None => eprintln!("[close, no status code]"),
            }
        }
    }

    fn note(&self, value: serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            self.json_line(value);
        } else {
            eprintln!("{}", text());
        }
    }
}

/// One connection: stdin to the server, the server to stdout.
async fn run_once(
    url: &str,
    config: ClientConfig,
    mut input: mpsc::Receiver<Message>,
    out: &Output,
) -> Result<(), Failure> {
    let (ws, negotiated) = connect_tls(url, &config)
        .await
        .map_err(|e| describe_connect_error(url, &config, e))?;
    out.open(negotiated.protocol.as_deref());
    let (mut reader, mut writer) = ws.into_split();
    // Whether stdin ended first (our close frame went out before the peer's).
    let we_closed = std::cell::Cell::new(false);
    let mut peer_close: Option<Option<CloseFrame>> = None;
    let writing = async {
        while let Some(message) = input.recv().await {
            if writer.send(message).await.is_err() {
                // The reader sees why the connection ended.
                return std::future::pending::<Infallible>().await;
            }
            out.prompt();
        }
        we_closed.set(true);
        let _ = writer.close(CloseCode::NORMAL, "").await;
        std::future::pending::<Infallible>().await
    };
    let reading = async {
        loop {
            match reader.next_event().await {
                Some(Ok(Event::Message(message))) => out.message(&message),
                Some(Ok(Event::Ping(payload))) => out.control("ping", &payload),
                Some(Ok(Event::Pong(payload))) => out.control("pong", &payload),
                Some(Ok(Event::Close(frame))) => {
                    out.close(frame.as_ref());
                    peer_close = Some(frame);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    };
    tokio::pin!(writing);
    let result = tokio::select! {
        result = reading => result,
        never = &mut writing => match never {},
    };
    match result {
        Err(e) => Err(Failure::new(
            EXIT_ABNORMAL,
            format!("error: the connection closed abnormally: {e}"),
        )),
        Ok(()) => match peer_close {
            None => Err(Failure::new(
                EXIT_ABNORMAL,
                "error: the connection ended without a closing handshake",
            )),
            Some(frame) => close_outcome(frame.as_ref(), we_closed.get()),
        },
    }
}

/// The exit after a closing handshake: success for 1000, 1001 or no code, or when we closed.
fn close_outcome(frame: Option<&CloseFrame>, we_closed: bool) -> Result<(), Failure> {
    match frame {
        None => Ok(()),
        Some(f) if we_closed || f.code == CloseCode::NORMAL || f.code == CloseCode::GOING_AWAY => {
            Ok(())
        }
        Some(f) => Err(Failure::new(
            EXIT_ABNORMAL,
            format!(
                "error: the server closed the connection with code {}{}",
                f.code.0,
                if f.reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", f.reason.as_str())
                }
            ),
        )),
    }
}

/// `--reconnect`: the same, over [`ReconnectingClient`].
async fn run_reconnecting(
    url: &str,
    config: ClientConfig,
    mut input: mpsc::Receiver<Message>,
    out: &Output,
) -> Result<(), Failure> {
    let mut client = ReconnectingClient::start(url, ReconnectConfig::new().client(config))
        .map_err(|e| Failure::new(EXIT_USAGE, format!("error: {e}")))?;
    // Stdin is read only while connected: lines typed meanwhile wait for the connection.
    let mut connected = false;
    loop {
        tokio::select! {
            message = input.recv(), if connected => match message {
                Some(message) => match client.send(message).await {
                    Ok(()) => out.prompt(),
                    Err(ReconnectSendError::NotConnected(_)) => {
                        eprintln!("duplex connect: not connected: message dropped");
                    }
                    Err(e) => eprintln!("duplex connect: message not sent: {e}"),
                },
                None => {
                    linger(&mut client, out).await;
                    let _ = client.close(CloseCode::NORMAL, "").await;
                    return Ok(());
                }
            },
            event = client.recv() => match event {
                Some(ReconnectEvent::Connected { negotiated }) => {
                    connected = true;
                    out.open(negotiated.protocol.as_deref());
                }
                Some(ReconnectEvent::Message(message)) => out.message(&message),
                Some(ReconnectEvent::Disconnected { code, reason, error }) => {
                    connected = false;
                    let error = error.map(|e| e.to_string());
                    out.note(
                        serde_json::json!({"type": "disconnected", "code": code.map(|c| c.0),
                            "reason": reason, "error": error}),
                        || match (code, &error) {
                            (Some(code), _) => format!("duplex connect: disconnected: close {} {reason:?}", code.0),
                            (None, Some(e)) => format!("duplex connect: disconnected: {e}"),
                            (None, None) => "duplex connect: disconnected".to_owned(),
                        },
                    );
                }
                Some(ReconnectEvent::Reconnecting { attempt, delay }) => out.note(
                    serde_json::json!({"type": "reconnecting", "attempt": attempt,
                        "delay_ms": delay.as_millis() as u64}),
                    || format!("duplex connect: reconnecting (attempt {attempt}) in {delay:.1?}"),
                ),
                Some(ReconnectEvent::GaveUp) | None => {
                    return Err(Failure::new(EXIT_ABNORMAL, "error: gave up reconnecting"));
                }
                Some(_) => {}
            },
        }
    }
}

/// At the end of stdin in `--reconnect` mode: prints the messages still arriving until
/// [`LINGER_QUIET`] passes without one (at most [`LINGER_MAX`]), since
/// [`ReconnectingClient::close`] discards what arrives during the closing handshake.
async fn linger(client: &mut ReconnectingClient, out: &Output) {
    let deadline = tokio::time::Instant::now() + LINGER_MAX;
    loop {
        let quiet = tokio::time::sleep(LINGER_QUIET);
        tokio::select! {
            event = client.recv() => match event {
                Some(ReconnectEvent::Message(message)) => out.message(&message),
                Some(_) => {}
                None => return,
            },
            () = quiet => return,
            () = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// See [`linger`].
const LINGER_QUIET: Duration = Duration::from_millis(300);
/// See [`linger`].
const LINGER_MAX: Duration = Duration::from_secs(5);

/// One or two lines saying why connecting failed, with the exit code for it.
fn describe_connect_error(url: &str, config: &ClientConfig, e: Error) -> Failure {
    let target = duplex::client::Target::parse(url)
        .map(|t| format!("{}:{}", t.host, t.port))
        .unwrap_or_else(|_| url.to_owned());
    let via = match config.proxy.proxy_for(url) {
        Ok(Some(p)) => format!(" (through the proxy {}:{})", p.host(), p.port()),
        _ => String::new(),
    };
    match e {
        Error::Url(reason) => Failure::new(EXIT_USAGE, format!("error: invalid URL: {reason}")),
        Error::ProxyUrl(_) => Failure::new(EXIT_USAGE, format!("error: {e}")),
        Error::ProxyConnect { .. }
        | Error::ProxyRefused { .. }
        | Error::ProxyAuthRequired { .. }
        | Error::ProxyProtocol(_)
        | Error::SocksRefused { .. }
        | Error::SocksAuthFailed
        | Error::SocksNoAcceptableAuth { .. } => {
            Failure::new(EXIT_PROXY, format!("error: proxy: {e}"))
        }
        Error::Tls(tls) => Failure::new(
            EXIT_TLS,
            format!(
                "error: TLS handshake with {target} failed: {tls}\nhint: {}",
                tls_hint(&tls)
            ),
        ),
        Error::TlsConfig(e) => Failure::new(EXIT_TLS, format!("error: {e}")),
        Error::BadResponse(e) => Failure::new(
            EXIT_HANDSHAKE,
            format!("error: handshake with {target} refused: {e}"),
        ),
        Error::Handshake(_) | Error::Rejected { .. } => {
            Failure::new(EXIT_HANDSHAKE, format!("error: {e}"))
        }
        Error::HandshakeTimeout(limit) => Failure::new(
            EXIT_CONNECT,
            format!("error: connecting to {target}{via} timed out after {limit:?}"),
        ),
        Error::Io(io) => {
            let hint = match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    "; nothing listens there: check the host and port"
                }
                _ if io.to_string().contains("lookup") => {
                    "; the host name could not be resolved: check its spelling"
                }
                _ => "",
            };
            Failure::new(
                EXIT_CONNECT,
                format!("error: cannot connect to {target}{via}: {io}{hint}"),
            )
        }
        other => Failure::new(EXIT_OTHER, format!("error: {other}")),
    }
}

/// What to do about a TLS failure, in terms of this command's options.
fn tls_hint(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the server's certificate is not signed by a trusted CA: trust its CA with \
             --cacert FILE (or skip verification with --insecure, for tests only)"
        }
        // webpki's CaUsedAsEndEntity reaches rustls 0.23 as `CertificateError::Other`.
        rustls::Error::InvalidCertificate(C::Other(other))
            if format!("{other:?}").contains("CaUsedAsEndEntity") =>
        {
            "a certificate marked CA is used as the server's certificate: make a leaf \
             certificate signed by your CA for the server, and pass the CA with --cacert FILE"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the certificate does not name the host in the URL: connect with a name it lists",
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the certificate is outside its validity period: renew it, or check the clock",
        rustls::Error::InvalidCertificate(_) => {
            "the server's certificate was refused: --cacert FILE trusts a private CA"
        }
        _ => "is the server speaking TLS on this port? (use ws:// for a plain server)",
    }
}

fn hex(data: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut text = String::with_capacity(data.len() * 2);
    for byte in data {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                text.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                text.push('=');
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, expected) in vectors {
            assert_eq!(base64(input.as_bytes()), expected);
        }
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
