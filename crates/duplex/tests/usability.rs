//! Issue 14, "Library: what a new user tripped over": each fix with its test.

use duplex::client::{handshake, handshake_raw, ClientConfig, Target};
use duplex::Error;
use std::time::Duration;

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
