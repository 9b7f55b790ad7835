//! `etcdserverpb.KV`.

use std::sync::Arc;

use kaname_proto::etcdserverpb::kv_server::Kv;
use kaname_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use prost::Message;
use tonic::{Request, Response, Status};

use super::auth::as_user;
use super::{observed, validate, Headed};
use crate::auth::AuthInfo;
use crate::error::{internal, EtcdError};
use crate::raft::Command;
use crate::server::EtcdServer;
use crate::{alarm, apply};

pub struct KvService {
    pub server: Arc<EtcdServer>,
}

headed!(PutResponse, DeleteRangeResponse, TxnResponse, CompactionResponse);

impl KvService {
    /// Proposes a write request and answers with its response, header filled.
    async fn proposed<Resp: Headed>(
        &self,
        ai: &AuthInfo,
        wrap: fn(Vec<u8>) -> Command,
        req: &impl Message,
    ) -> Result<Response<Resp>, Status> {
        let mut resp: Resp = self.write(ai, wrap, req).await?;
        self.server.fill_header(resp.header());
        Ok(Response::new(resp))
    }

    /// Encodes a write, enforces `--max-request-bytes` (etcd checks the proposal size), and
    /// proposes it on behalf of `ai` (its permissions are checked when it is applied).
    async fn write<Resp: Message + Default>(
        &self,
        ai: &AuthInfo,
        wrap: fn(Vec<u8>) -> Command,
        req: &impl Message,
    ) -> Result<Resp, EtcdError> {
        let bytes = req.encode_to_vec();
        if bytes.len() > self.server.limits.max_request_bytes {
            return Err(EtcdError::RequestTooLarge);
        }
        let out = self.server.propose(as_user(ai, wrap(bytes))).await?;
        Resp::decode(out.as_slice()).map_err(internal)
    }
}

/// etcd's `doSerialize`: if the auth state changed while a read ran, the read's permission is
/// checked again against the new state before its answer goes out.
fn recheck(
    store: &crate::mvcc::MvccStore,
    ai: &AuthInfo,
    check: impl Fn(&crate::auth::AuthState, &AuthInfo) -> Result<(), EtcdError>,
) -> Result<(), EtcdError> {
    let now = store.auth();
    if ai.revision == 0 || now.revision == ai.revision {
        return Ok(());
    }
    check(&now, &AuthInfo { user: ai.user.clone(), revision: now.revision })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let s = &self.server;
        observed(s, "etcdserverpb.KV", "Range", async {
            let ai = s.auth_info_or_none(&req).await?;
            let r = req.into_inner();
            validate::check_range(&r)?;
            if !r.serializable {
                s.linearizable_barrier().await?;
            }
            s.store.auth().check_range(&ai, &r)?;
            let mut resp = apply::range(&*s.store, &r)?;
            recheck(&s.store, &ai, |st, ai| st.check_range(ai, &r))?;
            s.fill_header(&mut resp.header);
            Ok(Response::new(resp))
        })
        .await
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        observed(&self.server, "etcdserverpb.KV", "Put", async {
            let ai = self.server.auth_info_or_none(&req).await?;
            let r = req.into_inner();
            validate::check_put(&r)?;
            self.server.check_quota(alarm::put_cost(&r)).await?;
            self.proposed(&ai, Command::Put, &r).await
        })
        .await
    }

    async fn delete_range(&self, req: Request<DeleteRangeRequest>) -> Result<Response<DeleteRangeResponse>, Status> {
        observed(&self.server, "etcdserverpb.KV", "DeleteRange", async {
            let ai = self.server.auth_info_or_none(&req).await?;
            let r = req.into_inner();
            validate::check_delete(&r)?;
            self.proposed(&ai, Command::DeleteRange, &r).await
        })
        .await
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        observed(&self.server, "etcdserverpb.KV", "Txn", async {
            let ai = self.server.auth_info_or_none(&req).await?;
            let r = req.into_inner();
            validate::check_txn(&r, self.server.limits.max_txn_ops)?;
            if !apply::txn_is_read_only(&r) {
                self.server.check_quota(alarm::txn_cost(&r)).await?;
                return self.proposed(&ai, Command::Txn, &r).await;
            }
            if !apply::txn_is_serializable(&r) {
                self.server.linearizable_barrier().await?;
            }
            self.server.store.auth().check_txn(&ai, &r)?;
            let mut resp = apply::read_only_txn(&self.server.store, &r)?;
            recheck(&self.server.store, &ai, |st, ai| st.check_txn(ai, &r))?;
            self.server.fill_header(resp.header());
            Ok(Response::new(resp))
        })
        .await
    }

    async fn compact(&self, req: Request<CompactionRequest>) -> Result<Response<CompactionResponse>, Status> {
        observed(&self.server, "etcdserverpb.KV", "Compact", async {
            let ai = self.server.auth_info_or_none(&req).await?;
            self.proposed(&ai, Command::Compact, &req.into_inner()).await
        })
        .await
    }
}
