//! `duplex serve`: webhooks to a local HTTP server, TLS, config file.

mod serve_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use duplex::client::{connect_tls, ClientConfig};
use duplex::tls::client_config_with_roots;
use duplex::tls::rustls::RootCertStore;
use serde_json::json;
use serve_support::*;

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("duplex-serve-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

type Received = std::sync::mpsc::Receiver<(Vec<(String, String)>, String)>;

/// One-request-at-a-time HTTP server on loopback: sends each (headers, body) it receives.
fn webhook_receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("POST /hooks "), "{line}");
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            if tx
                .send((headers, String::from_utf8(body).unwrap()))
                .is_err()
            {
                return;
            }
        }
    });
    (url, rx)
}

#[tokio::test]
async fn webhooks_are_posted_signed_to_the_configured_url() {
    let (url, hooks) = webhook_receiver();
    let dir = temp_dir("webhooks");
    let file = dir.join("duplex.toml");
    std::fs::write(
        &file,
        format!(
            r#"
            [[apps]]
            id = "{APP_ID}"
            key = "{KEY}"
            secret = "{SECRET}"
            [[apps.webhooks]]
            url = "{url}"
            events = ["channel_occupied", "channel_vacated"]
            "#
        ),
    )
    .unwrap();
    let s = Server::start(&["--config", file.to_str().unwrap()]);
    let (mut a, _) = established(&s.ws_url(KEY, "?protocol=7")).await;
    send_json(
        &mut a,
        json!({"event":"pusher:subscribe","data":{"channel":"hooked"}}),
    )
    .await;
    assert_eq!(
        next_json(&mut a).await["event"],
        "pusher_internal:subscription_succeeded"
    );
    let (headers, body) = tokio::task::spawn_blocking(move || {
        hooks
            .recv_timeout(Duration::from_secs(10))
            .expect("no webhook")
    })
    .await
    .unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("x-pusher-key"), KEY);
    assert_eq!(
        header("x-pusher-signature"),
        duplex_hub::auth::webhook_signature(SECRET, body.as_bytes())
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["events"][0]["name"], "channel_occupied");
    assert_eq!(v["events"][0]["channel"], "hooked");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tls_serves_wss_and_https() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = temp_dir("tls");
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();

    let s = Server::start(&[
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ]);
    let port = s.addr.rsplit(':').next().unwrap().to_string();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = ClientConfig {
        tls: Some(client_config_with_roots(roots).unwrap()),
        ..ClientConfig::default()
    };
    let url = format!("wss://localhost:{port}/app/{KEY}?protocol=7");
    let (mut ws, _) = connect_tls(&url, &config).await.expect("wss connect");
    let ev = tokio::time::timeout(Duration::from_secs(10), ws.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        ev.as_bytes()
            .windows(29)
            .any(|w| w == b"pusher:connection_established"),
        "{ev:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
