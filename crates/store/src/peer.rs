//! The peer listener: what other members call on our peer URL. Replication streams (see
//! `raft::stream`), call streams (`raft::calls`) and the `kanamepeer.RaftPeer` gRPC service
//! share it; each accepted connection says which it is with its first bytes.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use kaname_proto::peer::raft_peer_server::RaftPeer;
use kaname_proto::peer::RaftBytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft::network::{PeerRpc, REMOVED_MEMBER};
use crate::raft::state_machine::removed_members;
use crate::raft::stream::{self, Accepted, Io, Rewound};
use crate::raft::{Command, TypeConfig};
use crate::server::EtcdServer;
use openraft::raft::{AppendEntriesRequest, VoteRequest};

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
    let (to_grpc, grpc_conns) = tokio::sync::mpsc::channel::<std::io::Result<Rewound<Box<dyn Io>>>>(16);
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
            let (server, to_grpc) = (server.clone(), to_grpc.clone());
            conns.spawn(async move {
                match stream::sniff(io).await {
                    Ok(Accepted::Replication(io)) => stream::serve(io, server).await,
                    Ok(Accepted::Calls(io)) => crate::raft::calls::serve(io, server).await,
                    Ok(Accepted::Grpc(io)) => {
                        let _ = to_grpc.send(Ok(io)).await;
                    }
                    Err(e) => tracing::debug!("peer connection dropped: {e}"),
                }
            });
        }
    };
    tokio::select! {
        served = grpc => served,
        () = accept => unreachable!("the accept loop never ends"),
    }
}

/// Serves one of the per-request calls a member makes to us (see `raft::calls`), whichever
/// way it came: bincode in, bincode out.
pub async fn serve_call(server: &Arc<EtcdServer>, rpc: PeerRpc, body: &[u8]) -> Result<Vec<u8>, String> {
    match rpc {
        PeerRpc::Forward => {
            let cmds: Vec<Command> = de(body)?;
            ser(&server.propose_forwarded(cmds).await)
        }
        PeerRpc::ReadIndex => {
            let () = de(body)?;
            ser(&server.read_index_as_leader().await)
        }
        PeerRpc::Lease => ser(&server.serve_forwarded_lease(de(body)?).await),
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
        let data = serve_call(&self.server, rpc, &req.into_inner().data).await.map_err(Status::invalid_argument)?;
        Ok(Response::new(RaftBytes { data }))
    }

    /// A removed member does not learn of its removal from Raft (the leader stops replicating
    /// to it); like etcd, tell it when it next talks to us.
    fn refuse_removed(&self, sender: Option<u64>) -> Result<(), Status> {
        match sender {
            Some(id) if removed_members(&self.server.store).contains(&id) => {
                Err(Status::failed_precondition(REMOVED_MEMBER))
            }
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
