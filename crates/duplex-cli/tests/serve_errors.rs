//! `duplex serve`: the error codes and limits a raw client can provoke but pusher-js cannot
//! (it always reads, always answers pings and always uses `/app/{key}?protocol=7`), and
//! webhook delivery with a dead endpoint. The pusher-js side of each code is in
//! `tests/pusher/run.mjs`; the table of codes is in `docs/pusher-errors.md`.

mod serve_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use duplex::{Event, Message};
use serde_json::{json, Value};
use serve_support::*;

fn temp_config(name: &str, toml: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("duplex-errors-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("duplex.toml");
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

fn metric(addr: &str, name: &str) -> u64 {
    let (status, body) = http(addr, "GET", "/metrics", "");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("duplex_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric duplex_{name} missing"))
}

async fn subscribe(ws: &mut Ws, channel: &str) {
    send_json(
        ws,
        json!({"event":"pusher:subscribe","data":{"channel":channel}}),
    )
    .await;
    assert_eq!(
        next_json(ws).await["event"],
        "pusher_internal:subscription_succeeded"
    );
}

/// Reads until the close frame: (text messages seen, close code).
async fn read_to_close(ws: &mut Ws, limit: Duration) -> (Vec<Value>, u16) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ev = tokio::time::timeout_at(deadline, ws.next_event())
            .await
            .expect("no close frame in time");
        match ev {
            Some(Ok(Event::Message(Message::Text(t)))) => {
                seen.push(serde_json::from_str(&t).unwrap());
            }
            Some(Ok(Event::Close(Some(f)))) => return (seen, f.code.0),
            Some(Ok(Event::Close(None))) => return (seen, 1005),
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("connection failed before the close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_with_4100() {
    let (dir, file) = temp_config(
        "slow",
        &format!(
            r#"
            outbound_queue = 64
            [[apps]]
            id = "{APP_ID}"
            key = "{KEY}"
            secret = "{SECRET}"
            "#
        ),
    );
    let s = Server::start(&["--config", file.to_str().unwrap()]);
    let (mut slow, _) = established(&s.ws_url(KEY, "?protocol=7")).await;
    subscribe(&mut slow, "flood").await;
    // A subscriber of the same channel that keeps reading, on its own task.
    let (mut reader, _) = established(&s.ws_url(KEY, "?protocol=7")).await;
    subscribe(&mut reader, "flood").await;
    let (count_tx, mut count_rx) = tokio::sync::watch::channel(0usize);
    let reading = tokio::spawn(async move {
        let mut n = 0;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), reader.next_event()).await {
                Ok(Some(Ok(Event::Message(Message::Text(_))))) => {
                    n += 1;
                    let _ = count_tx.send(n);
                }
                Ok(Some(Ok(Event::Close(f)))) => return Some(f),
                Ok(Some(Ok(_))) => {}
                _ => return None,
            }
        }
    });

    // `slow` is not read from here on. Flood the channel with 8 KB events, in batches of 10
    // (the default limit, under the 64-message queue), until the server gives up on `slow`:
    // its socket buffers fill, then its queue.
    let data = serde_json::to_string(&"x".repeat(8 * 1024)).unwrap();
    let batch: Vec<Value> = (0..10)
        .map(|_| json!({"channel":"flood","name":"e","data":data}))
        .collect();
    let body = json!({ "batch": batch }).to_string();
    let mut sent = 0;
    while metric(&s.addr, "slow_consumers_total") == 0 {
        assert!(
            sent < 2000,
            "{sent} batches (~{} MB) and no slow consumer",
            sent * 10 * 8 / 1024
        );
        let (status, resp) = signed(
            &s.addr,
            "POST",
            &format!("/apps/{APP_ID}/batch_events"),
            &[],
            &body,
        );
        assert_eq!(status, 200, "{resp}");
        sent += 1;
    }
    assert!(
        sent > 7,
        "closed after {sent} batches: the queue overflowed on a burst"
    );

    // The reading subscriber got every event and is still open.
    tokio::time::timeout(
        Duration::from_secs(30),
        count_rx.wait_for(|n| *n >= sent * 10),
    )
    .await
    .expect("the reading subscriber fell behind")
    .expect("reader task alive");
    assert!(!reading.is_finished(), "the reading subscriber was closed");
    reading.abort();

    // Reading again, the slow client finds what fitted in the buffers, then the 4100 close
    // (yielded ahead of the events still queued).
    let (seen, code) = read_to_close(&mut slow, Duration::from_secs(40)).await;
    assert_eq!(code, 4100, "after {} events", seen.len());
    assert!(!seen.is_empty());
    assert!(
        seen.len() < sent * 10,
        "some events were dropped, not all delivered"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_client_that_does_not_answer_pusher_ping_is_closed_with_4201() {
    let (dir, file) = temp_config(
        "pong",
        &format!(
            r#"
            activity_timeout = 1
            pong_timeout = 1
            [[apps]]
            id = "{APP_ID}"
            key = "{KEY}"
            secret = "{SECRET}"
            "#
        ),
    );
    let s = Server::start(&["--config", file.to_str().unwrap()]);
    let url = s.ws_url(KEY, "?protocol=7");

    // Silent client: gets a pusher:ping after ~1 s, does not answer, is closed ~1 s later.
    let start = Instant::now();
    let mut silent = ws(&url).await;
    let m = next_json(&mut silent).await;
    assert_eq!(m["data"]["activity_timeout"], 1);
    let (seen, code) = read_to_close(&mut silent, Duration::from_secs(10)).await;
    assert_eq!(code, 4201);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["event"], "pusher:ping");
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        start.elapsed()
    );

    // A client that answers stays connected through several ping rounds.
    let mut polite = ws(&url).await;
    next_json(&mut polite).await;
    let until = Instant::now() + Duration::from_secs(4);
    let mut pings = 0;
    while Instant::now() < until {
        let ev = tokio::time::timeout(Duration::from_millis(500), polite.next_event()).await;
        match ev {
            Err(_) => {}
            Ok(Some(Ok(Event::Message(Message::Text(t))))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["event"], "pusher:ping");
                pings += 1;
                send_json(&mut polite, json!({"event":"pusher:pong","data":{}})).await;
            }
            Ok(other) => panic!("answering client got {other:?}"),
        }
    }
    assert!(pings >= 2, "only {pings} pings in 4 s");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn protocol_and_path_errors_4005_4006_4007_4008() {
    let s = Server::start(&[]);
    for (path_query, code) in [
        (format!("/app/{KEY}?protocol=seven"), 4006),
        (format!("/app/{KEY}?protocol=2"), 4007),
        (format!("/app/{KEY}"), 4008),
        ("/socket/app-key?protocol=7".to_string(), 4005),
        ("/app?protocol=7".to_string(), 4005),
    ] {
        let mut c = ws(&format!("ws://{}{path_query}", s.addr)).await;
        let m = next_json(&mut c).await;
        assert_eq!(m["event"], "pusher:error", "{path_query}");
        assert_eq!(m["data"]["code"], code, "{path_query}");
        assert_eq!(close_code(&mut c).await, code, "{path_query}");
    }
    // Without an upgrade, an unknown path is a plain 404.
    assert_eq!(http(&s.addr, "GET", "/socket", "").0, 404);
    assert!(metric(&s.addr, "connections_refused_total") >= 5);
}

/// Accepts connections and never answers: a webhook endpoint that hangs.
fn hanging_endpoint() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/dead", listener.local_addr().unwrap());
    let h = std::thread::spawn(move || {
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (url, h)
}

/// An HTTP server answering 200 and passing on each body with its arrival time.
fn live_endpoint() -> (String, std::sync::mpsc::Receiver<(Instant, Value)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/live", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let Ok(v) = serde_json::from_slice(&body) else {
                continue;
            };
            if tx.send((Instant::now(), v)).is_err() {
                return;
            }
        }
    });
    (url, rx)
}

fn events_of(v: &Value) -> Vec<(String, String)> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["channel"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_hanging_webhook_endpoint_does_not_delay_a_live_one_and_vacated_is_delayed() {
    let (dead, _dead_thread) = hanging_endpoint();
    let (live, hooks) = live_endpoint();
    let (dir, file) = temp_config(
        "hooks",
        &format!(
            r#"
            webhook_vacate_delay_ms = 1500
            [[apps]]
            id = "{APP_ID}"
            key = "{KEY}"
            secret = "{SECRET}"
            [[apps.webhooks]]
            url = "{dead}"
            [[apps.webhooks]]
            url = "{live}"
            "#
        ),
    );
    let s = Server::start(&["--config", file.to_str().unwrap()]);
    let (mut a, _) = established(&s.ws_url(KEY, "?protocol=7")).await;

    let subscribed_at = Instant::now();
    subscribe(&mut a, "hooked").await;
    let (at, body) = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("live endpoint got nothing");
    // The dead endpoint is listed first; sequential delivery would wait for its 10 s timeout.
    assert!(
        at - subscribed_at < Duration::from_secs(2),
        "live webhook after {:?}",
        at - subscribed_at
    );
    assert_eq!(
        events_of(&body),
        vec![("channel_occupied".into(), "hooked".into())]
    );

    // Leave and come back within the delay: neither vacated nor occupied is sent.
    send_json(
        &mut a,
        json!({"event":"pusher:unsubscribe","data":{"channel":"hooked"}}),
    )
    .await;
    subscribe(&mut a, "hooked").await;
    // Leave for good: vacated arrives after the delay.
    let left_at = Instant::now();
    send_json(
        &mut a,
        json!({"event":"pusher:unsubscribe","data":{"channel":"hooked"}}),
    )
    .await;
    let (at, body) = hooks
        .recv_timeout(Duration::from_secs(10))
        .expect("no channel_vacated");
    assert_eq!(
        events_of(&body),
        vec![("channel_vacated".into(), "hooked".into())]
    );
    let waited = at - left_at;
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "vacated after {waited:?}"
    );
    assert!(
        hooks.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing else"
    );
    let _ = std::fs::remove_dir_all(dir);
}
