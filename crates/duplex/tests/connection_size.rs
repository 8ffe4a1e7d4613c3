//! An idle server connection is mostly its `WebSocket` (in the task that serves it), so it is
//! kept small; see also duplex-proto's `connection_size.rs`.

use duplex::{Config, Role, WebSocket};

#[test]
fn websocket_over_tcp_stays_small() {
    // 280 bytes on x86_64: a 40-byte TcpStream, a 200-byte Connection, the driver and settings
    // (it was 648).
    let size = std::mem::size_of::<WebSocket<tokio::net::TcpStream>>();
    assert!(size <= 280, "WebSocket<TcpStream> is {size} bytes");
}

#[tokio::test]
async fn connections_made_with_equal_configs_share_them() {
    let config = Config {
        max_message_size: 1 << 20,
        ..Config::default()
    };
    let (a, b) = tokio::io::duplex(64);
    let one = WebSocket::from_raw(a, Role::Server, config.clone(), &[]);
    let two = WebSocket::from_raw(b, Role::Client, config.clone(), &[]);
    assert!(std::ptr::eq(
        one.protocol().config(),
        two.protocol().config()
    ));
    assert_eq!(*one.protocol().config(), config);
    // A different config is not confused with the shared one.
    let (c, _d) = tokio::io::duplex(64);
    let three = WebSocket::from_raw(c, Role::Server, Config::default(), &[]);
    assert_eq!(*three.protocol().config(), Config::default());
}
