//! Member-to-member transport, calling end: openraft's RPCs (and our forwarding RPCs) as
//! bincode payloads over the `kanamepeer.RaftPeer` gRPC service on the peer URL, or over the
//! replication and call streams (`stream.rs`, `calls.rs`). Also the messages of the peer
//! protocol both ends share ([`PeerRpc`], [`ForwardReply`], [`REMOVED_MEMBER`]); the answering
//! end is the `peer` module.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaname_proto::peer::raft_peer_client::RaftPeerClient;
use kaname_proto::peer::RaftBytes;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use super::calls::{self, CallStreams};
use super::stream::{ReplicationStream, StreamPool};
use super::{MemberNode, TypeConfig};
use crate::error::EtcdError;

/// Which peer RPC to call; one enum so the plumbing is written once.
#[derive(Clone, Copy, Debug)]
pub enum PeerRpc {
    Vote,
    InstallSnapshot,
    Forward,
    ReadIndex,
    Lease,
    Hello,
    Membership,
    Campaign,
}

/// A forwarded request's outcome as the leader reports it.
///
/// A peer message, in bincode (a variant is its position): add variants only at the end,
/// never reorder or remove one, and give each an example and golden bytes
/// (`src/encoding_tests.rs`), so members of different versions understand each other.
#[derive(Debug, Serialize, Deserialize)]
pub enum ForwardReply<T> {
    /// Done: the log index it was committed at, and the result.
    Done(u64, T),
    /// The callee is not the leader (any more); it may know who is.
    NotLeader(Option<u64>),
    Failed(EtcdError),
}

/// Lazily connected channels to the other members, shared by Raft replication and request
/// forwarding. A tonic channel reconnects by itself, so one per peer URL is enough.
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Fires when a peer refused us as a removed member (see `REMOVED_MEMBER`).
    pub removed: Arc<tokio::sync::Notify>,
    /// Per peer URL, since when every call to it has succeeded (etcd's `ActiveSince`): the
    /// strict reconfiguration checks only trust peers that have been reachable for a while.
    active_since: Arc<Mutex<HashMap<String, std::time::Instant>>>,
    /// How to dial `https://` peer URLs (None: no peer TLS configured).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Where the per-request calls go (see `raft::calls`); the rest use `channels`.
    calls: Arc<CallStreams>,
    /// Idle replication streams for openraft's short-lived clients.
    streams: StreamPool,
}

/// What a member answers to messages from a member that was removed from the cluster (etcd
/// answers such peers with "410 Gone"); the removed member stops when it sees it.
pub const REMOVED_MEMBER: &str = "kaname: the member has been permanently removed from the cluster";

/// Why a peer call failed. The distinction matters for forwarded writes: only a request
/// that surely never reached the peer may be sent again without risking a double apply.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The connection could not be made: the request was not delivered.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The request may have been delivered, but no answer came (reset, timeout).
    #[error("no answer from peer: {0}")]
    NoAnswer(String),
    #[error("bad peer reply: {0}")]
    Protocol(String),
}

impl PeerChannels {
    pub fn new(tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        PeerChannels { tls, ..Default::default() }
    }

    pub fn channel(&self, node: &MemberNode) -> Result<Channel, PeerError> {
        let url =
            node.peer_urls.first().ok_or_else(|| PeerError::Unreachable(format!("{} has no peer URL", node.name)))?;
        let mut map = self.channels.lock().expect("peer channel map");
        if let Some(ch) = map.get(url) {
            return Ok(ch.clone());
        }
        // For https peers our connector does the TLS itself (see `kaname_tls::connector_uri`).
        let dial_url = kaname_tls::connector_uri(url);
        let endpoint = Endpoint::from_shared(dial_url)
            .map_err(|e| PeerError::Unreachable(e.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5));
        let ch = if url.starts_with("https://") {
            let tls = self.tls.clone().ok_or_else(|| {
                PeerError::Unreachable(format!(
                    "{url}: https peer URL but no peer TLS configured (--peer-trusted-ca-file)"
                ))
            })?;
            endpoint.connect_with_connector_lazy(kaname_tls::TlsConnector::new(tls))
        } else {
            endpoint.connect_lazy()
        };
        map.insert(url.clone(), ch.clone());
        Ok(ch)
    }

    /// Since when the member at `node` has answered every call, or `None` if the last call
    /// failed or none was made.
    pub fn active_since(&self, node: &MemberNode) -> Option<std::time::Instant> {
        let url = node.peer_urls.first()?;
        self.active_since.lock().expect("active map").get(url).copied()
    }

    pub(crate) fn record_contact(&self, node: &MemberNode, ok: bool) {
        let Some(url) = node.peer_urls.first() else { return };
        let mut map = self.active_since.lock().expect("active map");
        if ok {
            map.entry(url.clone()).or_insert_with(std::time::Instant::now);
        } else {
            map.remove(url);
        }
    }

    /// Sends `req` to the peer and decodes its reply.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        node: &MemberNode,
        rpc: PeerRpc,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let data = bincode::serialize(req).map_err(|e| PeerError::Protocol(e.to_string()))?;
        if calls::is_routed(rpc) {
            let reply = self.calls.call(node, self.tls.clone(), rpc, &data, timeout).await;
            self.record_contact(node, reply.is_ok());
            return bincode::deserialize(&reply?).map_err(|e| PeerError::Protocol(e.to_string()));
        }
        let mut client = RaftPeerClient::new(self.channel(node)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(RaftBytes { data });
        request.set_timeout(timeout);
        let fut = async {
            match rpc {
                PeerRpc::Vote => client.vote(request).await,
                PeerRpc::InstallSnapshot => client.install_snapshot(request).await,
                PeerRpc::Forward => client.forward(request).await,
                PeerRpc::ReadIndex => client.read_index(request).await,
                PeerRpc::Lease => client.lease(request).await,
                PeerRpc::Hello => client.hello(request).await,
                PeerRpc::Membership => client.membership(request).await,
                PeerRpc::Campaign => client.campaign(request).await,
            }
        };
        let reply = match tokio::time::timeout(timeout, fut).await {
            Err(_) => Err(PeerError::NoAnswer(format!("{rpc:?} to {} timed out", node.name))),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(s)) => {
                let msg = format!("{rpc:?} to {}: {}", node.name, s.message());
                if s.message() == REMOVED_MEMBER {
                    self.removed.notify_one();
                    Err(PeerError::Protocol(msg))
                } else if s.message().contains(kaname_tls::TCP_CONNECT_ERROR)
                    || s.message().contains(kaname_tls::HANDSHAKE_ERROR)
                {
                    // tonic reports a failed (lazy) connect with this text; anything else may
                    // have reached the peer.
                    Err(PeerError::Unreachable(msg))
                } else {
                    Err(PeerError::NoAnswer(msg))
                }
            }
        };
        self.record_contact(node, reply.is_ok());
        let reply = reply?;
        bincode::deserialize(&reply.into_inner().data).map_err(|e| PeerError::Protocol(e.to_string()))
    }
}

/// openraft's error for a failed peer call.
fn rpc_error<E: std::error::Error>(e: PeerError) -> RPCError<u64, MemberNode, E> {
    match e {
        // Unreachable makes openraft back off instead of hammering a dead member.
        PeerError::Unreachable(_) | PeerError::NoAnswer(_) => RPCError::Unreachable(Unreachable::new(&e)),
        PeerError::Protocol(_) => RPCError::Network(NetworkError::new(&e)),
    }
}

/// openraft asks this for a connection per target member.
pub struct NetworkFactory {
    pub channels: PeerChannels,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerConnection;

    async fn new_client(&mut self, _target: u64, node: &MemberNode) -> PeerConnection {
        PeerConnection {
            node: node.clone(),
            channels: self.channels.clone(),
            stream: ReplicationStream::new(node.clone(), self.channels.tls.clone(), self.channels.streams.clone()),
        }
    }
}

/// openraft's view of one peer: AppendEntries on a replication stream of its own, the rest
/// as gRPC calls on the shared channel.
pub struct PeerConnection {
    node: MemberNode,
    channels: PeerChannels,
    stream: ReplicationStream,
}

impl PeerConnection {
    async fn send<Req, Resp, E>(
        &self,
        rpc: PeerRpc,
        req: Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, MemberNode, RaftError<u64, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<u64, E>> =
            self.channels.call(&self.node, rpc, &req, option.hard_ttl()).await.map_err(rpc_error)?;
        reply.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        let reply = self.stream.append_entries(&rpc, option.hard_ttl()).await;
        self.channels.record_contact(&self.node, reply.is_ok());
        match reply {
            Ok(r) => r.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(0, e))),
            Err(e) => {
                if matches!(&e, PeerError::Protocol(msg) if msg == REMOVED_MEMBER) {
                    self.channels.removed.notify_one();
                }
                Err(rpc_error(e))
            }
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, MemberNode, RaftError<u64, InstallSnapshotError>>> {
        self.send(PeerRpc::InstallSnapshot, rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, MemberNode, RaftError<u64>>> {
        self.send(PeerRpc::Vote, rpc, &option).await
    }
}
