//! The configuration of one member, with etcd's flag semantics and its member/cluster ID
//! derivation (so IDs come out exactly as etcd computes them for the same flags).

use std::collections::BTreeMap;
use std::path::PathBuf;

use sha1::{Digest, Sha1};

/// `--initial-cluster-state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// Everything `kaname etcd` is configured with; the binary fills it from etcd's flags.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    pub name: String,
    pub data_dir: PathBuf,
    pub listen_client_urls: Vec<String>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--initial-cluster` as written: `name=url,name=url,...`.
    pub initial_cluster: String,
    pub initial_cluster_state: ClusterState,
    pub initial_cluster_token: String,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub quota_backend_bytes: u64,
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
    pub listen_metrics_urls: Vec<String>,
    /// `--cert-file`, `--key-file`, `--trusted-ca-file`, `--client-cert-auth`.
    pub client_tls: crate::tls::TlsInfo,
    /// `--peer-cert-file`, `--peer-key-file`, `--peer-trusted-ca-file`, `--peer-client-cert-auth`.
    pub peer_tls: crate::tls::TlsInfo,
    /// `--auto-tls`, `--peer-auto-tls`: self-signed certificates when none are given.
    pub client_auto_tls: bool,
    pub peer_auto_tls: bool,
    /// `--self-signed-cert-validity`, in years.
    pub self_signed_cert_validity: u32,
    /// `--auth-token`: only `simple` (etcd's default) is supported.
    pub auth_token: String,
    /// `--bcrypt-cost` for hashing passwords.
    pub bcrypt_cost: u32,
    /// `--auth-token-ttl`, in seconds: how long an unused simple token stays valid.
    pub auth_token_ttl: u64,
}

impl Default for EtcdConfig {
    /// etcd's defaults.
    fn default() -> Self {
        EtcdConfig {
            name: "default".into(),
            data_dir: PathBuf::from("default.kaname"),
            listen_client_urls: vec!["http://localhost:2379".into()],
            advertise_client_urls: vec!["http://localhost:2379".into()],
            listen_peer_urls: vec!["http://localhost:2380".into()],
            initial_advertise_peer_urls: vec!["http://localhost:2380".into()],
            initial_cluster: "default=http://localhost:2380".into(),
            initial_cluster_state: ClusterState::New,
            initial_cluster_token: "etcd-cluster".into(),
            heartbeat_interval_ms: 100,
            election_timeout_ms: 1000,
            snapshot_count: 100_000,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
            listen_metrics_urls: Vec::new(),
            client_tls: Default::default(),
            peer_tls: Default::default(),
            client_auto_tls: false,
            peer_auto_tls: false,
            self_signed_cert_validity: 1,
            auth_token: "simple".into(),
            bcrypt_cost: 10,
            auth_token_ttl: 300,
        }
    }
}

/// Refuses auth flags kaname cannot honour, before anything is written (etcd fails its start
/// on them too).
pub fn check_auth(cfg: &EtcdConfig) -> anyhow::Result<()> {
    let kind = cfg.auth_token.split(',').next().unwrap_or_default();
    match kind {
        "simple" => {}
        "jwt" => anyhow::bail!("--auth-token {}: jwt tokens are not supported yet (use simple)", cfg.auth_token),
        _ => anyhow::bail!("--auth-token {}: auth: invalid auth options", cfg.auth_token),
    }
    // bcrypt's own limits (etcd refuses the same values).
    if !(4..=31).contains(&cfg.bcrypt_cost) {
        anyhow::bail!("invalid bcrypt-cost {}: it must be between 4 and 31", cfg.bcrypt_cost);
    }
    Ok(())
}

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub id: u64,
    pub name: String,
    pub peer_urls: Vec<String>,
}

/// Configuration errors, worded after etcd's so users recognise them.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("couldn't find local name {0:?} in the initial cluster configuration")]
    NameNotInCluster(String),
    #[error("--initial-cluster has {name}={cluster_urls} but missing from --initial-advertise-peer-urls={advertised} (resolved urls: {advertised:?} != {cluster_urls:?})")]
    AdvertiseMismatch { name: String, cluster_urls: String, advertised: String },
    #[error("invalid --initial-cluster entry {0:?}: expected name=url")]
    BadInitialCluster(String),
    #[error("invalid URL {url:?} in {flag}: {reason}")]
    BadUrl { flag: &'static str, url: String, reason: String },
    #[error("--election-timeout[{et}ms] should be at least as 5 times as --heartbeat-interval[{hb}ms]")]
    Timing { hb: u64, et: u64 },
}

/// etcd's member ID: SHA-1 over the sorted peer URLs and the cluster token, first 8 bytes.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    for u in &urls {
        h.update(u.as_bytes());
    }
    h.update(token.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// etcd's cluster ID: SHA-1 over the sorted member IDs, first 8 bytes.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

fn check_url(flag: &'static str, u: &str) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(u).map_err(|e| ConfigError::BadUrl { flag, url: u.into(), reason: e.to_string() })?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err(ConfigError::BadUrl { flag, url: u.into(), reason: "URL scheme must be http or https".into() });
    }
    // etcd requires an explicit port and no path (types.NewURLs).
    if parsed.port().is_none() || parsed.host_str().is_none() {
        return Err(ConfigError::BadUrl {
            flag,
            url: u.into(),
            reason: "URL address does not have the form \"host:port\"".into(),
        });
    }
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::BadUrl { flag, url: u.into(), reason: "URL must not contain a path".into() });
    }
    Ok(())
}

impl EtcdConfig {
    /// Parses `--initial-cluster` into members (a name may list several URLs) and checks the
    /// rest of the configuration the way etcd does at start.
    pub fn initial_members(&self) -> Result<Vec<InitialMember>, ConfigError> {
        if self.heartbeat_interval_ms == 0 || self.election_timeout_ms < 5 * self.heartbeat_interval_ms {
            return Err(ConfigError::Timing { hb: self.heartbeat_interval_ms, et: self.election_timeout_ms });
        }
        for (flag, urls) in [
            ("--listen-client-urls", &self.listen_client_urls),
            ("--advertise-client-urls", &self.advertise_client_urls),
            ("--listen-peer-urls", &self.listen_peer_urls),
            ("--initial-advertise-peer-urls", &self.initial_advertise_peer_urls),
            ("--listen-metrics-urls", &self.listen_metrics_urls),
        ] {
            for u in urls {
                check_url(flag, u)?;
            }
        }
        let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in self.initial_cluster.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, u) = part.split_once('=').ok_or_else(|| ConfigError::BadInitialCluster(part.into()))?;
            check_url("--initial-cluster", u)?;
            by_name.entry(name.to_string()).or_default().push(u.to_string());
        }
        let mine = by_name.get(&self.name).ok_or_else(|| ConfigError::NameNotInCluster(self.name.clone()))?;
        let (mut a, mut b) = (mine.clone(), self.initial_advertise_peer_urls.clone());
        a.sort();
        b.sort();
        if a != b {
            return Err(ConfigError::AdvertiseMismatch {
                name: self.name.clone(),
                cluster_urls: mine.join(","),
                advertised: self.initial_advertise_peer_urls.join(","),
            });
        }
        Ok(by_name
            .into_iter()
            .map(|(name, peer_urls)| InitialMember {
                id: member_id(&peer_urls, &self.initial_cluster_token),
                name,
                peer_urls,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_etcd() {
        // etcd's well-known ID of a default single member (peer URL http://localhost:2380,
        // token etcd-cluster), as printed by `etcdctl member list`.
        let id = member_id(&["http://localhost:2380".into()], "etcd-cluster");
        assert_eq!(format!("{id:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", cluster_id(&[id])), "cdf818194e3a8c32");
    }

    #[test]
    fn name_must_be_in_initial_cluster() {
        let cfg = EtcdConfig { name: "x".into(), ..Default::default() };
        assert!(matches!(cfg.initial_members(), Err(ConfigError::NameNotInCluster(_))));
    }
}
