//! `etcdserverpb.Maintenance`: status, consistency checks, alarms, defragmentation, snapshots
//! and leader transfer.

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

use std::io::{Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use super::observed;
use crate::error::{internal, EtcdError};
use crate::raft::state_machine::export_snapshot;
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

/// Bytes per `SnapshotResponse` (etcd sends 32 KiB chunks).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

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
    async fn defragment(&self, req: Request<DefragmentRequest>) -> Result<Response<DefragmentResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Maintenance", "Defragment", async {
            s.check_maintenance_admin(&req).await?;
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
            s.check_maintenance_admin(&req).await?;
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

    /// Streams a consistent copy of this member's store, as etcd streams its backend file:
    /// chunks with the bytes still to come, then a last message holding the SHA-256 of
    /// everything sent (which restore tools check). The copy is first written to an unlinked
    /// file beside the backend, from one read transaction, so the stream's size is known and
    /// a slow client holds no transaction open.
    async fn snapshot(&self, req: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let s = self.server.clone();
        // etcd's authMaintenanceServer: only root may read the whole keyspace this way.
        s.check_maintenance_admin(&req).await?;
        let store = s.store.clone();
        let (file, total, revision) = tokio::task::spawn_blocking(move || {
            let revision = store.current_rev();
            let mut file = store.scratch_file("snapshot").map_err(internal)?;
            {
                let mut w = std::io::BufWriter::new(&mut file);
                export_snapshot(&store, &mut w)?;
                w.flush().map_err(internal)?;
            }
            // etcd clients accept a snapshot only if its size is a multiple of 512 plus the
            // 32-byte checksum (bbolt files are whole pages); zeros after the end mark are
            // ignored by readers of the format.
            let len = file.seek(SeekFrom::End(0)).map_err(internal)?;
            let pad = (512 - len % 512) % 512;
            file.write_all(&vec![0u8; pad as usize]).map_err(internal)?;
            let total = len + pad;
            file.seek(SeekFrom::Start(0)).map_err(internal)?;
            Ok::<_, EtcdError>((file, total, revision))
        })
        .await
        .map_err(internal)??;
        tracing::info!(bytes = total, revision, "sending snapshot to a client");

        let (tx, rx) = tokio::sync::mpsc::channel::<Result<SnapshotResponse, Status>>(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            let mut hasher = Sha256::new();
            let mut sent = 0u64;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            let header = |s: &EtcdServer| {
                let mut h = None;
                s.fill_header(&mut h);
                h.as_mut().expect("filled").revision = revision;
                h
            };
            loop {
                let n = match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!("read snapshot: {e}"))));
                        return;
                    }
                };
                hasher.update(&buf[..n]);
                sent += n as u64;
                let msg =
                    SnapshotResponse { header: header(&s), remaining_bytes: total - sent, blob: buf[..n].to_vec() };
                if tx.blocking_send(Ok(msg)).is_err() {
                    return; // the client went away
                }
            }
            let digest = hasher.finalize().to_vec();
            let _ = tx.blocking_send(Ok(SnapshotResponse { header: header(&s), remaining_bytes: 0, blob: digest }));
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn move_leader(&self, req: Request<MoveLeaderRequest>) -> Result<Response<MoveLeaderResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.Maintenance", "MoveLeader", async {
            s.move_leader(req.into_inner().target_id).await?;
            let mut resp = MoveLeaderResponse { header: None };
            s.fill_header(&mut resp.header);
            resp.header.as_mut().expect("filled").revision = s.store.current_rev();
            Ok(Response::new(resp))
        })
        .await
    }

    async fn downgrade(&self, _req: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(Status::unimplemented("downgrade is not supported"))
    }
}
