//! `etcdserverpb.Cluster`. Membership changes arrive with the membership issue; until then
//! they answer `Unimplemented` rather than pretending.

use std::sync::Arc;

use kaname_proto::etcdserverpb::cluster_server::Cluster;
use kaname_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::observed;
use crate::raft::state_machine::member_attributes;
use crate::server::EtcdServer;

pub struct ClusterService {
    pub server: Arc<EtcdServer>,
}

/// The members as this member knows them, sorted by ID as etcd lists them.
pub fn members(server: &EtcdServer) -> Vec<Member> {
    let membership = server.raft.metrics().borrow().membership_config.clone();
    let attrs = member_attributes(&server.store);
    let voters: std::collections::BTreeSet<u64> = membership.membership().voter_ids().collect();
    let mut out: Vec<Member> = membership
        .membership()
        .nodes()
        .map(|(id, node)| {
            let a = attrs.get(id);
            Member {
                id: *id,
                name: a.map(|a| a.name.clone()).unwrap_or_default(),
                peer_ur_ls: node.peer_urls.clone(),
                client_ur_ls: a.map(|a| a.client_urls.clone()).unwrap_or_default(),
                is_learner: !voters.contains(id),
            }
        })
        .collect();
    out.sort_by_key(|m| m.id);
    out
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _req: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(Status::unimplemented("member add is not supported yet"))
    }

    async fn member_remove(
        &self,
        _req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(Status::unimplemented("member remove is not supported yet"))
    }

    async fn member_update(
        &self,
        _req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(Status::unimplemented("member update is not supported yet"))
    }

    async fn member_list(&self, req: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Cluster", "MemberList", async {
            if req.into_inner().linearizable {
                s.linearizable_barrier().await?;
            }
            let mut resp = MemberListResponse { header: None, members: members(s) };
            // etcd's cluster service fills no revision in its headers.
            s.fill_header(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn member_promote(
        &self,
        _req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(Status::unimplemented("member promote is not supported yet"))
    }
}
