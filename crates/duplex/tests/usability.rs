//! Issue 14, "Library: what a new user tripped over": each fix with its test.

use duplex::client::{handshake, handshake_raw, ClientConfig, Target};
use duplex::proto::ProtocolError;
use duplex::{CloseCode, CloseReason, Config, Error, Message, Role, WebSocket, WsReader, WsWriter};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};

/// Item 8: `client::handshake` over a caller's stream honours `handshake_timeout`.
#[tokio::test(start_paused = true)]
async fn handshake_over_a_callers_stream_honours_the_timeout() {
    let target = Target::parse("ws://example.com/").unwrap();
    let config = ClientConfig::new().handshake_timeout(Duration::from_secs(3));
    // A peer that reads the request and never answers.
    let (ours, _silent_peer) = tokio::io::duplex(64 * 1024);
    let started = tokio::time::Instant::now();
    let err = handshake(ours, &target, &config).await.unwrap_err();
    assert!(
        matches!(err, Error::HandshakeTimeout(d) if d == Duration::from_secs(3)),
        "{err:?}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));

    let (ours, _silent_peer) = tokio::io::duplex(64 * 1024);
    let err = handshake_raw(ours, &target, &config).await.unwrap_err();
    assert!(matches!(err, Error::HandshakeTimeout(_)), "{err:?}");
}

/// A connected client/server pair over an in-memory pipe (deterministic with paused time).
fn pair(client: Config, server: Config) -> (WebSocket<DuplexStream>, WebSocket<DuplexStream>) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    (
        WebSocket::from_raw(a, Role::Client, client, &[]),
        WebSocket::from_raw(b, Role::Server, server, &[]),
    )
}

/// Drains `ws` until its receive loop ends.
async fn run_out<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>) {
    while ws.recv().await.is_some() {}
}

/// Item 3: a clean close is told from the peer's 1011 and from our idle timeout, on
/// `WebSocket` and `WsReader` alike (one type, `CloseReason`).
#[tokio::test(start_paused = true)]
async fn close_reason_tells_why_the_loop_ended() {
    // Clean close started by the server.
    let (mut client, mut server) = pair(Config::default(), Config::default());
    assert_eq!(client.close_reason(), None, "open");
    let server_task = tokio::spawn(async move {
        server.close(CloseCode::NORMAL, "bye").await.unwrap();
        server.close_reason()
    });
    run_out(&mut client).await;
    let reason = client.close_reason().unwrap();
    assert!(
        matches!(&reason, CloseReason::Peer(Some(f)) if f.code == CloseCode::NORMAL && f.reason == "bye"),
        "{reason:?}"
    );
    assert!(reason.is_normal());
    let server_reason = server_task.await.unwrap().unwrap();
    assert!(
        matches!(&server_reason, CloseReason::Local { reply: Some(f) } if f.code == CloseCode::NORMAL),
        "{server_reason:?}"
    );

    // The peer's 1011, seen through the split reader.
    let (client, mut server) = pair(Config::default(), Config::default());
    let (mut reader, _writer) = client.into_split();
    let server_task = tokio::spawn(async move {
        server
            .close(CloseCode::INTERNAL_ERROR, "db down")
            .await
            .unwrap()
    });
    while reader.recv().await.is_some() {}
    let reason: CloseReason = reader.close_reason().unwrap();
    assert_eq!(reason.code(), CloseCode::INTERNAL_ERROR);
    assert!(matches!(reason, CloseReason::Peer(Some(_))));
    assert!(!reason.is_normal());
    server_task.await.unwrap();

    // Our idle timeout (1001), also through `Stream::next`.
    let idle = Config {
        idle_timeout: Some(Duration::from_secs(5)),
        ..Config::default()
    };
    let (mut client, mut server) = pair(idle, Config::default());
    let server_task = tokio::spawn(async move { run_out(&mut server).await });
    let started = tokio::time::Instant::now();
    while client.next().await.is_some() {}
    assert_eq!(client.close_reason(), Some(CloseReason::IdleTimeout));
    assert_eq!(client.close_reason().unwrap().code(), CloseCode::GOING_AWAY);
    assert!(started.elapsed() >= Duration::from_secs(5));
    server_task.await.unwrap();

    // The transport vanishing without a closing handshake.
    let (mut client, server) = pair(Config::default(), Config::default());
    drop(server);
    assert!(matches!(client.recv().await, Some(Err(_))));
    assert!(client.recv().await.is_none());
    let reason = client.close_reason().unwrap();
    assert!(
        matches!(reason, CloseReason::Failed(ProtocolError::UnexpectedEof)),
        "{reason:?}"
    );
    assert_eq!(reason.code(), CloseCode::ABNORMAL);
}

/// Item 1: `into_split` gives `(reader, writer)`; the futures `StreamExt::split` is still
/// there, sink first, for code written the tokio-tungstenite way.
#[tokio::test]
async fn into_split_is_reader_first_and_streamext_split_is_sink_first() {
    let (client, mut server) = pair(Config::default(), Config::default());
    let echo = tokio::spawn(async move {
        while let Some(Ok(m)) = server.recv().await {
            server.send(m).await.unwrap();
        }
    });
    let (mut reader, mut writer): (WsReader<DuplexStream>, WsWriter<DuplexStream>) =
        client.into_split();
    writer.send("split").await.unwrap();
    assert_eq!(
        reader.recv().await.unwrap().unwrap(),
        Message::from("split")
    );
    let client = reader.reunite(writer).expect("halves of one connection");

    let (mut sink, mut stream) = StreamExt::split(client);
    sink.send(Message::from("futures")).await.unwrap();
    assert_eq!(
        stream.next().await.unwrap().unwrap(),
        Message::from("futures")
    );
    sink.close().await.unwrap();
    while stream.next().await.is_some() {}
    echo.await.unwrap();
}

/// Item 2: constructors, accessors and the conversions that were missing (`&String`,
/// `Utf8Bytes`), inherent on `Message`.
#[tokio::test]
async fn message_constructors_and_accessors() {
    use duplex::Utf8Bytes;
    let owned = String::from("from &String");
    let (mut client, mut server) = pair(Config::default(), Config::default());
    client.send(Message::text(&owned)).await.unwrap();
    client
        .send(Message::text(Utf8Bytes::from("from Utf8Bytes")))
        .await
        .unwrap();
    client.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();

    let first = server.recv().await.unwrap().unwrap();
    assert!(first.is_text() && !first.is_binary());
    assert_eq!(first.as_text(), Some("from &String"));
    let second = server.recv().await.unwrap().unwrap();
    assert_eq!(second.into_text().unwrap(), "from Utf8Bytes");
    let third = server.recv().await.unwrap().unwrap();
    assert!(third.is_binary());
    assert_eq!(third.as_text(), None);
    assert_eq!(third.clone().into_text(), None);
    assert_eq!(&third.into_data()[..], &[0, 1, 2]);
    assert_eq!(&Message::from("abc").into_data()[..], b"abc");
}

/// Item 4: every timer has a builder, on `ClientConfig` and `ServerConfig` alike.
#[test]
fn timer_builders_on_client_and_server_config() {
    use duplex::ServerConfig;
    let s = Duration::from_secs;
    let client = ClientConfig::new()
        .ping_interval(s(1))
        .pong_timeout(s(2))
        .idle_timeout(s(3))
        .close_timeout(s(4))
        .max_frame_size(5)
        .max_message_size(6);
    let server = ServerConfig::new()
        .ping_interval(s(1))
        .pong_timeout(s(2))
        .idle_timeout(s(3))
        .close_timeout(s(4))
        .max_frame_size(5)
        .max_message_size(6)
        .subprotocol("chat")
        .handshake_timeout(s(7))
        .deflate(true);
    for protocol in [&client.protocol, &server.protocol] {
        assert_eq!(protocol.ping_interval, Some(s(1)));
        assert_eq!(protocol.pong_timeout, s(2));
        assert_eq!(protocol.idle_timeout, Some(s(3)));
        assert_eq!(protocol.close_timeout, s(4));
        assert_eq!(protocol.max_frame_size, 5);
        assert_eq!(protocol.max_message_size, 6);
    }
    assert_eq!(server.subprotocols, ["chat"]);
    assert_eq!(server.handshake_timeout, s(7));
    assert!(server.deflate.enabled);
    let whole = ServerConfig::new().protocol(Config {
        auto_pong: false,
        ..Config::default()
    });
    assert!(!whole.protocol.auto_pong);
}

/// Item 7: `get_mut` and `into_inner` reach the stream.
#[tokio::test]
async fn get_mut_and_into_inner_reach_the_stream() {
    let (mut client, mut server) = pair(Config::default(), Config::default());
    let _: &mut DuplexStream = client.get_mut();
    let server_task = tokio::spawn(async move { run_out(&mut server).await });
    client.close(CloseCode::NORMAL, "").await.unwrap();
    let _stream: DuplexStream = client.into_inner();
    server_task.await.unwrap();
}

/// Item 6: when a heartbeat fails is exact and documented: a dead peer (holds the socket,
/// never answers) is noticed `ping_interval + pong_timeout` after the last traffic; the
/// error then comes out of `recv` after the closing procedure, bounded by
/// `min(close_timeout, 2 s)` on a server, and by `close_timeout + min(close_timeout, 2 s)` on a
/// client (which first waits for the server to close TCP).
#[tokio::test(start_paused = true)]
async fn heartbeat_failure_timing_is_bounded() {
    let s = Duration::from_secs;
    for (role, close_timeout, expected) in [
        (Role::Server, s(10), s(10 + 5 + 2)),
        (Role::Server, s(1), s(10 + 5 + 1)),
        (Role::Client, s(10), s(10 + 5 + 10 + 2)),
        (Role::Client, s(1), s(10 + 5 + 1 + 1)),
    ] {
        let config = Config {
            ping_interval: Some(s(10)),
            pong_timeout: s(5),
            close_timeout,
            ..Config::default()
        };
        let (ours, _dead_peer) = tokio::io::duplex(256 * 1024);
        let mut ws = WebSocket::from_raw(ours, role, config, &[]);
        let started = tokio::time::Instant::now();
        let err = ws.recv().await.unwrap().unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(err, Error::Protocol(ProtocolError::PongTimeout(d)) if d == s(5)),
            "{role:?}: {err:?}"
        );
        assert_eq!(
            elapsed, expected,
            "{role:?}, close_timeout {close_timeout:?}"
        );
        assert!(ws.recv().await.is_none());
        let reason = ws.close_reason().unwrap();
        assert_eq!(reason.code(), CloseCode::INTERNAL_ERROR);
    }
}
