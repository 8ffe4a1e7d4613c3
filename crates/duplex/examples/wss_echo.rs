//! A `wss://` echo server.
//!
//! ```text
//! # with your own certificate chain and key (PEM):
//! cargo run -p duplex --example wss_echo -- 0.0.0.0:8443 fullchain.pem key.pem
//! # without arguments: a throw-away CA and certificate for localhost are made, the server
//! # starts on 127.0.0.1, and a client that trusts that CA echoes one message through it.
//! cargo run -p duplex --example wss_echo
//! ```

use duplex::client::{connect_tls, ClientConfig};
use duplex::server::ServerConfig;
use duplex::tls::rustls::RootCertStore;
use duplex::tls::{accept_tls, client_config_with_roots, load_server_config, TlsAcceptor};
use duplex::{CloseCode, Message};
use std::sync::Arc;
use tokio::net::TcpListener;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(listener: TcpListener, tls: Arc<duplex::tls::rustls::ServerConfig>) {
    let acceptor = TlsAcceptor::from(tls);
    let config = ServerConfig::default();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("wss_echo: accept failed: {e}");
                continue;
            }
        };
        let (acceptor, config) = (acceptor.clone(), config.clone());
        tokio::spawn(async move {
            let mut ws = match accept_tls(tcp, &acceptor, &config).await {
                Ok(ws) => ws,
                Err(e) => return eprintln!("wss_echo: {peer}: handshake failed: {e}"),
            };
            while let Some(Ok(message)) = ws.recv().await {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// A CA, and a certificate for localhost/127.0.0.1 that it signed.
fn throw_away_pki() -> Result<(RootCertStore, Arc<duplex::tls::rustls::ServerConfig>), BoxError> {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "wss_echo throw-away CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate()?)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?
        .signed_by(&key, &ca)?;
    let server =
        duplex::tls::server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone())?;
    Ok((roots, server))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [addr, cert, key] = args.as_slice() {
        let tls = load_server_config(cert, key)?;
        let listener = TcpListener::bind(addr).await?;
        eprintln!("wss_echo: listening on wss://{}/", listener.local_addr()?);
        serve(listener, tls).await;
        return Ok(());
    }
    if !args.is_empty() {
        return Err("usage: wss_echo [ADDR CERT_PEM KEY_PEM]".into());
    }

    let (roots, tls) = throw_away_pki()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(serve(listener, tls));

    let client = ClientConfig {
        tls: Some(client_config_with_roots(roots)?),
        ..ClientConfig::default()
    };
    let url = format!("wss://localhost:{port}/");
    let (mut ws, _) = connect_tls(&url, &client).await?;
    ws.send("hello over wss").await?;
    match ws.recv().await {
        Some(Ok(Message::Text(text))) => println!("{url} echoed: {}", text.as_str()),
        other => return Err(format!("unexpected: {other:?}").into()),
    }
    ws.close(CloseCode::NORMAL, "").await?;
    Ok(())
}
