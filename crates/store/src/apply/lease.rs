//! Grant and revoke as the state machine applies them (etcd's `applierV3backend.LeaseGrant`
//! and `LeaseRevoke`): decided here, at apply time, identically on every member.

use kaname_proto::etcdserverpb::ResponseHeader;
use kaname_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse};
use prost::Message;

use crate::error::{internal, EtcdError};
use crate::mvcc::WriteBatch;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

pub fn grant(batch: &mut WriteBatch, req: &[u8]) -> Result<Vec<u8>, EtcdError> {
    let req = LeaseGrantRequest::decode(req).map_err(internal)?;
    let ttl = batch.lessor().grant(req.id, req.ttl)?;
    batch.put_lease(req.id, ttl)?;
    Ok(LeaseGrantResponse { header: header(batch.rev()), id: req.id, ttl, error: String::new() }.encode_to_vec())
}

/// Deletes every attached key in one write (one revision, as etcd's single txn), then the
/// lease row, all in the apply round's transaction.
pub fn revoke(batch: &mut WriteBatch, req: &[u8]) -> Result<Vec<u8>, EtcdError> {
    let req = LeaseRevokeRequest::decode(req).map_err(internal)?;
    let keys = batch.lessor().keys_of(req.id)?;
    {
        let mut txn = batch.txn();
        for key in &keys {
            txn.delete_range(key, None)?;
        }
    }
    batch.lessor().remove(req.id);
    batch.delete_lease(req.id)?;
    Ok(LeaseRevokeResponse { header: header(batch.rev()) }.encode_to_vec())
}
