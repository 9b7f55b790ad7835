//! `kaname apiserver`: the Kubernetes REST API over any etcd v3 endpoint (kaname's or real
//! etcd), served over TLS with client-certificate authentication.
//!
//! Layers, top to bottom (docs/architecture.md has the map and what each may use):
//! `http` (the filter chain and the REST verbs) over `auth` (authenticators and authorizers
//! on a `request_info`); the verbs' helpers `consistency`, `patch`, `subresources`, `codec`,
//! `response`, and the non-resource documents `discovery` and `openapi` → `storage`,
//! `watch_cache` and `watch` (the generic registry, parameterized by `resources`, one module
//! per API group) → `etcd` (the v3 gRPC client). `status`, `selector`, `table` and `meta` are
//! leaves every layer may use. `namespace_controller` empties and removes terminating
//! namespaces (a controller in the server until the controller manager takes it over);
//! `pki` makes the certificates and the TLS config.

pub mod auth;
pub mod codec;
pub mod compactor;
pub mod consistency;
pub mod discovery;
pub mod etcd;
pub mod fence;
pub mod http;
pub mod meta;
pub mod namespace_controller;
pub mod openapi;
pub mod openapi_v2;
pub mod patch;
pub mod pki;
pub mod protobuf;
pub mod request_info;
pub mod resources;
pub mod response;
pub mod selector;
pub mod status;
pub mod storage;
pub mod subresources;
pub mod table;
pub mod watch;
pub mod watch_cache;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

/// kube-apiserver's flag names and defaults, for the subset implemented.
#[derive(Args, Debug, Clone)]
pub struct ApiserverFlags {
    /// List of etcd servers to connect with (scheme://ip:port), comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub etcd_servers: Vec<String>,
    /// The prefix to prepend to all resource paths in etcd.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// SSL Certificate Authority file used to secure etcd communication.
    #[arg(long)]
    pub etcd_cafile: Option<String>,
    /// SSL certification file used to secure etcd communication.
    #[arg(long)]
    pub etcd_certfile: Option<String>,
    /// SSL key file used to secure etcd communication.
    #[arg(long)]
    pub etcd_keyfile: Option<String>,
    /// The IP address on which to listen for the --secure-port port.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// The port on which to serve HTTPS with authentication and authorization.
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// The IP address on which to advertise the apiserver to members of the cluster.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// A CIDR notation IP range from which to assign service cluster IPs.
    #[arg(long, default_value = "10.0.0.0/24")]
    pub service_cluster_ip_range: String,
    /// File containing the default x509 Certificate for HTTPS.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// File containing the default x509 private key matching --tls-cert-file.
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// Client certificates signed by one of these CAs authenticate as CN (groups: O).
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// The directory where the TLS certs are located (and generated when none are given).
    #[arg(long, default_value = "/var/run/kubernetes")]
    pub cert_dir: PathBuf,
    /// The interval of compaction requests. If 0, the compaction request from apiserver is disabled.
    #[arg(long, default_value = "5m0s", value_parser = kaname_goflags::duration::parse)]
    pub etcd_compaction_interval: Duration,
    /// The maximum number of non-mutating and mutating requests in flight (0 = no limit).
    #[arg(long, default_value_t = 400)]
    pub max_requests_inflight: usize,
}

/// The Kubernetes release whose API this server speaks (kubectl picks its skew from it).
pub const KUBE_MINOR: &str = "33";

/// Namespaces every cluster has (upstream's system namespaces controller).
const SYSTEM_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

pub async fn run(flags: ApiserverFlags, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = etcd::EtcdTls {
        ca_file: flags.etcd_cafile.clone(),
        cert_file: flags.etcd_certfile.clone(),
        key_file: flags.etcd_keyfile.clone(),
    };
    let etcd = etcd::Etcd::connect(&flags.etcd_servers, &tls)?;
    let service_range =
        resources::service_ips::ServiceRange::parse(&flags.service_cluster_ip_range).map_err(|e| anyhow::anyhow!(e))?;
    let storage = storage::Storage {
        etcd,
        prefix: flags.etcd_prefix.trim_end_matches('/').to_string(),
        service_range: Arc::new(service_range),
        dry_run: false,
        fence: None,
    };

    let host = flags
        .advertise_address
        .or(Some(flags.bind_address).filter(|b| !b.is_unspecified()))
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let server_address = SocketAddr::new(host, flags.secure_port).to_string();
    let (cert, key, client_ca) = match (&flags.tls_cert_file, &flags.tls_private_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), flags.client_ca_file.clone()),
        (None, None) => {
            // No certificates given: make a CA, a serving cert and an admin client cert, and
            // a kubeconfig to use them.
            let hosts =
                pki::serving_hosts(flags.advertise_address, flags.bind_address, &flags.service_cluster_ip_range);
            let p = pki::Pki::ensure(&flags.cert_dir, &hosts)?;
            let kubeconfig = flags.cert_dir.join("admin.conf");
            pki::write_kubeconfig(&kubeconfig, &format!("https://{server_address}"), &p)?;
            say(&format!("admin kubeconfig: {}", kubeconfig.display()));
            (p.serving_cert, p.serving_key, flags.client_ca_file.clone().or(Some(p.ca_cert)))
        }
        _ => anyhow::bail!("--tls-cert-file and --tls-private-key-file must be given together"),
    };
    if client_ca.is_none() {
        tracing::warn!("no --client-ca-file: every request is anonymous and only health checks are served");
    }
    let tls_config = pki::server_config(&cert, &key, client_ca.as_deref())?;

    tokio::spawn(create_system_namespaces(storage.clone()));
    let priority_classes_ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn(create_system_priority_classes(storage.clone(), priority_classes_ready.clone()));
    let compactor = (!flags.etcd_compaction_interval.is_zero())
        .then(|| tokio::spawn(compactor::run(storage.etcd.clone(), flags.etcd_compaction_interval)));
    let namespace_deleted = namespace_controller::in_server::Nudge::default();
    let (api, nudge) = (namespace_controller::in_server::InServer(storage.clone()), namespace_deleted.0.clone());
    tokio::spawn(async move { namespace_controller::run(api, &nudge).await });
    let inflight =
        (flags.max_requests_inflight > 0).then(|| Arc::new(tokio::sync::Semaphore::new(flags.max_requests_inflight)));
    let caches = Arc::new(watch_cache::Caches::start(&storage));
    let authenticators = auth::Authenticators(vec![Box::new(auth::x509::ClientCertificate)]);
    let authorizers = auth::Authorizers(vec![
        Box::new(auth::authz::PrivilegedGroups::masters()),
        Box::new(auth::authz::NonResourcePaths),
    ]);
    let ctx = Arc::new(http::Ctx {
        storage,
        caches: caches.clone(),
        authenticators,
        authorizers,
        inflight,
        server_address,
        namespace_deleted,
        priority_classes_ready,
    });
    let router = http::router(ctx);

    let addr = SocketAddr::new(flags.bind_address, flags.secure_port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving securely");
    say(&format!("serving on https://{addr}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => a?,
            _ = &mut shutdown => {
                caches.shutdown();
                if let Some(c) = &compactor {
                    c.abort();
                }
                return Ok(());
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let user =
                tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| auth::x509::user_from_cert(c));
            let identity = auth::x509::VerifiedClientCert(user);
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(identity.clone());
                let mut r = router.clone();
                async move { tower_service::Service::call(&mut r, req).await }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(tls), svc).await {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
}

/// A line for whoever started us; a closed stdout (the reader went away) is no reason to stop.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Creates the system namespaces once etcd answers (they may exist already).
async fn create_system_namespaces(storage: storage::Storage) {
    for ns in SYSTEM_NAMESPACES {
        loop {
            match storage.create(resources::NAMESPACES, None, json!({"metadata": {"name": ns}})).await {
                Ok(_) => break,
                Err(e) if e.reason == "AlreadyExists" => break,
                Err(e) => {
                    tracing::debug!("creating namespace {ns}: {}", e.message);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Upstream's post-start hook `scheduling/bootstrap-system-priority-classes`: creates the
/// built-in priority classes that are missing, retrying while etcd is unreachable. Several API
/// servers starting on one store race here: whoever loses gets AlreadyExists, which is as good
/// as having created it. Written as the loopback client's create, so the managed fields name
/// `kube-apiserver` as upstream's do. `/readyz` stays failing until this is done.
async fn create_system_priority_classes(storage: storage::Storage, done: Arc<std::sync::atomic::AtomicBool>) {
    let res = resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("priorityclasses are served");
    for mut pc in resources::scheduling::system_priority_classes() {
        let name = pc["metadata"]["name"].as_str().unwrap_or("").to_string();
        patch::managed::record_update(res, None, &mut pc, "kube-apiserver", false);
        loop {
            let created = match storage.get(res, None, &name).await {
                Ok(_) => break,
                Err(e) if e.code == 404 => storage.create(res, None, pc.clone()).await,
                Err(e) => Err(e),
            };
            match created {
                Ok(_) => {
                    tracing::info!("created PriorityClass {name}");
                    break;
                }
                Err(e) if e.reason == "AlreadyExists" => break,
                Err(e) => {
                    tracing::debug!("creating PriorityClass {name}: {}", e.message);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    tracing::info!("all system priority classes are created successfully or already exist.");
    done.store(true, std::sync::atomic::Ordering::Release);
}
