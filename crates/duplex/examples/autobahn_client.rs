//! Drives the Autobahn|Testsuite client tests (`wstest -m fuzzingserver`):
//! asks for the case count, runs each case echoing every message, then updates the reports.
//!
//! ```text
//! cargo run --release -p duplex --example autobahn_client -- ws://127.0.0.1:9001 duplex
//! ```

use duplex::client::{connect, ClientConfig};
use duplex::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9001".into());
    let agent = args.next().unwrap_or_else(|| "duplex".into());
    let mut config = ClientConfig::default();
    // Autobahn 9.x sends messages up to 16 MiB.
    config.protocol.max_message_size = 64 << 20;
    config.protocol.max_frame_size = 64 << 20;
    // Offer permessage-deflate in every case (Autobahn 12/13 need it; 1-10 must pass with it).
    config.deflate.enabled = std::env::var_os("AUTOBAHN_NO_DEFLATE").is_none();

    let count = case_count(&base, &config).await?;
    eprintln!("autobahn_client: {count} cases");
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        match connect(&url, &config).await {
            Ok((mut ws, _)) => {
                while let Some(message) = ws.recv().await {
                    match message {
                        Ok(m) => {
                            if ws.send(m).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            Err(e) => eprintln!("case {case}: connect failed: {e}"),
        }
    }
    let url = format!("{base}/updateReports?agent={agent}");
    let (mut ws, _) = connect(&url, &config).await?;
    while let Some(m) = ws.recv().await {
        m?;
    }
    eprintln!("autobahn_client: reports updated");
    Ok(())
}

async fn case_count(base: &str, config: &ClientConfig) -> Result<u32, Box<dyn std::error::Error>> {
    let (mut ws, _) = connect(&format!("{base}/getCaseCount"), config).await?;
    let mut count = None;
    while let Some(m) = ws.recv().await {
        if let Message::Text(t) = m? {
            count = Some(t.trim().parse::<u32>()?);
        }
    }
    count.ok_or_else(|| "server sent no case count".into())
}
