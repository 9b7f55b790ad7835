//! `etcdserverpb.Cluster`: the member list and membership changes (see `membership.rs`).

use std::sync::Arc;

use kaname_proto::etcdserverpb::cluster_server::Cluster;
use kaname_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::observed;
use crate::error::EtcdError;
use crate::membership::MembershipChange;
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
    async fn member_add(&self, req: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Cluster", "MemberAdd", async {
            // etcd's checkMembershipOperationPermission.
            s.check_admin(&req).await?;
            let r = req.into_inner();
            let urls = check_urls(&r.peer_ur_ls)?;
            // etcd's NewMember for an added member: its peer URLs plus the time, so re-adding the
            // same URLs later gives a new ID.
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            let id = crate::config::member_id(&urls, &now.as_secs().to_string());
            s.change_membership(MembershipChange::Add { id, peer_urls: urls.clone(), learner: r.is_learner }).await?;
            let members = members_once(s, |ms| ms.iter().any(|m| m.id == id)).await;
            let member = Member {
                id,
                name: String::new(),
                peer_ur_ls: urls,
                client_ur_ls: Vec::new(),
                is_learner: r.is_learner,
            };
            let mut resp = MemberAddResponse { header: None, member: Some(member), members };
            s.fill_header(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn member_remove(&self, req: Request<MemberRemoveRequest>) -> Result<Response<MemberRemoveResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Cluster", "MemberRemove", async {
            // etcd's checkMembershipOperationPermission.
            s.check_admin(&req).await?;
            let id = req.into_inner().id;
            s.change_membership(MembershipChange::Remove(id)).await?;
            let members = members_once(s, |ms| ms.iter().all(|m| m.id != id)).await;
            let mut resp = MemberRemoveResponse { header: None, members };
            s.fill_header(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn member_update(&self, req: Request<MemberUpdateRequest>) -> Result<Response<MemberUpdateResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Cluster", "MemberUpdate", async {
            // etcd's checkMembershipOperationPermission.
            s.check_admin(&req).await?;
            let r = req.into_inner();
            let urls = check_urls(&r.peer_ur_ls)?;
            s.change_membership(MembershipChange::Update { id: r.id, peer_urls: urls.clone() }).await?;
            let members = members_once(s, |ms| ms.iter().any(|m| m.id == r.id && m.peer_ur_ls == urls)).await;
            let mut resp = MemberUpdateResponse { header: None, members };
            s.fill_header(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
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
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Cluster", "MemberPromote", async {
            // etcd's checkMembershipOperationPermission.
            s.check_admin(&req).await?;
            let id = req.into_inner().id;
            s.change_membership(MembershipChange::Promote(id)).await?;
            let members = members_once(s, |ms| ms.iter().any(|m| m.id == id && !m.is_learner)).await;
            let mut resp = MemberPromoteResponse { header: None, members };
            s.fill_header(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }
}

/// etcd's `types.NewURLs` check on the URLs of a member add or update.
fn check_urls(urls: &[String]) -> Result<Vec<String>, EtcdError> {
    let valid = !urls.is_empty()
        && urls.iter().all(|u| {
            url::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.port().is_some()
                    && matches!(p.path(), "" | "/")
                    && p.query().is_none()
            })
        });
    if !valid {
        return Err(EtcdError::BadMemberUrls);
    }
    let mut urls = urls.to_vec();
    urls.sort();
    Ok(urls)
}

/// The member list once this member's own view shows the change (etcd answers after applying
/// the configuration change locally); gives up waiting after a few seconds and answers with
/// what it has.
async fn members_once(s: &EtcdServer, done: impl Fn(&[Member]) -> bool) -> Vec<Member> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let ms = members(s);
        if done(&ms) || tokio::time::Instant::now() >= deadline {
            return ms;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
