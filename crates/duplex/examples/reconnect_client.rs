//! A client that stays connected: reconnects with backoff (`duplex::reconnect`), subscribes
//! again after every connection, and sends a line of standard input as a text message.
//!
//! ```text
//! cargo run -p duplex --example reconnect_client -- ws://127.0.0.1:9003/
//! ```

use duplex::reconnect::{ReconnectConfig, ReconnectEvent, ReconnectingClient};
use duplex::{ClientConfig, CloseCode};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9003/".into());
    let config = ReconnectConfig::new()
        .client(ClientConfig::new().ping_interval(Duration::from_secs(20)))
        .base(Duration::from_millis(250))
        .cap(Duration::from_secs(10));
    // Runs after every (re)connection, before queued sends: restore per-connection state.
    let mut client = ReconnectingClient::start_with(&url, config, |ws| {
        Box::pin(async move { ws.send("hello again").await })
    })?;

    let sender = client.sender();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Err(e) = sender.send(line).await {
                eprintln!("not sent (disconnected?): {e}");
            }
        }
    });

    loop {
        tokio::select! {
            event = client.recv() => match event {
                Some(ReconnectEvent::Connected { .. }) => eprintln!("connected to {url}"),
                Some(ReconnectEvent::Message(message)) => println!("{message:?}"),
                Some(ReconnectEvent::Disconnected { code, reason, error }) => {
                    eprintln!("disconnected: {code:?} {reason:?} {error:?}")
                }
                Some(ReconnectEvent::Reconnecting { attempt, delay }) => {
                    eprintln!("reconnecting (attempt {attempt}) in {delay:?}")
                }
                Some(ReconnectEvent::GaveUp) | None => break,
                Some(_) => {}
            },
            _ = tokio::signal::ctrl_c() => {
                client.close(CloseCode::NORMAL, "bye").await?;
                break;
            }
        }
    }
    Ok(())
}
