//! The HTTP client behind the hub's [`WebhookDispatcher`](duplex_hub::webhooks::WebhookDispatcher):
//! one POST per request, over a fresh HTTP/1.1 connection (plain TCP or rustls with the Mozilla
//! roots). It only ever contacts the URLs in the configuration; retries are the dispatcher's.

use std::time::Duration;

use bytes::Bytes;
use duplex_hub::webhooks::{WebhookRequest, WebhookSendError, WebhookSender};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Time allowed for connect + request + response head.
const TIMEOUT: Duration = Duration::from_secs(10);

/// POSTs webhooks with hyper.
pub struct HttpSender {
    tls: tokio_rustls::TlsConnector,
}

impl HttpSender {
    /// A sender trusting the Mozilla roots for `https://` URLs.
    pub fn new() -> anyhow::Result<Self> {
        Ok(HttpSender {
            tls: tokio_rustls::TlsConnector::from(duplex::tls::webpki_client_config()?),
        })
    }

    async fn post_inner(&self, req: &WebhookRequest) -> Result<u16, String> {
        let uri: http::Uri = req.url.parse().map_err(|e| format!("bad URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err("URL must be http:// or https://".into()),
        };
        let host = uri.host().ok_or("URL without host")?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        let connect_host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let tcp = TcpStream::connect((connect_host.as_str(), port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut builder = http::Request::post(path)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, "duplex-serve-webhooks");
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| format!("request: {e}"))?;
        if https {
            let name = rustls_pki_types::ServerName::try_from(connect_host)
                .map_err(|e| format!("server name: {e}"))?;
            let tls = self
                .tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            send(tls, request).await
        } else {
            send(tcp, request).await
        }
    }
}

async fn send<S>(io: S, request: http::Request<Full<Bytes>>) -> Result<u16, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let conn = tokio::spawn(conn);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"));
    conn.abort();
    Ok(response?.status().as_u16())
}

#[async_trait::async_trait]
impl WebhookSender for HttpSender {
    async fn post(&self, req: &WebhookRequest) -> Result<u16, WebhookSendError> {
        match tokio::time::timeout(TIMEOUT, self.post_inner(req)).await {
            Ok(r) => r.map_err(WebhookSendError),
            Err(_) => Err(WebhookSendError("timed out".into())),
        }
    }
}
