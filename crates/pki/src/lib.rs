//! Kaname's PKI: certificate authorities, certificates, keys and kubeconfig files, for every
//! part of kaname that makes certificates: the store's `--auto-tls`/`--peer-auto-tls`
//! (self-signed, as etcd's `transport.SelfCert`), the API server's `--cert-dir` (a CA, the
//! serving certificate, the admin client certificate and `admin.conf`), and next `kaname init`'s
//! kubeadm PKI (`/etc/kubernetes/pki`: a CA created or loaded from `ca.crt`/`ca.key`, leaf
//! certificates signed by it, kubeconfig files with the certificates embedded).
//!
//! Nothing here knows about the store or the API server: callers say what a certificate is
//! ([`CertSpec`]: CN, O, SANs, key usages, server/client EKU, validity), this crate makes it.
//! Certificates are made with rcgen on ring; keys are ECDSA P-256 (ring cannot generate RSA
//! or sign with P-521). An existing CA key may be ECDSA P-256/P-384, Ed25519 or RSA in
//! PKCS#8 (`PRIVATE KEY`) or PKCS#1 (`RSA PRIVATE KEY`, as kubeadm writes `ca.key`).
//!
//! Files: certificates are PEM written with the process's umask; private keys (and kubeconfig
//! files, which embed one) are created with mode 0600, as kubeadm and etcd write them.
//!
//! ```no_run
//! use kaname_pki::{Ca, CertSpec, ExtKeyUsage, KeyUsage, Kubeconfig};
//! # fn main() -> anyhow::Result<()> {
//! let pki = std::path::Path::new("/etc/kubernetes/pki");
//! let ca_spec = CertSpec::new("kubernetes")
//!     .key_usages([KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment, KeyUsage::KeyCertSign]);
//! let ca = Ca::load_or_generate(&pki.join("ca.crt"), &pki.join("ca.key"), &ca_spec)?;
//! let admin = ca.issue(
//!     &CertSpec::new("kubernetes-admin").organization("kubeadm:cluster-admins").ext_key_usages([ExtKeyUsage::ClientAuth]),
//! )?;
//! Kubeconfig::new("kubernetes", "https://10.0.0.1:6443", ca.cert_pem(), "kubernetes-admin", &admin)
//!     .write(std::path::Path::new("/etc/kubernetes/admin.conf"))?;
//! # Ok(()) }
//! ```

mod kubeconfig;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub use kubeconfig::Kubeconfig;

/// What a certificate is for (the X.509 KeyUsage extension). A certificate without any has no
/// KeyUsage extension at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyUsage {
    DigitalSignature,
    KeyEncipherment,
    /// Signs certificates: a CA's.
    KeyCertSign,
    CrlSign,
}

/// Who may present a certificate (the X.509 ExtendedKeyUsage extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtKeyUsage {
    /// A TLS server: the API server's serving certificate, etcd's server and peer certificates.
    ServerAuth,
    /// A TLS client: kubeconfig users, the API server to etcd, etcd peers dialing each other.
    ClientAuth,
}

/// How long a certificate is valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Validity {
    /// From 1975-01-01 to 4096-01-01: rcgen's default, what the API server's `--cert-dir`
    /// certificates have carried so far.
    #[default]
    Forever,
    /// From now until the same date `n` years later, as etcd's `--self-signed-cert-validity`
    /// (Go's `AddDate(n, 0, 0)`).
    Years(u32),
    /// From now for this long, as kubeadm (a year, `24h × 365`, for leaves; ten for its CA).
    For(Duration),
}

/// What to put in a certificate. Built with [`CertSpec::new`] (or `Default`, for no CN) and
/// the setters below; everything not set is absent from the certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertSpec {
    /// Subject CN: the user name of a client certificate.
    pub common_name: Option<String>,
    /// Subject O: the group of a client certificate. rcgen 0.13 keeps one value per attribute
    /// type, so a certificate has at most one O (every certificate kubeadm makes has at most one).
    pub organization: Option<String>,
    /// Subject alternative names: each is an IP address when it parses as one, else a DNS name.
    pub hosts: Vec<String>,
    pub key_usages: Vec<KeyUsage>,
    pub ext_key_usages: Vec<ExtKeyUsage>,
    pub validity: Validity,
}

impl CertSpec {
    /// A certificate for `common_name`, nothing else set.
    pub fn new(common_name: impl Into<String>) -> CertSpec {
        CertSpec { common_name: Some(common_name.into()), ..CertSpec::default() }
    }

    pub fn organization(mut self, o: impl Into<String>) -> CertSpec {
        self.organization = Some(o.into());
        self
    }

    pub fn hosts<S: Into<String>>(mut self, hosts: impl IntoIterator<Item = S>) -> CertSpec {
        self.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    pub fn key_usages(mut self, usages: impl IntoIterator<Item = KeyUsage>) -> CertSpec {
        self.key_usages = usages.into_iter().collect();
        self
    }

    pub fn ext_key_usages(mut self, usages: impl IntoIterator<Item = ExtKeyUsage>) -> CertSpec {
        self.ext_key_usages = usages.into_iter().collect();
        self
    }

    pub fn validity(mut self, validity: Validity) -> CertSpec {
        self.validity = validity;
        self
    }

    fn params(&self) -> anyhow::Result<CertificateParams> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        if let Some(cn) = &self.common_name {
            p.distinguished_name.push(DnType::CommonName, cn.as_str());
        }
        if let Some(o) = &self.organization {
            p.distinguished_name.push(DnType::OrganizationName, o.as_str());
        }
        for h in &self.hosts {
            p.subject_alt_names.push(match h.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(h.clone().try_into().map_err(|e| anyhow!("host {h}: {e}"))?),
            });
        }
        p.key_usages = self
            .key_usages
            .iter()
            .map(|u| match u {
                KeyUsage::DigitalSignature => rcgen::KeyUsagePurpose::DigitalSignature,
                KeyUsage::KeyEncipherment => rcgen::KeyUsagePurpose::KeyEncipherment,
                KeyUsage::KeyCertSign => rcgen::KeyUsagePurpose::KeyCertSign,
                KeyUsage::CrlSign => rcgen::KeyUsagePurpose::CrlSign,
            })
            .collect();
        p.extended_key_usages = self
            .ext_key_usages
            .iter()
            .map(|u| match u {
                ExtKeyUsage::ServerAuth => rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                ExtKeyUsage::ClientAuth => rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            })
            .collect();
        let now = time::OffsetDateTime::now_utc();
        match self.validity {
            Validity::Forever => {}
            Validity::Years(n) => {
                p.not_before = now;
                p.not_after = now
                    .replace_year(now.year() + n as i32)
                    .unwrap_or_else(|_| now + time::Duration::days(365 * n as i64));
            }
            Validity::For(d) => {
                p.not_before = now;
                p.not_after = now + d;
            }
        }
        Ok(p)
    }
}

/// A certificate with its private key (a fresh ECDSA P-256 key).
pub struct Issued {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The key in PKCS#8 PEM (`PRIVATE KEY`).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        self.cert.der()
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.key.serialize_der()).into()
    }

    /// Writes the key (mode 0600), then the certificate.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
        write_private(key_path, self.key_pem().as_bytes())?;
        write_public(cert_path, self.cert_pem().as_bytes())
    }
}

/// A self-signed certificate, not a CA: what etcd's `--auto-tls` makes (whoever dials it does
/// not verify it).
pub fn self_signed(spec: &CertSpec) -> anyhow::Result<Issued> {
    let key = KeyPair::generate()?;
    let cert = spec.params()?.self_signed(&key)?;
    Ok(Issued { cert, key })
}

/// A certificate authority: its certificate (as written to or read from `ca.crt`) and its key.
pub struct Ca {
    /// What leaves are signed with: the CA's subject and key identifier. For a loaded CA this
    /// is the loaded certificate's fields re-signed, never written anywhere.
    issuer: rcgen::Certificate,
    key: KeyPair,
    cert_pem: String,
}

impl Ca {
    /// A new self-signed CA (basic constraints `CA:TRUE`, no path length limit) with a fresh
    /// ECDSA P-256 key. `spec` gives its subject, key usages and validity.
    pub fn generate(spec: &CertSpec) -> anyhow::Result<Ca> {
        let key = KeyPair::generate()?;
        let mut params = spec.params()?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = params.self_signed(&key)?;
        let cert_pem = issuer.pem();
        Ok(Ca { issuer, key, cert_pem })
    }

    /// An existing CA from its PEM certificate and key. The key must be the certificate's.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        let key = parse_key(key_pem)?;
        let cert: CertificateDer<'static> = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| anyhow!("no certificate found: {e}"))?;
        let spki = subject_public_key_info(&cert)?;
        if spki != key.public_key_der() {
            bail!("the private key does not match the CA certificate");
        }
        let params = CertificateParams::from_ca_cert_der(&cert).map_err(|e| anyhow!("parse CA certificate: {e}"))?;
        let issuer = params.self_signed(&key)?;
        Ok(Ca { issuer, key, cert_pem: cert_pem.to_string() })
    }

    /// An existing CA from its files (kubeadm's `ca.crt` and `ca.key`).
    pub fn load(cert_path: &Path, key_path: &Path) -> anyhow::Result<Ca> {
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
        Ca::from_pem(&read(cert_path)?, &read(key_path)?)
            .with_context(|| format!("CA {} and {}", cert_path.display(), key_path.display()))
    }

    /// The CA in `cert_path`/`key_path` if both exist (kubeadm's "using the existing ca"),
    /// else a new one from `spec`, written there.
    pub fn load_or_generate(cert_path: &Path, key_path: &Path, spec: &CertSpec) -> anyhow::Result<Ca> {
        if cert_path.exists() && key_path.exists() {
            return Ca::load(cert_path, key_path);
        }
        let ca = Ca::generate(spec)?;
        ca.write(cert_path, key_path)?;
        Ok(ca)
    }

    /// A certificate signed by this CA, with a fresh key.
    pub fn issue(&self, spec: &CertSpec) -> anyhow::Result<Issued> {
        let key = KeyPair::generate()?;
        let cert = spec.params()?.signed_by(&key, &self.issuer, &self.key)?;
        Ok(Issued { cert, key })
    }

    /// The CA certificate in PEM: what clients trust (`ca.crt`, a kubeconfig's
    /// `certificate-authority-data`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The key in PKCS#8 PEM (`PRIVATE KEY`).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// Writes the key (mode 0600), then the certificate.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
        write_private(key_path, self.key_pem().as_bytes())?;
        write_public(cert_path, self.cert_pem.as_bytes())
    }
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn subject_public_key_info(cert: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert).map_err(|e| anyhow!("parse CA certificate: {e}"))?;
    Ok(x509.tbs_certificate.subject_pki.raw.to_vec())
}

/// A private key in PEM: PKCS#8, or PKCS#1 RSA (wrapped into PKCS#8, which is what ring reads).
fn parse_key(pem: &str) -> anyhow::Result<KeyPair> {
    use rustls_pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| anyhow!("no private key found: {e}"))?;
    let pkcs8 = match der {
        PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
        PrivateKeyDer::Pkcs1(k) => pkcs1_to_pkcs8(k.secret_pkcs1_der()),
        PrivateKeyDer::Sec1(_) => bail!("EC PRIVATE KEY (SEC1) keys are not supported: convert to PKCS#8"),
        _ => bail!("unsupported private key format"),
    };
    KeyPair::try_from(pkcs8).map_err(|e| anyhow!("parse private key: {e}"))
}

/// PKCS#8 `PrivateKeyInfo { version 0, rsaEncryption, OCTET STRING pkcs1 }` around a PKCS#1 key.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    // SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
    const RSA_ALGORITHM: &[u8] =
        &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(RSA_ALGORITHM);
    body.extend(tlv(0x04, pkcs1));
    tlv(0x30, &body)
}

/// Writes a file only its owner may read (mode 0600 when created): keys and kubeconfigs.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("write {}", path.display()))?;
    f.write_all(data).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

fn write_public(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests;
