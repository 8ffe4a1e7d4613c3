//! `duplex::reconnect` against our own server on a loopback port that is killed, restarted,
//! refuses, or is not there yet. Backoffs are 10–50 ms so every test ends in well under a
//! second when it passes; each wait is bounded by `LIMIT`.

use duplex::client::ClientConfig;
use duplex::proto::handshake::ClientHandshakeError;
use duplex::reconnect::{ReconnectConfig, ReconnectEvent, ReconnectSendError, ReconnectingClient};
use duplex::server::{accept, accept_with, Rejection, ServerConfig};
use duplex::{CloseCode, Error, Message};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

const LIMIT: Duration = Duration::from_secs(10);

/// Binds `addr` (port 0: any free port) with SO_REUSEADDR, so a restarted server gets the
/// same port back although the killed one's connections linger in TIME_WAIT.
fn bind(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    socket.listen(128).unwrap()
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// An echo server that reports every text message it receives on `seen`. Aborting the
/// returned task kills it: the listener and (through the `JoinSet`) every connection drop.
fn echo_server(listener: TcpListener, seen: mpsc::UnboundedSender<String>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            connections.spawn(async move {
                let Ok(mut ws) = accept(stream, &ServerConfig::default()).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.recv().await {
                    if let Message::Text(text) = &message {
                        let _ = seen.send(text.as_str().to_owned());
                    }
                    if ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

/// A client that sends "subscribe" on every (re)connection.
fn subscribing_client(addr: SocketAddr, config: ReconnectConfig) -> ReconnectingClient {
    ReconnectingClient::start_with(&format!("ws://{addr}/"), config, |ws| {
        Box::pin(async move { ws.send("subscribe").await })
    })
    .unwrap()
}

fn fast() -> ReconnectConfig {
    ReconnectConfig::new()
        .client(ClientConfig::new().handshake_timeout(Duration::from_secs(2)))
        .base(Duration::from_millis(20))
        .cap(Duration::from_millis(50))
}

async fn next(client: &mut ReconnectingClient) -> ReconnectEvent {
    tokio::time::timeout(LIMIT, client.recv())
        .await
        .expect("an event within the limit")
        .expect("the client is still running")
}

async fn seen_next(seen: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(LIMIT, seen.recv())
        .await
        .expect("the server receives a message within the limit")
        .unwrap()
}

/// Takes events until `Connected`, checking that only failed attempts and waits come first,
/// the attempts counting up from `last_attempt + 1`.
async fn until_connected(client: &mut ReconnectingClient, last_attempt: u32) {
    let mut expected = last_attempt;
    loop {
        match next(client).await {
            ReconnectEvent::Connected { .. } => return,
            ReconnectEvent::Reconnecting { attempt, delay } => {
                expected += 1;
                assert_eq!(attempt, expected, "attempts count up by one");
                assert!(
                    delay <= Duration::from_millis(50),
                    "{delay:?} above the cap"
                );
            }
            ReconnectEvent::Disconnected {
                code: None,
                error: Some(_),
                ..
            } => {}
            other => panic!("unexpected before Connected: {other:?}"),
        }
    }
}

#[tokio::test]
async fn killed_and_restarted_server_is_reconnected_and_subscriptions_re_sent() {
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let server = echo_server(listener, seen_tx.clone());

    let mut client = subscribing_client(addr, fast());
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { .. }
    ));
    assert_eq!(seen_next(&mut seen).await, "subscribe");
    client.send("hello").await.unwrap();
    assert_eq!(seen_next(&mut seen).await, "hello");
    for echoed in ["subscribe", "hello"] {
        match next(&mut client).await {
            ReconnectEvent::Message(message) => assert_eq!(message, Message::from(echoed)),
            other => panic!("expected the echo, got {other:?}"),
        }
    }

    // Kill the server: listener and connections dropped without a closing handshake.
    server.abort();
    let _ = server.await;
    match next(&mut client).await {
        ReconnectEvent::Disconnected {
            code: None, error, ..
        } => assert!(error.is_some(), "a cut connection is an error"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    match next(&mut client).await {
        ReconnectEvent::Reconnecting { attempt: 1, delay } => {
            assert!(
                delay <= Duration::from_millis(20),
                "first wait is within base"
            )
        }
        other => panic!("expected Reconnecting, got {other:?}"),
    }
    // While down, sending fails at once and hands the message back.
    match client.send("lost").await {
        Err(ReconnectSendError::NotConnected(message)) => {
            assert_eq!(message, Message::from("lost"))
        }
        other => panic!("expected NotConnected, got {other:?}"),
    }

    // Let a refused attempt or two happen, then restart on the same port.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let server = echo_server(bind(addr), seen_tx);
    until_connected(&mut client, 1).await;
    assert_eq!(
        seen_next(&mut seen).await,
        "subscribe",
        "the hook ran again on the new connection"
    );
    client.send("again").await.unwrap();
    assert_eq!(seen_next(&mut seen).await, "again");

    client.close(CloseCode::NORMAL, "done").await.unwrap();
    assert!(client.recv().await.is_none(), "nothing after close");
    assert!(matches!(
        client.send("late").await,
        Err(ReconnectSendError::Stopped(Some(_)))
    ));
    server.abort();
}

#[tokio::test]
async fn policy_violation_close_gives_up_without_retrying() {
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut ws = accept(stream, &ServerConfig::default()).await.unwrap();
            tokio::spawn(async move {
                // Refuses the subscription the hook sends.
                let _ = ws.recv().await;
                let _ = ws.close(CloseCode::POLICY_VIOLATION, "not allowed").await;
            });
        }
    });

    let mut client = subscribing_client(addr, fast());
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Connected { .. }
    ));
    match next(&mut client).await {
        ReconnectEvent::Disconnected {
            code,
            reason,
            error,
        } => {
            assert_eq!(code, Some(CloseCode::POLICY_VIOLATION));
            assert_eq!(reason, "not allowed");
            assert!(error.is_none(), "a clean close: {error:?}");
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(matches!(next(&mut client).await, ReconnectEvent::GaveUp));
    assert!(client.recv().await.is_none(), "nothing after GaveUp");
    // Several base delays later, still one connection.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    server.abort();
}

#[tokio::test]
async fn forbidden_upgrade_is_retried_up_to_max_attempts_then_gave_up() {
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let refused = accept_with(stream, &ServerConfig::default(), |_| {
                    count.fetch_add(1, Ordering::SeqCst);
                    Err(Rejection::new(403, "forbidden"))
                })
                .await;
                assert!(matches!(refused, Err(Error::Rejected { status: 403, .. })));
            });
        }
    });

    let mut client =
        subscribing_client(addr, fast().base(Duration::from_millis(10)).max_attempts(3));
    for attempt in 1..=4u32 {
        match next(&mut client).await {
            ReconnectEvent::Disconnected {
                code: None,
                error:
                    Some(Error::BadResponse(ClientHandshakeError::NotSwitchingProtocols {
                        status: 403,
                        ..
                    })),
                ..
            } => {}
            other => panic!("expected a 403 refusal, got {other:?}"),
        }
        if attempt <= 3 {
            match next(&mut client).await {
                ReconnectEvent::Reconnecting { attempt: n, .. } => assert_eq!(n, attempt),
                other => panic!("expected Reconnecting {attempt}, got {other:?}"),
            }
        }
    }
    assert!(matches!(next(&mut client).await, ReconnectEvent::GaveUp));
    assert!(client.recv().await.is_none());
    assert_eq!(
        requests.load(Ordering::SeqCst),
        4,
        "the first attempt and 3 retries"
    );
    server.abort();
}

#[tokio::test]
async fn server_down_at_first_is_connected_once_it_comes_up() {
    // A free port, closed: connections to it are refused.
    let addr = bind(any_port()).local_addr().unwrap();
    let mut client = subscribing_client(addr, fast());
    match next(&mut client).await {
        ReconnectEvent::Disconnected {
            code: None,
            error: Some(Error::Io(error)),
            ..
        } => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    assert!(matches!(
        next(&mut client).await,
        ReconnectEvent::Reconnecting { attempt: 1, .. }
    ));
    tokio::time::sleep(Duration::from_millis(60)).await;

    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let server = echo_server(bind(addr), seen_tx);
    until_connected(&mut client, 1).await;
    assert_eq!(seen_next(&mut seen).await, "subscribe");
    client.close(CloseCode::NORMAL, "").await.unwrap();
    server.abort();
}

#[tokio::test]
async fn connections_dropped_at_once_do_not_reset_the_backoff() {
    // A server that accepts and at once closes with a retryable code: without the reset
    // rule this would be retried forever at the first backoff step.
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = accept(stream, &ServerConfig::default()).await.unwrap();
            tokio::spawn(async move {
                let _ = ws.recv().await;
                let _ = ws.close(CloseCode::TRY_AGAIN_LATER, "busy").await;
            });
        }
    });
    let config = fast()
        .base(Duration::from_millis(10))
        .reset_after(Duration::from_secs(60))
        .max_attempts(2);
    let mut client = subscribing_client(addr, config);
    let mut connected = 0;
    let mut attempts = Vec::new();
    loop {
        match next(&mut client).await {
            ReconnectEvent::Connected { .. } => connected += 1,
            ReconnectEvent::Disconnected { code, .. } => {
                assert_eq!(code, Some(CloseCode::TRY_AGAIN_LATER))
            }
            ReconnectEvent::Reconnecting { attempt, .. } => attempts.push(attempt),
            ReconnectEvent::GaveUp => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((connected, attempts), (3, vec![1, 2]));
    server.abort();
}

#[tokio::test]
async fn a_connection_that_stays_up_resets_the_attempt_count() {
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    // Each connection stays open 150 ms, then the server goes away (1001).
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut ws = accept(stream, &ServerConfig::default()).await.unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let _ = ws.close(CloseCode::GOING_AWAY, "restart").await;
            });
        }
    });
    let config = fast()
        .base(Duration::from_millis(10))
        .reset_after(Duration::from_millis(100))
        .max_attempts(1);
    let mut client = subscribing_client(addr, config);
    let mut attempts = Vec::new();
    while attempts.len() < 3 {
        match next(&mut client).await {
            ReconnectEvent::Reconnecting { attempt, .. } => attempts.push(attempt),
            ReconnectEvent::GaveUp => panic!("gave up although each connection lasted"),
            _ => {}
        }
    }
    assert_eq!(attempts, [1, 1, 1]);
    client.close(CloseCode::NORMAL, "").await.unwrap();
    server.abort();
}

#[tokio::test]
async fn close_while_waiting_stops_the_client() {
    let addr = bind(any_port()).local_addr().unwrap();
    let mut client = subscribing_client(addr, fast().base(Duration::from_secs(5)));
    loop {
        if let ReconnectEvent::Reconnecting { .. } = next(&mut client).await {
            break;
        }
    }
    // The wait (up to 5 s) is cut short.
    tokio::time::timeout(Duration::from_secs(1), client.close(CloseCode::NORMAL, ""))
        .await
        .expect("close returns at once")
        .unwrap();
    assert!(client.recv().await.is_none());
}

#[test]
fn an_unusable_url_is_refused_at_start() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let refused = ReconnectingClient::start("http://127.0.0.1/", ReconnectConfig::new());
        assert!(matches!(refused, Err(Error::Url(_))));
    });
}

#[tokio::test]
async fn policy_violation_right_after_the_upgrade_also_gives_up() {
    // The close frame may arrive before or while the hook sends: either way the code counts.
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let mut ws = accept(stream, &ServerConfig::default()).await.unwrap();
            tokio::spawn(async move {
                let _ = ws.close(CloseCode::POLICY_VIOLATION, "not allowed").await;
            });
        }
    });
    let mut client = subscribing_client(addr, fast());
    let mut codes = Vec::new();
    loop {
        match next(&mut client).await {
            ReconnectEvent::Connected { .. } => {}
            ReconnectEvent::Disconnected { code, .. } => codes.push(code),
            ReconnectEvent::GaveUp => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(codes, [Some(CloseCode::POLICY_VIOLATION)]);
    assert!(client.recv().await.is_none());
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    server.abort();
}

#[tokio::test]
async fn a_failing_hook_drops_the_connection_and_is_retried() {
    let listener = bind(any_port());
    let addr = listener.local_addr().unwrap();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let server = echo_server(listener, seen_tx);
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    let mut client = ReconnectingClient::start_with(&format!("ws://{addr}/"), fast(), move |ws| {
        let run = counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if run == 0 {
                return Err(Error::Handshake("no token yet".into()));
            }
            ws.send("subscribe").await
        })
    })
    .unwrap();
    match next(&mut client).await {
        ReconnectEvent::Disconnected {
            code: None,
            error: Some(Error::Handshake(why)),
            ..
        } => assert_eq!(why, "no token yet"),
        other => panic!("expected the hook's error, got {other:?}"),
    }
    until_connected(&mut client, 0).await;
    assert_eq!(seen_next(&mut seen).await, "subscribe");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    client.close(CloseCode::NORMAL, "").await.unwrap();
    server.abort();
}
