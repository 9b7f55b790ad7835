//! Global flags, the connection to the cluster and etcdctl's errors and exit codes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kaname_proto::etcdserverpb::{
    auth_client::AuthClient, cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient, AuthenticateRequest,
};
use kaname_tls::rustls::ClientConfig;
use kaname_tls::{SkipServerVerification, TlsConnector};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

// etcdctl's exit codes (cobrautl).
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_BAD_CONNECTION: i32 = 2;
pub const EXIT_INVALID_INPUT: i32 = 3;
pub const EXIT_BAD_FEATURE: i32 = 4;
pub const EXIT_INTERRUPTED: i32 = 5;
pub const EXIT_BAD_ARGS: i32 = 128;

/// A failed command: `Error: <msg>` on stderr (unless `msg` is None) and exit `code`.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub msg: Option<String>,
}

pub type Res<T = ()> = Result<T, Exit>;

pub fn fail<T>(code: i32, msg: impl Into<String>) -> Res<T> {
    Err(Exit { code, msg: Some(msg.into()) })
}

pub fn bad_args<T>(msg: impl Into<String>) -> Res<T> {
    fail(EXIT_BAD_ARGS, msg)
}

/// Exit with a code and no message (Go's `os.Exit`).
pub fn exit_silent<T>(code: i32) -> Res<T> {
    Err(Exit { code, msg: None })
}

/// What Go's clientv3 error prints: etcd's own errors as their message, others as grpc's
/// `rpc error: code = X desc = Y`.
pub fn status_msg(s: &tonic::Status) -> String {
    let m = s.message();
    // clientv3 turns only etcd's known server errors into bare messages; the raw `auth: ...`
    // errors of etcd 3.4's maintenance calls stay gRPC errors.
    if m.starts_with("etcdserver: ") || m.starts_with("mvcc: ") {
        return m.to_string();
    }
    if s.code() == tonic::Code::DeadlineExceeded || s.code() == tonic::Code::Cancelled {
        return "context deadline exceeded".to_string();
    }
    let code = match s.code() {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "Canceled",
        tonic::Code::Unknown => "Unknown",
        tonic::Code::InvalidArgument => "InvalidArgument",
        tonic::Code::DeadlineExceeded => "DeadlineExceeded",
        tonic::Code::NotFound => "NotFound",
        tonic::Code::AlreadyExists => "AlreadyExists",
        tonic::Code::PermissionDenied => "PermissionDenied",
        tonic::Code::ResourceExhausted => "ResourceExhausted",
        tonic::Code::FailedPrecondition => "FailedPrecondition",
        tonic::Code::Aborted => "Aborted",
        tonic::Code::OutOfRange => "OutOfRange",
        tonic::Code::Unimplemented => "Unimplemented",
        tonic::Code::Internal => "Internal",
        tonic::Code::Unavailable => "Unavailable",
        tonic::Code::DataLoss => "DataLoss",
        tonic::Code::Unauthenticated => "Unauthenticated",
    };
    format!("rpc error: code = {code} desc = {m}")
}

pub fn grpc<T>(s: tonic::Status) -> Res<T> {
    fail(EXIT_ERROR, status_msg(&s))
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Table,
    Protobuf,
}

/// etcdctl 3.4's global flags (each also read from `ETCDCTL_<FLAG>`).
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// gRPC endpoints
    #[arg(long, global = true, env = "ETCDCTL_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Dial timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_DIAL_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,
    /// Timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, env = "ETCDCTL_COMMAND_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,
    /// Keepalive time for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIME", default_value = "2s", value_parser = parse_duration)]
    pub keepalive_time: Duration,
    /// Keepalive timeout for client connections
    #[arg(long, global = true, env = "ETCDCTL_KEEPALIVE_TIMEOUT", default_value = "6s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// set the output format (fields, json, protobuf, simple, table)
    #[arg(short = 'w', long, global = true, env = "ETCDCTL_WRITE_OUT", default_value = "simple")]
    pub write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true, env = "ETCDCTL_HEX")]
    pub hex: bool,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true, env = "ETCDCTL_USER")]
    pub user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password)
    #[arg(long, global = true, env = "ETCDCTL_PASSWORD")]
    pub password: Option<String>,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true, env = "ETCDCTL_CACERT")]
    pub cacert: Option<String>,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true, env = "ETCDCTL_CERT")]
    pub cert: Option<String>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true, env = "ETCDCTL_KEY")]
    pub key: Option<String>,
    /// skip server certificate verification
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_SKIP_TLS_VERIFY")]
    pub insecure_skip_tls_verify: bool,
    /// disable client's TLS transport
    #[arg(long, global = true, env = "ETCDCTL_INSECURE_TRANSPORT", default_value = "true", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_transport: bool,
    /// domain name to query for SRV records describing cluster endpoints (not supported yet)
    #[arg(long, global = true, env = "ETCDCTL_DISCOVERY_SRV")]
    pub discovery_srv: Option<String>,
    /// Debug mode (accepted, ignored)
    #[arg(long, global = true, env = "ETCDCTL_DEBUG")]
    pub debug: bool,
}

/// Go's time.ParseDuration, as etcdctl's flags take durations.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    kaname_goflags::duration::parse(s)
}

impl Global {
    pub fn format(&self) -> Res<Format> {
        match self.write_out.as_str() {
            "simple" => Ok(Format::Simple),
            "json" => Ok(Format::Json),
            "fields" => Ok(Format::Fields),
            "table" => Ok(Format::Table),
            "protobuf" => Ok(Format::Protobuf),
            _ => fail(EXIT_BAD_FEATURE, "unsupported output format"),
        }
    }

    /// `ctx` with the command timeout: a timeout prints `context deadline exceeded`.
    pub async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Res<T> {
        match tokio::time::timeout(self.command_timeout, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => grpc(s),
            Err(_) => fail(EXIT_ERROR, "context deadline exceeded"),
        }
    }

    /// Connects to the given endpoints (the first that answers within the dial timeout)
    /// and authenticates when --user is given.
    pub async fn connect_to(&self, endpoints: &[String]) -> Res<Client> {
        let tls = self.tls_config()?;
        let deadline = tokio::time::Instant::now() + self.dial_timeout;
        let mut channel = None;
        loop {
            for ep in endpoints {
                // etcd's clientv3: a bare endpoint uses the TLS the flags configure (if any),
                // `http://` never uses TLS, `https://` always does, with a default config
                // (system roots, verified) when the flags configure none.
                let (url, tls) = match ep.split_once("://") {
                    None => {
                        let scheme = if tls.is_some() { "https" } else { "http" };
                        (format!("{scheme}://{ep}"), tls.clone())
                    }
                    Some(("https", _)) => (ep.clone(), Some(tls.clone().map_or_else(default_tls, Ok)?)),
                    Some(_) => (ep.clone(), None),
                };
                // Our connector does the TLS (see `kaname_tls::connector_uri`).
                let Ok(e) = Endpoint::from_shared(kaname_tls::connector_uri(&url)) else { continue };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                let e = e.connect_timeout(left).tcp_nodelay(true);
                let connected = match tls {
                    None => tokio::time::timeout(left, e.connect()).await,
                    Some(tls) => tokio::time::timeout(left, e.connect_with_connector(TlsConnector::new(tls))).await,
                };
                if let Ok(Ok(c)) = connected {
                    channel = Some(c);
                    break;
                }
            }
            if channel.is_some() || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(channel) = channel else {
            return fail(EXIT_ERROR, "context deadline exceeded");
        };
        let mut token = None;
        if let Some(user) = &self.user {
            let (name, password) = match (user.split_once(':'), &self.password) {
                (_, Some(p)) => (user.clone(), p.clone()),
                (Some((n, p)), None) => (n.to_string(), p.to_string()),
                (None, None) => {
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    (user.clone(), line.trim_end_matches(['\r', '\n']).to_string())
                }
            };
            let mut auth = AuthClient::new(channel.clone());
            // etcdctl fails to build its client then: exit 2 (bad connection).
            let r = self
                .timed(auth.authenticate(AuthenticateRequest { name, password }))
                .await
                .map_err(|e| Exit { code: EXIT_BAD_CONNECTION, msg: e.msg })?;
            token = Some(r.token.parse().map_err(|_| Exit { code: EXIT_ERROR, msg: Some("bad token".into()) })?);
        }
        Ok(Client { channel, token })
    }

    /// The TLS the flags configure, as etcdctl's `newClientCfg`: any of --cacert, --cert,
    /// --key, or --insecure-transport=false asks for it; --cacert (else the system's roots)
    /// verifies the server unless --insecure-skip-tls-verify; --cert/--key identify us.
    fn tls_config(&self) -> Res<Option<Arc<ClientConfig>>> {
        if self.discovery_srv.is_some() {
            return fail(EXIT_ERROR, "--discovery-srv is not supported by kaname etcdctl yet");
        }
        let wanted = self.cacert.is_some() || self.cert.is_some() || self.key.is_some() || !self.insecure_transport;
        if !wanted {
            return Ok(None);
        }
        let failed = |e: anyhow::Error| Exit { code: EXIT_ERROR, msg: Some(e.to_string()) };
        let builder = ClientConfig::builder_with_provider(kaname_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| failed(e.into()))?;
        let builder = if self.insecure_skip_tls_verify {
            builder.dangerous().with_custom_certificate_verifier(SkipServerVerification::new())
        } else {
            let roots = match &self.cacert {
                Some(ca) => kaname_tls::load_roots(Path::new(ca)).map_err(failed)?,
                None => kaname_tls::system_roots(),
            };
            builder.with_root_certificates(roots)
        };
        let mut cfg = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => {
                let certs = kaname_tls::load_certs(Path::new(c)).map_err(failed)?;
                let key = kaname_tls::load_key(Path::new(k)).map_err(failed)?;
                builder.with_client_auth_cert(certs, key).map_err(|e| failed(e.into()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return fail(EXIT_ERROR, "cert and key must both be given"),
        };
        // grpc-go servers (etcd) insist on ALPN h2.
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Some(Arc::new(cfg)))
    }

    pub async fn connect(&self) -> Res<Client> {
        self.connect_to(&self.endpoints).await
    }
}

/// What clientv3 dials an `https://` endpoint with when the flags configure no TLS: the
/// system's roots, verified, no client certificate.
fn default_tls() -> Res<Arc<ClientConfig>> {
    let mut cfg = ClientConfig::builder_with_provider(kaname_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Exit { code: EXIT_ERROR, msg: Some(e.to_string()) })?
        .with_root_certificates(kaname_tls::system_roots())
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(cfg))
}

/// Adds etcd's `token` metadata to every call once authenticated.
#[derive(Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("token", t.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Token>;

pub struct Client {
    channel: Channel,
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), Token(self.token.clone()))
    }
    pub fn kv(&self) -> KvClient<Svc> {
        KvClient::new(self.svc())
    }
    pub fn lease(&self) -> LeaseClient<Svc> {
        LeaseClient::new(self.svc())
    }
    pub fn cluster(&self) -> ClusterClient<Svc> {
        ClusterClient::new(self.svc())
    }
    pub fn maintenance(&self) -> MaintenanceClient<Svc> {
        MaintenanceClient::new(self.svc()).max_decoding_message_size(usize::MAX)
    }
    pub fn watch(&self) -> WatchClient<Svc> {
        WatchClient::new(self.svc())
    }
    pub fn auth(&self) -> AuthClient<Svc> {
        AuthClient::new(self.svc())
    }
}
