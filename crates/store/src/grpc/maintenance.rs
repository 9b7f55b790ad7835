//! `etcdserverpb.Maintenance`: status and consistency checks. Snapshot, defragment, alarms
//! and leader transfer come with the maintenance issue; until then they answer
//! `Unimplemented` (alarm list answers truthfully: this store raises no alarms yet).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kaname_proto::etcdserverpb::maintenance_server::Maintenance;
use kaname_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use super::observed;
use crate::server::EtcdServer;

/// The etcd release whose API this store matches; clients (kube-apiserver among them) switch
/// features on by it.
pub const ETCD_API_VERSION: &str = "3.5.17";

pub struct MaintenanceService {
    pub server: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let s = &self.server;
        let _ = req.into_inner();
        let mut resp = AlarmResponse { header: None, alarms: Vec::new() };
        s.fill_header(&mut resp.header);
        resp.header.as_mut().expect("filled").revision = s.store.current_rev();
        Ok(Response::new(resp))
    }

    async fn status(&self, _req: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Maintenance", "Status", async {
            let m = s.raft.metrics().borrow().clone();
            let mut resp = StatusResponse {
                header: None,
                version: ETCD_API_VERSION.into(),
                db_size: s.store.db_size() as i64,
                leader: m.current_leader.unwrap_or(0),
                raft_index: m.last_log_index.unwrap_or(0),
                raft_term: m.current_term,
                raft_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
                errors: Vec::new(),
                db_size_in_use: s.store.db_size_in_use() as i64,
                is_learner: !m.membership_config.membership().voter_ids().any(|id| id == s.member_id),
            };
            s.fill_header(&mut resp.header);
            resp.header.as_mut().expect("filled").revision = s.store.current_rev();
            Ok(Response::new(resp))
        })
        .await
    }

    async fn defragment(&self, _req: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        Err(Status::unimplemented("defragment is not supported yet"))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(Status::unimplemented("hash is not supported yet; use HashKV"))
    }

    async fn hash_kv(&self, req: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Maintenance", "HashKV", async {
            let h = s.store.hash_by_rev(req.into_inner().revision)?;
            let mut resp = HashKvResponse {
                header: None,
                hash: h.hash,
                compact_revision: h.compacted_rev,
                hash_revision: h.hash_rev,
            };
            s.fill_header(&mut resp.header);
            resp.header.as_mut().expect("filled").revision = h.current_rev;
            Ok(Response::new(resp))
        })
        .await
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send + 'static>>;

    async fn snapshot(&self, _req: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(Status::unimplemented("snapshot is not supported yet"))
    }

    async fn move_leader(&self, _req: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(Status::unimplemented("move-leader is not supported yet"))
    }

    async fn downgrade(&self, _req: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not supported"))
    }
}
