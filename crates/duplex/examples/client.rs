//! A line-oriented client: sends each line of standard input as a text message and prints
//! what arrives. `ws://` and `wss://` alike (`duplex::connect`).
//!
//! ```text
//! cargo run -p duplex --example client -- ws://127.0.0.1:9002/
//! ```

use duplex::{connect, ClientConfig, CloseCode, Message};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9002/".into());
    let (ws, negotiated) = connect(&url, &ClientConfig::default()).await?;
    eprintln!(
        "connected to {url} (subprotocol: {:?})",
        negotiated.protocol
    );
    let (mut reader, mut writer) = ws.into_split();
    let printer = tokio::spawn(async move {
        while let Some(message) = reader.recv().await {
            match message {
                Ok(Message::Text(t)) => println!("{t}"),
                Ok(Message::Binary(b)) => println!("<{} bytes>", b.len()),
                Err(e) => return eprintln!("error: {e}"),
            }
        }
        // Why the loop ended: the server's close, ours, a failure...
        if let Some(reason) = reader.close_reason() {
            eprintln!("closed ({}): {reason:?}", reason.code());
        }
    });
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        writer.send(line).await?;
    }
    writer.close(CloseCode::NORMAL, "bye").await?;
    let _ = printer.await;
    Ok(())
}
