//! TLS on client and peer URLs, with rustls: etcd's `--cert-file`, `--key-file`,
//! `--trusted-ca-file`, `--client-cert-auth`, their `--peer-*` twins, and `--auto-tls` /
//! `--peer-auto-tls` (self-signed certificates generated at start, as etcd's `SelfCert`).
//!
//! What lives here: the checks etcd makes at start (an `https://` URL needs a certificate),
//! building rustls configs from the PEM files, generating the self-signed certificates, and a
//! TLS [`TlsListener`] for the client and peer listeners. The flags' values are
//! [`crate::config::TlsInfo`]. PEM loading and the connector peers dial `https://` peer URLs
//! with are in `kaname-tls`, shared with the clients. `run.rs` and `raft/network.rs` only pick
//! between the plain path (unchanged, no extra copies) and this one per URL scheme.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::config::{EtcdConfig, TlsInfo};
use kaname_tls::{load_certs, load_key, load_roots, provider, SkipServerVerification};

/// A client that opens TCP but never finishes the handshake must not hold a slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS as a member runs it, built once at start.
#[derive(Clone, Default)]
pub struct MemberTls {
    /// For `https://` client (and metrics) listeners.
    pub client_server: Option<Arc<ServerConfig>>,
    /// For `https://` peer listeners.
    pub peer_server: Option<Arc<ServerConfig>>,
    /// For dialing `https://` peer URLs.
    pub peer_client: Option<Arc<ClientConfig>>,
}

fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// The `host:port` of a URL, as etcd prints it in its errors.
fn host_port(url: &str) -> String {
    url.split_once("://").map(|(_, rest)| rest.trim_end_matches('/')).unwrap_or(url).to_string()
}

/// The checks etcd makes before it touches anything: an `https://` URL needs a certificate
/// (given, or coming from auto TLS). Messages are etcd 3.4's. Pure, so it runs before the
/// data directory is created.
pub fn check(cfg: &EtcdConfig) -> anyhow::Result<()> {
    let peer_has_cert = !cfg.peer_tls.is_empty() || cfg.peer_auto_tls;
    if let Some(u) = cfg.listen_peer_urls.iter().find(|u| is_https(u)) {
        if !peer_has_cert {
            bail!("cannot listen on TLS for {}: KeyFile and CertFile are not presented", host_port(u));
        }
    }
    let client_has_cert = !cfg.client_tls.is_empty() || cfg.client_auto_tls;
    if let Some(u) = cfg.listen_client_urls.iter().chain(&cfg.listen_metrics_urls).find(|u| is_https(u)) {
        if !client_has_cert {
            bail!("TLS key/cert (--cert-file, --key-file) must be provided for client url {u} with HTTPS scheme");
        }
    }
    for (side, info) in [("", &cfg.client_tls), ("--peer-", &cfg.peer_tls)] {
        if info.cert_file.is_some() != info.key_file.is_some() {
            bail!(
                "{side}cert-file and {side}key-file must be given together",
                side = if side.is_empty() { "--" } else { side }
            );
        }
    }
    Ok(())
}

/// Whether [`setup`] generates certificates under the data dir (auto TLS without given ones).
pub fn writes_data_dir(cfg: &EtcdConfig) -> bool {
    (cfg.client_auto_tls && cfg.client_tls.is_empty()) || (cfg.peer_auto_tls && cfg.peer_tls.is_empty())
}

/// Generates auto-TLS certificates where asked (under the data dir, as etcd) and loads every
/// certificate an `https://` URL needs. Runs after the data directory exists.
pub fn setup(cfg: &EtcdConfig) -> anyhow::Result<MemberTls> {
    let validity = cfg.self_signed_cert_validity;
    let peer = resolve_auto(&cfg.peer_tls, cfg.peer_auto_tls, "peer", &cfg.data_dir, &cfg.listen_peer_urls, validity)?;
    let client =
        resolve_auto(&cfg.client_tls, cfg.client_auto_tls, "client", &cfg.data_dir, &cfg.listen_client_urls, validity)?;
    let mut tls = MemberTls::default();
    if cfg.listen_client_urls.iter().chain(&cfg.listen_metrics_urls).any(|u| is_https(u)) {
        tls.client_server = Some(server_config(&client).context("client TLS")?);
    }
    if cfg.listen_peer_urls.iter().any(|u| is_https(u)) {
        tls.peer_server = Some(server_config(&peer).context("peer TLS")?);
    }
    // Peers are dialed at the URLs in --initial-cluster (and, later, learnt ones).
    if !peer.is_empty() || cfg.initial_cluster.contains("https://") {
        tls.peer_client = Some(peer_client_config(&peer).context("peer TLS")?);
    }
    Ok(tls)
}

/// etcd's `ClientSelfCert`/`PeerSelfCert`: auto TLS only when no certificate was given.
fn resolve_auto(
    info: &TlsInfo,
    auto: bool,
    side: &str,
    data_dir: &Path,
    listen_urls: &[String],
    validity_years: u32,
) -> anyhow::Result<TlsInfo> {
    if !auto {
        return Ok(info.clone());
    }
    if !info.is_empty() {
        tracing::warn!("ignoring {side} auto TLS since certs given");
        return Ok(info.clone());
    }
    let hosts: Vec<String> = listen_urls
        .iter()
        .filter_map(|u| url::Url::parse(u).ok()?.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
        .collect();
    let mut generated = self_cert(&data_dir.join("fixtures").join(side), &hosts, validity_years)?;
    generated.client_cert_auth = info.client_cert_auth;
    generated.trusted_ca_file = info.trusted_ca_file.clone();
    Ok(generated)
}

/// etcd's `transport.SelfCert`: a self-signed certificate for `hosts` valid for
/// `validity_years`, written as `cert.pem`/`key.pem` under `dir` and reused on restart.
/// etcd uses ECDSA P-521; ring cannot sign with P-521, so this is P-256 (clients skip
/// verification of these certificates anyway).
pub fn self_cert(dir: &Path, hosts: &[String], validity_years: u32) -> anyhow::Result<TlsInfo> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    let info = TlsInfo {
        cert_file: Some(cert_path.clone()),
        key_file: Some(key_path.clone()),
        self_cert: true,
        ..TlsInfo::default()
    };
    if cert_path.exists() && key_path.exists() {
        return Ok(info);
    }
    // As etcd's: O=etcd and no CN; the hosts of the listen URLs as SANs; digital signature and
    // key encipherment; ServerAuth as etcd 3.4, ClientAuth too (as etcd 3.5) so a peer may
    // present it.
    let spec = kaname_pki::CertSpec { organization: Some("etcd".into()), ..Default::default() }
        .hosts(hosts)
        .key_usages([kaname_pki::KeyUsage::DigitalSignature, kaname_pki::KeyUsage::KeyEncipherment])
        .ext_key_usages([kaname_pki::ExtKeyUsage::ServerAuth, kaname_pki::ExtKeyUsage::ClientAuth])
        .validity(kaname_pki::Validity::Years(validity_years.max(1)));
    let cert = kaname_pki::self_signed(&spec)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot generate cert: mkdir {}", dir.display()))?;
    cert.write(&cert_path, &key_path)?;
    tracing::info!("created self-signed certificate {}", cert_path.display());
    Ok(info)
}

/// A listener's config. ALPN offers `h2` (grpc-go, so etcdctl, insists on it) and
/// `http/1.1` (curl on /health); hyper then detects the protocol from the first bytes.
fn server_config(info: &TlsInfo) -> anyhow::Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    // As etcd's `TLSInfo.ServerConfig`: a trusted CA file alone also requires client
    // certificates (etcd 3.4 refuses a client without one even without --client-cert-auth).
    let builder = if info.client_cert_auth || info.trusted_ca_file.is_some() {
        // Go verifies against the system roots when no CA is given; we do not trust those for
        // client certificates, so the CA must be named.
        let ca = info.trusted_ca_file.as_deref().ok_or_else(|| {
            anyhow!("client certificate authentication (--client-cert-auth / --peer-client-cert-auth) needs a trusted CA file")
        })?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider()).build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(ReloadingCert::new(info)?));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// How a member dials `https://` peer URLs: the peer CA verifies the other member (or, with
/// `--peer-auto-tls`, nothing is verified, as etcd), and the peer certificate is presented
/// when the other side asks for one (`--peer-client-cert-auth`).
fn peer_client_config(info: &TlsInfo) -> anyhow::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = if info.self_cert {
        builder.dangerous().with_custom_certificate_verifier(SkipServerVerification::new())
    } else {
        let roots = match info.trusted_ca_file.as_deref() {
            Some(ca) => load_roots(ca)?,
            None => RootCertStore::empty(),
        };
        builder.with_root_certificates(roots)
    };
    let mut cfg = if info.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_resolver(Arc::new(ReloadingCert::new(info)?))
    };
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// The certificate and key files, re-read when they change: etcd reads them at every
/// handshake, so certificates can be rotated without a restart. Here a handshake costs two
/// `stat`s; the files are parsed again only when a modification time or size changed, and a
/// half-written or broken pair keeps the previous one in use (with a warning).
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: std::sync::Mutex<(FileStamps, Arc<CertifiedKey>)>,
}

type FileStamps = Option<[(std::time::SystemTime, u64); 2]>;

impl ReloadingCert {
    fn new(info: &TlsInfo) -> anyhow::Result<Self> {
        let cert = info.cert_file.clone().ok_or_else(|| anyhow!("no certificate file given"))?;
        let key = info.key_file.clone().ok_or_else(|| anyhow!("no key file given"))?;
        let provider = provider();
        let stamps = stamps(&cert, &key);
        let loaded = load_certified(&cert, &key, &provider)?;
        Ok(ReloadingCert { cert, key, provider, current: std::sync::Mutex::new((stamps, loaded)) })
    }

    fn stamps(&self) -> FileStamps {
        stamps(&self.cert, &self.key)
    }

    fn load(&self) -> anyhow::Result<Arc<CertifiedKey>> {
        load_certified(&self.cert, &self.key, &self.provider)
    }

    fn get(&self) -> Arc<CertifiedKey> {
        let stamps = self.stamps();
        let mut cur = self.current.lock().expect("certificate cache");
        if stamps.is_some() && stamps != cur.0 {
            match self.load() {
                Ok(k) => {
                    tracing::info!("reloaded certificate {}", self.cert.display());
                    *cur = (stamps, k);
                }
                Err(e) => tracing::warn!("keeping the previous certificate: {e:#}"),
            }
        }
        cur.1.clone()
    }
}

fn stamps(cert: &Path, key: &Path) -> FileStamps {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| Ok((m.modified()?, m.len()))).ok();
    Some([stamp(cert)?, stamp(key)?])
}

fn load_certified(cert: &Path, key: &Path, provider: &CryptoProvider) -> anyhow::Result<Arc<CertifiedKey>> {
    let (certs, key_der) = (load_certs(cert)?, load_key(key)?);
    let certified = CertifiedKey::new(certs, provider.key_provider.load_private_key(key_der)?);
    certified.keys_match().map_err(|e| anyhow!("{} and {}: {e}", cert.display(), key.display()))?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl ResolvesClientCert for ReloadingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

type Handshake = Pin<Box<dyn Future<Output = (std::io::Result<TlsStream>, SocketAddr)> + Send>>;

/// A TLS stream accepted on one of our listeners.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// A TCP listener that hands out connections once their TLS handshake is done. Handshakes run
/// concurrently inside `accept` (so one slow client does not hold up others), and everything
/// lives in the serving task: aborting it drops the listener and the pending handshakes.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    pending: FuturesUnordered<Handshake>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        TlsListener { tcp, acceptor: TlsAcceptor::from(config), pending: FuturesUnordered::new() }
    }

    pub async fn accept_tls(&mut self) -> (TlsStream, SocketAddr) {
        loop {
            tokio::select! {
                r = self.tcp.accept() => match r {
                    Ok((tcp, addr)) => {
                        // As the plain listeners: small gRPC frames must not wait for Nagle.
                        let _ = tcp.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.pending.push(Box::pin(async move {
                            let r = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(r) => r,
                                Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out")),
                            };
                            (r, addr)
                        }));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some((r, addr)) = self.pending.next(), if !self.pending.is_empty() => match r {
                    Ok(tls) => return (tls, addr),
                    // etcd logs refused handshakes (e.g. no client certificate) the same way.
                    Err(e) => tracing::warn!("rejected connection from {addr}: TLS handshake failed: {e}"),
                },
            }
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Self::Io, Self::Addr)> + Send {
        self.accept_tls()
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(client: &str, peer: &str) -> EtcdConfig {
        EtcdConfig {
            listen_client_urls: vec![format!("{client}://127.0.0.1:2379")],
            listen_peer_urls: vec![format!("{peer}://127.0.0.1:2380")],
            ..EtcdConfig::default()
        }
    }

    #[test]
    fn https_needs_a_certificate_with_etcds_messages() {
        let e = check(&cfg("https", "http")).unwrap_err().to_string();
        assert_eq!(
            e,
            "TLS key/cert (--cert-file, --key-file) must be provided for client url https://127.0.0.1:2379 with HTTPS scheme"
        );
        let e = check(&cfg("http", "https")).unwrap_err().to_string();
        assert_eq!(e, "cannot listen on TLS for 127.0.0.1:2380: KeyFile and CertFile are not presented");
        check(&cfg("http", "http")).unwrap();
        check(&EtcdConfig { client_auto_tls: true, peer_auto_tls: true, ..cfg("https", "https") }).unwrap();
    }

    #[test]
    fn self_cert_is_written_once_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = dir.path().join("fixtures").join("client");
        let info = self_cert(&fixtures, &["127.0.0.1".into(), "localhost".into()], 1).unwrap();
        assert!(info.self_cert);
        let first = std::fs::read(fixtures.join("cert.pem")).unwrap();
        // A restart reuses the certificate instead of minting a new one (as etcd).
        self_cert(&fixtures, &["127.0.0.1".into()], 1).unwrap();
        assert_eq!(first, std::fs::read(fixtures.join("cert.pem")).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(fixtures.join("key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        server_config(&info).unwrap();
        peer_client_config(&info).unwrap();
    }

    #[test]
    fn certificates_are_reloaded_when_their_files_change() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_cert(&dir.path().join("a"), &["127.0.0.1".into()], 1).unwrap();
        let b = self_cert(&dir.path().join("b"), &["127.0.0.1".into()], 1).unwrap();
        let r = ReloadingCert::new(&a).unwrap();
        let first = r.get().cert.clone();
        assert_eq!(r.get().cert, first, "unchanged files are not re-read into another certificate");
        // Rotate: b's files replace a's (new contents, newer modification time).
        for (from, to) in [(&b.cert_file, &a.cert_file), (&b.key_file, &a.key_file)] {
            std::fs::copy(from.as_ref().unwrap(), to.as_ref().unwrap()).unwrap();
            let later = std::time::SystemTime::now() + Duration::from_secs(5);
            std::fs::File::options().write(true).open(to.as_ref().unwrap()).unwrap().set_modified(later).unwrap();
        }
        let rotated = r.get().cert.clone();
        assert_ne!(rotated, first);
        assert_eq!(rotated, load_certs(b.cert_file.as_ref().unwrap()).unwrap());
        // A broken file keeps the last good certificate.
        std::fs::write(a.cert_file.as_ref().unwrap(), "garbage").unwrap();
        assert_eq!(r.get().cert, rotated);
    }

    #[test]
    fn missing_files_are_reported_as_go_does() {
        let info = TlsInfo {
            cert_file: Some("/nonexistent/cert.pem".into()),
            key_file: Some("/nonexistent/key.pem".into()),
            ..TlsInfo::default()
        };
        let e = server_config(&info).unwrap_err().to_string();
        assert_eq!(e, "open /nonexistent/cert.pem: no such file or directory");
    }
}
