//! The `kanamepeer.RaftPeer` service: what other members call on our peer URL.

use std::sync::Arc;

use kaname_proto::peer::raft_peer_server::RaftPeer;
use kaname_proto::peer::RaftBytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::raft::Command;
use crate::server::EtcdServer;

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

#[tonic::async_trait]
impl RaftPeer for PeerService {
    async fn append_entries(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        encode(&self.server.raft.append_entries(decode(req)?).await)
    }

    async fn vote(&self, req: Request<RaftBytes>) -> Result<Response<RaftBytes>, Status> {
        encode(&self.server.raft.vote(decode(req)?).await)
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
        encode(&(self.server.member_id, self.server.cluster_id))
    }
}
