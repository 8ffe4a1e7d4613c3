//! The client through REAL proxies started by each test on free loopback ports: `tinyproxy`
//! (HTTP `CONNECT` with Basic auth) and `microsocks` (SOCKS5 with user/password), both from
//! Debian apt (tests/services/install.sh), run by duplex-testkit. The targets are this crate's
//! own ws:// and wss:// echo servers. Every success is also checked in the proxy's OWN log,
//! so a client that silently connected directly would fail.

use duplex::client::{connect, connect_tls, ClientConfig};
use duplex::proxy::{Proxy, ProxyConfig, SocksReply};
use duplex::server::{accept, ServerConfig};
use duplex::tls::rustls::RootCertStore;
use duplex::tls::{client_config_with_roots, server_config_from_pem, TlsAcceptor};
use duplex::{Error, MaybeTlsStream, Message, WebSocket};
use duplex_testkit::{Microsocks, Tinyproxy};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

const LIMIT: Duration = Duration::from_secs(15);
const USER: &str = "duplex";
const PASSWORD: &str = "s3cret-pw";

/// Accepts on 127.0.0.1:P and, when it can be bound, [::1]:P too (so `localhost` reaches the
/// server whichever address it resolves to first), and hands each TCP stream to `serve`.
async fn listen<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = v4.local_addr().unwrap().port();
    let mut listeners = vec![v4];
    if let Ok(v6) = TcpListener::bind(("::1", port)).await {
        listeners.push(v6);
    }
    for listener in listeners {
        let serve = serve.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve.clone()(tcp));
            }
        });
    }
    port
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) {
    while let Some(Ok(message)) = ws.recv().await {
        if ws.send(message).await.is_err() {
            break;
        }
    }
}

/// A ws:// echo server.
async fn ws_echo() -> u16 {
    listen(|tcp| async move {
        if let Ok(ws) = accept(tcp, &ServerConfig::default()).await {
            echo(ws).await;
        }
    })
    .await
}

/// A wss:// echo server with a certificate for `localhost` only, issued by a fresh CA.
/// Returns its port, a client configuration trusting the CA, and the SNI of each TLS
/// connection it accepted.
async fn wss_echo() -> (u16, ClientConfig, Arc<Mutex<Vec<Option<String>>>>) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "duplex proxy test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca)
        .unwrap();
    let chain = format!("{}{}", leaf.pem(), ca.pem());
    let server_tls =
        server_config_from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = ClientConfig::new().tls(client_config_with_roots(roots).unwrap());

    let acceptor = TlsAcceptor::from(server_tls);
    let sni = Arc::new(Mutex::new(Vec::new()));
    let seen = sni.clone();
    let port = listen(move |tcp| {
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let name = tls.get_ref().1.server_name().map(str::to_owned);
            seen.lock().unwrap().push(name);
            if let Ok(ws) = accept(tls, &ServerConfig::default()).await {
                echo(ws).await;
            }
        }
    })
    .await;
    (port, client, sni)
}

/// One text and one binary message there and back, then a clean close.
async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocket<S>, label: &str) {
    let text = format!("hello through {label}");
    ws.send(text.as_str()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from(text));
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(bytes.clone()).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::from(bytes));
    ws.close(duplex::CloseCode::NORMAL, "bye").await.unwrap();
}

fn with_proxy(config: ClientConfig, url: &str) -> ClientConfig {
    config.proxy(Proxy::parse(url).unwrap())
}

async fn connect_ws(
    url: &str,
    config: &ClientConfig,
) -> duplex::Result<WebSocket<tokio::net::TcpStream>> {
    tokio::time::timeout(LIMIT, connect(url, config))
        .await
        .expect("connect did not finish in time")
        .map(|(ws, _)| ws)
}

async fn connect_wss(
    url: &str,
    config: &ClientConfig,
) -> duplex::Result<WebSocket<MaybeTlsStream<tokio::net::TcpStream>>> {
    tokio::time::timeout(LIMIT, connect_tls(url, config))
        .await
        .expect("connect_tls did not finish in time")
        .map(|(ws, _)| ws)
}

#[tokio::test]
async fn ws_through_tinyproxy_with_basic_auth() {
    let port = ws_echo().await;
    let proxy = Tinyproxy::start(USER, PASSWORD, &[port]);
    let config = with_proxy(ClientConfig::new(), &proxy.url(USER, PASSWORD));

    let mut ws = connect_ws(&format!("ws://127.0.0.1:{port}/chat?room=1"), &config)
        .await
        .unwrap();
    round_trip(&mut ws, "tinyproxy").await;

    let log = proxy.wait_for_log(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1"));
    assert!(
        log.contains("Established connection to host \"127.0.0.1\""),
        "{log}"
    );
}

#[tokio::test]
async fn wrong_or_missing_proxy_credentials_are_proxy_auth_required() {
    let port = ws_echo().await;
    let proxy = Tinyproxy::start(USER, PASSWORD, &[port]);
    let url = format!("ws://127.0.0.1:{port}/");

    // Wrong password: tinyproxy 1.11 answers a CONNECT with bad credentials with 401.
    let config = with_proxy(ClientConfig::new(), &proxy.url(USER, "wrong"));
    let err = connect_ws(&url, &config).await.unwrap_err();
    match &err {
        Error::ProxyAuthRequired {
            status: 401 | 407,
            credentials_sent: true,
        } => {}
        other => panic!("expected ProxyAuthRequired with credentials sent, got {other:?}"),
    }
    assert!(err.to_string().contains("check them"), "{err}");

    // No credentials at all: 407.
    let bare = format!("http://127.0.0.1:{}", proxy.port());
    let err = connect_ws(&url, &with_proxy(ClientConfig::new(), &bare))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ProxyAuthRequired {
                status: 407,
                credentials_sent: false
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("http://user:password@"), "{err}");

    // The proxy saw both requests and opened no tunnel.
    let log = proxy.wait_for_log(&format!("CONNECT 127.0.0.1:{port}"));
    assert_eq!(
        log.matches(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1"))
            .count(),
        2,
        "{log}"
    );
    assert!(!log.contains("Established connection"), "{log}");
}

#[tokio::test]
async fn a_proxy_refusing_the_target_port_is_proxy_refused_403() {
    let port = ws_echo().await;
    // Only port 443 may be tunnelled to: the echo server's port is refused.
    let proxy = Tinyproxy::start(USER, PASSWORD, &[443]);
    let config = with_proxy(ClientConfig::new(), &proxy.url(USER, PASSWORD));
    let err = connect_ws(&format!("ws://127.0.0.1:{port}/"), &config)
        .await
        .unwrap_err();
    match &err {
        Error::ProxyRefused {
            status: 403,
            reason,
        } => {
            assert_eq!(reason, "Access violation")
        }
        other => panic!("expected ProxyRefused 403, got {other:?}"),
    }
    proxy.wait_for_log(&format!("Refused CONNECT method on port {port}"));
}

#[tokio::test]
async fn wss_through_tinyproxy_runs_tls_to_the_target_inside_the_tunnel() {
    let (port, config, sni) = wss_echo().await;
    let proxy = Tinyproxy::start(USER, PASSWORD, &[port]);
    let config = with_proxy(config, &proxy.url(USER, PASSWORD));

    // The certificate is valid for `localhost` only, not for the proxy's 127.0.0.1.
    let mut ws = connect_wss(&format!("wss://localhost:{port}/secure"), &config)
        .await
        .unwrap();
    assert!(matches!(ws.get_ref(), MaybeTlsStream::Tls(_)));
    round_trip(&mut ws, "tinyproxy over TLS").await;

    assert_eq!(*sni.lock().unwrap(), [Some("localhost".to_owned())]);
    proxy.wait_for_log(&format!("CONNECT localhost:{port} HTTP/1.1"));
}

#[tokio::test]
async fn ws_and_wss_through_microsocks_with_local_dns() {
    let ws_port = ws_echo().await;
    let (wss_port, tls_config, sni) = wss_echo().await;
    let proxy = Microsocks::start(USER, PASSWORD);
    let url = proxy.url("socks5", USER, PASSWORD);

    let mut ws = connect_ws(
        &format!("ws://localhost:{ws_port}/"),
        &with_proxy(ClientConfig::new(), &url),
    )
    .await
    .unwrap();
    round_trip(&mut ws, "socks5").await;
    let mut wss = connect_wss(
        &format!("wss://localhost:{wss_port}/"),
        &with_proxy(tls_config, &url),
    )
    .await
    .unwrap();
    round_trip(&mut wss, "socks5 over TLS").await;
    assert_eq!(*sni.lock().unwrap(), [Some("localhost".to_owned())]);

    // socks5:// resolves `localhost` here: the proxy was given an address, not the name.
    let log = proxy.wait_for_log(&format!(":{wss_port}"));
    assert!(log.contains(&format!(":{ws_port}")), "{log}");
    for line in log.lines().filter(|l| l.contains("connected to")) {
        assert!(!line.contains("localhost"), "{log}");
    }
    assert_eq!(log.matches("connected to").count(), 2, "{log}");
}

#[tokio::test]
async fn ws_and_wss_through_microsocks_with_remote_dns() {
    let ws_port = ws_echo().await;
    let (wss_port, tls_config, sni) = wss_echo().await;
    let proxy = Microsocks::start(USER, PASSWORD);
    let url = proxy.url("socks5h", USER, PASSWORD);

    let mut ws = connect_ws(
        &format!("ws://localhost:{ws_port}/"),
        &with_proxy(ClientConfig::new(), &url),
    )
    .await
    .unwrap();
    round_trip(&mut ws, "socks5h").await;
    let mut wss = connect_wss(
        &format!("wss://localhost:{wss_port}/"),
        &with_proxy(tls_config, &url),
    )
    .await
    .unwrap();
    round_trip(&mut wss, "socks5h over TLS").await;
    assert_eq!(*sni.lock().unwrap(), [Some("localhost".to_owned())]);

    // socks5h:// hands the name to the proxy, which resolves it.
    let log = proxy.wait_for_log(&format!("connected to localhost:{wss_port}"));
    assert!(
        log.contains(&format!("connected to localhost:{ws_port}")),
        "{log}"
    );
}

#[tokio::test]
async fn socks_errors_from_microsocks_are_precise() {
    let port = ws_echo().await;
    let proxy = Microsocks::start(USER, PASSWORD);
    let url = format!("ws://127.0.0.1:{port}/");

    // Wrong password (RFC 1929 status 1).
    let config = with_proxy(ClientConfig::new(), &proxy.url("socks5", USER, "wrong"));
    let err = connect_ws(&url, &config).await.unwrap_err();
    assert!(matches!(err, Error::SocksAuthFailed), "{err:?}");
    assert!(err.to_string().contains("user name and password"), "{err}");

    // No credentials: the proxy accepts none of the methods offered.
    let bare = format!("socks5://127.0.0.1:{}", proxy.port());
    let err = connect_ws(&url, &with_proxy(ClientConfig::new(), &bare))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SocksNoAcceptableAuth {
                credentials_sent: false
            }
        ),
        "{err:?}"
    );

    // Nothing listens on the target port: reply 5.
    let closed = duplex_testkit::free_port();
    let config = with_proxy(ClientConfig::new(), &proxy.url("socks5", USER, PASSWORD));
    let err = connect_ws(&format!("ws://127.0.0.1:{closed}/"), &config)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SocksRefused {
                reply: SocksReply::ConnectionRefused
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("connection refused"), "{err}");

    // None of them reached the echo server through the proxy.
    assert!(
        !proxy.log_text().contains("connected to"),
        "{}",
        proxy.log_text()
    );
}

#[tokio::test]
async fn env_rules_pick_the_real_proxy_and_no_proxy_goes_direct() {
    let port = ws_echo().await;
    let proxy = Tinyproxy::start(USER, PASSWORD, &[port]);
    let proxy_url = proxy.url(USER, PASSWORD);
    let url = format!("ws://127.0.0.1:{port}/");
    // The variables as a lookup function, so the test does not change the process
    // environment other tests run in.
    let vars = |no_proxy: String| {
        let proxy_url = proxy_url.clone();
        move |name: &str| match name {
            "http_proxy" => Some(proxy_url.clone()),
            "NO_PROXY" => Some(no_proxy.clone()),
            _ => None,
        }
    };

    let chosen = Proxy::from_vars_for(&url, vars("example.com".into())).unwrap();
    let config = ClientConfig {
        proxy: chosen.map_or(ProxyConfig::Direct, ProxyConfig::Always),
        ..ClientConfig::new()
    };
    let mut ws = connect_ws(&url, &config).await.unwrap();
    round_trip(&mut ws, "http_proxy").await;
    proxy.wait_for_log(&format!("CONNECT 127.0.0.1:{port}"));

    // NO_PROXY with the target's address and port: direct, the proxy sees nothing new.
    let chosen = Proxy::from_vars_for(&url, vars(format!("localhost,127.0.0.1:{port}"))).unwrap();
    assert_eq!(chosen, None);
    let mut ws = connect_ws(&url, &ClientConfig::new()).await.unwrap();
    round_trip(&mut ws, "nothing").await;
    let log = proxy.log_text();
    assert_eq!(log.matches("CONNECT 127.0.0.1").count(), 1, "{log}");
}

#[tokio::test]
async fn the_handshake_timeout_covers_a_silent_proxy() {
    // A "proxy" that accepts and never answers, for each protocol.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    for scheme in ["http", "socks5", "socks5h"] {
        let config = with_proxy(
            ClientConfig::new().handshake_timeout(Duration::from_millis(300)),
            &format!("{scheme}://127.0.0.1:{proxy_port}"),
        );
        let started = std::time::Instant::now();
        let err = connect_ws("ws://localhost:9/", &config).await.unwrap_err();
        assert!(
            matches!(err, Error::HandshakeTimeout(d) if d == Duration::from_millis(300)),
            "{scheme}: {err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test]
async fn an_unreachable_proxy_is_named_without_its_password() {
    let closed = duplex_testkit::free_port();
    let config = with_proxy(
        ClientConfig::new(),
        &format!("http://{USER}:{PASSWORD}@127.0.0.1:{closed}"),
    );
    let err = connect_ws("ws://127.0.0.1:9/", &config).await.unwrap_err();
    assert!(matches!(err, Error::ProxyConnect { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("http://{USER}:***@127.0.0.1:{closed}")),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
}
