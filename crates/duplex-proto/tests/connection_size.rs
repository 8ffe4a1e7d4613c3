//! A server holds one `Connection` per client, and an idle connection is mostly this struct
//! (its buffers are released while idle, see `idle_buffers.rs`): growing it grows the memory of
//! every idle connection. State that only some connections use (closing, failure, fragmented
//! messages, timers, deflate) belongs behind a box allocated on first use.

use duplex_proto::{Config, Connection};
use std::mem::size_of;

#[test]
fn connection_stays_small() {
    // 200 bytes on x86_64 (it was 536 before the rare state moved behind boxes).
    let size = size_of::<Connection>();
    assert!(size <= 200, "Connection is {size} bytes");
}

#[test]
fn connections_share_one_config() {
    use duplex_proto::Role;
    use std::sync::Arc;
    use std::time::Instant;
    let config = Arc::new(Config::default());
    let a = Connection::new(Role::Server, Arc::clone(&config), Instant::now());
    let b = Connection::new(Role::Server, Arc::clone(&config), Instant::now());
    assert!(std::ptr::eq(a.config(), b.config()));
    assert!(std::ptr::eq(a.config(), &*config));
}
