//! The member-to-member edge: what other members call on our peer URL, as `grpc/` is what
//! clients call on the client URL. Replication streams ([`stream`]), call streams ([`calls`])
//! and the `kanamepeer.RaftPeer` gRPC service share the listener; each accepted connection
//! says which it is with its first bytes. The dialing ends, and the messages both ends
//! exchange, are in `raft/` (`raft::stream`, `raft::calls`, `raft::network`).
//!
//! The streams reach the member through the [`PeerHandler`] trait, so they run (and are
//! tested) without a whole [`EtcdServer`]. They take it as a generic parameter: static
//! dispatch, nothing on the per-message path that calling the server directly did not cost.

pub mod calls;
pub mod stream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use kaname_proto::peer::raft_peer_server::RaftPeer;
use kaname_proto::peer::RaftBytes;
use openraft::error::RaftError;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use self::stream::{Accepted, Rewound};
use crate::raft::network::{ForwardReply, PeerRpc, REMOVED_MEMBER};
use crate::raft::state_machine::removed_members;
use crate::raft::stream::Io;
use crate::raft::{Command, CommandResult, TypeConfig};
use crate::server::lease::{LeaseAnswer, LeaseCall};
use crate::server::EtcdServer;

/// What the peer streams need from the member they serve: Raft's AppendEntries, and the
/// leader's side of the per-request calls. [`EtcdServer`] is the one implementation outside
/// tests.
pub trait PeerHandler: Send + Sync + 'static {
    /// Hands a leader's AppendEntries to our Raft.
    fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> impl Future<Output = Result<AppendEntriesResponse<u64>, RaftError<u64>>> + Send;

    /// Whether the member `id` was removed from the cluster: its messages are refused with
    /// [`REMOVED_MEMBER`].
    fn is_removed(&self, id: u64) -> bool;

    /// A follower's batch of writes (`PeerRpc::Forward`), proposed here as leader.
    fn forward(&self, cmds: Vec<Command>) -> impl Future<Output = ForwardReply<Vec<CommandResult>>> + Send;

    /// `PeerRpc::ReadIndex`: leadership confirmed by a quorum, and the index a linearizable
    /// read must wait for.
    fn read_index(&self) -> impl Future<Output = ForwardReply<()>> + Send;

    /// `PeerRpc::Lease`: a renewal or time-to-live, answered as leader.
    fn lease(&self, call: LeaseCall) -> impl Future<Output = ForwardReply<LeaseAnswer>> + Send;
}

impl PeerHandler for EtcdServer {
    async fn append_entries(
        &self,
        req: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.raft.append_entries(req).await
    }

    fn is_removed(&self, id: u64) -> bool {
        removed_members(&self.store).contains(&id)
    }

    async fn forward(&self, cmds: Vec<Command>) -> ForwardReply<Vec<CommandResult>> {
        self.propose_forwarded(cmds).await
    }

    async fn read_index(&self) -> ForwardReply<()> {
        self.read_index_as_leader().await
    }

    async fn lease(&self, call: LeaseCall) -> ForwardReply<LeaseAnswer> {
        self.serve_forwarded_lease(call).await
    }
}

/// The peer URL's listener, by scheme.
enum Listener {
    Plain(TcpListener),
    Tls(crate::tls::TlsListener),
}

/// Serves the peer URL on `listener` (TLS with `tls`) until the task is dropped, which also
/// drops every connection it accepted.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    server: Arc<EtcdServer>,
) -> Result<(), tonic::transport::Error> {
    let svc = kaname_proto::peer::raft_peer_server::RaftPeerServer::new(PeerService { server: server.clone() })
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let (to_grpc, grpc_conns) = mpsc::channel::<GrpcConn>(16);
    let grpc = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(svc)
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(grpc_conns));
    let mut listener = match tls {
        Some(c) => Listener::Tls(crate::tls::TlsListener::new(listener, c)),
        None => Listener::Plain(listener),
    };
    let accept = async move {
        let mut conns = JoinSet::new();
        loop {
            let io: Box<dyn Io> = match &mut listener {
                Listener::Tls(tls) => Box::new(tls.accept_tls().await.0),
                Listener::Plain(listener) => match listener.accept().await {
                    Ok((tcp, _)) => {
                        // Raft and forwarding messages are small and must not wait for Nagle.
                        let _ = tcp.set_nodelay(true);
                        Box::new(tcp)
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("peer accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            while conns.try_join_next().is_some() {}
            conns.spawn(serve_connection(io, server.clone(), to_grpc.clone()));
        }
    };
    tokio::select! {
        served = grpc => served,
        () = accept => unreachable!("the accept loop never ends"),
    }
}

/// An accepted connection that turned out to be gRPC, for tonic.
type GrpcConn = std::io::Result<Rewound<Box<dyn Io>>>;

/// Serves one accepted peer connection as what its first bytes say it is: our streams here,
/// gRPC by handing it to tonic through `to_grpc`.
async fn serve_connection<H: PeerHandler>(io: Box<dyn Io>, member: Arc<H>, to_grpc: mpsc::Sender<GrpcConn>) {
    match stream::sniff(io).await {
        Ok(Accepted::Replication(io)) => stream::serve(io, member).await,
        Ok(Accepted::Calls(io)) => calls::serve(io, member).await,
        Ok(Accepted::Grpc(io)) => {
            let _ = to_grpc.send(Ok(io)).await;
        }
        Err(e) => tracing::debug!("peer connection dropped: {e}"),
    }
}

/// Serves one of the per-request calls a member makes to us (see `raft::calls`), whichever
/// way it came: bincode in, bincode out.
pub async fn serve_call<H: PeerHandler>(member: &H, rpc: PeerRpc, body: &[u8]) -> Result<Vec<u8>, String> {
    match rpc {
        PeerRpc::Forward => {
            let cmds: Vec<Command> = de(body)?;
            ser(&member.forward(cmds).await)
        }
        PeerRpc::ReadIndex => {
            let () = de(body)?;
            ser(&member.read_index().await)
        }
        PeerRpc::Lease => ser(&member.lease(de(body)?).await),
        other => Err(format!("{other:?} is not served as a peer call")),
    }
}

pub struct PeerService {
    pub server: Arc<EtcdServer>,
}

/// A peer message's body, the same bincode on gRPC and on call streams.
fn de<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    bincode::deserialize(body).map_err(|e| format!("bad peer message: {e}"))
}

fn ser<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serialize(v).map_err(|e| e.to_string())
}

fn decode<T: DeserializeOwned>(req: Request<RaftBytes>) -> Result<T, Status> {
    de(&req.into_inner().data).map_err(Status::invalid_argument)
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftBytes>, Status> {
    Ok(Response::new(RaftBytes { data: ser(v).map_err(Status::internal)? }))
}

impl PeerService {
    /// The gRPC way to a [`serve_call`] (members now send these on call streams).
    async fn grpc_call(&self, rpc: PeerRpc, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let data = serve_call(&*self.server, rpc, &req.into_inner().data).await.map_err(Status::invalid_argument)?;
        Ok(Response::new(RaftBytes { data }))
    }

    /// A removed member does not learn of its removal from Raft (the leader stops replicating
    /// to it); like etcd, tell it when it next talks to us.
    fn refuse_removed(&self, sender: Option<u64>) -> Result<(), Status> {
        match sender {
            Some(id) if self.server.is_removed(id) => Err(Status::failed_precondition(REMOVED_MEMBER)),
            _ => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(req)?;
        self.refuse_removed(req.vote.leader_id().voted_for())?;
        encode(&self.server.raft.append_entries(req).await)
    }

    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let req: VoteRequest<u64> = decode(req)?;
        self.refuse_removed(req.vote.leader_id().voted_for())?;
        encode(&self.server.raft.vote(req).await)
    }

    async fn install_snapshot(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        encode(&self.server.raft.install_snapshot(decode(req)?).await)
    }

    async fn forward(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.grpc_call(PeerRpc::Forward, req).await
    }

    async fn read_index(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.grpc_call(PeerRpc::ReadIndex, req).await
    }

    async fn lease(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        self.grpc_call(PeerRpc::Lease, req).await
    }

    async fn hello(&self, _req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        encode(&self.server.cluster_view())
    }

    async fn campaign(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let () = decode(req)?;
        let started = self.server.raft.trigger().elect().await.map_err(|e| e.to_string());
        encode(&started)
    }

    async fn membership(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        encode(&self.server.change_membership_as_leader(decode(req)?).await)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::raft::AppendEntriesResponse::{Conflict, Success};
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::error::EtcdError;
    use crate::raft::network::{PeerChannels, PeerError};
    use crate::raft::stream::{ReplicationStream, StreamPool};
    use crate::raft::MemberNode;

    /// A member stand-in: answers from its arguments alone; `removed` is a removed member.
    struct FakeMember {
        removed: u64,
    }

    impl PeerHandler for FakeMember {
        async fn append_entries(
            &self,
            req: AppendEntriesRequest<TypeConfig>,
        ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
            Ok(if req.leader_commit.is_some() { Conflict } else { Success })
        }

        fn is_removed(&self, id: u64) -> bool {
            id == self.removed
        }

        /// One result per command, naming it, so order and count show.
        async fn forward(&self, cmds: Vec<Command>) -> ForwardReply<Vec<CommandResult>> {
            ForwardReply::Done(7, cmds.iter().map(|c| Ok(ByteBuf::from(c.to_string().into_bytes()))).collect())
        }

        async fn read_index(&self) -> ForwardReply<()> {
            ForwardReply::NotLeader(Some(3))
        }

        async fn lease(&self, call: LeaseCall) -> ForwardReply<LeaseAnswer> {
            match call {
                LeaseCall::Renew(id) => ForwardReply::Done(1, LeaseAnswer::Renewed(id * 10)),
                LeaseCall::TimeToLive { .. } => ForwardReply::Failed(EtcdError::LeaseNotFound),
            }
        }
    }

    /// Serves `member` on a peer listener of its own, as [`serve`] does but without gRPC.
    async fn listen(member: FakeMember) -> MemberNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let member = Arc::new(member);
        let (to_grpc, grpc_conns) = mpsc::channel(1);
        tokio::spawn(async move {
            let _grpc_conns = grpc_conns;
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(serve_connection(Box::new(tcp), member.clone(), to_grpc.clone()));
            }
        });
        MemberNode { name: "m2".into(), peer_urls: vec![url] }
    }

    fn heartbeat(leader: u64, committed: bool) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: openraft::Vote::new_committed(1, leader),
            prev_log_id: None,
            entries: vec![],
            leader_commit: committed.then(|| openraft::LogId::new(openraft::CommittedLeaderId::new(1, leader), 1)),
        }
    }

    #[tokio::test]
    async fn the_peer_transport_serves_both_kinds_of_stream_through_the_handler() {
        let node = listen(FakeMember { removed: 9 }).await;
        let timeout = Duration::from_secs(5);

        // Per-request calls, on a call stream: each reaches its handler method and its answer
        // comes back whole.
        let peers = PeerChannels::new(None);
        let batch = vec![Command::Put(vec![1, 2]), Command::Compact(vec![3])];
        let forwarded: ForwardReply<Vec<CommandResult>> =
            peers.call(&node, PeerRpc::Forward, &batch, timeout).await.unwrap();
        let expected: Vec<CommandResult> =
            vec![Ok(ByteBuf::from(b"put(2 bytes)".to_vec())), Ok(ByteBuf::from(b"compact(1 bytes)".to_vec()))];
        assert!(matches!(&forwarded, ForwardReply::Done(7, results) if *results == expected), "{forwarded:?}");
        let read: ForwardReply<()> = peers.call(&node, PeerRpc::ReadIndex, &(), timeout).await.unwrap();
        assert!(matches!(read, ForwardReply::NotLeader(Some(3))), "{read:?}");
        let renewed: ForwardReply<LeaseAnswer> =
            peers.call(&node, PeerRpc::Lease, &LeaseCall::Renew(4), timeout).await.unwrap();
        assert!(matches!(renewed, ForwardReply::Done(1, LeaseAnswer::Renewed(40))), "{renewed:?}");
        let missing: ForwardReply<LeaseAnswer> =
            peers.call(&node, PeerRpc::Lease, &LeaseCall::TimeToLive { id: 4, keys: false }, timeout).await.unwrap();
        assert!(matches!(missing, ForwardReply::Failed(EtcdError::LeaseNotFound)), "{missing:?}");

        // AppendEntries, on a replication stream, answered in order; a removed member's
        // refused with the message that makes it stop.
        let mut stream = ReplicationStream::new(node.clone(), None, StreamPool::default());
        assert_eq!(stream.append_entries(&heartbeat(1, false), timeout).await.unwrap().unwrap(), Success);
        assert_eq!(stream.append_entries(&heartbeat(1, true), timeout).await.unwrap().unwrap(), Conflict);
        let refused = stream.append_entries(&heartbeat(9, false), timeout).await;
        assert!(matches!(&refused, Err(PeerError::Protocol(m)) if m == REMOVED_MEMBER), "{refused:?}");
    }
}
