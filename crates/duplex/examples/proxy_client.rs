//! A client through a proxy (`ClientConfig::proxy`): an HTTP `CONNECT` proxy or SOCKS5, named
//! on the command line, or taken from `HTTPS_PROXY`/`HTTP_PROXY`/`ALL_PROXY`/`NO_PROXY`
//! when none is given. Sends one message and prints the answer.
//!
//! ```text
//! cargo run -p duplex --example proxy_client -- wss://echo.example.com/ http://user:pass@10.0.0.1:3128
//! cargo run -p duplex --example proxy_client -- ws://127.0.0.1:9002/ socks5://127.0.0.1:1080
//! HTTPS_PROXY=http://10.0.0.1:3128 cargo run -p duplex --example proxy_client -- wss://echo.example.com/
//! ```

use duplex::proxy::Proxy;
use duplex::{connect, ClientConfig, CloseCode};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:9002/".into());
    let config = match args.next() {
        Some(proxy) => ClientConfig::new().proxy(Proxy::parse(&proxy)?),
        None => ClientConfig::new().proxy_from_env(),
    };
    // The tunnel, TLS inside it for wss://, and the handshake: one call, one timeout.
    let (mut ws, _) = connect(&url, &config).await?;
    ws.send("hello through the proxy").await?;
    if let Some(reply) = ws.recv().await {
        println!("{:?}", reply?);
    }
    ws.close(CloseCode::NORMAL, "done").await?;
    Ok(())
}
