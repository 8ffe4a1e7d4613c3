//! TLS for `wss://` clients and servers, on [rustls] with the *ring* crypto provider.
//!
//! # Crypto provider
//!
//! Every configuration made here is built with
//! [`builder_with_provider`](rustls::ClientConfig::builder_with_provider) and
//! [`crypto_provider`] (rustls' *ring* provider), so nothing depends on a process-wide
//! default provider being installed and rustls can never panic for lack of one. *ring*
//! was chosen over aws-lc-rs because it builds with only a C compiler (no cmake, no NASM,
//! no Go), builds faster, and offers every cipher suite and key type a WebSocket server
//! needs; configurations you build yourself may use any provider.
//!
//! # Client
//!
//! [`connect_tls`](crate::client::connect_tls) connects to `wss://` (and `ws://`) URLs. It
//! trusts [`ClientConfig::tls`](crate::client::ClientConfig::tls) when set, otherwise the
//! Mozilla roots shipped in `webpki-roots` ([`webpki_client_config`]); with the
//! `rustls-native-roots` feature, `native_client_config` trusts the operating system's
//! store instead. The server name (SNI and certificate check) is the URL's host, which may be
//! an IP address.
//!
//! ```no_run
//! # async fn demo() -> duplex::Result<()> {
//! use duplex::client::{connect_tls, ClientConfig};
//! let (mut ws, _) = connect_tls("wss://echo.example.com/", &ClientConfig::default()).await?;
//! ws.send("hello").await?;
//! # Ok(()) }
//! ```
//!
//! # Server
//!
//! ```no_run
//! # async fn demo() -> duplex::Result<()> {
//! use duplex::server::ServerConfig;
//! use duplex::tls::{accept_tls, load_server_config, TlsAcceptor};
//!
//! let acceptor = TlsAcceptor::from(load_server_config("cert.pem", "key.pem")?);
//! let config = ServerConfig::default();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:443").await?;
//! loop {
//!     let (tcp, _) = listener.accept().await?;
//!     let (acceptor, config) = (acceptor.clone(), config.clone());
//!     tokio::spawn(async move {
//!         if let Ok(mut ws) = accept_tls(tcp, &acceptor, &config).await {
//!             while let Some(Ok(message)) = ws.recv().await {
//!                 let _ = ws.send(message).await;
//!             }
//!         }
//!     });
//! }
//! # }
//! ```

use crate::error::{Error, Result};
use crate::server::{accept_with, Rejection, ServerConfig};
use crate::websocket::WebSocket;
use rustls::crypto::CryptoProvider;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncRead, AsyncWrite};

pub use rustls;
pub use tokio_rustls::client::TlsStream as ClientTlsStream;
pub use tokio_rustls::server::TlsStream as ServerTlsStream;
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The ALPN protocol id of HTTP/1.1, which the WebSocket handshake runs over. Every
/// configuration built here offers (client) or selects (server) exactly this protocol.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The crypto provider every configuration in this module is built with: rustls' *ring*
/// provider (see the [module docs](self) for why). Use it for configurations you build
/// yourself to get the same algorithms without installing a process-wide default.
///
/// ```
/// let provider = duplex::tls::crypto_provider();
/// let config = duplex::tls::rustls::ClientConfig::builder_with_provider(provider)
///     .with_safe_default_protocol_versions()?
///     .with_root_certificates(duplex::tls::rustls::RootCertStore::empty())
///     .with_no_client_auth();
/// # let _ = config;
/// # Ok::<(), duplex::tls::rustls::Error>(())
/// ```
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// A client configuration trusting exactly `roots`, offering ALPN `http/1.1`, on
/// [`crypto_provider`]. Use it for a private CA:
///
/// ```no_run
/// # fn demo(ca_pem: &[u8]) -> duplex::Result<()> {
/// use duplex::client::ClientConfig;
/// use duplex::tls::client_config_with_roots;
/// use duplex::tls::rustls::pki_types::{pem::PemObject, CertificateDer};
/// use duplex::tls::rustls::RootCertStore;
///
/// let mut roots = RootCertStore::empty();
/// roots.add_parsable_certificates(CertificateDer::pem_slice_iter(ca_pem).flatten());
/// let config = ClientConfig {
///     tls: Some(client_config_with_roots(roots)?),
///     ..ClientConfig::default()
/// };
/// # let _ = config; Ok(()) }
/// ```
pub fn client_config_with_roots(roots: RootCertStore) -> Result<Arc<rustls::ClientConfig>> {
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Build)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// The default client configuration: the Mozilla root CAs from `webpki-roots`, ALPN
/// `http/1.1`, [`crypto_provider`]. Built once and shared, so TLS sessions are resumed
/// across connections.
pub fn webpki_client_config() -> Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(config) = CONFIG.get() {
        return Ok(config.clone());
    }
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = client_config_with_roots(roots)?;
    Ok(CONFIG.get_or_init(|| config).clone())
}

/// A client configuration trusting the operating system's certificate store (loaded with
/// `rustls-native-certs`), ALPN `http/1.1`, [`crypto_provider`]. Certificates of the store
/// that cannot be parsed are skipped; an error is returned only when none is usable.
///
/// The store is read on every call: keep the result and put it in
/// [`ClientConfig::tls`](crate::client::ClientConfig::tls).
#[cfg(feature = "rustls-native-roots")]
pub fn native_client_config() -> Result<Arc<rustls::ClientConfig>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(TlsConfigError::NativeRoots {
            details: if errors.is_empty() {
                "the store is empty".into()
            } else {
                errors.join("; ")
            },
        }
        .into());
    }
    client_config_with_roots(roots)
}

/// Runs the TLS client handshake over `stream` (a TCP stream, a proxy tunnel...), with
/// `host` as the server name: SNI for a DNS name, and the name the certificate must be
/// valid for. `host` may be an IP address (then the certificate must list that address and
/// no SNI is sent).
///
/// Follow with [`client::handshake`](crate::client::handshake) to open the WebSocket.
/// If the server selects an ALPN protocol other than `http/1.1`, this fails.
///
/// Cancel-safety: dropping it drops the stream mid-TLS-handshake; nothing else is affected.
pub async fn tls_connect<S>(
    stream: S,
    host: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<ClientTlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host)
        .map_err(|e| Error::Url(format!("{host:?} is not a valid TLS server name: {e}")))?
        .to_owned();
    let tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(tls_io_error)?;
    match tls.get_ref().1.alpn_protocol() {
        None | Some(ALPN_HTTP_1_1) => Ok(tls),
        Some(other) => Err(Error::Handshake(format!(
            "the server selected ALPN protocol {:?}; a WebSocket handshake needs http/1.1",
            String::from_utf8_lossy(other)
        ))),
    }
}

/// Accepts a TLS connection on `stream`, then runs the WebSocket server handshake over it
/// (as [`server::accept`](crate::server::accept)).
///
/// Both handshakes together must finish within `config.handshake_timeout`. A TLS failure is
/// [`Error::Tls`] when the client says why with an alert (Chromium does, e.g. for a
/// certificate it does not trust); clients that just close the connection instead (Python's
/// `ssl`, Node) give [`Error::Io`] with `UnexpectedEof`.
///
/// Cancel-safety: as `accept`.
pub async fn accept_tls<S>(
    stream: S,
    acceptor: &TlsAcceptor,
    config: &ServerConfig,
) -> Result<WebSocket<ServerTlsStream<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    accept_tls_with(stream, acceptor, config, |_| Ok(Vec::new())).await
}

/// [`accept_tls`] with a callback that inspects the upgrade request (`Origin`, path, cookies)
/// and may refuse it with an HTTP status, as [`server::accept_with`](crate::server::accept_with).
///
/// Cancel-safety: as `accept`.
pub async fn accept_tls_with<S, F>(
    stream: S,
    acceptor: &TlsAcceptor,
    config: &ServerConfig,
    decide: F,
) -> Result<WebSocket<ServerTlsStream<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(
        &duplex_proto::handshake::Request,
    ) -> std::result::Result<Vec<(String, String)>, Rejection>,
{
    tokio::time::timeout(config.handshake_timeout, async {
        let tls = acceptor.accept(stream).await.map_err(tls_io_error)?;
        accept_with(tls, config, decide).await
    })
    .await
    .map_err(|_| Error::HandshakeTimeout(config.handshake_timeout))?
}

/// A server configuration from a PEM certificate chain (leaf first) and a PEM private key
/// (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY` or SEC1 `EC PRIVATE KEY`), with ALPN
/// `http/1.1` and no client authentication, on [`crypto_provider`].
///
/// Errors say which file is wrong and why: unreadable, no certificate, no key (or an
/// encrypted one), swapped arguments, or a key that does not match the certificate.
///
/// ```no_run
/// let acceptor = duplex::tls::TlsAcceptor::from(
///     duplex::tls::load_server_config("/etc/ws/fullchain.pem", "/etc/ws/key.pem")?,
/// );
/// # let _ = acceptor;
/// # Ok::<(), duplex::Error>(())
/// ```
pub fn load_server_config(
    cert_pem_path: impl AsRef<Path>,
    key_pem_path: impl AsRef<Path>,
) -> Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = (cert_pem_path.as_ref(), key_pem_path.as_ref());
    let read = |path: &Path, what: &'static str| {
        std::fs::read(path).map_err(|source| TlsConfigError::Read {
            what,
            file: path.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert_path, "certificate")?;
    let key_pem = read(key_path, "private key")?;
    server_config_from_named_pem(
        &cert_pem,
        &cert_path.display().to_string(),
        &key_pem,
        &key_path.display().to_string(),
    )
}

/// Like [`load_server_config`], from PEM text already in memory.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>> {
    server_config_from_named_pem(
        cert_chain_pem,
        "certificate PEM",
        key_pem,
        "private key PEM",
    )
}

fn server_config_from_named_pem(
    cert_pem: &[u8],
    cert_file: &str,
    key_pem: &[u8],
    key_file: &str,
) -> Result<Arc<rustls::ServerConfig>> {
    let certs = parse_certs(cert_pem, cert_file)?;
    let key = parse_key(key_pem, key_file)?;
    let mut config = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsConfigError::Build)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| TlsConfigError::Refused {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn parse_certs(pem: &[u8], file: &str) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsConfigError::Pem {
            file: file.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::NoCertificate {
            file: file.to_owned(),
            looks_like_key: contains(pem, b"PRIVATE KEY-----"),
        });
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], file: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    match PrivateKeyDer::from_pem_slice(pem) {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            Err(if contains(pem, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
                TlsConfigError::EncryptedKey {
                    file: file.to_owned(),
                }
            } else {
                TlsConfigError::NoPrivateKey {
                    file: file.to_owned(),
                    looks_like_cert: contains(pem, b"-----BEGIN CERTIFICATE-----"),
                }
            })
        }
        Err(source) => Err(TlsConfigError::Pem {
            file: file.to_owned(),
            source,
        }),
    }
}

/// Turns an I/O error from tokio-rustls into [`Error::Tls`] when rustls caused it.
fn tls_io_error(e: io::Error) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
        if let Some(inner) = e.into_inner() {
            return match inner.downcast::<rustls::Error>() {
                Ok(tls) => Error::Tls(*tls),
                Err(other) => Error::Io(io::Error::new(io::ErrorKind::InvalidData, other)),
            };
        }
        return Error::Io(io::Error::from(io::ErrorKind::InvalidData));
    }
    Error::Io(e)
}

/// What to add after a rustls error to tell the user what to do about it.
pub(crate) fn error_hint(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            " (the server's certificate was not issued by a trusted certificate authority; \
             to trust a private CA, put a config from `tls::client_config_with_roots` in \
             `ClientConfig::tls`)"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => {
            " (the server's certificate does not name the host in the URL; connect with a \
             host name the certificate lists)"
        }
        rustls::Error::InvalidCertificate(C::Other(other))
            if format!("{:?}", other.0).contains("CaUsedAsEndEntity") =>
        {
            " (the server presents a CA certificate (basicConstraints CA:TRUE) as its own, as \
             `openssl req -x509` makes by default; a server needs a leaf certificate: make a \
             CA, sign a leaf for the host with it (mkcert does both; with openssl, `req -x509` \
             for the CA, then `req -new` and `x509 -req -CA ... -extfile` with subjectAltName \
             and basicConstraints=CA:FALSE for the leaf), serve the leaf and trust the CA with \
             `tls::client_config_with_roots`; or trust the certificate differently, with your \
             own rustls `ServerCertVerifier`)"
        }
        _ => "",
    }
}

/// Why TLS certificates, keys or trust roots could not be used.
///
/// `file` fields name the file (or, for PEM given in memory, which argument) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {what} file {file}: {source}")]
    Read {
        /// `"certificate"` or `"private key"`.
        what: &'static str,
        /// The file.
        file: String,
        /// Why reading failed.
        source: io::Error,
    },
    /// The PEM text is malformed.
    #[error("{file}: malformed PEM: {source}")]
    Pem {
        /// The file.
        file: String,
        /// What the PEM parser found.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate file has no `CERTIFICATE` section.
    #[error(
        "{file}: no certificate found (expected a `-----BEGIN CERTIFICATE-----` section){}",
        if *looks_like_key { "; it holds a private key: are the certificate and key files swapped?" } else { "" }
    )]
    NoCertificate {
        /// The file.
        file: String,
        /// The file holds a private key instead.
        looks_like_key: bool,
    },
    /// The key file has no private key section rustls can use.
    #[error(
        "{file}: no private key found (expected `-----BEGIN PRIVATE KEY-----` (PKCS#8), \
         `-----BEGIN RSA PRIVATE KEY-----` (PKCS#1) or `-----BEGIN EC PRIVATE KEY-----` (SEC1)){}",
        if *looks_like_cert { "; it holds a certificate: are the certificate and key files swapped?" } else { "" }
    )]
    NoPrivateKey {
        /// The file.
        file: String,
        /// The file holds a certificate instead.
        looks_like_cert: bool,
    },
    /// The private key is encrypted with a passphrase.
    #[error(
        "{file}: the private key is encrypted (`BEGIN ENCRYPTED PRIVATE KEY`); store it \
         decrypted, e.g. `openssl pkey -in {file} -out key.pem`"
    )]
    EncryptedKey {
        /// The file.
        file: String,
    },
    /// rustls refused the certificate chain or key, e.g. the key does not belong to the
    /// certificate or its algorithm is not supported.
    #[error(
        "certificate {cert_file} with key {key_file} cannot be used: {source}{}",
        if matches!(source, rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) {
            " (the key does not belong to the first certificate: the chain must start with the \
             server's own certificate, and the key must be that certificate's)"
        } else {
            ""
        }
    )]
    Refused {
        /// The certificate file.
        cert_file: String,
        /// The key file.
        key_file: String,
        /// What rustls said.
        source: rustls::Error,
    },
    /// A configuration could not be built from the crypto provider.
    #[error("cannot build the TLS configuration: {0}")]
    Build(#[source] rustls::Error),
    /// The operating system's trust store has no usable certificate.
    #[cfg(feature = "rustls-native-roots")]
    #[error("no usable certificate in the system trust store: {details}")]
    NativeRoots {
        /// What went wrong while loading it.
        details: String,
    },
}

pub use crate::stream::MaybeTlsStream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_client_config_offers_http_1_1_and_is_shared() {
        let a = webpki_client_config().unwrap();
        let b = webpki_client_config().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn missing_files_are_named() {
        let err = load_server_config("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("certificate file /nonexistent/cert.pem"),
            "{text}"
        );
    }

    #[test]
    fn empty_or_swapped_pem_is_explained() {
        let key = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = server_config_from_pem(key, key).unwrap_err().to_string();
        assert!(err.contains("no certificate found"), "{err}");
        assert!(err.contains("swapped"), "{err}");
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = server_config_from_pem(cert, cert).unwrap_err().to_string();
        assert!(err.contains("no private key found"), "{err}");
        assert!(err.contains("swapped"), "{err}");
        let enc =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let err = server_config_from_pem(cert, enc).unwrap_err().to_string();
        assert!(err.contains("encrypted"), "{err}");
        let err = server_config_from_pem(b"", b"").unwrap_err().to_string();
        assert!(
            err.contains("certificate PEM: no certificate found"),
            "{err}"
        );
    }

    #[test]
    fn malformed_pem_is_reported() {
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = server_config_from_pem(bad, b"").unwrap_err().to_string();
        assert!(err.contains("malformed PEM"), "{err}");
    }

    #[test]
    fn tls_errors_inside_io_errors_become_typed() {
        let io = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        let err = tls_io_error(io);
        assert!(matches!(err, Error::Tls(_)));
        assert!(err.to_string().contains("trusted certificate authority"));
        let plain = tls_io_error(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(matches!(plain, Error::Io(_)));
    }
}
