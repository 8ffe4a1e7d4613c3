//! The server's closing procedure over real TCP on loopback.

use duplex::server::{accept, ServerConfig};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn masked(op: u8, rsv: u8, payload: &[u8]) -> Vec<u8> {
    let key = [9u8, 8, 7, 6];
    let mut out = vec![0x80 | (rsv << 4) | op, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

async fn echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut ws = accept(stream, &ServerConfig::default()).await.unwrap();
        while let Some(Ok(m)) = ws.recv().await {
            if ws.send(m).await.is_err() {
                break;
            }
        }
    });
    addr
}

async fn handshake(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

#[tokio::test]
async fn echo_then_close_1002_when_a_bad_frame_follows_in_the_same_read() {
    let addr = echo_server().await;
    let mut s = handshake(addr).await;
    let mut input = masked(1, 0, b"Hello");
    input.extend(masked(1, 2, b"bad"));
    input.extend(masked(9, 0, b""));
    s.write_all(&input).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        &got[..7],
        &[0x81, 5, b'H', b'e', b'l', b'l', b'o'],
        "echo first: {got:?}"
    );
    assert_eq!(&got[7..8], &[0x88]);
    assert_eq!(u16::from_be_bytes([got[9], got[10]]), 1002);
}
