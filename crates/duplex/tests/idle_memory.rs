//! An idle connection keeps no read buffer and at most a few small buffers: after messages
//! went both ways and the connection waits for the peer, the protocol state holds at most
//! `IDLE_BUFFER_BOUND` bytes of buffer capacity (an 8 KiB read buffer used to stay).

use duplex::proto::connection::IDLE_BUFFER_BOUND;
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
    // Nothing exchanged yet: nothing held (the common idle server connection).
    go_idle(&mut server).await;
    assert_eq!(server.protocol().buffer_capacity(), 0);
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
        for (who, kept) in [
            ("server", server.protocol().buffer_capacity()),
            ("client", client.protocol().buffer_capacity()),
        ] {
            assert!(
                kept <= IDLE_BUFFER_BOUND,
                "{who} idle after a {size}-byte echo holds {kept} bytes of buffers"
            );
        }
    }
}

#[tokio::test]
async fn split_reader_releases_buffers_too() {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let server = WebSocket::from_raw(a, Role::Server, Config::default(), &[]);
    let mut client = WebSocket::from_raw(b, Role::Client, Config::default(), &[]);
    let (mut reader, mut writer) = server.into_split();
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
    assert!(reader.buffer_capacity() <= IDLE_BUFFER_BOUND);
}
