//! The hub on the network: router, WebSocket transport, REST server, webhook sender, TLS listener.
//!
//! `duplex serve` (a Pusher Channels, protocol 7, compatible server) is this crate behind the
//! CLI's flags. The hub logic lives in `duplex-hub`; this crate binds it to sockets:
//!
//! - [`config`]: file → env → flags, validated;
//! - `router`: one port for `/app/{key}` (WebSocket), `/apps/{id}/...` (REST), `/metrics`,
//!   `/health`, `/ready` and the demo page;
//! - `conn`: the task of one WebSocket;
//! - `webhooks`: the HTTP client behind the hub's webhook dispatcher;
//! - [`proxy`]: behind load balancers, which address is the client's (`--trust-proxy`:
//!   `X-Forwarded-For` from trusted peers; `--proxy-protocol`: PROXY v1/v2 headers).
//!
//! The CLI only wires: it parses [`ServeArgs`], asks [`json_logs`] before logging starts, and
//! calls [`run`].
//!
//! **Shutdown.** On SIGTERM or SIGINT the server drains: `/ready` answers 503, new WebSocket
//! upgrades get 503, every connection is closed with 4200 ("reconnect now", so clients move to
//! another node), and the process exits once they are gone or after `--drain-timeout`. A second
//! signal exits at once.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
mod conn;
pub mod proxy;
mod router;
mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use duplex::server::ServerConfig;
use duplex_hub::broker::{Broker, MemoryBroker};
use duplex_hub::hub::Hub;
use duplex_hub::webhooks::{RetryPolicy, WebhookDispatcher};
use duplex_redis::{RedisBroker, RedisConfig};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::ServeArgs;

/// Shared by the router and the connection tasks.
pub(crate) struct State {
    hub: Hub,
    /// The WebSocket connection tasks.
    tracker: TaskTracker,
    ws_config: ServerConfig,
    pong_timeout: Duration,
    /// How long a closing connection may take to finish the handshake.
    close_grace: Duration,
    demo: bool,
    /// Which peers may name the client.
    trust: proxy::TrustProxy,
}

/// Whether `args` asks for JSON logs (read before logging starts).
pub fn json_logs(args: &ServeArgs) -> bool {
    args.log_format == config::LogFormat::Json
}

/// Runs `duplex serve` until a signal and the drain that follows.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = config::build(&args, &env)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(settings))
}

async fn serve(settings: config::Settings) -> anyhow::Result<()> {
    let cfg = settings.hub.clone();
    let (broker, node): (Arc<dyn Broker>, Option<String>) = match &cfg.redis_url {
        None => (Arc::new(MemoryBroker::new()), None),
        Some(url) => {
            let mut rc = RedisConfig::new(url.clone());
            rc.prefix = cfg.redis_prefix.clone();
            rc.node_timeout = Duration::from_secs(cfg.node_timeout);
            // The cluster holds vacated/member_removed webhooks itself, so a join on another
            // node cancels them; the local dispatcher then sends what it gets at once.
            rc.vacate_delay = cfg.webhook_vacate_delay();
            rc.ca_file = cfg.redis_ca.as_ref().map(std::path::PathBuf::from);
            let broker = RedisBroker::connect(rc).await?;
            let id = broker.node_id().to_owned();
            (Arc::new(broker), Some(id))
        }
    };
    let hub = Hub::new(cfg.clone(), broker)?;

    // The largest client frame the hub could accept, with room for the JSON envelope.
    let max_app_message = cfg
        .apps
        .iter()
        .map(|a| a.max_message_size)
        .max()
        .unwrap_or(0);
    let mut ws_config = ServerConfig::default();
    ws_config.protocol.max_message_size = max_app_message * 2 + 16 * 1024;
    ws_config.protocol.max_frame_size = ws_config.protocol.max_message_size;
    ws_config.protocol.close_timeout = Duration::from_secs(5);
    let close_grace = ws_config.protocol.close_timeout + Duration::from_secs(1);

    if let Some(rx) = hub.take_webhook_receiver() {
        if cfg.apps.iter().any(|a| !a.webhooks.is_empty()) {
            let dispatcher = WebhookDispatcher::new(
                cfg.apps.clone(),
                Arc::new(webhooks::HttpSender::new()?),
                RetryPolicy::default(),
                cfg.webhook_batch_size,
                hub.metrics().clone(),
            )
            .with_endpoint_queue(cfg.webhook_endpoint_queue)
            .with_vacate_delay(if cfg.redis_url.is_some() {
                Duration::ZERO
            } else {
                cfg.webhook_vacate_delay()
            });
            tokio::spawn(async move { dispatcher.run(rx).await });
        }
        // Without webhooks the receiver is dropped: the hub's queue then rejects events.
    }

    let tls = match &settings.tls {
        Some((cert, key)) => Some(tokio_rustls::TlsAcceptor::from(
            duplex::tls::load_server_config(cert, key).context("TLS")?,
        )),
        None => None,
    };

    let state = Arc::new(State {
        hub,
        tracker: TaskTracker::new(),
        ws_config,
        pong_timeout: Duration::from_secs(cfg.pong_timeout),
        close_grace,
        demo: settings.demo,
        trust: settings.trust.clone(),
    });
    let app = router::router(state.clone());

    let listener = TcpListener::bind((cfg.host.as_str(), cfg.port))
        .await
        .with_context(|| format!("binding {}:{}", cfg.host, cfg.port))?;
    let local = listener.local_addr()?;
    print_banner(&cfg, local, tls.is_some(), settings.demo, node.as_deref());

    let stop_accept = CancellationToken::new();
    let http_conns = TaskTracker::new();
    let accept = {
        let stop_accept = stop_accept.clone();
        let http_conns = http_conns.clone();
        let trust = Arc::new(settings.trust.clone());
        async move {
            loop {
                let (mut tcp, peer) = tokio::select! {
                    () = stop_accept.cancelled() => break,
                    r = listener.accept() => match r {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::warn!("accept: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                let app = app.clone();
                let tls = tls.clone();
                let stop = stop_accept.clone();
                let trust = trust.clone();
                http_conns.spawn(async move {
                    // Behind a balancer sending PROXY headers, the header comes first (before
                    // TLS too) and names the client.
                    let proxied = if trust.proxy_protocol {
                        match proxy::accept_header(&mut tcp, peer, &trust).await {
                            Ok(source) => source,
                            Err(e) => {
                                tracing::info!(%peer, "connection closed: {e}");
                                return;
                            }
                        }
                    } else {
                        None
                    };
                    let svc = WithPeer {
                        app,
                        peer: proxy::Peer { tcp: peer, proxied },
                    };
                    match tls {
                        Some(acceptor) => {
                            match tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(tcp),
                            )
                            .await
                            {
                                Ok(Ok(io)) => serve_http(TokioIo::new(io), svc, stop).await,
                                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake: {e}"),
                                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                            }
                        }
                        None => serve_http(TokioIo::new(tcp), svc, stop).await,
                    }
                });
            }
        }
    };
    let accept = tokio::spawn(accept);

    shutdown_signal().await;
    tracing::info!(
        connections = state.hub.local_connections(),
        "draining: closing connections with 4200"
    );
    // The hub refuses new connections with 4200 and closes the open ones with 4200.
    state.hub.drain();
    state.tracker.close();
    tokio::select! {
        () = state.tracker.wait() => {}
        () = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!("drain timeout: exiting with connections still open");
        }
        () = shutdown_signal() => tracing::warn!("second signal: exiting now"),
    }
    stop_accept.cancel();
    let _ = accept.await;
    http_conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), http_conns.wait()).await;
    tracing::info!("stopped");
    Ok(())
}

/// The router for one connection, with who the peer is added to every request's extensions.
#[derive(Clone)]
struct WithPeer {
    app: axum::Router,
    peer: proxy::Peer,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for WithPeer {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = axum::routing::future::RouteFuture<std::convert::Infallible>;

    fn call(&self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use tower::Service as _;
        req.extensions_mut().insert(self.peer);
        // What hyper-util's TowerToHyperService does: the router is always ready.
        self.app.clone().call(req)
    }
}

/// Serves HTTP/1.1 on one connection (upgrades included) until it ends or `stop`.
async fn serve_http<I>(io: TokioIo<I>, svc: WithPeer, stop: CancellationToken)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(io, svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("http connection: {e}");
            }
        }
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn print_banner(
    cfg: &duplex_hub::config::HubConfig,
    addr: std::net::SocketAddr,
    tls: bool,
    demo: bool,
    node: Option<&str>,
) {
    let (ws, http) = if tls {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    let port = addr.port();
    println!("duplex serve: listening on {addr}");
    for app in &cfg.apps {
        println!(
            "  app {:?}: key {:?}, client events {}",
            app.id,
            app.key,
            if app.enable_client_events {
                "on"
            } else {
                "off"
            }
        );
    }
    let app = &cfg.apps[0];
    println!(
        "  WebSocket: {ws}://{host}:{port}/app/{}?protocol=7   (pusher-js: key {:?}, wsHost {:?}, wsPort {port}, forceTLS {tls})",
        app.key, app.key, host
    );
    println!(
        "  HTTP API:  {http}://{host}:{port}/apps/{}/   (pusher SDK: appId {:?}, host {:?}, port {port}, useTLS {tls})",
        app.id, app.id, host
    );
    println!("  Ops:       {http}://{host}:{port}/metrics /health /ready");
    match (node, &cfg.redis_url) {
        (Some(node), Some(url)) => println!(
            "  Cluster:   node {node}, Redis {} (prefix {:?}, node timeout {} s)",
            duplex_redis::redact(url),
            cfg.redis_prefix,
            cfg.node_timeout
        ),
        _ => println!("  Cluster:   none (in-process broker; --redis URL to run several nodes)"),
    }
    if demo {
        println!(
            "  Demo chat: {http}://{host}:{port}/   (its /demo/auth signs any channel: demo only)"
        );
    }
    if app.secret == duplex_hub::config::App::default().secret {
        println!(
            "  Using the default credentials app-id/app-key/app-secret: change them in production."
        );
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
