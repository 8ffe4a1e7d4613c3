//! wss:// over real TLS on 127.0.0.1, with a throw-away CA made by rcgen for each test.

use duplex::client::{connect, connect_tls, ClientConfig};
use duplex::server::ServerConfig;
use duplex::tls::rustls::{self, RootCertStore};
use duplex::tls::{
    accept_tls, client_config_with_roots, load_server_config, server_config_from_pem, TlsAcceptor,
};
use duplex::{CloseCode, Error, MaybeTlsStream, Message};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(10);

/// A private certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate (PEM chain, leaf first) and its PKCS#8 key.
struct Leaf {
    chain_pem: String,
    key_pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "duplex test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            chain_pem: format!("{}{}", cert.pem(), self.issuer.pem()),
            key_pem: key.serialize_pem(),
        }
    }

    /// A client configuration trusting only this CA.
    fn client(&self) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        ClientConfig {
            tls: Some(client_config_with_roots(roots).unwrap()),
            ..ClientConfig::default()
        }
    }
}

/// A fresh temporary directory for PEM files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "duplex-tls-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type ServerResults = Vec<duplex::Result<Option<(CloseCode, String)>>>;

/// A wss:// echo server for `connections` connections. Each connection's outcome (the
/// client's close code and reason, or the error) is returned so tests can check what the
/// server saw.
async fn echo_server(
    config: Arc<rustls::ServerConfig>,
    connections: usize,
) -> (SocketAddr, tokio::task::JoinHandle<ServerResults>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            let result = async {
                let mut ws = accept_tls(tcp, &acceptor, &ServerConfig::default()).await?;
                while let Some(message) = ws.recv().await {
                    ws.send(message?).await?;
                }
                Ok(ws
                    .close_frame()
                    .map(|f| (f.code, f.reason.as_str().to_owned())))
            }
            .await;
            results.push(result);
        }
        results
    });
    (addr, task)
}

#[tokio::test]
async fn wss_echo_text_binary_and_close_with_reason() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"]);
    // Load through the file API, as a server would.
    let dir = TempDir::new();
    let cert_path = dir.write("chain.pem", &leaf.chain_pem);
    let key_path = dir.write("key.pem", &leaf.key_pem);
    let server_config = load_server_config(&cert_path, &key_path).unwrap();
    let (addr, server) = echo_server(server_config, 2).await;

    // By IP address (no SNI; the certificate lists 127.0.0.1) and by DNS name.
    for url in [
        format!("wss://127.0.0.1:{}/echo", addr.port()),
        format!("wss://localhost:{}/echo", addr.port()),
    ] {
        let (mut ws, negotiated) = tokio::time::timeout(LIMIT, connect_tls(&url, &ca.client()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(negotiated.protocol, None);
        assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
        let tls = ws.get_ref().tls_connection().expect("a TLS stream");
        assert_eq!(tls.alpn_protocol(), Some(&b"http/1.1"[..]));

        ws.send("héllo over TLS").await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::from("héllo over TLS")
        );
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        ws.send(big.clone()).await.unwrap();
        assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from(big));

        tokio::time::timeout(LIMIT, ws.close(CloseCode(4000), "done here"))
            .await
            .unwrap()
            .unwrap();
        // The server echoes the code (RFC 6455 §5.5.1); the reason is checked on its side.
        let echoed = ws.close_frame().expect("the server's close frame");
        assert_eq!(echoed.code, CloseCode(4000));
    }

    let seen = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    assert_eq!(seen.len(), 2);
    for result in seen {
        assert_eq!(
            result.unwrap(),
            Some((CloseCode(4000), "done here".to_owned()))
        );
    }
}

#[tokio::test]
async fn unknown_ca_is_rejected_and_the_error_says_so() {
    let trusted = Ca::new("trusted CA");
    let stranger = Ca::new("someone else's CA");
    let leaf = stranger.issue(&["localhost", "127.0.0.1"]);
    let config =
        server_config_from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    let (addr, server) = echo_server(config, 2).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());

    // A private CA the client does not trust.
    let err = connect_tls(&url, &trusted.client()).await.unwrap_err();
    match &err {
        Error::Tls(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {}
        other => panic!("expected an unknown-issuer error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        text.contains("not issued by a trusted certificate authority"),
        "{text}"
    );

    // The default configuration (public webpki roots) does not trust it either.
    let err = connect_tls(&url, &ClientConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer
            ))
        ),
        "{err:?}"
    );

    // The server sees the client's refusal as an error, not a panic or a hang.
    let seen = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
    for result in seen {
        assert!(
            matches!(result, Err(Error::Tls(_) | Error::Io(_))),
            "{result:?}"
        );
    }
}

#[tokio::test]
async fn wrong_host_name_is_rejected() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.issue(&["other.example"]);
    let config =
        server_config_from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    let (addr, _server) = echo_server(config, 2).await;

    for url in [
        format!("wss://localhost:{}/", addr.port()),
        format!("wss://127.0.0.1:{}/", addr.port()),
    ] {
        let err = connect_tls(&url, &ca.client()).await.unwrap_err();
        match &err {
            Error::Tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => {}
            other => panic!("{url}: expected a name mismatch, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("not valid for name"), "{text}");
        assert!(text.contains("does not name the host"), "{text}");
    }
}

#[tokio::test]
async fn connect_tls_also_speaks_plain_ws_and_connect_points_to_it() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::server::accept(tcp, &ServerConfig::default())
            .await
            .unwrap();
        while let Some(Ok(m)) = ws.recv().await {
            ws.send(m).await.unwrap();
        }
    });
    let (mut ws, _) = connect_tls(&format!("ws://{addr}/"), &ClientConfig::default())
        .await
        .unwrap();
    assert!(ws.get_ref().tls_connection().is_none());
    ws.send("plain").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from("plain"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    server.await.unwrap();

    let err = connect(&format!("wss://{addr}/"), &ClientConfig::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("connect_tls"), "{err}");
}

#[test]
fn server_config_errors_name_the_file_and_the_problem() {
    let ca = Ca::new("duplex test CA");
    let a = ca.issue(&["localhost"]);
    let b = ca.issue(&["localhost"]);
    let dir = TempDir::new();
    let a_cert = dir.write("a-cert.pem", &a.chain_pem);
    let a_key = dir.write("a-key.pem", &a.key_pem);
    let b_key = dir.write("b-key.pem", &b.key_pem);
    assert!(load_server_config(&a_cert, &a_key).is_ok());

    // A key that does not belong to the certificate.
    let err = load_server_config(&a_cert, &b_key).unwrap_err().to_string();
    assert!(
        err.contains("a-cert.pem") && err.contains("b-key.pem"),
        "{err}"
    );
    assert!(err.contains("KeyMismatch"), "{err}");
    assert!(err.contains("does not belong"), "{err}");

    // Certificate and key given the wrong way round.
    let err = load_server_config(&a_key, &a_cert).unwrap_err().to_string();
    assert!(err.contains("a-key.pem"), "{err}");
    assert!(err.contains("swapped"), "{err}");

    // A missing key file.
    let missing = dir.0.join("nope.pem");
    let err = load_server_config(&a_cert, &missing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read private key file"), "{err}");
    assert!(err.contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn accept_tls_with_refuses_an_origin_over_tls() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.issue(&["localhost"]);
    let acceptor = TlsAcceptor::from(
        server_config_from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            let result =
                duplex::tls::accept_tls_with(tcp, &acceptor, &ServerConfig::default(), |req| {
                    match req.origin() {
                        Some("https://good.example") => Ok(Vec::new()),
                        _ => Err(duplex::server::Rejection::new(403, "origin not allowed")),
                    }
                })
                .await;
            seen.push(match result {
                Ok(mut ws) => {
                    while let Some(Ok(m)) = ws.recv().await {
                        let _ = ws.send(m).await;
                    }
                    0
                }
                Err(Error::Rejected { status, .. }) => status,
                Err(e) => panic!("{e}"),
            });
        }
        seen
    });
    let url = format!("wss://localhost:{}/", addr.port());
    let refused = connect_tls(&url, &ca.client().origin("https://evil.example")).await;
    match refused {
        Err(Error::BadResponse(e)) => assert!(e.to_string().contains("403"), "{e}"),
        other => panic!("expected a 403, got {:?}", other.map(|_| ())),
    }
    let (mut ws, _) = connect_tls(&url, &ca.client().origin("https://good.example"))
        .await
        .unwrap();
    ws.send("hi").await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from("hi"));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert_eq!(
        tokio::time::timeout(LIMIT, server).await.unwrap().unwrap(),
        vec![403, 0]
    );
}

/// Issue 14: `duplex::connect` takes `ws://` and `wss://` and returns one type for both.
#[tokio::test]
async fn one_connect_for_ws_and_wss() {
    let ca = Ca::new("duplex test CA");
    let leaf = ca.issue(&["localhost"]);
    let server_config =
        server_config_from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes()).unwrap();
    let (wss_addr, wss_server) = echo_server(server_config, 1).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = listener.local_addr().unwrap();
    let ws_server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = duplex::server::accept(tcp, &ServerConfig::default())
            .await
            .unwrap();
        while let Some(Ok(m)) = ws.recv().await {
            ws.send(m).await.unwrap();
        }
    });

    let config = ca.client();
    let mut connections: Vec<duplex::WebSocket<MaybeTlsStream<tokio::net::TcpStream>>> = Vec::new();
    for url in [
        format!("ws://{ws_addr}/"),
        format!("wss://localhost:{}/", wss_addr.port()),
    ] {
        let (ws, _) = tokio::time::timeout(LIMIT, duplex::connect(&url, &config))
            .await
            .unwrap()
            .unwrap();
        connections.push(ws);
    }
    assert!(!connections[0].get_ref().is_tls());
    assert!(connections[1].get_ref().is_tls());
    for ws in &mut connections {
        ws.send("both schemes").await.unwrap();
        assert_eq!(
            ws.recv().await.unwrap().unwrap(),
            Message::from("both schemes")
        );
        ws.close(CloseCode::NORMAL, "").await.unwrap();
    }
    ws_server.await.unwrap();
    wss_server.await.unwrap();
}

/// Issue 14 item 9: a self-signed CA certificate served as the server's own (what
/// `openssl req -x509` makes) fails with `CaUsedAsEndEntity`, and the error says what to do.
#[tokio::test]
async fn self_signed_ca_as_server_certificate_gets_a_hint() {
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let server_config =
        server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let (addr, _server) = echo_server(server_config, 1).await;

    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = ClientConfig::new().tls(client_config_with_roots(roots).unwrap());
    let url = format!("wss://localhost:{}/", addr.port());
    let err = tokio::time::timeout(LIMIT, duplex::connect(&url, &config))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("CaUsedAsEndEntity"), "{text}");
    assert!(text.contains("leaf certificate"), "{text}");
    assert!(text.contains("client_config_with_roots"), "{text}");
}
