//! `etcdserverpb.Maintenance`: status, consistency checks, alarms and defragmentation.
//! Snapshot and leader transfer answer `Unimplemented` until they are built.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kaname_proto::etcdserverpb::maintenance_server::Maintenance;
use kaname_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmMember, AlarmType};
use kaname_proto::etcdserverpb::{
    AlarmRequest, AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::observed;
use crate::error::internal;
use crate::raft::Command;
use crate::server::EtcdServer;

/// An alarm as etcd puts it in `StatusResponse.errors`: the Go text form of `AlarmMember`
/// (etcdctl shows it verbatim in `endpoint status`).
fn alarm_text(a: &AlarmMember) -> String {
    let name = AlarmType::try_from(a.alarm).map(|t| t.as_str_name()).unwrap_or("UNKNOWN");
    format!("memberID:{} alarm:{} ", a.member_id, name)
}

/// The etcd release whose API this store matches; clients (kube-apiserver among them) switch
/// features on by it.
pub const ETCD_API_VERSION: &str = "3.5.17";

pub struct MaintenanceService {
    pub server: Arc<EtcdServer>,
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    /// Raising and clearing alarms go through Raft (alarms are cluster state); listing them
    /// is a linearizable read of that state.
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Maintenance", "Alarm", async {
            let r = req.into_inner();
            let mut resp = if r.action == AlarmAction::Get as i32 {
                s.linearizable_barrier().await?;
                AlarmResponse { header: None, alarms: s.store.alarms().list() }
            } else {
                let out = s.propose(Command::Alarm(r.encode_to_vec())).await?;
                AlarmResponse::decode(out.as_slice()).map_err(internal)?
            };
            s.fill_header(&mut resp.header);
            resp.header.as_mut().expect("filled").revision = s.store.current_rev();
            Ok(Response::new(resp))
        })
        .await
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
                errors: s.store.alarms().list().iter().map(alarm_text).collect(),
                db_size_in_use: s.store.db_size_in_use() as i64,
                is_learner: !m.membership_config.membership().voter_ids().any(|id| id == s.member_id),
            };
            s.fill_header(&mut resp.header);
            resp.header.as_mut().expect("filled").revision = s.store.current_rev();
            Ok(Response::new(resp))
        })
        .await
    }

    /// Local to this member, as in etcd: each member defragments its own backend.
    async fn defragment(&self, _req: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Maintenance", "Defragment", async {
            let store = s.store.clone();
            let started = std::time::Instant::now();
            tokio::task::spawn_blocking(move || store.defragment()).await.map_err(internal)??;
            tracing::info!(took_ms = started.elapsed().as_millis() as u64, db_size = s.store.db_size(), "defragmented");
            let mut resp = DefragmentResponse { header: None };
            s.fill_header(&mut resp.header);
            resp.header.as_mut().expect("filled").revision = s.store.current_rev();
            Ok(Response::new(resp))
        })
        .await
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
