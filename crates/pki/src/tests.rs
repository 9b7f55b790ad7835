use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use base64::Engine as _;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::pki_types::{ServerName, UnixTime};
use x509_parser::prelude::{parse_x509_certificate, GeneralName, X509Certificate};

use super::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> Arc<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap()).unwrap();
    Arc::new(roots)
}

/// webpki's verdict on `leaf` as a server certificate for `name`, chained to `ca_pem`.
fn verify_server(ca_pem: &str, leaf: &CertificateDer<'_>, name: &str) -> Result<(), rustls::Error> {
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(ca_pem), provider()).build().unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    verifier.verify_server_cert(leaf, &[], &name, &[], UnixTime::now()).map(|_| ())
}

/// webpki's verdict on `leaf` as a client certificate chained to `ca_pem`.
fn verify_client(ca_pem: &str, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(ca_pem), provider()).build().unwrap();
    verifier.verify_client_cert(leaf, &[], UnixTime::now()).map(|_| ())
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    parse_x509_certificate(der).unwrap().1
}

fn cn(x: &X509Certificate<'_>) -> Vec<String> {
    x.subject().iter_common_name().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn orgs(x: &X509Certificate<'_>) -> Vec<String> {
    x.subject().iter_organization().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn sans(x: &X509Certificate<'_>) -> Vec<String> {
    let Some(ext) = x.subject_alternative_name().unwrap() else { return vec![] };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(ip) => match ip.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string(),
                _ => IpAddr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

fn ca_spec() -> CertSpec {
    CertSpec::new("kaname-ca").key_usages([KeyUsage::KeyCertSign, KeyUsage::CrlSign, KeyUsage::DigitalSignature])
}

fn server_spec() -> CertSpec {
    CertSpec::new("kube-apiserver")
        .hosts(["localhost", "kubernetes.default.svc", "127.0.0.1", "::1"])
        .key_usages([KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment])
        .ext_key_usages([ExtKeyUsage::ServerAuth])
}

#[test]
fn issued_leaves_chain_to_the_ca() {
    let ca = Ca::generate(&ca_spec()).unwrap();
    let server = ca.issue(&server_spec()).unwrap();
    for name in ["localhost", "kubernetes.default.svc", "127.0.0.1", "::1"] {
        verify_server(ca.cert_pem(), server.cert_der(), name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verify_server(ca.cert_pem(), server.cert_der(), "example.com").is_err(), "a name not in the SANs");
    assert!(verify_client(ca.cert_pem(), server.cert_der()).is_err(), "a server-only certificate is no client's");

    let admin = ca
        .issue(
            &CertSpec::new("kubernetes-admin").organization("system:masters").ext_key_usages([ExtKeyUsage::ClientAuth]),
        )
        .unwrap();
    verify_client(ca.cert_pem(), admin.cert_der()).unwrap();
    let other = Ca::generate(&ca_spec()).unwrap();
    assert!(verify_client(other.cert_pem(), admin.cert_der()).is_err(), "another CA's roots");
}

#[test]
fn certificates_carry_what_the_spec_says() {
    let ca = Ca::generate(&ca_spec()).unwrap();
    let x = parse(ca.issuer.der());
    assert_eq!(cn(&x), ["kaname-ca"]);
    assert!(x.basic_constraints().unwrap().unwrap().value.ca);
    let ku = x.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature() && !ku.key_encipherment());
    // Forever: rcgen's fixed dates.
    assert_eq!(x.validity().not_before.to_datetime().year(), 1975);
    assert_eq!(x.validity().not_after.to_datetime().year(), 4096);

    let server = ca.issue(&server_spec()).unwrap();
    let x = parse(server.cert_der());
    assert_eq!(cn(&x), ["kube-apiserver"]);
    assert!(orgs(&x).is_empty());
    assert_eq!(x.issuer().iter_common_name().next().unwrap().as_str().unwrap(), "kaname-ca");
    assert_eq!(sans(&x), ["localhost", "kubernetes.default.svc", "127.0.0.1", "::1"]);
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && !eku.client_auth);
    assert!(x.basic_constraints().unwrap().is_none_or(|b| !b.value.ca));

    let admin = ca
        .issue(
            &CertSpec::new("kubernetes-admin")
                .organization("system:masters")
                .ext_key_usages([ExtKeyUsage::ClientAuth])
                .validity(Validity::For(Duration::from_secs(365 * 24 * 3600))),
        )
        .unwrap();
    let x = parse(admin.cert_der());
    assert_eq!((cn(&x), orgs(&x)), (vec!["kubernetes-admin".into()], vec!["system:masters".into()]));
    assert!(x.key_usage().unwrap().is_none(), "no key usages asked for, no extension");
    let v = x.validity();
    assert_eq!((v.not_after.timestamp() - v.not_before.timestamp()) / 86400, 365);
    assert!((v.not_before.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 60);
}

#[test]
fn self_signed_is_etcds_auto_tls_certificate() {
    let spec = CertSpec { organization: Some("etcd".into()), ..CertSpec::default() }
        .hosts(["127.0.0.1", "localhost"])
        .key_usages([KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment])
        .ext_key_usages([ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth])
        .validity(Validity::Years(2));
    let cert = self_signed(&spec).unwrap();
    let x = parse(cert.cert_der());
    assert!(cn(&x).is_empty(), "etcd's SelfCert has no CN");
    assert_eq!(orgs(&x), ["etcd"]);
    assert_eq!(x.subject().to_string(), x.issuer().to_string());
    assert_eq!(sans(&x), ["127.0.0.1", "localhost"]);
    let eku = x.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let v = x.validity();
    let (from, to) = (v.not_before.to_datetime(), v.not_after.to_datetime());
    assert_eq!((to.year() - from.year(), to.month(), to.day()), (2, from.month(), from.day()));
    // The key is the certificate's and rustls takes both.
    let key = provider().key_provider.load_private_key(cert.key_der()).unwrap();
    rustls::sign::CertifiedKey::new(vec![cert.cert_der().clone()], key).keys_match().unwrap();
    assert!(cert.key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn bad_host_names_are_refused() {
    // A DNS name in a certificate is IA5 (ASCII): an IDN must come in its xn-- form.
    let e = self_signed(&CertSpec::new("x").hosts(["bücher.example"])).err().unwrap();
    assert!(e.to_string().starts_with("host bücher.example:"), "{e}");
}

#[test]
fn files_are_written_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate(&ca_spec()).unwrap();
    ca.write(&dir.path().join("ca.crt"), &dir.path().join("ca.key")).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    leaf.write(&dir.path().join("apiserver.crt"), &dir.path().join("apiserver.key")).unwrap();
    let mode = |n: &str| std::fs::metadata(dir.path().join(n)).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode("ca.key"), mode("apiserver.key")), (0o600, 0o600));
    assert_eq!(std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(), ca.cert_pem());
    assert_eq!(std::fs::read_to_string(dir.path().join("apiserver.crt")).unwrap(), leaf.cert_pem());
    assert_eq!(std::fs::read_to_string(dir.path().join("apiserver.key")).unwrap(), leaf.key_pem());
    let e = write_private(&dir.path().join("missing/x.key"), b"k").unwrap_err();
    assert_eq!(e.to_string(), format!("write {}", dir.path().join("missing/x.key").display()));
}

#[test]
fn a_loaded_ca_issues_certificates_that_chain_to_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    let made = Ca::load_or_generate(&crt, &key, &ca_spec()).unwrap();
    let loaded = Ca::load_or_generate(&crt, &key, &CertSpec::new("another")).unwrap();
    assert_eq!(loaded.cert_pem(), made.cert_pem(), "existing files are used, not replaced");
    assert_eq!(loaded.key_pem(), made.key_pem());
    let leaf = loaded.issue(&server_spec()).unwrap();
    verify_server(&std::fs::read_to_string(&crt).unwrap(), leaf.cert_der(), "localhost").unwrap();

    // A key that is not the certificate's is refused.
    let other = Ca::generate(&ca_spec()).unwrap();
    let e = Ca::from_pem(made.cert_pem(), &other.key_pem()).err().unwrap();
    assert_eq!(e.to_string(), "the private key does not match the CA certificate");
    let e = Ca::load(&dir.path().join("nope.crt"), &key).err().unwrap();
    assert_eq!(e.to_string(), format!("read {}", dir.path().join("nope.crt").display()));
}

#[test]
fn a_kubeadm_style_rsa_ca_loads_and_signs() {
    // An RSA CA with a PKCS#1 key (`RSA PRIVATE KEY`), as kubeadm writes ca.key; made with
    // `openssl genrsa -traditional` and `openssl req -x509`.
    let (crt, key) = (include_str!("testdata/rsa-ca.crt"), include_str!("testdata/rsa-ca.key"));
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let ca = Ca::from_pem(crt, key).unwrap();
    let leaf = ca.issue(&server_spec()).unwrap();
    verify_server(crt, leaf.cert_der(), "localhost").unwrap();
    let client = ca.issue(&CertSpec::new("kubelet").ext_key_usages([ExtKeyUsage::ClientAuth])).unwrap();
    verify_client(crt, client.cert_der()).unwrap();
}

#[test]
fn kubeconfig_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::generate(&ca_spec()).unwrap();
    let admin = ca
        .issue(
            &CertSpec::new("kubernetes-admin").organization("system:masters").ext_key_usages([ExtKeyUsage::ClientAuth]),
        )
        .unwrap();
    let kc = Kubeconfig::new("kaname", "https://127.0.0.1:6443", ca.cert_pem(), "kubernetes-admin", &admin);
    let path = dir.path().join("admin.conf");
    kc.write(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    let text = std::fs::read_to_string(&path).unwrap();
    let y: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let s = |v: &serde_norway::Value| v.as_str().unwrap().to_string();
    let unb64 = |v: &serde_norway::Value| base64::engine::general_purpose::STANDARD.decode(s(v)).unwrap();
    assert_eq!((s(&y["apiVersion"]), s(&y["kind"])), ("v1".into(), "Config".into()));
    let cluster = &y["clusters"][0];
    assert_eq!(s(&cluster["name"]), "kaname");
    assert_eq!(s(&cluster["cluster"]["server"]), "https://127.0.0.1:6443");
    let user = &y["users"][0];
    assert_eq!(s(&user["name"]), "kubernetes-admin");
    let context = &y["contexts"][0];
    assert_eq!(s(&context["name"]), "kubernetes-admin@kaname");
    assert_eq!(
        (s(&context["context"]["cluster"]), s(&context["context"]["user"])),
        ("kaname".into(), "kubernetes-admin".into())
    );
    assert_eq!(s(&y["current-context"]), "kubernetes-admin@kaname");

    let back = Kubeconfig {
        cluster_name: s(&cluster["name"]),
        server: s(&cluster["cluster"]["server"]),
        ca_pem: unb64(&cluster["cluster"]["certificate-authority-data"]),
        user_name: s(&user["name"]),
        client_cert_pem: unb64(&user["user"]["client-certificate-data"]),
        client_key_pem: unb64(&user["user"]["client-key-data"]),
    };
    assert_eq!(back, kc);
    // What came back still authenticates: the client certificate chains to the embedded CA.
    let ca_back = String::from_utf8(back.ca_pem).unwrap();
    use rustls_pki_types::pem::PemObject;
    verify_client(&ca_back, &CertificateDer::from_pem_slice(&back.client_cert_pem).unwrap()).unwrap();
}

#[test]
fn kubeconfig_text_is_what_the_api_server_has_always_written() {
    let kc = Kubeconfig {
        cluster_name: "kaname".into(),
        server: "https://127.0.0.1:6443".into(),
        ca_pem: b"ca".to_vec(),
        user_name: "kubernetes-admin".into(),
        client_cert_pem: b"cert".to_vec(),
        client_key_pem: b"key".to_vec(),
    };
    assert_eq!(
        kc.to_yaml(),
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kaname\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: Y2E=\nusers:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: Y2VydA==\n    client-key-data: a2V5\ncontexts:\n- name: kubernetes-admin@kaname\n  context:\n    cluster: kaname\n    user: kubernetes-admin\ncurrent-context: kubernetes-admin@kaname\npreferences: {}\n"
    );
}
