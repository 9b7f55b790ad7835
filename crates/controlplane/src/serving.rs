//! Secure serving of a component's own endpoints (`/healthz`, `/livez`, `/readyz`,
//! `/metrics`), as component-base's: HTTPS on `--bind-address:--secure-port`, with a
//! self-signed certificate made in memory at start when none is given (upstream's default:
//! clients check these endpoints with `-k` or a probe that skips verification).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use kaname_pki::{CertSpec, ExtKeyUsage, KeyUsage};

/// Binds `addr` now (so a taken port fails the start) and serves `router` over TLS until the
/// task is dropped.
pub async fn serve(addr: SocketAddr, component: &str, router: Router) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let host = if addr.ip().is_unspecified() { "localhost".to_string() } else { addr.ip().to_string() };
    let cert = kaname_pki::self_signed(
        &CertSpec::new(format!("{host}@{}", std::process::id()))
            .hosts(["localhost".to_string(), "127.0.0.1".to_string(), host])
            .key_usages([KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment])
            .ext_key_usages([ExtKeyUsage::ServerAuth]),
    )?;
    let provider = kaname_tls::provider();
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert_der().clone()], cert.key_der())?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "{component}: serving securely");
    Ok(tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut r = router.clone();
                    async move { tower_service::Service::call(&mut r, req).await }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
            });
        }
    }))
}

/// A health endpoint's answer, as component-base's healthz handler writes it: `ok`, or 500
/// with one line per check and `<path> check failed`; `?verbose` lists the checks either way.
pub fn health(path: &str, checks: &[(&str, Result<(), String>)], verbose: bool) -> (u16, String) {
    let failed = checks.iter().any(|(_, r)| r.is_err());
    if !failed && !verbose {
        return (200, "ok".into());
    }
    let mut body = String::from("[+]ping ok\n");
    for (name, r) in checks {
        match r {
            Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
            Err(_) => body.push_str(&format!("[-]{name} failed: reason withheld\n")),
        }
    }
    if failed {
        body.push_str(&format!("{} check failed\n", path.trim_start_matches('/')));
        (500, body)
    } else {
        body.push_str(&format!("{} check passed\n", path.trim_start_matches('/')));
        (200, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_as_component_base() {
        assert_eq!(health("/healthz", &[("leaderElection", Ok(()))], false), (200, "ok".into()));
        assert_eq!(
            health("/healthz", &[("leaderElection", Err("x".into()))], false),
            (500, "[+]ping ok\n[-]leaderElection failed: reason withheld\nhealthz check failed\n".into())
        );
        assert_eq!(
            health("/readyz", &[("leaderElection", Ok(()))], true),
            (200, "[+]ping ok\n[+]leaderElection ok\nreadyz check passed\n".into())
        );
    }
}
