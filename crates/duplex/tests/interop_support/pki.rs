//! A throw-away PKI for the wss:// interop tests: a CA made with rcgen for one test, a server
//! certificate it signs for `localhost` and `127.0.0.1`, and PEM files the peers read.

use duplex::tls::rustls::{self, RootCertStore};
use duplex::tls::{client_config_with_roots, server_config_from_pem, TlsAcceptor};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rcgen::{ExtendedKeyUsagePurpose, KeyUsagePurpose};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The names the server certificate is valid for (a DNS name and an IP address SAN).
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA and a server certificate it issued, in memory and as files in a temporary directory
/// (removed on drop, so keep it alive as long as a peer may read the files):
///
/// * `ca.pem`: the CA certificate, what clients are told to trust (`--tls CA_FILE`);
/// * `chain.pem`: the server's chain, leaf first (`--cert`, Chromium's `--trust-cert`);
/// * `key.pem`: the server's PKCS#8 key (`--key`).
pub struct TestPki {
    dir: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    chain_pem: String,
    key_pem: String,
}

impl TestPki {
    /// A fresh CA called `ca_name` and a server certificate for [`SERVER_NAMES`].
    pub fn new(ca_name: &str) -> TestPki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();

        let mut params = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "duplex interop server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &ca).unwrap();

        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "duplex-interop-pki-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let pki = TestPki {
            dir,
            ca_der: ca.der().clone(),
            chain_pem: format!("{}{}", leaf.pem(), ca.pem()),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(pki.ca_file(), ca.pem()).unwrap();
        std::fs::write(pki.cert_file(), &pki.chain_pem).unwrap();
        std::fs::write(pki.key_file(), &pki.key_pem).unwrap();
        pki
    }

    /// The CA certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The server's certificate chain, leaf first (PEM).
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("chain.pem")
    }

    /// The server's private key (PKCS#8 PEM).
    pub fn key_file(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Our server's TLS side, through the library's PEM loader.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            server_config_from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes()).unwrap(),
        )
    }

    /// Our client's TLS configuration, trusting this CA only.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        client_config_with_roots(roots).unwrap()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `path` as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.display().to_string()
}
