//! The rustls pieces every part of Kaname that dials TLS needs, in one place: reading PEM
//! files with Go's wording of errors, the system trust store, a verifier that skips server
//! verification (`--insecure-skip-tls-verify`, auto-TLS peers), and a tonic connector.
//!
//! Why a crate of its own: the store dials its peers, `kaname etcdctl` and the API server dial
//! the store, and none of the clients may depend on the store. Dialing through our connector
//! rather than tonic's built-in TLS also keeps tonic's `tls-*` features out of the build: with
//! them compiled in, tonic refuses an `https://` URI that did not come with its own TLS config,
//! even when a connector does the TLS (feature unification once broke the store's peer TLS
//! that way).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{anyhow, bail};
use http::Uri;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;

pub use rustls;

/// Start of the message of a dial that failed in the TLS handshake; callers treat it like a
/// failed TCP connect (the request surely never reached the other side).
pub const HANDSHAKE_ERROR: &str = "tls handshake error";

/// Start of the message of a dial that failed to connect over TCP.
pub const TCP_CONNECT_ERROR: &str = "tcp connect error";

/// The crypto provider of every config we build (ring: no C++/cmake build as aws-lc needs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a file the way Go reports a missing one (`open PATH: ...`).
pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow!("open {}: {}", path.display(), io_text(&e)))
}

/// Go's wording of the common I/O errors, so messages read like etcd's.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

pub fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("tls: failed to find any PEM data in certificate input ({})", path.display());
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|_| anyhow!("tls: failed to find any PEM data in key input ({})", path.display()))
}

pub fn load_roots(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(path)? {
        roots.add(c).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// Where Go looks for the system's trust store on Linux (crypto/x509's `certFiles`); a
/// client given no CA verifies servers against it, as etcdctl does.
const SYSTEM_ROOTS: [&str; 3] =
    ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/ca-bundle.pem"];

/// The system's trusted CAs (empty when the machine has none installed).
pub fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    if let Some(path) = SYSTEM_ROOTS.iter().map(Path::new).find(|p| p.exists()) {
        if let Ok(certs) = load_certs(path) {
            // A bundle may hold certificates rustls cannot use; skip those, as Go does.
            roots.add_parsable_certificates(certs);
        }
    }
    roots
}

/// Accepts any server certificate (Go's `InsecureSkipVerify`), but still checks the
/// handshake signatures, so the session is bound to the key the server presented.
#[derive(Debug)]
pub struct SkipServerVerification(Arc<CryptoProvider>);

impl SkipServerVerification {
    pub fn new() -> Arc<Self> {
        Arc::new(SkipServerVerification(provider()))
    }
}

impl ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The URI to hand tonic for `url` when [`TlsConnector`] dials it: the plain scheme. Should
/// tonic's own TLS feature be compiled in (feature unification through any crate of the
/// workspace), tonic refuses an `https://` URI that came without its own TLS config, whatever
/// the connector; with `http://` it leaves the connection to the connector, which does TLS.
pub fn connector_uri(url: &str) -> String {
    match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    }
}

/// A certificate's subject as the servers use it for authentication: etcd maps the
/// CommonName to a user; Kubernetes maps it to the user and the Organizations to groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    /// The last CommonName attribute, as Go's `pkix.Name` keeps it.
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
}

/// The subject of a DER certificate; `None` if it does not parse.
pub fn subject(der: &[u8]) -> Option<Subject> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject();
    let text = |a: &x509_parser::x509::AttributeTypeAndValue| a.as_str().ok().map(str::to_string);
    Some(Subject {
        common_name: name.iter_common_name().filter_map(text).last(),
        organizations: name.iter_organization().filter_map(text).collect(),
    })
}

/// tonic connector for `https://` URLs: TCP (no delay), then TLS with the given config (which
/// must offer ALPN `h2`). Give tonic the URI from [`connector_uri`].
#[derive(Clone)]
pub struct TlsConnector {
    connector: tokio_rustls::TlsConnector,
}

impl TlsConnector {
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector { connector: tokio_rustls::TlsConnector::from(config) }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("URL has no host")?.trim_matches(['[', ']']).to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp =
                TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("{TCP_CONNECT_ERROR}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("{HANDSHAKE_ERROR}: {host}: {e}"))?;
            let tls =
                connector.connect(name, tcp).await.map_err(|e| format!("{HANDSHAKE_ERROR} with {host}:{port}: {e}"))?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_reads_the_subject_not_the_issuer() {
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(rcgen::DnType::CommonName, "the-ca");
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca.self_signed(&ca_key).unwrap();
        let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.distinguished_name = rcgen::DistinguishedName::new();
        leaf.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        leaf.distinguished_name.push(rcgen::DnType::OrganizationName, "system:masters");
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();
        let s = subject(leaf.der()).unwrap();
        assert_eq!(s.common_name.as_deref(), Some("alice"));
        assert_eq!(s.organizations, vec!["system:masters".to_string()]);
        assert_eq!(subject(b"not a certificate"), None);
    }

    #[test]
    fn connector_uri_hands_tonic_the_plain_scheme() {
        assert_eq!(connector_uri("https://127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(connector_uri("http://127.0.0.1:2379"), "http://127.0.0.1:2379");
    }
}
