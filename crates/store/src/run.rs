//! Wiring one member together: data dir checks, stores, Raft, listeners, background tasks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use axum::serve::ListenerExt;
use futures::FutureExt;
use kaname_proto::etcdserverpb::cluster_server::ClusterServer;
use kaname_proto::etcdserverpb::kv_server::KvServer;
use kaname_proto::etcdserverpb::lease_server::LeaseServer;
use kaname_proto::etcdserverpb::maintenance_server::MaintenanceServer;
use kaname_proto::etcdserverpb::watch_server::WatchServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{self, EtcdConfig};
use crate::datadir::{DataDir, DataDirError, Marker};
use crate::grpc::{
    cluster::ClusterService, kv::KvService, lease::LeaseService, maintenance::MaintenanceService, watch::WatchService,
};
use crate::membership::ClusterView;
use crate::metrics::Metrics;
use crate::mvcc::MvccStore;
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, PeerChannels, PeerRpc};
use crate::raft::state_machine::{member_attributes, Quota, StateMachine};
use crate::raft::{Command, MemberNode, Raft};
use crate::server::{EtcdServer, RequestLimits};
use crate::watch::{WatchConfig, WatchHub};

/// gRPC adds framing around a request; etcd allows this much on top of `--max-request-bytes`.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// A running member. Dropping it does not stop it; call [`Member::shutdown`].
pub struct Member {
    pub server: Arc<EtcdServer>,
    pub client_addrs: Vec<SocketAddr>,
    pub peer_addrs: Vec<SocketAddr>,
    /// Fires when a membership change removed this member from the cluster.
    pub removed: Arc<tokio::sync::Notify>,
    tasks: Vec<JoinHandle<()>>,
}

impl Member {
    /// Stops serving and shuts Raft down (flushing nothing: every acknowledged write is
    /// already on disk).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.server.raft.shutdown().await;
    }
}

/// Resolves a listen URL to a socket address; `localhost` means the IPv4 loopback, as etcd
/// binds it.
async fn bind(url: &str) -> anyhow::Result<TcpListener> {
    let u = url::Url::parse(url)?;
    let host = match u.host_str() {
        Some("localhost") | None => "127.0.0.1".to_string(),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']').to_string(),
    };
    let port = u.port_or_known_default().ok_or_else(|| anyhow!("{url}: no port"))?;
    TcpListener::bind((host.as_str(), port)).await.with_context(|| format!("listen on {url}"))
}

/// Small gRPC frames must not wait for Nagle's algorithm (40 ms stalls behind delayed ACKs).
fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("set TCP_NODELAY: {e}");
    }
}

/// Serves gRPC and HTTP on a client (or metrics) listener: plain as before, or over TLS.
async fn serve_http(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: axum::Router,
) -> std::io::Result<()> {
    match tls {
        None => axum::serve(listener.tap_io(no_delay), app).await,
        // The connection's client certificate name goes with every request: with
        // `--client-cert-auth` it names the user (etcd's AuthInfoFromTLS).
        Some(c) => {
            let app = app.into_make_service_with_connect_info::<crate::grpc::auth::PeerCommonName>();
            axum::serve(crate::tls::TlsListener::new(listener, c), app).await
        }
    }
}

/// Starts a member and returns once it listens (it may not have a leader yet).
pub async fn start(cfg: EtcdConfig) -> anyhow::Result<Member> {
    let members = cfg.initial_members()?;
    let me = members.iter().find(|m| m.name == cfg.name).expect("checked by initial_members").clone();
    let flag_cluster_id = config::cluster_id(&members.iter().map(|m| m.id).collect::<Vec<_>>());

    crate::tls::check(&cfg)?;
    config::check_auth(&cfg)?;
    // Given certificates are loaded before the data dir is touched (a bad path leaves nothing
    // behind); auto TLS writes its certificates under the data dir, so it waits for it.
    let early_tls = if crate::tls::writes_data_dir(&cfg) { None } else { Some(crate::tls::setup(&cfg)?) };
    let dir = DataDir::new(&cfg.data_dir);
    let mismatch = |marker: &Marker| DataDirError::IdentityMismatch {
        path: cfg.data_dir.clone(),
        name: marker.name.clone(),
        stored: marker.member_id,
        flag_name: cfg.name.clone(),
        flag: me.id,
        flag_cluster: flag_cluster_id,
    };
    // Set when --initial-cluster lists other members than the data dir was created with and
    // the current members could not be read yet: accepted only if it lists those (the latest
    // membership in the log, a snapshot or the state machine).
    let mut not_the_founders = None;
    let (member_id, cluster_id, joined) = match dir.inspect()? {
        // A member that joined a running cluster got its ID from `member add`; etcd too ignores
        // --initial-cluster once a member has data.
        Some(marker) if marker.joined => {
            if marker.name != cfg.name {
                return Err(mismatch(&marker).into());
            }
            (marker.member_id, marker.cluster_id, true)
        }
        Some(marker) => {
            // Its own identity (name, peer URLs, token) must be the recorded one, whatever
            // the rest of the cluster became since.
            if marker.member_id != me.id || marker.name != cfg.name {
                return Err(mismatch(&marker).into());
            }
            let cluster_id = marker.cluster_id;
            if cluster_id != flag_cluster_id {
                // Decided here if the backend can be read without touching it, so that a
                // refusal leaves the data dir as it was; after a crash it needs a repair,
                // which opening the stores below does anyway.
                match crate::raft::state_machine::applied_members_read_only(&dir.db_path()) {
                    Ok(current) if crate::membership::flags_list_current(&members, &current) => {
                        tracing::info!(
                            "--initial-cluster lists the current members rather than the founding ones: accepted"
                        );
                    }
                    Ok(_) => return Err(mismatch(&marker).into()),
                    Err(e) => {
                        tracing::info!(
                            "membership not readable before opening the data ({e}); checked once it is open"
                        );
                        not_the_founders = Some(marker);
                    }
                }
            }
            (me.id, cluster_id, false)
        }
        None if cfg.initial_cluster_state == config::ClusterState::Existing => {
            let peer_tls = early_tls.as_ref().and_then(|t| t.peer_client.clone());
            let (id, cluster_id) = identity_from_cluster(&cfg, &members, peer_tls).await?;
            dir.create()?;
            dir.write_marker(&DataDir::new_marker(&cfg.name, id, cluster_id, true))?;
            (id, cluster_id, true)
        }
        None => {
            dir.create()?;
            dir.write_marker(&DataDir::new_marker(&cfg.name, me.id, flag_cluster_id, false))?;
            (me.id, flag_cluster_id, false)
        }
    };

    let tls = match early_tls {
        Some(tls) => tls,
        None => crate::tls::setup(&cfg)?,
    };

    let metrics = Arc::new(Metrics::new());
    let mut log_store = LogStore::open(&dir.log_path(), metrics.wal_fsync_seconds.clone())
        .map_err(|e| anyhow!("open raft log: {e}"))?;
    let store = Arc::new(MvccStore::open(&dir.db_path()).map_err(|e| anyhow!("open store: {e}"))?);
    store.lessor().set_min_ttl(crate::lease::min_ttl(cfg.heartbeat_interval_ms, cfg.election_timeout_ms));
    let (applied_tx, applied_rx) = tokio::sync::watch::channel(0u64);
    let watch_hub = WatchHub::new(store.clone(), WatchConfig::from_env());
    watch_hub.register_metrics(&metrics);
    let mut sm = StateMachine::new(store.clone(), &dir.snap_dir(), applied_tx, metrics.backend_commit_seconds.clone())
        .map_err(|e| anyhow!("{e}"))?
        .with_watch_hub(watch_hub.clone());
    if let Some(marker) = not_the_founders {
        let current = openraft::storage::StorageHelper::new(&mut log_store, &mut sm)
            .get_membership()
            .await
            .map_err(|e| anyhow!("read the membership from the data: {e}"))?;
        let nodes: BTreeMap<u64, MemberNode> =
            current.effective().nodes().map(|(id, node)| (*id, node.clone())).collect();
        if !crate::membership::flags_list_current(&members, &nodes) {
            return Err(mismatch(&marker).into());
        }
        tracing::info!("--initial-cluster lists the current members rather than the founding ones: accepted");
    }
    let quota = Quota { bytes: cfg.quota_backend_bytes, exceeded: Arc::new(tokio::sync::Notify::new()) };
    sm.set_quota(quota.clone());

    let raft_config = openraft::Config {
        cluster_name: cfg.initial_cluster_token.clone(),
        heartbeat_interval: cfg.heartbeat_interval_ms,
        // openraft 0.9 lets a follower that knows a leader campaign only after a leader lease
        // (= election_timeout_max) *plus* a random election timeout in [min, max). With
        // min = T/3 and max = T/2 (T = --election-timeout), a follower campaigns between
        // 5T/6 and T after the leader went silent, in line with etcd's [T, 2T) at its low end;
        // taking etcd's [T, 2T) literally would make failover take 3-4 s instead of ~1 s.
        election_timeout_min: cfg.election_timeout_ms / 3,
        election_timeout_max: cfg.election_timeout_ms / 2,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cfg.snapshot_count.max(1)),
        // etcd keeps this many entries after a snapshot so slow followers catch up from the log.
        max_in_snapshot_log_to_keep: 5000.min(cfg.snapshot_count),
        install_snapshot_timeout: 10_000,
        max_payload_entries: 1024,
        ..Default::default()
    }
    .validate()?;

    let peers = PeerChannels::new(tls.peer_client.clone());
    let raft = Raft::new(member_id, Arc::new(raft_config), NetworkFactory { channels: peers.clone() }, log_store, sm)
        .await
        .map_err(|e| anyhow!("start raft: {e}"))?;
    // A joining member waits for the leader to send it the log (or a snapshot) instead.
    if !joined && !raft.is_initialized().await? {
        let nodes: BTreeMap<u64, MemberNode> = members
            .iter()
            .map(|m| (m.id, MemberNode { name: m.name.clone(), peer_urls: m.peer_urls.clone() }))
            .collect();
        // Every founding member proposes the same membership; openraft accepts that.
        if let Err(e) = raft.initialize(nodes).await {
            tracing::info!("raft initialize: {e}");
        }
    }

    let request_timeout = Duration::from_millis(5000 + 2 * cfg.election_timeout_ms);
    let (transferring, transferring_rx) = tokio::sync::watch::channel(false);
    let route = crate::server::batcher::Route {
        raft: raft.clone(),
        peers: peers.clone(),
        member_id,
        timeout: request_timeout,
        transferring: transferring_rx,
    };
    let (read_rounds, read_queue) = crate::server::read_index::ReadIndexRounds::new();
    store.tokens().set_ttl(Duration::from_secs(cfg.auth_token_ttl));
    let server = Arc::new(EtcdServer {
        batcher: crate::server::batcher::Batcher::start(route),
        read_rounds,
        applied: applied_rx,
        raft,
        store,
        member_id,
        cluster_id,
        name: cfg.name.clone(),
        limits: RequestLimits {
            max_txn_ops: cfg.max_txn_ops,
            max_request_bytes: cfg.max_request_bytes,
            request_timeout,
            quota_backend_bytes: cfg.quota_backend_bytes,
            // = openraft's leader lease (election_timeout_max, see raft_config above).
            leader_lease: Duration::from_millis(cfg.election_timeout_ms / 2),
        },
        transferring,
        peers,
        metrics,
        auth_cfg: crate::auth::AuthConfig {
            bcrypt_cost: cfg.bcrypt_cost,
            client_cert_auth: cfg.client_tls.client_cert_auth,
        },
    });
    tokio::spawn(crate::server::read_index::run(Arc::downgrade(&server), read_queue));

    let mut tasks = Vec::new();
    let mut peer_addrs = Vec::new();
    for url in &cfg.listen_peer_urls {
        let listener = bind(url).await?;
        peer_addrs.push(listener.local_addr()?);
        let peer_tls = if url.starts_with("https://") { tls.peer_server.clone() } else { None };
        tasks.push(tokio::spawn(crate::peer::serve(listener, peer_tls, server.clone()).map(|served| {
            if let Err(e) = served {
                tracing::error!("peer listener stopped: {e}");
            }
        })));
    }

    let max_recv = cfg.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let grpc = tonic::service::Routes::new(
        KvServer::new(KvService { server: server.clone() })
            .max_decoding_message_size(max_recv)
            .max_encoding_message_size(usize::MAX),
    )
    .add_service(ClusterServer::new(ClusterService { server: server.clone() }))
    .add_service(kaname_proto::etcdserverpb::auth_server::AuthServer::new(crate::grpc::auth::AuthService {
        server: server.clone(),
    }))
    .add_service(MaintenanceServer::new(MaintenanceService { server: server.clone() }))
    .add_service(LeaseServer::new(LeaseService::new(server.clone())))
    .add_service(WatchServer::new(WatchService { server: server.clone(), hub: watch_hub.clone() }));
    let app = grpc.into_axum_router().merge(crate::http::router(server.clone()));
    // Like etcd, serve clients only once this member's attributes are published, so every
    // member a client can reach shows up in `member list` with its name and client URLs.
    let (published_tx, published_rx) = tokio::sync::watch::channel(false);
    let mut client_addrs = Vec::new();
    for url in &cfg.listen_client_urls {
        let listener = bind(url).await?;
        client_addrs.push(listener.local_addr()?);
        let app = app.clone();
        let mut published = published_rx.clone();
        let client_tls = if url.starts_with("https://") { tls.client_server.clone() } else { None };
        tasks.push(tokio::spawn(async move {
            if published.wait_for(|p| *p).await.is_err() {
                return;
            }
            if let Err(e) = serve_http(listener, client_tls, app).await {
                tracing::error!("client listener stopped: {e}");
            }
        }));
    }
    for url in &cfg.listen_metrics_urls {
        let listener = bind(url).await?;
        let app = crate::http::router(server.clone());
        let metrics_tls = if url.starts_with("https://") { tls.client_server.clone() } else { None };
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serve_http(listener, metrics_tls, app).await {
                tracing::error!("metrics listener stopped: {e}");
            }
        }));
    }

    tasks.push(tokio::spawn(publish_attributes(server.clone(), cfg.advertise_client_urls.clone(), published_tx)));
    tasks.push(tokio::spawn(raise_alarms(server.clone(), quota.exceeded.clone())));
    let removed = server.peers.removed.clone();
    tasks.push(tokio::spawn(track_raft_metrics(server.clone(), removed.clone())));
    let lease_extend = Duration::from_millis(cfg.election_timeout_ms);
    tasks.push(tokio::spawn(crate::server::lease_expiry::run(server.clone(), lease_extend)));
    tasks.push(tokio::spawn(watch_hub.run_sync_loop()));
    tasks.push(tokio::spawn(crate::membership::probe_peers(server.clone())));
    tracing::info!(
        name = %cfg.name,
        member_id = %format!("{member_id:x}"),
        cluster_id = %format!("{cluster_id:x}"),
        "member started; serving clients on {:?}, peers on {:?}",
        cfg.listen_client_urls,
        cfg.listen_peer_urls
    );
    Ok(Member { server, client_addrs, peer_addrs, removed, tasks })
}

/// Announces this member's name and client URLs through Raft (etcd's `publish`), retrying
/// until a leader accepts it; skipped when the replicated record already says the same.
async fn publish_attributes(
    server: Arc<EtcdServer>,
    client_urls: Vec<String>,
    published: tokio::sync::watch::Sender<bool>,
) {
    loop {
        let current = member_attributes(&server.store);
        if let Some(a) = current.get(&server.member_id) {
            if a.name == server.name && a.client_urls == client_urls {
                let _ = published.send(true);
                return;
            }
        }
        let cmd = Command::PublishAttributes {
            member_id: server.member_id,
            name: server.name.clone(),
            client_urls: client_urls.clone(),
        };
        match server.propose(cmd).await {
            Ok(_) => {
                tracing::info!("published local member attributes to the cluster");
                let _ = published.send(true);
                return;
            }
            Err(e) => {
                tracing::debug!("publish attributes: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Raises the `NOSPACE` alarm when the state machine found this member's backend over quota
/// (it cannot propose from inside the apply round).
async fn raise_alarms(server: Arc<EtcdServer>, exceeded: Arc<tokio::sync::Notify>) {
    loop {
        exceeded.notified().await;
        server.raise_nospace().await;
    }
}

/// Mirrors Raft's state into the Prometheus gauges, and logs leader changes.
async fn track_raft_metrics(server: Arc<EtcdServer>, removed: Arc<tokio::sync::Notify>) {
    let mut rx = server.raft.metrics();
    let mut last_leader = None;
    let mut was_member = false;
    loop {
        {
            let m = rx.borrow_and_update().clone();
            let metrics = &server.metrics;
            metrics.has_leader.set(m.current_leader.is_some() as i64);
            metrics.is_leader.set((m.current_leader == Some(server.member_id)) as i64);
            metrics.term.set(m.current_term as i64);
            metrics.committed_index.set(m.last_log_index.unwrap_or(0) as i64);
            metrics.applied_index.set(m.last_applied.map(|l| l.index).unwrap_or(0) as i64);
            // Removed by `member remove`: like etcd, stop rather than linger as a member that
            // no longer counts (a member that has not yet received the membership is not removed).
            // Only once the change is applied (so committed): a leader removing itself must
            // still commit the change, and answer the request, before it goes.
            let is_member = m.membership_config.membership().get_node(&server.member_id).is_some();
            let applied = m.membership_config.log_id().is_some_and(|l| Some(l) <= m.last_applied);
            if was_member && !is_member && applied {
                let removed = removed.clone();
                tokio::spawn(async move {
                    // Let the answers to in-flight requests (the member remove itself) leave.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    removed.notify_one();
                });
                was_member = false;
            }
            was_member |= is_member && applied;
            if m.current_leader != last_leader {
                if let Some(l) = m.current_leader {
                    metrics.leader_changes.inc();
                    tracing::info!(term = m.current_term, "leader is now {l:x}");
                }
                last_leader = m.current_leader;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// A member started with `--initial-cluster-state existing` asks the members listed in
/// `--initial-cluster` for the membership and finds itself in it by its peer URLs (etcd's
/// `GetClusterFromRemotePeers`): `member add` chose its ID.
async fn identity_from_cluster(
    cfg: &EtcdConfig,
    members: &[config::InitialMember],
    peer_tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<(u64, u64)> {
    let peers = PeerChannels::new(peer_tls);
    let mut mine = cfg.initial_advertise_peer_urls.clone();
    mine.sort();
    let mut tried = Vec::new();
    for m in members.iter().filter(|m| m.name != cfg.name) {
        let node = MemberNode { name: m.name.clone(), peer_urls: m.peer_urls.clone() };
        let view: ClusterView = match peers.call(&node, PeerRpc::Hello, &(), Duration::from_secs(2)).await {
            Ok(v) => v,
            Err(e) => {
                tried.push(format!("{}: {e}", m.name));
                continue;
            }
        };
        for (id, n, _) in &view.members {
            let mut urls = n.peer_urls.clone();
            urls.sort();
            if urls == mine {
                tracing::info!(member_id = %format!("{id:x}"), cluster_id = %format!("{:x}", view.cluster_id), "joining the cluster");
                return Ok((*id, view.cluster_id));
            }
        }
        bail!(
            "--initial-cluster-state=existing: the cluster (seen from {}) has no member with peer URLs {:?}; add this member first (etcdctl member add {} --peer-urls={})",
            m.name,
            mine,
            cfg.name,
            mine.join(",")
        );
    }
    bail!(
        "--initial-cluster-state=existing: could not reach any other member of --initial-cluster ({})",
        tried.join("; ")
    )
}

/// Runs a member until `shutdown` resolves.
pub async fn run_config(cfg: EtcdConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let member = start(cfg).await?;
    let removed = member.removed.clone();
    let was_removed = tokio::select! {
        _ = shutdown => false,
        _ = removed.notified() => true,
    };
    member.shutdown().await;
    if was_removed {
        bail!("the member has been permanently removed from the cluster; the data-dir used by this member must be removed before it can join again");
    }
    Ok(())
}
