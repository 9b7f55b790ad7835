//! The `kanamepeer.RaftPeer` service: what other members call on our peer URL.

use std::sync::Arc;

use kaname_proto::peer::raft_peer_server::RaftPeer;
use kaname_proto::peer::RaftBytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft::network::REMOVED_MEMBER;
use crate::raft::state_machine::removed_members;
use crate::raft::{Command, TypeConfig};
use crate::server::EtcdServer;
use openraft::raft::{AppendEntriesRequest, VoteRequest};

pub struct PeerService {
    pub server: Arc<EtcdServer>,
}

fn decode<T: DeserializeOwned>(req: Request<RaftBytes>) -> Result<T, Status> {
    bincode::deserialize(&req.into_inner().data).map_err(|e| Status::invalid_argument(format!("bad peer message: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftBytes>, Status> {
    let data = bincode::serialize(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftBytes { data }))
}

impl PeerService {
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
        let cmds: Vec<Command> = decode(req)?;
        let started = std::time::Instant::now();
        let n = cmds.len();
        let reply = self.server.propose_forwarded(cmds).await;
        tracing::trace!(n, us = started.elapsed().as_micros() as u64, "forwarded batch served");
        encode(&reply)
    }

    async fn read_index(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        let () = decode(req)?;
        encode(&self.server.read_index_as_leader().await)
    }

    async fn lease(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        encode(&self.server.serve_forwarded_lease(decode(req)?).await)
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
