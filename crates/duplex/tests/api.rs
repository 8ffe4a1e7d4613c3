//! The async API's promises, over real TCP on loopback with our own client and server.

use bytes::Bytes;
use duplex::client::{connect, ClientConfig};
use duplex::server::{accept, ServerConfig};
use duplex::{CloseCode, Error, Event, Message, MessageKind, TrySendError};
use futures_util::{stream, SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LIMIT: Duration = Duration::from_secs(10);

/// A listener whose first connection is handed to `handler` after the server handshake.
async fn serve_one<F, Fut>(
    config: ServerConfig,
    handler: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: FnOnce(duplex::WebSocket<TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let ws = accept(stream, &config).await.unwrap();
        handler(ws).await;
    });
    (addr, task)
}

fn url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

#[tokio::test]
async fn close_code_and_reason_are_seen_on_both_sides() {
    let (addr, server) = serve_one(ServerConfig::default(), |mut ws| async move {
        assert!(ws.recv().await.is_none(), "clean close ends the stream");
        let frame = ws.close_frame().expect("client's close frame");
        assert_eq!(
            (frame.code, frame.reason.as_str()),
            (CloseCode(4001), "bye now")
        );
    })
    .await;
    let (mut ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    tokio::time::timeout(LIMIT, ws.close(CloseCode(4001), "bye now"))
        .await
        .unwrap()
        .unwrap();
    let echoed = ws.close_frame().expect("server's answer");
    assert_eq!(echoed.code, CloseCode(4001));
    server.await.unwrap();
}

#[tokio::test]
async fn stream_and_sink_interfaces_echo() {
    let (addr, server) = serve_one(ServerConfig::default(), |ws| async move {
        let (mut sink, mut source) = futures_util::StreamExt::split(ws);
        while let Some(Ok(m)) = source.next().await {
            sink.send(m).await.unwrap();
        }
    })
    .await;
    let (ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    let (mut tx, mut rx) = futures_util::StreamExt::split(ws);
    tx.send(Message::from("one")).await.unwrap();
    tx.send(Message::from(vec![2u8; 100_000])).await.unwrap();
    assert_eq!(rx.next().await.unwrap().unwrap(), Message::from("one"));
    assert_eq!(rx.next().await.unwrap().unwrap().len(), 100_000);
    tx.close().await.unwrap();
    assert!(tokio::time::timeout(LIMIT, rx.next())
        .await
        .unwrap()
        .is_none());
    server.await.unwrap();
}

#[tokio::test]
async fn streamed_send_arrives_as_one_message() {
    let (addr, server) = serve_one(ServerConfig::default(), |mut ws| async move {
        let m = ws.recv().await.unwrap().unwrap();
        ws.send(m).await.unwrap();
        ws.recv().await;
    })
    .await;
    let (mut ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    // "€" split across chunks: text validity is checked across fragments.
    let chunks = vec![
        Bytes::from_static(b"price: \xe2"),
        Bytes::from_static(b"\x82\xac"),
        Bytes::from_static(b" 5"),
    ];
    ws.send_stream(MessageKind::Text, stream::iter(chunks))
        .await
        .unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::from("price: € 5")
    );
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn ping_gets_a_pong_event() {
    let (addr, server) = serve_one(ServerConfig::default(), |mut ws| async move {
        while let Some(Ok(_)) = ws.recv().await {}
    })
    .await;
    let (mut ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    ws.send_ping(Bytes::from_static(b"t=1")).await.unwrap();
    let event = tokio::time::timeout(LIMIT, ws.next_event())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event, Event::Pong(Bytes::from_static(b"t=1")));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn heartbeat_fails_a_silent_peer_with_1011() {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(Duration::from_millis(50));
    config.protocol.pong_timeout = Duration::from_millis(100);
    config.protocol.close_timeout = Duration::from_millis(200);
    let (addr, server) = serve_one(config, |mut ws| async move {
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(LIMIT, ws.recv()).await.unwrap();
        match result {
            Some(Err(Error::Protocol(e))) => assert_eq!(e.close_code(), CloseCode::INTERNAL_ERROR),
            other => panic!("expected a pong timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
    // A raw peer that completes the handshake and then never reads or answers.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    server.await.unwrap();
    // What the server sent after the 101: a ping, then a close with 1011.
    let mut all = Vec::new();
    tokio::time::timeout(LIMIT, raw.read_to_end(&mut all))
        .await
        .unwrap()
        .unwrap();
    let body = &all[all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(&body[..2], &[0x89, 0x00], "heartbeat ping");
    assert_eq!(body[2], 0x88, "then a close frame");
    assert_eq!(u16::from_be_bytes([body[4], body[5]]), 1011);
}

#[tokio::test]
async fn split_reader_keeps_working_while_the_writer_is_blocked() {
    let (addr, server) = serve_one(ServerConfig::default(), |ws| async move {
        let (mut reader, mut writer) = ws.into_split();
        // The writer floods a peer that does not read: it blocks on a full socket.
        let flood = tokio::spawn(async move {
            let chunk = Bytes::from(vec![0u8; 64 * 1024]);
            let mut sent = 0usize;
            while writer.send(Message::Binary(chunk.clone())).await.is_ok() {
                sent += 1;
            }
            sent
        });
        // Meanwhile the reader receives everything the peer sends, and its close.
        let mut received = 0;
        while let Some(Ok(_)) = reader.recv().await {
            received += 1;
        }
        assert_eq!(
            received, 50,
            "all messages read while the writer was blocked"
        );
        assert_eq!(reader.close_frame().map(|f| f.code), Some(CloseCode(4000)));
        let sent = flood.await.unwrap();
        assert!(sent > 0);
    })
    .await;
    let (ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    let (mut reader, mut writer) = ws.into_split();
    for i in 0..50 {
        writer.send(format!("msg {i}")).await.unwrap();
    }
    // Let the server's writer fill both socket buffers before we read anything.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer.close(CloseCode(4000), "enough").await.unwrap();
    // Now drain: the server's data, then its close answer, then the end.
    let drained = tokio::time::timeout(LIMIT, async {
        let mut n = 0;
        while let Some(Ok(_)) = reader.recv().await {
            n += 1;
        }
        n
    })
    .await
    .expect("no deadlock");
    assert!(drained > 0);
    tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn try_send_reports_a_full_buffer_instead_of_waiting() {
    let (addr, server) = serve_one(ServerConfig::default(), |mut ws| async move {
        ws.set_write_buffer_limit(256 * 1024);
        let chunk = Bytes::from(vec![1u8; 64 * 1024]);
        let mut full = None;
        for i in 0..10_000 {
            match ws.try_send(Message::Binary(chunk.clone())) {
                Ok(()) => {
                    // Let some of it reach the socket, as a real server would between sends.
                    let _ = tokio::time::timeout(Duration::from_millis(1), ws.flush()).await;
                }
                Err(TrySendError::Full(m)) => {
                    full = Some((i, m.len()));
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let (_, len) = full.expect("the buffer fills when the peer does not read");
        assert_eq!(len, 64 * 1024, "the message is handed back");
        assert!(ws.protocol().pending_transmit() >= 256 * 1024);
        // The slow-consumer policy of a server: close with 1008.
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            ws.close(CloseCode::POLICY_VIOLATION, "too slow"),
        )
        .await;
    })
    .await;
    let _client = TcpStream::connect(addr).await.unwrap();
    let mut raw = _client;
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_256_mib_message_streams_through_in_small_chunks() {
    const TOTAL: usize = 256 << 20;
    const PIECE: usize = 1 << 20;
    let mut config = ServerConfig::default();
    config.protocol.chunked_receive = true;
    config.protocol.max_message_size = 1 << 40;
    config.protocol.max_frame_size = 1 << 40;
    let (addr, server) = serve_one(config, |mut ws| async move {
        let (mut total, mut largest, mut sum) = (0usize, 0usize, 0u64);
        while let Some(chunk) = ws.recv_chunk().await {
            let chunk = chunk.unwrap();
            total += chunk.data.len();
            largest = largest.max(chunk.data.len());
            sum += chunk.data.iter().map(|&b| u64::from(b)).sum::<u64>();
            if chunk.fin {
                break;
            }
        }
        assert_eq!(total, TOTAL);
        assert_eq!(sum, (TOTAL as u64 / 256) * (0..256u64).sum::<u64>());
        assert!(
            largest <= 64 * 1024,
            "largest chunk {largest} bytes: nothing is held whole"
        );
        ws.send("done").await.unwrap();
        ws.recv_chunk().await;
    })
    .await;
    let (mut ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    let piece = Bytes::from((0..PIECE).map(|i| i as u8).collect::<Vec<u8>>());
    let pieces = stream::iter(std::iter::repeat_n(piece, TOTAL / PIECE));
    tokio::time::timeout(
        Duration::from_secs(120),
        ws.send_stream(MessageKind::Binary, pieces),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from("done"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
}

#[tokio::test]
async fn recv_reports_chunked_mode_instead_of_dropping_data() {
    let mut config = ServerConfig::default();
    config.protocol.chunked_receive = true;
    let (addr, server) = serve_one(config, |mut ws| async move {
        assert!(matches!(ws.recv().await, Some(Err(Error::ChunkedReceive))));
    })
    .await;
    let (mut ws, _) = connect(&url(addr), &ClientConfig::default()).await.unwrap();
    ws.send("x").await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_peer_that_never_reads_cannot_hold_either_half_forever() {
    let mut config = ServerConfig::default();
    config.protocol.ping_interval = Some(Duration::from_millis(50));
    config.protocol.pong_timeout = Duration::from_millis(100);
    config.protocol.close_timeout = Duration::from_millis(300);
    let (addr, server) = serve_one(config, |ws| async move {
        let (mut reader, mut writer) = ws.into_split();
        let flood = tokio::spawn(async move {
            let chunk = Bytes::from(vec![0u8; 256 * 1024]);
            loop {
                if let Err(e) = writer.send(Message::Binary(chunk.clone())).await {
                    return e;
                }
            }
        });
        let outcome = tokio::time::timeout(LIMIT, reader.recv())
            .await
            .expect("reader finishes");
        match outcome {
            Some(Err(Error::Protocol(e))) => assert_eq!(e.close_code(), CloseCode::INTERNAL_ERROR),
            other => panic!("expected the heartbeat to fail the connection, got {other:?}"),
        }
        let writer_error = tokio::time::timeout(LIMIT, flood)
            .await
            .expect("writer released")
            .unwrap();
        assert!(
            matches!(writer_error, Error::Closed | Error::Send(_) | Error::Io(_)),
            "{writer_error:?}"
        );
    })
    .await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    // Never read, never write: the server's socket buffers fill up and stay full.
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("server task ends")
        .unwrap();
    drop(raw);
}
