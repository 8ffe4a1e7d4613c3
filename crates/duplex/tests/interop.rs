//! Interoperability with WebSocket stacks nobody on the team wrote: Python `websockets`, Node
//! `ws` and Chromium's own WebSocket (driven by playwright-core). Needs the peers installed by
//! `tests/interop/install.sh`; without them every test fails saying so.
//!
//! Each test runs one scripted dialogue (tests/interop/README.md) between duplex and one peer
//! process over 127.0.0.1, and checks it from both sides: the peer exits non-zero when duplex
//! misbehaves, and these tests assert what duplex observed plus what the peer reported.
//!
//! * `our_server::{python,node,chromium}::*`: our `accept_with` against the peer's client.
//! * `our_client::{python,node}::*`: our `connect` / `handshake` against the peer's server.
//! * `tls::our_server::*`, `tls::our_client::*`: the same runners over wss://, with a CA made
//!   for each test (`interop_support::pki`), plus `untrusted`: a certificate the other side
//!   was not told to trust must be refused.

// The wss:// half uses `duplex::tls`. (`required-features = ["rustls"]` on this test target in
// Cargo.toml would skip it instead.)
#[cfg(not(feature = "rustls"))]
compile_error!("the interop tests need duplex's `rustls` feature (on by default)");

mod interop_support;

use bytes::Bytes;
use duplex::client::{connect, connect_tls, handshake, ClientConfig, Target};
use duplex::proto::deflate::DeflateConfig;
use duplex::proto::handshake::{ClientHandshakeError, Negotiated};
use duplex::server::{accept_with, Rejection, ServerConfig};
use duplex::tls::rustls::{self, AlertDescription, CertificateError};
use duplex::tls::{accept_tls, tls_connect};
use duplex::{CloseCode, Error, Event, Message, MessageKind, Role, WebSocket};
use interop_support::pki::{TestPki, SERVER_NAMES};
use interop_support::*;
use serde_json::Value;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// Origin the Python and Node clients send (Chromium sends its page's).
const PEER_ORIGIN: &str = "http://peer.invalid";
/// The only origin allowed in `reject-origin`: nobody sends it.
const ALLOWED_ORIGIN_FOR_REJECT: &str = "http://allowed.invalid";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Text,
    Binary,
    Empty,
    Large,
    Fragments,
    Ping,
    Subprotocol,
    SubprotocolNone,
    CloseByPeer,
    CloseByUs,
    RejectOrigin,
    Reject403,
    Deflate,
    DeflateNoTakeover,
    DeflateServerNoTakeover,
    DeflatePeerNoTakeover,
    /// (wss:// only) The certificate comes from a CA the client was not told to trust: the
    /// peer's client must refuse our server's, and our client the peer server's.
    TlsUntrusted,
}

impl Scenario {
    /// The name the peers know it by.
    fn name(self) -> &'static str {
        match self {
            Scenario::Text => "text",
            Scenario::Binary => "binary",
            Scenario::Empty => "empty",
            Scenario::Large => "large",
            Scenario::Fragments => "fragments",
            Scenario::Ping => "ping",
            Scenario::Subprotocol => "subprotocol",
            Scenario::SubprotocolNone => "subprotocol-none",
            Scenario::CloseByPeer => "close-by-peer",
            Scenario::CloseByUs => "close-by-us",
            Scenario::RejectOrigin => "reject-origin",
            Scenario::Reject403 => "reject-403",
            Scenario::Deflate => "deflate",
            Scenario::DeflateNoTakeover => "deflate-no-takeover",
            Scenario::DeflateServerNoTakeover => "deflate-server-no-takeover",
            Scenario::DeflatePeerNoTakeover => "deflate-peer-no-takeover",
            Scenario::TlsUntrusted => "tls-untrusted",
        }
    }

    fn is_deflate(self) -> bool {
        matches!(
            self,
            Scenario::Deflate
                | Scenario::DeflateNoTakeover
                | Scenario::DeflateServerNoTakeover
                | Scenario::DeflatePeerNoTakeover
        )
    }

    /// The agreed (server_no_context_takeover, client_no_context_takeover), whoever asked.
    fn no_takeover(self) -> (bool, bool) {
        match self {
            Scenario::DeflateNoTakeover | Scenario::DeflatePeerNoTakeover => (true, true),
            Scenario::DeflateServerNoTakeover => (true, false),
            _ => (false, false),
        }
    }

    /// What our own side asks for (client) or imposes (server), as (server, client).
    fn our_no_takeover(self) -> (bool, bool) {
        match self {
            Scenario::DeflateNoTakeover | Scenario::DeflateServerNoTakeover => self.no_takeover(),
            _ => (false, false),
        }
    }
}

/// What carries a scenario's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `ws://` over TCP.
    Plain,
    /// `wss://`: TLS with a CA made for the test, which both sides trust (but see
    /// [`Scenario::TlsUntrusted`]).
    Tls,
}

impl Transport {
    fn scheme(self) -> &'static str {
        match self {
            Transport::Plain => "ws",
            Transport::Tls => "wss",
        }
    }

    /// The test's certificates, for `Tls`.
    fn pki(self) -> Option<TestPki> {
        (self == Transport::Tls).then(|| TestPki::new("duplex interop test CA"))
    }
}

fn deflate_config(sc: Scenario) -> DeflateConfig {
    DeflateConfig {
        enabled: sc.is_deflate(),
        // Our side asks for (client) or imposes (server) no context takeover.
        server_no_context_takeover: sc.our_no_takeover().0,
        client_no_context_takeover: sc.our_no_takeover().1,
        // Compress even "hello hello hello" and the empty message.
        min_compress_size: 0,
        ..DeflateConfig::default()
    }
}

fn offered_protocols(sc: Scenario) -> Vec<String> {
    match sc {
        Scenario::Subprotocol => vec!["v2".into(), "v1".into()],
        Scenario::SubprotocolNone => vec!["v3".into()],
        _ => Vec::new(),
    }
}

fn server_config(sc: Scenario) -> ServerConfig {
    ServerConfig {
        subprotocols: match sc {
            Scenario::Subprotocol => vec!["v1".into()],
            Scenario::SubprotocolNone => vec!["v3".into()],
            _ => Vec::new(),
        },
        deflate: deflate_config(sc),
        handshake_timeout: STEP,
        ..ServerConfig::default()
    }
}

fn client_config(sc: Scenario) -> ClientConfig {
    ClientConfig {
        subprotocols: offered_protocols(sc),
        deflate: deflate_config(sc),
        handshake_timeout: STEP,
        ..ClientConfig::default()
    }
}

async fn bounded(what: String, scenario: impl Future<Output = ()>) {
    if timeout(SCENARIO_LIMIT, scenario).await.is_err() {
        panic!("{what}: did not finish within {SCENARIO_LIMIT:?}");
    }
}

// ------------------------------------------------------------------------- our side's checks

fn describe(m: &Message) -> String {
    match m {
        Message::Text(t) => {
            let s = t.as_str();
            let head: String = s.chars().take(40).collect();
            format!("text({} bytes: {head:?})", s.len())
        }
        Message::Binary(b) => format!("binary({} bytes: {:02x?})", b.len(), &b[..b.len().min(16)]),
    }
}

async fn recv<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, what: &str) -> Message {
    match timeout(STEP, ws.recv()).await {
        Err(_) => panic!("timed out after {STEP:?} waiting for {what}"),
        Ok(None) => panic!(
            "connection closed while waiting for {what} (close frame: {:?})",
            ws.close_frame()
        ),
        Ok(Some(Err(e))) => panic!("error while waiting for {what}: {e}"),
        Ok(Some(Ok(m))) => m,
    }
}

#[track_caller]
fn assert_text(m: &Message, want: &str, what: &str) {
    match m {
        Message::Text(t) if t.as_str() == want => {}
        _ => panic!(
            "{what}: expected text({} bytes: {:?}), got {}",
            want.len(),
            want.chars().take(40).collect::<String>(),
            describe(m)
        ),
    }
}

#[track_caller]
fn assert_binary(m: &Message, want: &[u8], what: &str) {
    match m {
        Message::Binary(b) if b[..] == *want => {}
        _ => panic!(
            "{what}: expected binary({} bytes: {:02x?}), got {}",
            want.len(),
            &want[..want.len().min(16)],
            describe(m)
        ),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, m: impl Into<Message>) {
    timeout(STEP, ws.send(m))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// The peer closes with `code`: the stream ends cleanly and its close frame is recorded.
async fn expect_peer_close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, code: u16) {
    match timeout(STEP, ws.recv()).await {
        Err(_) => panic!("timed out after {STEP:?} waiting for the peer to close"),
        Ok(Some(Ok(m))) => panic!("expected the peer to close, got {}", describe(&m)),
        Ok(Some(Err(e))) => panic!("expected a clean close from the peer, got error {e}"),
        Ok(None) => {}
    }
    let frame = ws.close_frame().expect("the peer's close frame");
    assert_eq!(frame.code, CloseCode(code), "the peer's close code");
}

/// One dialogue on an open connection; the same whichever side is the server.
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    sc: Scenario,
    peer: PeerKind,
    wire: &WireStats,
) {
    match sc {
        Scenario::Text => {
            let m = recv(ws, "the peer's text").await;
            assert_text(&m, TEXT, "the peer's text");
            send(ws, m).await;
            send(ws, US_TEXT).await;
            expect_peer_close(ws, 1000).await;
        }
        Scenario::Binary => {
            let a = recv(ws, "binary A").await;
            assert_binary(&a, &bin_a(), "binary A (an ArrayBuffer from Chromium)");
            send(ws, a).await;
            let b = recv(ws, "binary B").await;
            assert_binary(&b, &bin_b(), "binary B (a Blob from Chromium)");
            send(ws, b).await;
            send(ws, Message::Binary(Bytes::from_static(US_BIN))).await;
            expect_peer_close(ws, 1000).await;
        }
        Scenario::Empty => {
            let t = recv(ws, "empty text").await;
            assert_text(&t, "", "empty text");
            send(ws, t).await;
            let b = recv(ws, "empty binary").await;
            assert_binary(&b, &[], "empty binary");
            send(ws, b).await;
            expect_peer_close(ws, 1000).await;
        }
        Scenario::Large => {
            let m = recv(ws, "1 MiB binary").await;
            assert_binary(&m, &pattern(MIB), "1 MiB binary");
            send(ws, m).await;
            send(ws, text_pattern(MIB)).await;
            expect_peer_close(ws, 1000).await;
        }
        Scenario::Fragments => fragments(ws).await,
        Scenario::Ping => ping(ws, peer).await,
        Scenario::Subprotocol => {
            assert_eq!(ws.subprotocol(), Some("v1"), "our negotiated subprotocol");
            let m = recv(ws, "the peer's subprotocol").await;
            assert_text(&m, "v1", "the subprotocol the peer sees");
            send(ws, ws.subprotocol().unwrap_or("none").to_owned()).await;
            expect_peer_close(ws, 1000).await;
        }
        Scenario::CloseByPeer => {
            match timeout(STEP, ws.recv()).await {
                Ok(None) => {}
                other => panic!("expected the peer's close, got {other:?}"),
            }
            let frame = ws.close_frame().expect("the peer's close frame");
            assert_eq!(
                (frame.code, frame.reason.as_str()),
                (CloseCode(4001), "bye"),
                "the peer's close frame"
            );
        }
        Scenario::CloseByUs => {
            let m = recv(ws, "the peer's 'ready'").await;
            assert_text(&m, "ready", "the peer's 'ready'");
            timeout(STEP, ws.close(CloseCode(4002), "bye from duplex"))
                .await
                .expect("closing handshake timed out")
                .expect("closing handshake failed");
            let frame = ws.close_frame().expect("the peer answered our close frame");
            // Every peer echoes the code (RFC 6455 §5.5.1 "typically"); asserted to notice changes.
            assert_eq!(
                frame.code,
                CloseCode(4002),
                "the peer's answering close code"
            );
        }
        Scenario::Deflate
        | Scenario::DeflateNoTakeover
        | Scenario::DeflateServerNoTakeover
        | Scenario::DeflatePeerNoTakeover => deflate(ws, sc, peer, wire).await,
        Scenario::SubprotocolNone
        | Scenario::RejectOrigin
        | Scenario::Reject403
        | Scenario::TlsUntrusted => {
            unreachable!("handshake scenarios are run by the runners")
        }
    }
}

/// We receive the peer's fragmented messages as whole ones, then send ours in fragments: a
/// text whose `✓` (3 bytes) is split across three fragments with a ping between two of them,
/// and a binary from `send_stream` with an empty chunk in the middle.
async fn fragments<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    let m = recv(ws, "the peer's fragmented text").await;
    assert_text(&m, FRAG_TEXT, "the peer's fragmented text");
    let m = recv(ws, "the peer's fragmented binary").await;
    assert_binary(&m, FRAG_BIN, "the peer's fragmented binary");

    let text = Bytes::from_static(US_FRAG_TEXT.as_bytes());
    let cut = US_FRAG_TEXT.find('✓').unwrap();
    ws.send_fragment(MessageKind::Text, text.slice(..cut + 1), false)
        .await
        .unwrap();
    ws.send_ping(Bytes::from_static(b"mid")).await.unwrap();
    ws.send_fragment(MessageKind::Text, text.slice(cut + 1..cut + 2), false)
        .await
        .unwrap();
    ws.send_fragment(MessageKind::Text, text.slice(cut + 2..), true)
        .await
        .unwrap();
    let p = Bytes::from(pattern(3000));
    let chunks = [p.slice(..1000), Bytes::new(), p.slice(1000..)];
    timeout(
        STEP,
        ws.send_stream(MessageKind::Binary, futures_util::stream::iter(chunks)),
    )
    .await
    .unwrap()
    .unwrap();

    let mut pong = false;
    loop {
        match timeout(STEP, ws.next_event()).await {
            Err(_) => panic!("timed out waiting for the pong and the peer's close"),
            Ok(None) => break,
            Ok(Some(Err(e))) => panic!("connection failed: {e}"),
            Ok(Some(Ok(Event::Pong(p)))) => {
                assert_eq!(&p[..], b"mid", "pong payload");
                pong = true;
            }
            Ok(Some(Ok(Event::Close(frame)))) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode(1000)), "peer's close")
            }
            Ok(Some(Ok(e))) => panic!("unexpected {e:?}"),
        }
    }
    assert!(
        pong,
        "the peer answered the ping sent between two fragments"
    );
}

/// Our ping → the peer's automatic pong, seen as `Event::Pong`; the peer's ping → our
/// automatic pong, which the peer checks (seen here as `Event::Ping`).
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, peer: PeerKind) {
    ws.send_ping(Bytes::from_static(b"duplex-ping"))
        .await
        .unwrap();
    let mut pong = false;
    let mut pings = Vec::new();
    loop {
        let event = match timeout(STEP, ws.next_event()).await {
            Err(_) => panic!("timed out (pong seen: {pong}, pings seen: {pings:?})"),
            Ok(None) => panic!("connection closed early (pong seen: {pong})"),
            Ok(Some(Err(e))) => panic!("connection failed: {e}"),
            Ok(Some(Ok(event))) => event,
        };
        match event {
            Event::Pong(p) => {
                assert_eq!(&p[..], b"duplex-ping", "pong payload");
                assert!(!pong, "a single pong");
                pong = true;
                send(ws, "got-pong").await;
            }
            Event::Ping(p) => pings.push(p),
            Event::Message(m) => {
                assert_text(&m, "done", "the peer's 'done'");
                break;
            }
            Event::Close(f) => panic!("peer closed early: {f:?}"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pong, "the peer answered our ping");
    if peer.can_ping() {
        assert_eq!(
            pings,
            [Bytes::from_static(b"peer-ping")],
            "the peer's pings"
        );
    }
    expect_peer_close(ws, 1000).await;
}

/// permessage-deflate: the peer's messages are echoed by us, ours are echoed by the peer;
/// the negotiated parameters and the bytes on the wire show compression really happened.
async fn deflate<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocket<S>,
    sc: Scenario,
    peer: PeerKind,
    wire: &WireStats,
) {
    let agreed = *ws
        .protocol()
        .deflate()
        .expect("permessage-deflate negotiated on our side")
        .agreed();
    eprintln!("{peer:?} {}: agreed {agreed:?}", sc.name());
    let (server, client) = sc.no_takeover();
    let want = match agreed.role {
        Role::Server => (server, client),
        Role::Client => (client, server),
    };
    assert_eq!(
        (
            agreed.outgoing.no_context_takeover,
            agreed.incoming.no_context_takeover
        ),
        want,
        "no_context_takeover (outgoing, incoming)"
    );
    if peer == PeerKind::Python && agreed.role == Role::Client {
        // websockets' server limits both windows to 12 bits.
        assert_eq!(
            (
                agreed.outgoing.max_window_bits,
                agreed.incoming.max_window_bits
            ),
            (12, 12),
            "window bits imposed by the Python server"
        );
    }

    // Phase 1: the peer sends, we echo (the peer compares).
    let expected: [(&str, Option<Message>); 6] = [
        ("small text", Some(Message::from(SMALL))),
        ("the same small text", Some(Message::from(SMALL))),
        ("empty text", Some(Message::from(""))),
        (
            "1 MiB compressible text",
            Some(Message::from(text_pattern(MIB))),
        ),
        (
            "1 MiB compressible binary",
            Some(Message::from(pattern(MIB))),
        ),
        ("256 KiB random binary", None),
    ];
    for (what, want) in expected {
        let m = recv(ws, what).await;
        match &want {
            Some(Message::Text(t)) => assert_text(&m, t.as_str(), what),
            Some(Message::Binary(b)) => assert_binary(&m, b, what),
            None => assert!(
                matches!(&m, Message::Binary(b) if b.len() == RANDOM_LEN),
                "{what}: got {}",
                describe(&m)
            ),
        }
        send(ws, m).await;
    }
    let m = recv(ws, "the peer's 'your-turn'").await;
    assert_text(&m, "your-turn", "the peer's 'your-turn'");

    // Phase 2: we send, the peer echoes, we compare.
    let ours = [
        Message::from("duplex duplex duplex"),
        Message::from(pattern(MIB)),
        Message::from(random_bytes(RANDOM_LEN, 0x5eed)),
        Message::from(text_pattern(MIB)),
    ];
    for (i, m) in ours.into_iter().enumerate() {
        send(ws, m.clone()).await;
        let echo = recv(ws, &format!("the echo of our message {i}")).await;
        assert!(
            echo == m,
            "echo of our message {i}: sent {}, got {}",
            describe(&m),
            describe(&echo)
        );
    }
    expect_peer_close(ws, 1000).await;

    // Uncompressed, each direction would carry ~4.5 MiB; the random data (2 × 256 KiB) cannot
    // shrink, everything else compresses to almost nothing.
    let limit = (2 * RANDOM_LEN + 512 * 1024) as u64;
    eprintln!(
        "{peer:?} {}: {} bytes read, {} bytes written",
        sc.name(),
        wire.read(),
        wire.written()
    );
    assert!(
        wire.read() < limit,
        "the peer's messages were not compressed: {} bytes read",
        wire.read()
    );
    assert!(
        wire.written() < limit,
        "our messages were not compressed: {} bytes written",
        wire.written()
    );
}

// ------------------------------------------------------------------------- the peer's report

/// Checks what the peer reported seeing of us, beyond its own pass/fail. `us` is our role.
fn check_report(sc: Scenario, peer: PeerKind, us: Role, transport: Transport, report: &Value) {
    match (transport, peer) {
        (Transport::Plain, _) => assert_eq!(report["tls"], Value::Null, "{report}"),
        // The page came over TLS from our page server (the WebSocket's TLS is not visible to
        // the page; it reached our wss:// listener, which speaks nothing else).
        (Transport::Tls, PeerKind::Chromium) => {
            assert_eq!(report["page_tls"]["protocol"], "TLS 1.3", "{report}")
        }
        (Transport::Tls, _) => {
            assert_eq!(report["tls"], "TLSv1.3", "the peer's TLS version: {report}");
            if us == Role::Client {
                // Our client connects to wss://localhost: the name goes out as SNI.
                assert_eq!(report["sni"], SERVER_NAMES[0], "the SNI we sent: {report}");
            }
        }
    }
    let close = &report["close"];
    match sc {
        Scenario::CloseByPeer => {
            // We echo the code; our answer carries no reason (duplex-proto's choice).
            assert_eq!(close["code"], 4001, "code of our answering close: {report}");
            assert_eq!(
                close["reason"], "",
                "reason of our answering close: {report}"
            );
        }
        Scenario::CloseByUs => {
            assert_eq!(
                close["code"], 4002,
                "our close code as seen by the peer: {report}"
            );
            assert_eq!(
                close["reason"], "bye from duplex",
                "our close reason as seen by the peer: {report}"
            );
        }
        Scenario::Text
        | Scenario::Binary
        | Scenario::Empty
        | Scenario::Large
        | Scenario::Fragments
        | Scenario::Ping
        | Scenario::Subprotocol => {
            assert_eq!(close["code"], 1000, "our answering close code: {report}")
        }
        _ => {}
    }
    if sc == Scenario::Subprotocol {
        assert_eq!(report["protocol"], "v1", "the peer's subprotocol: {report}");
    }
    if sc == Scenario::Ping && peer.can_ping() {
        assert_eq!(report["pong_received"], true, "{report}");
    }
    if peer == PeerKind::Node && matches!(sc, Scenario::Ping | Scenario::Fragments) {
        let want = if sc == Scenario::Ping {
            "duplex-ping"
        } else {
            "mid"
        };
        assert_eq!(report["pings_seen"], serde_json::json!([want]), "{report}");
    }
    if sc.is_deflate() {
        let (server, client) = sc.no_takeover();
        match peer {
            PeerKind::Python => {
                // websockets names the directions from its own side.
                let (local, remote) = match us {
                    Role::Server => (client, server),
                    Role::Client => (server, client),
                };
                let ext = report["extensions"][0].as_str().unwrap_or_default();
                let py = |b: bool| if b { "True" } else { "False" };
                for want in [
                    format!("local_no_context_takeover={}", py(local)),
                    format!("remote_no_context_takeover={}", py(remote)),
                ] {
                    assert!(ext.contains(&want), "Python's {ext:?} lacks {want}");
                }
            }
            PeerKind::Node => {
                let params = &report["deflate_params"];
                for (param, on) in [
                    ("server_no_context_takeover", server),
                    ("client_no_context_takeover", client),
                ] {
                    assert_eq!(params[param] == true, on, "Node's {param} in {params}");
                }
            }
            PeerKind::Chromium => {
                let ext = report["extensions"].as_str().unwrap_or_default();
                assert!(ext.starts_with("permessage-deflate"), "{ext:?}");
                for (param, on) in [
                    ("server_no_context_takeover", server),
                    ("client_no_context_takeover", client),
                ] {
                    assert_eq!(ext.contains(param), on, "{param} in Chromium's {ext:?}");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------- runners

/// Our server, the peer's client.
async fn our_server(peer: PeerKind, sc: Scenario, transport: Transport) {
    let what = format!("our server <- {peer:?} {} ({transport:?})", sc.name());
    bounded(what, async {
        let pki = transport.pki();
        // The peer's client is told to trust our CA, except in `tls-untrusted`.
        let trusted = pki.as_ref().filter(|_| sc != Scenario::TlsUntrusted);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws_url = format!(
            "{}://{}/interop/{}",
            transport.scheme(),
            listener.local_addr().unwrap(),
            sc.name()
        );
        // Over wss:// the page is served over https with the same certificate (a secure
        // context, as in a real deployment), except when Chromium must not trust it.
        let page = match peer {
            PeerKind::Chromium => Some(PageServer::start(trusted.map(TestPki::acceptor)).await),
            _ => None,
        };
        let sent_origin = page
            .as_ref()
            .map_or(PEER_ORIGIN.to_owned(), PageServer::origin);
        let allowed_origin = match sc {
            Scenario::RejectOrigin => ALLOWED_ORIGIN_FOR_REJECT.to_owned(),
            _ => sent_origin.clone(),
        };
        let mut proc = match &page {
            Some(page) => PeerProcess::browser(
                &page.url(),
                &ws_url,
                sc.name(),
                trusted.map(TestPki::cert_file).as_deref(),
            ),
            None => PeerProcess::client(
                peer,
                &ws_url,
                sc.name(),
                &sent_origin,
                trusted.map(TestPki::ca_file).as_deref(),
            ),
        };

        let tcp = tokio::select! {
            accepted = listener.accept() => accepted.unwrap().0,
            report = proc.next_json_within(START, "its connection") => {
                panic!("the peer reported before connecting: {report}\n{}", proc.diagnostics())
            }
        };
        let _ = tcp.set_nodelay(true);
        // Counted under any TLS: the bytes that really crossed the wire.
        let (stream, wire) = Counting::new(tcp);
        let stream: BoxedIo = match &pki {
            None => Box::new(stream),
            Some(pki) if sc == Scenario::TlsUntrusted => {
                return peer_refuses_our_certificate(stream, pki, peer, &mut proc).await
            }
            Some(pki) => Box::new(
                timeout(STEP, pki.acceptor().accept(stream))
                    .await
                    .expect("TLS handshake timed out")
                    .unwrap_or_else(|e| {
                        panic!("TLS handshake failed: {e}\n{}", proc.diagnostics())
                    }),
            ),
        };
        let mut seen = None;
        let accepted = accept_with(stream, &server_config(sc), |req| {
            seen = Some((req.origin().map(str::to_owned), req.path().to_owned()));
            if req.origin() == Some(allowed_origin.as_str()) {
                Ok(Vec::new())
            } else {
                Err(Rejection::new(403, "origin not allowed"))
            }
        })
        .await;
        let (origin, path) = seen.expect("the request reached the accept_with callback");
        assert_eq!(origin.as_deref(), Some(sent_origin.as_str()), "Origin");
        assert_eq!(path, format!("/interop/{}", sc.name()), "request path");

        match sc {
            Scenario::RejectOrigin => {
                assert!(
                    matches!(accepted, Err(Error::Rejected { status: 403, .. })),
                    "accept_with must report the rejection, got {:?}",
                    accepted.as_ref().map(|_| "an open connection")
                );
                let report = proc.success().await;
                if peer == PeerKind::Chromium {
                    // A page sees only an error event and close 1006; DevTools saw the status.
                    assert_eq!(report["outcome"], "failed", "{report}");
                    assert_eq!(report["error_event"], true, "{report}");
                    assert_eq!(report["close"]["code"], 1006, "{report}");
                    assert_eq!(report["close"]["clean"], false, "{report}");
                    assert!(
                        report["socket_errors"].to_string().contains("403"),
                        "Chromium's handshake error names the 403: {report}"
                    );
                } else {
                    assert_eq!(report["outcome"], "refused", "{report}");
                    assert_eq!(report["status"], 403, "{report}");
                }
                return;
            }
            Scenario::SubprotocolNone => {
                let mut ws = accepted
                    .unwrap_or_else(|e| panic!("handshake failed: {e}\n{}", proc.diagnostics()));
                assert_eq!(ws.subprotocol(), None, "no common subprotocol");
                let first = timeout(STEP, ws.next_event())
                    .await
                    .expect("timed out waiting for the peer's first move");
                let report;
                match peer {
                    // websockets continues without a subprotocol (RFC 6455 allows it).
                    PeerKind::Python => {
                        match first {
                            Some(Ok(Event::Message(m))) => {
                                assert_text(&m, "open:none", "the peer's subprotocol")
                            }
                            other => panic!("expected 'open:none', got {other:?}"),
                        }
                        expect_peer_close(&mut ws, 1000).await;
                        report = proc.success().await;
                        assert_eq!(report["outcome"], "open", "{report}");
                        assert_eq!(report["protocol"], Value::Null, "{report}");
                    }
                    // ws and Chromium fail the connection: they offered protocols and got none.
                    PeerKind::Node | PeerKind::Chromium => {
                        assert!(
                            matches!(first, None | Some(Err(_))),
                            "the peer must drop the connection, got {first:?}"
                        );
                        assert!(ws.close_frame().is_none(), "no close frame");
                        report = proc.success().await;
                        assert_eq!(report["outcome"], "failed", "{report}");
                        let error = if peer == PeerKind::Node {
                            report["error"].to_string()
                        } else {
                            report["socket_errors"].to_string()
                        };
                        assert!(
                            error.contains("no subprotocol")
                                || error.contains("Sec-WebSocket-Protocol"),
                            "the peer's handshake error names the subprotocol: {report}"
                        );
                    }
                }
                return;
            }
            _ => {}
        }

        let mut ws =
            accepted.unwrap_or_else(|e| panic!("handshake failed: {e}\n{}", proc.diagnostics()));
        converse(&mut ws, sc, peer, &wire).await;
        let report = proc.success().await;
        check_report(sc, peer, Role::Server, transport, &report);
    })
    .await
}

/// `tls-untrusted`, our server: the peer's client was not told to trust our CA, so it must
/// abort the TLS handshake, which `accept_tls` reports as an error.
async fn peer_refuses_our_certificate(
    stream: Counting<TcpStream>,
    pki: &TestPki,
    peer: PeerKind,
    proc: &mut PeerProcess,
) {
    let result = accept_tls(
        stream,
        &pki.acceptor(),
        &server_config(Scenario::TlsUntrusted),
    )
    .await;
    let err = result.expect_err("the peer must refuse our certificate");
    let expected = match peer {
        // Chromium's verifier says why, with a `certificate_unknown` alert: `Error::Tls`.
        PeerKind::Chromium => matches!(
            &err,
            Error::Tls(rustls::Error::AlertReceived(
                AlertDescription::CertificateUnknown
            ))
        ),
        // Python's asyncio and Node drop the connection without flushing OpenSSL's alert
        // (checked against `openssl s_server -msg`): all we can see is the EOF.
        PeerKind::Python | PeerKind::Node => {
            matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
        }
    };
    assert!(
        expected,
        "unexpected error from accept_tls: {err:?}\n{}",
        proc.diagnostics()
    );
    let report = proc.success().await;
    assert_eq!(report["outcome"], "failed", "{report}");
    let (field, want) = match peer {
        // ssl.SSLCertVerificationError.verify_message
        PeerKind::Python => ("cert_error", "self-signed certificate in certificate chain"),
        // Node's error code
        PeerKind::Node => ("cert_error", "SELF_SIGNED_CERT_IN_CHAIN"),
        // What DevTools saw of the socket; the page only gets an error event and close 1006.
        PeerKind::Chromium => {
            assert_eq!(report["error_event"], true, "{report}");
            assert_eq!(report["close"]["code"], 1006, "{report}");
            ("socket_errors", "ERR_CERT_AUTHORITY_INVALID")
        }
    };
    assert!(
        report[field].to_string().contains(want),
        "the peer's {field} should name {want:?}: {report}"
    );
}

/// Our client, the peer's server.
async fn our_client(peer: PeerKind, sc: Scenario, transport: Transport) {
    let what = format!("our client -> {peer:?} {} ({transport:?})", sc.name());
    bounded(what, async {
        let pki = transport.pki();
        // In `tls-untrusted` the peer's certificate comes from a CA we do not trust.
        let stranger = pki
            .as_ref()
            .filter(|_| sc == Scenario::TlsUntrusted)
            .map(|_| TestPki::new("someone else's CA"));
        let served = stranger.as_ref().or(pki.as_ref());
        let (cert, key) = (
            served.map(TestPki::cert_file),
            served.map(TestPki::key_file),
        );
        let mut proc = PeerProcess::server(peer, sc.name(), cert.as_deref().zip(key.as_deref()));
        let port = proc.listening_port().await;
        // Over wss:// by name, so that SNI and a DNS-name check happen (the peers' clients use
        // the IP address).
        let host = match transport {
            Transport::Plain => "127.0.0.1",
            Transport::Tls => SERVER_NAMES[0],
        };
        let url = format!(
            "{}://{host}:{port}/interop/{}",
            transport.scheme(),
            sc.name()
        );
        let config = ClientConfig {
            tls: pki.as_ref().map(TestPki::client_config),
            ..client_config(sc)
        };

        match sc {
            Scenario::Reject403 => {
                let err = connect(&url, &config)
                    .await
                    .expect_err("connect must fail on a 403");
                assert!(
                    matches!(
                        err,
                        Error::BadResponse(ClientHandshakeError::NotSwitchingProtocols {
                            status: 403,
                            ..
                        })
                    ),
                    "expected NotSwitchingProtocols {{ status: 403 }}, got {err:?}"
                );
                let report = proc.success().await;
                assert_eq!(report["status"], 403, "{report}");
                assert_eq!(report["request_path"], "/interop/reject-403", "{report}");
                return;
            }
            Scenario::SubprotocolNone => {
                let result = connect(&url, &config).await;
                match peer {
                    // websockets' server refuses a client that offers none of its protocols.
                    PeerKind::Python => {
                        let err = result.expect_err("the Python server refuses");
                        assert!(
                            matches!(
                                err,
                                Error::BadResponse(ClientHandshakeError::NotSwitchingProtocols {
                                    status: 400,
                                    ..
                                })
                            ),
                            "expected NotSwitchingProtocols {{ status: 400 }}, got {err:?}"
                        );
                        let report = proc.success().await;
                        assert_eq!(report["status"], 400, "{report}");
                    }
                    // ws's handleProtocols returned false: accepted without a subprotocol.
                    _ => {
                        let (mut ws, negotiated) = result.expect("the Node server accepts");
                        assert_eq!(negotiated.protocol, None);
                        assert_eq!(ws.subprotocol(), None);
                        let m = recv(&mut ws, "the peer's subprotocol").await;
                        assert_text(&m, "open:none", "the peer's subprotocol");
                        expect_peer_close(&mut ws, 1000).await;
                        let report = proc.success().await;
                        assert_eq!(report["outcome"], "open", "{report}");
                    }
                }
                return;
            }
            Scenario::TlsUntrusted => {
                let err = connect_tls(&url, &config)
                    .await
                    .expect_err("our client must refuse a certificate from an unknown CA");
                assert!(
                    matches!(
                        err,
                        Error::Tls(rustls::Error::InvalidCertificate(
                            CertificateError::UnknownIssuer
                        ))
                    ),
                    "expected Error::Tls(InvalidCertificate(UnknownIssuer)), got {err:?}"
                );
                // rustls told the peer why, with an `unknown_ca` alert.
                let report = proc.success().await;
                assert_eq!(report["outcome"], "failed", "{report}");
                assert!(
                    report["tls_error"].to_string().contains("unknown ca"),
                    "the peer's TLS error should name our unknown_ca alert: {report}"
                );
                return;
            }
            _ => {}
        }

        if sc.is_deflate() {
            // Through the public `handshake`, over our own byte-counting stream (under TLS,
            // `tls_connect`), to see the compression on the wire.
            let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let _ = tcp.set_nodelay(true);
            let (stream, wire) = Counting::new(tcp);
            let stream: BoxedIo = match &config.tls {
                None => Box::new(stream),
                Some(tls) => Box::new(
                    timeout(STEP, tls_connect(stream, host, tls.clone()))
                        .await
                        .expect("TLS handshake timed out")
                        .unwrap_or_else(|e| {
                            panic!("TLS handshake failed: {e}\n{}", proc.diagnostics())
                        }),
                ),
            };
            let target = Target::parse(&url).unwrap();
            let opened = timeout(STEP, handshake(stream, &target, &config))
                .await
                .expect("handshake timed out");
            client_dialogue(opened, sc, peer, &wire, &proc).await;
        } else {
            let wire = WireStats::default();
            match transport {
                Transport::Plain => {
                    client_dialogue(connect(&url, &config).await, sc, peer, &wire, &proc).await
                }
                Transport::Tls => {
                    let opened = connect_tls(&url, &config).await;
                    client_dialogue(opened, sc, peer, &wire, &proc).await
                }
            }
        }
        let report = proc.success().await;
        check_report(sc, peer, Role::Client, transport, &report);
        // What the peer's server saw of our request.
        assert_eq!(report["request_path"], format!("/interop/{}", sc.name()));
        if sc == Scenario::Subprotocol {
            assert_eq!(report["request_protocols"], "v2, v1", "{report}");
        }
        if sc.is_deflate() {
            let offer = report["request_extensions"].as_str().unwrap_or_default();
            assert!(
                offer.starts_with("permessage-deflate"),
                "our offer: {offer:?}"
            );
            let (server, client) = sc.our_no_takeover();
            assert_eq!(
                offer.contains("server_no_context_takeover"),
                server,
                "{offer:?}"
            );
            assert_eq!(
                offer.contains("client_no_context_takeover"),
                client,
                "{offer:?}"
            );
        }
    })
    .await
}

/// Our client's side of a dialogue on the connection `connect`, `connect_tls` or `handshake`
/// opened (whichever transport is under it).
async fn client_dialogue<S: AsyncRead + AsyncWrite + Unpin>(
    opened: duplex::Result<(WebSocket<S>, Negotiated)>,
    sc: Scenario,
    peer: PeerKind,
    wire: &WireStats,
    proc: &PeerProcess,
) {
    let (mut ws, negotiated) =
        opened.unwrap_or_else(|e| panic!("connect failed: {e}\n{}", proc.diagnostics()));
    if sc == Scenario::Subprotocol {
        assert_eq!(negotiated.protocol.as_deref(), Some("v1"), "Negotiated");
    }
    if sc.is_deflate() {
        assert!(
            negotiated
                .extensions
                .iter()
                .any(|e| e.name == "permessage-deflate"),
            "negotiated extensions: {:?}",
            negotiated.extensions
        );
    }
    converse(&mut ws, sc, peer, wire).await;
}

// ------------------------------------------------------------------------- the matrix

macro_rules! matrix {
    ($runner:ident, $peer:ident, $transport:ident: $($test:ident => $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                $runner(PeerKind::$peer, Scenario::$scenario, Transport::$transport).await
            }
        )*
    };
}

/// The wss:// matrix of one runner and peer: the data scenarios, closes both ways, deflate
/// with and without context takeover, and `untrusted`.
macro_rules! tls_matrix {
    ($runner:ident, $peer:ident) => {
        matrix!($runner, $peer, Tls:
            text => Text, binary => Binary, empty => Empty, large => Large,
            fragments => Fragments, ping => Ping, subprotocol => Subprotocol,
            close_by_peer => CloseByPeer, close_by_us => CloseByUs,
            deflate => Deflate, deflate_no_takeover => DeflateNoTakeover,
            untrusted => TlsUntrusted,
        );
    };
}

/// Our server (`accept_with`) against each peer's client.
mod our_server {
    use super::*;

    mod python {
        use super::*;
        matrix!(our_server, Python, Plain:
            text => Text, binary => Binary, empty => Empty, large => Large,
            fragments => Fragments, ping => Ping, subprotocol => Subprotocol,
            subprotocol_none => SubprotocolNone, close_by_peer => CloseByPeer,
            close_by_us => CloseByUs, reject_origin => RejectOrigin,
            deflate => Deflate, deflate_no_takeover => DeflateNoTakeover,
            deflate_server_no_takeover => DeflateServerNoTakeover,
            deflate_peer_no_takeover => DeflatePeerNoTakeover,
        );
    }

    mod node {
        use super::*;
        matrix!(our_server, Node, Plain:
            text => Text, binary => Binary, empty => Empty, large => Large,
            fragments => Fragments, ping => Ping, subprotocol => Subprotocol,
            subprotocol_none => SubprotocolNone, close_by_peer => CloseByPeer,
            close_by_us => CloseByUs, reject_origin => RejectOrigin,
            deflate => Deflate, deflate_no_takeover => DeflateNoTakeover,
            deflate_server_no_takeover => DeflateServerNoTakeover,
            deflate_peer_no_takeover => DeflatePeerNoTakeover,
        );
    }

    /// A page cannot configure permessage-deflate (Chromium always offers
    /// `permessage-deflate; client_max_window_bits`), so no `deflate_peer_no_takeover`.
    mod chromium {
        use super::*;
        matrix!(our_server, Chromium, Plain:
            text => Text, binary => Binary, empty => Empty, large => Large,
            fragments => Fragments, ping => Ping, subprotocol => Subprotocol,
            subprotocol_none => SubprotocolNone, close_by_peer => CloseByPeer,
            close_by_us => CloseByUs, reject_origin => RejectOrigin,
            deflate => Deflate, deflate_no_takeover => DeflateNoTakeover,
            deflate_server_no_takeover => DeflateServerNoTakeover,
        );
    }
}

/// Our client (`connect`, or `handshake` over a byte-counting stream) against each peer's server.
mod our_client {
    use super::*;

    mod python {
        use super::*;
        matrix!(our_client, Python, Plain:
            text => Text, binary => Binary, empty => Empty, large => Large,
            fragments => Fragments, ping => Ping, subprotocol => Subprotocol,
            subprotocol_none => SubprotocolNone, close_by_peer => CloseByPeer,
            close_by_us => CloseByUs, reject_403 => Reject403,
            deflate => Deflate, deflate_no_takeover => DeflateNoTakeover,
            deflate_server_no_takeover => DeflateServerNoTakeover,
            deflate_peer_no_takeover => DeflatePeerNoTakeover,
        );
    }

    mod node {
        use super::*;
        matrix!(our_client, Node, Plain:
            text => Text, binary => Binary, empty => Empty, large => Large,
            fragments => Fragments, ping => Ping, subprotocol => Subprotocol,
            subprotocol_none => SubprotocolNone, close_by_peer => CloseByPeer,
            close_by_us => CloseByUs, reject_403 => Reject403,
            deflate => Deflate, deflate_no_takeover => DeflateNoTakeover,
            deflate_server_no_takeover => DeflateServerNoTakeover,
            deflate_peer_no_takeover => DeflatePeerNoTakeover,
        );
    }
}

/// The same runners over wss://, each test with its own CA (rcgen): Python and Node trust it
/// through `--tls CA_FILE`, Chromium through `--ignore-certificate-errors-spki-list`.
mod tls {
    use super::*;

    /// Our server (TLS, then `accept_with`) against each peer's wss:// client; in `untrusted`
    /// the peer is not given the CA and must refuse the certificate (our `accept_tls` then
    /// reports the peer's alert as `Error::Tls`).
    mod our_server {
        use super::*;

        mod python {
            use super::*;
            tls_matrix!(our_server, Python);
        }

        mod node {
            use super::*;
            tls_matrix!(our_server, Node);
        }

        mod chromium {
            use super::*;
            tls_matrix!(our_server, Chromium);
        }
    }

    /// Our client (`connect_tls`, or `tls_connect` + `handshake` for deflate) against each
    /// peer's wss:// server; in `untrusted` the peer's certificate comes from another CA and
    /// `connect_tls` must fail with `Error::Tls`.
    mod our_client {
        use super::*;

        mod python {
            use super::*;
            tls_matrix!(our_client, Python);
        }

        mod node {
            use super::*;
            tls_matrix!(our_client, Node);
        }
    }
}
