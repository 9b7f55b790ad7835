//! Certificates and TLS: the self-made PKI in `--cert-dir` (a CA, the serving certificate and
//! the admin client certificate, made by `kaname-pki`), the admin kubeconfig and the rustls
//! server configuration. Who a client certificate names is `auth::x509`'s business.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use kaname_pki::{Ca, CertSpec, ExtKeyUsage, KeyUsage, Kubeconfig};
use rustls::server::WebPkiClientVerifier;

/// Files of the generated PKI, all in `--cert-dir`.
pub struct Pki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
}

impl Pki {
    pub fn in_dir(dir: &Path) -> Pki {
        Pki {
            ca_cert: dir.join("ca.crt"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
        }
    }

    fn complete(&self) -> bool {
        [&self.ca_cert, &self.serving_cert, &self.serving_key, &self.admin_cert, &self.admin_key]
            .iter()
            .all(|p| p.exists())
    }

    /// Creates the CA, the serving certificate (for `hosts`: names and IPs) and the admin
    /// certificate (CN=kubernetes-admin, O=system:masters) unless all are already there, so a
    /// restarted server keeps its CA and existing kubeconfigs keep working.
    pub fn ensure(dir: &Path, hosts: &[String]) -> anyhow::Result<Pki> {
        let pki = Pki::in_dir(dir);
        if pki.complete() {
            return Ok(pki);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("create --cert-dir {}", dir.display()))?;
        let ca = Ca::generate(&CertSpec::new("kaname-ca").key_usages([
            KeyUsage::KeyCertSign,
            KeyUsage::CrlSign,
            KeyUsage::DigitalSignature,
        ]))?;
        let serving =
            ca.issue(&CertSpec::new("kube-apiserver").hosts(hosts).ext_key_usages([ExtKeyUsage::ServerAuth]))?;
        let admin = ca.issue(
            &CertSpec::new("kubernetes-admin").organization("system:masters").ext_key_usages([ExtKeyUsage::ClientAuth]),
        )?;
        ca.write(&pki.ca_cert, &dir.join("ca.key"))?;
        serving.write(&pki.serving_cert, &pki.serving_key)?;
        admin.write(&pki.admin_cert, &pki.admin_key)?;
        Ok(pki)
    }
}

/// The serving certificate's names: localhost, the in-cluster service names, the loopback
/// and advertise addresses and the first IP of the service range (the `kubernetes` service).
pub fn serving_hosts(advertise: Option<IpAddr>, bind: IpAddr, service_range: &str) -> Vec<String> {
    let mut hosts: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for ip in [advertise, Some(bind).filter(|b| !b.is_unspecified())].into_iter().flatten() {
        hosts.push(ip.to_string());
    }
    if let Some(ip) = first_service_ip(service_range) {
        hosts.push(ip.to_string());
    }
    hosts.dedup();
    hosts
}

/// The first usable address of an IPv4 CIDR (10.0.0.0/24 → 10.0.0.1).
pub fn first_service_ip(cidr: &str) -> Option<IpAddr> {
    let (net, _bits) = cidr.split(',').next()?.split_once('/')?;
    match net.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(IpAddr::V4((u32::from(v4) + 1).into())),
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6) + 1).into())),
    }
}

/// A kubeconfig for the admin user, with certificates embedded so the file stands alone.
pub fn write_kubeconfig(path: &Path, server: &str, pki: &Pki) -> anyhow::Result<()> {
    let read = |p: &Path| std::fs::read(p).with_context(|| p.display().to_string());
    Kubeconfig {
        cluster_name: "kaname".into(),
        server: server.into(),
        ca_pem: read(&pki.ca_cert)?,
        user_name: "kubernetes-admin".into(),
        client_cert_pem: read(&pki.admin_cert)?,
        client_key_pem: read(&pki.admin_key)?,
    }
    .write(path)
}

/// rustls for the secure port: h2 and http/1.1; a client certificate is asked for and, if
/// given, must chain to `--client-ca-file`; clients without one are let through as anonymous.
pub fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = kaname_tls::provider();
    let certs = kaname_tls::load_certs(cert)?;
    let key = kaname_tls::load_key(key)?;
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        Some(ca) => {
            let roots = kaname_tls::load_roots(ca)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_ip_and_hosts() {
        assert_eq!(first_service_ip("10.0.0.0/24"), Some("10.0.0.1".parse().unwrap()));
        let h = serving_hosts(Some("192.168.1.5".parse().unwrap()), "0.0.0.0".parse().unwrap(), "10.96.0.0/12");
        assert!(h.contains(&"10.96.0.1".to_string()) && h.contains(&"192.168.1.5".to_string()));
    }

    #[test]
    fn generated_admin_cert_is_a_master() {
        let dir = std::env::temp_dir().join(format!("kaname-pki-test-{}", std::process::id()));
        let pki = Pki::ensure(&dir, &["localhost".into()]).unwrap();
        let pem = std::fs::read(&pki.admin_cert).unwrap();
        let der: rustls_pki_types::CertificateDer = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        let u = crate::auth::x509::user_from_cert(&der).unwrap();
        assert_eq!(u.name, "kubernetes-admin");
        assert!(u.in_group(crate::auth::SYSTEM_MASTERS));
        assert!(server_config(&pki.serving_cert, &pki.serving_key, Some(&pki.ca_cert)).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
