//! An idle connection keeps no read or write buffer: after messages went both ways and the
//! connection waits for the peer, the protocol state holds no buffer capacity.

use duplex::{Config, Message, Role, WebSocket};
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

/// Polls the next event once; the connection must have nothing to deliver (it goes idle).
async fn go_idle<S>(ws: &mut WebSocket<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let polled = poll_fn(|cx| Poll::Ready(ws.poll_next_event(cx).is_pending())).await;
    assert!(polled, "nothing was sent, so no event can be ready");
}

#[tokio::test]
async fn buffers_are_released_while_idle() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let mut server = WebSocket::from_raw(a, Role::Server, Config::default(), &[]);
    let mut client = WebSocket::from_raw(b, Role::Client, Config::default(), &[]);
    for size in [20usize, 3_000, 200_000] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let round_trip = async {
            let (sent, received) = tokio::join!(client.send(payload.clone()), server.recv());
            sent.unwrap();
            let message = received.expect("open").unwrap();
            let (echoed, echo) = tokio::join!(server.send(message), client.recv());
            echoed.unwrap();
            echo.expect("open").unwrap()
        };
        let echo = tokio::time::timeout(LIMIT, round_trip)
            .await
            .expect("round trip");
        assert_eq!(echo, Message::Binary(payload.into()));
        go_idle(&mut server).await;
        go_idle(&mut client).await;
        assert_eq!(
            server.protocol().buffer_capacity(),
            0,
            "server idle after a {size}-byte echo"
        );
        assert_eq!(
            client.protocol().buffer_capacity(),
            0,
            "client idle after a {size}-byte echo"
        );
    }
}

#[tokio::test]
async fn split_reader_releases_buffers_too() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let server = WebSocket::from_raw(a, Role::Server, Config::default(), &[]);
    let mut client = WebSocket::from_raw(b, Role::Client, Config::default(), &[]);
    let (mut reader, mut writer) = server.split();
    let round_trip = async {
        let (sent, received) = tokio::join!(client.send("hello"), reader.recv());
        sent.unwrap();
        let message = received.expect("open").unwrap();
        let (echoed, echo) = tokio::join!(writer.send(message), client.recv());
        echoed.unwrap();
        echo.expect("open").unwrap()
    };
    let echo = tokio::time::timeout(LIMIT, round_trip)
        .await
        .expect("round trip");
    assert_eq!(echo, Message::Text("hello".into()));
    let idle = poll_fn(|cx| Poll::Ready(reader.poll_next_event(cx).is_pending())).await;
    assert!(idle);
    assert_eq!(reader.buffer_capacity(), 0);
}
