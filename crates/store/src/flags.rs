//! `kaname etcd`'s command line: etcd's flag names, defaults and `ETCD_*` environment
//! variables ([`EtcdFlags`], parsed by the binary with clap), what they mean for the store
//! ([`EtcdFlags::into_config`]), the runtime a member runs best on ([`EtcdFlags::runtime`]),
//! and [`run`], the component's entry point (`run(flags, shutdown)`, as every component's:
//! see docs/architecture.md).

use std::future::Future;
use std::path::PathBuf;

use clap::builder::BoolishValueParser;
use clap::{Args, ValueEnum};

use crate::config::TlsInfo;
use crate::config::{ClusterState, EtcdConfig};

// `--initial-cluster-state`. (No doc comments on the variants: clap would print them in `--help`.)
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InitialClusterState {
    New,
    Existing,
}

/// etcd's own flag names, defaults and `ETCD_*` environment variables, so command lines and
/// manifests written for etcd carry over.
#[derive(Args, Debug, Clone)]
pub struct EtcdFlags {
    /// Human-readable name for this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,
    /// Path to the data directory [default: ${name}.kaname].
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// List of URLs to listen on for client traffic.
    #[arg(long, env = "ETCD_LISTEN_CLIENT_URLS", value_delimiter = ',', default_value = "http://localhost:2379")]
    pub listen_client_urls: Vec<String>,
    /// List of this member's client URLs to advertise to the rest of the cluster.
    #[arg(long, env = "ETCD_ADVERTISE_CLIENT_URLS", value_delimiter = ',', default_value = "http://localhost:2379")]
    pub advertise_client_urls: Vec<String>,
    /// List of URLs to listen on for peer traffic.
    #[arg(long, env = "ETCD_LISTEN_PEER_URLS", value_delimiter = ',', default_value = "http://localhost:2380")]
    pub listen_peer_urls: Vec<String>,
    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        value_delimiter = ',',
        default_value = "http://localhost:2380"
    )]
    pub initial_advertise_peer_urls: Vec<String>,
    /// Initial cluster configuration for bootstrapping [default: ${name}=http://localhost:2380].
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Initial cluster state ('new' or 'existing').
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_STATE", value_enum, default_value = "new")]
    pub initial_cluster_state: InitialClusterState,
    /// Initial cluster token for the etcd cluster during bootstrap.
    #[arg(long, env = "ETCD_INITIAL_CLUSTER_TOKEN", default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,
    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Raise alarms when backend size exceeds the given quota (0 defaults to low space quota).
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,
    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1572864)]
    pub max_request_bytes: usize,
    /// List of URLs to listen on for the metrics and health endpoints.
    #[arg(long, env = "ETCD_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,
    /// Path to the client server TLS cert file.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,
    /// Path to the client server TLS key file.
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// Enable client cert authentication.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub client_cert_auth: bool,
    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,
    /// Client TLS using generated certificates.
    #[arg(long, env = "ETCD_AUTO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub auto_tls: bool,
    /// Path to the peer server TLS cert file.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,
    /// Path to the peer server TLS key file.
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,
    /// Enable peer client cert authentication.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub peer_client_cert_auth: bool,
    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Peer TLS using generated certificates.
    #[arg(long, env = "ETCD_PEER_AUTO_TLS", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", value_parser = BoolishValueParser::new())]
    pub peer_auto_tls: bool,
    /// The validity period of the client and peer certificates that are automatically generated by etcd when you specify ClientAutoTLS and PeerAutoTLS, the unit is year, and the default is 1.
    #[arg(long, env = "ETCD_SELF_SIGNED_CERT_VALIDITY", default_value_t = 1)]
    pub self_signed_cert_validity: u32,
    /// Specify auth token specific options: only 'simple' is supported (jwt is not yet).
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,
    /// Specify bcrypt algorithm cost factor for auth password hashing.
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
    /// Time (in seconds) of the auth-token-ttl.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,
    /// Configures log level: debug, info, warn, error, panic, or fatal.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info", value_parser = ["debug", "info", "warn", "error", "panic", "fatal"])]
    pub log_level: String,
    /// Accepted for etcd compatibility: kaname always logs structured lines via tracing.
    #[arg(long, env = "ETCD_LOGGER", value_parser = ["zap", "capnslog"], hide = true)]
    pub logger: Option<String>,
    /// Accepted for etcd compatibility: only 'default', 'stderr' and 'stdout' are supported.
    #[arg(long, env = "ETCD_LOG_OUTPUTS", value_parser = ["default", "stderr", "stdout"], hide = true)]
    pub log_outputs: Option<String>,
    /// kaname's own: threads that run the member's tasks. 1 (the default) runs them all on one
    /// thread, 0 uses one per core, N uses N.
    #[arg(long, env = "KANAME_WORKER_THREADS", default_value_t = 1)]
    pub worker_threads: usize,
}

impl EtcdFlags {
    /// The store's configuration: etcd's derived defaults filled in (`--data-dir`
    /// `${name}.kaname`, `--initial-cluster` `${name}=<advertise peer URLs>`, a zero quota the
    /// default quota).
    pub fn into_config(self) -> EtcdConfig {
        let defaults = EtcdConfig::default();
        EtcdConfig {
            data_dir: self.data_dir.unwrap_or_else(|| PathBuf::from(format!("{}.kaname", self.name))),
            initial_cluster: self.initial_cluster.unwrap_or_else(|| {
                format!("{}={}", self.name, self.initial_advertise_peer_urls.join(&format!(",{}=", self.name)))
            }),
            name: self.name,
            listen_client_urls: self.listen_client_urls,
            advertise_client_urls: self.advertise_client_urls,
            listen_peer_urls: self.listen_peer_urls,
            initial_advertise_peer_urls: self.initial_advertise_peer_urls,
            initial_cluster_state: match self.initial_cluster_state {
                InitialClusterState::New => ClusterState::New,
                InitialClusterState::Existing => ClusterState::Existing,
            },
            initial_cluster_token: self.initial_cluster_token,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count,
            quota_backend_bytes: if self.quota_backend_bytes == 0 {
                defaults.quota_backend_bytes
            } else {
                self.quota_backend_bytes
            },
            max_txn_ops: self.max_txn_ops,
            max_request_bytes: self.max_request_bytes,
            listen_metrics_urls: self.listen_metrics_urls,
            client_tls: TlsInfo {
                cert_file: self.cert_file,
                key_file: self.key_file,
                trusted_ca_file: self.trusted_ca_file,
                client_cert_auth: self.client_cert_auth,
                self_cert: false,
            },
            peer_tls: TlsInfo {
                cert_file: self.peer_cert_file,
                key_file: self.peer_key_file,
                trusted_ca_file: self.peer_trusted_ca_file,
                client_cert_auth: self.peer_client_cert_auth,
                self_cert: false,
            },
            client_auto_tls: self.auto_tls,
            peer_auto_tls: self.peer_auto_tls,
            self_signed_cert_validity: self.self_signed_cert_validity,
            auth_token: self.auth_token,
            bcrypt_cost: self.bcrypt_cost,
            auth_token_ttl: self.auth_token_ttl,
        }
    }
}

impl EtcdFlags {
    /// The runtime a member runs on when it is the process (`kaname etcd`). By default
    /// (`--worker-threads 1`) a single thread runs all of a member's tasks (the WAL's flush
    /// thread and blocking work run beside it): a write crosses the gRPC task, the batcher,
    /// openraft's core, replication and apply tasks, and on a multi-thread runtime each of those
    /// hand-offs can be a wakeup of another thread, while tokio's idle workers also wake up to
    /// steal work. With 3 members on 2 cores, one thread per member put 64 clients' puts up by
    /// ~40% and one client's by ~15%, reads no lower (docs/benchmarks.md, "Session 5"). A member
    /// with cores to itself and read-heavy load may do better with `--worker-threads 0` (one
    /// thread per core).
    pub fn runtime(&self) -> std::io::Result<tokio::runtime::Runtime> {
        if self.worker_threads == 1 {
            return tokio::runtime::Builder::new_current_thread().enable_all().build();
        }
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if self.worker_threads > 1 {
            b.worker_threads(self.worker_threads);
        }
        b.enable_all().build()
    }
}

/// Runs a member until `shutdown` completes (the binary passes SIGTERM/SIGINT), then stops it
/// gracefully; returns early with an error when the member cannot start or has been removed
/// from the cluster.
pub async fn run(flags: EtcdFlags, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    crate::run::run_config(flags.into_config(), shutdown).await
}
