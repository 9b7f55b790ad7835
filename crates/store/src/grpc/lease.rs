//! `etcdserverpb.Lease` (etcd's `v3rpc/lease.go` over `v3_server.go`): grant and revoke go
//! through Raft; keep-alive and time-to-live are answered by the leader (see
//! `server::lease`); the lease list is this member's replicated view.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::Stream;
use kaname_proto::etcdserverpb::lease_server::Lease;
use kaname_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest,
    LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, ResponseHeader,
};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::observed;
use crate::error::{internal, EtcdError};
use crate::raft::Command;
use crate::server::EtcdServer;

pub struct LeaseService {
    server: Arc<EtcdServer>,
    ids: IdGenerator,
}

impl LeaseService {
    pub fn new(server: Arc<EtcdServer>) -> Self {
        let ids = IdGenerator::new(server.member_id);
        LeaseService { server, ids }
    }

    /// etcd's `header.fill`: identity, and the current revision unless the apply set one.
    fn fill(&self, header: &mut Option<ResponseHeader>) {
        self.server.fill_header(header);
        let h = header.as_mut().expect("filled");
        if h.revision == 0 {
            h.revision = self.server.store.current_rev();
        }
    }
}

/// etcd's `idutil.Generator`: the member ID's low 16 bits, then 40 bits of milliseconds at
/// start, then an 8-bit counter that carries into the time part. Unique across members and
/// restarts without coordination.
struct IdGenerator {
    prefix: u64,
    suffix: AtomicU64,
}

impl IdGenerator {
    fn new(member_id: u64) -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        IdGenerator { prefix: (member_id & 0xffff) << 48, suffix: AtomicU64::new((millis & ((1 << 40) - 1)) << 8) }
    }

    /// A positive, non-zero lease ID.
    fn next(&self) -> i64 {
        loop {
            let suffix = self.suffix.fetch_add(1, Ordering::Relaxed) + 1;
            let id = (self.prefix | (suffix & ((1 << 48) - 1))) & (i64::MAX as u64);
            if id != 0 {
                return id as i64;
            }
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(&self, req: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        observed(&self.server, "etcdserverpb.Lease", "LeaseGrant", async {
            let mut r = req.into_inner();
            if r.id == 0 {
                r.id = self.ids.next();
            }
            let out = self.server.propose(Command::LeaseGrant(r.encode_to_vec())).await?;
            let mut resp = LeaseGrantResponse::decode(out.as_slice()).map_err(internal)?;
            self.fill(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn lease_revoke(&self, req: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        observed(&self.server, "etcdserverpb.Lease", "LeaseRevoke", async {
            let ai = self.server.auth_info_or_none(&req).await?;
            let r = req.into_inner();
            let cmd = super::auth::as_user(&ai, Command::LeaseRevoke(r.encode_to_vec()));
            let out = self.server.propose(cmd).await?;
            let mut resp = LeaseRevokeResponse::decode(out.as_slice()).map_err(internal)?;
            self.fill(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    /// Each request is answered in order; an unknown (or just expired) lease answers TTL 0,
    /// other failures end the stream, as etcd's `leaseKeepAlive`.
    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = req.into_inner();
        let server = self.server.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(r)) = inbound.next().await {
                let ttl = match server.lease_renew(r.id).await {
                    Ok(ttl) => ttl,
                    Err(EtcdError::LeaseNotFound) => 0,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let mut header = None;
                server.fill_header(&mut header);
                if let Some(h) = header.as_mut() {
                    h.revision = server.store.current_rev();
                }
                if tx.send(Ok(LeaseKeepAliveResponse { header, id: r.id, ttl })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        observed(&self.server, "etcdserverpb.Lease", "LeaseTimeToLive", async {
            let r = req.into_inner();
            let mut resp = match self.server.lease_time_to_live(r.id, r.keys).await? {
                Some(st) => LeaseTimeToLiveResponse {
                    header: None,
                    id: r.id,
                    ttl: st.remaining,
                    granted_ttl: st.granted_ttl,
                    keys: st.keys,
                },
                // etcd answers an unknown lease with TTL -1, not an error.
                None => LeaseTimeToLiveResponse { header: None, id: r.id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
            };
            self.fill(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn lease_leases(&self, _req: Request<LeaseLeasesRequest>) -> Result<Response<LeaseLeasesResponse>, Status> {
        observed(&self.server, "etcdserverpb.Lease", "LeaseLeases", async {
            let leases = self.server.store.lessor().ids().into_iter().map(|id| LeaseStatus { id }).collect();
            let mut resp = LeaseLeasesResponse { header: None, leases };
            self.fill(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }
}
