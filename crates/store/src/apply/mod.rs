//! etcd's request semantics over the MVCC store (etcd's `applierV3backend`): what a Put,
//! DeleteRange, Txn or Range means, independent of how it reached this member.
//!
//! The same code answers committed Raft entries (writes) and local reads, so a Range inside a
//! Txn and a standalone Range cannot drift apart.
//!
//! Beside them, what the replicated lease and auth requests do when applied: [`lease`] (grant,
//! revoke) and [`auth`] (every [`crate::auth::AuthOp`]).

pub mod auth;
pub mod lease;

use std::cmp::Ordering;

use kaname_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use kaname_proto::mvccpb::KeyValue;

use crate::error::{internal, EtcdError};
use crate::mvcc::{MvccStore, RangeOptions, RangeResult, TxnWrite};

/// etcd treats a `range_end` of a single zero byte as "every key from `key` on", and an absent
/// one as "just `key`" (`mkGteRange`).
pub fn range_end(end: &[u8]) -> Option<&[u8]> {
    match end {
        [] => None,
        [0] => Some(&[]),
        e => Some(e),
    }
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// Anything Range can read from: the committed store (reads) or a write in progress (txns).
pub trait RangeSource {
    fn range_keys(&self, key: &[u8], end: Option<&[u8]>, opts: &RangeOptions) -> Result<RangeResult, EtcdError>;
}

impl RangeSource for MvccStore {
    fn range_keys(&self, key: &[u8], end: Option<&[u8]>, opts: &RangeOptions) -> Result<RangeResult, EtcdError> {
        self.range(key, end, opts)
    }
}

impl RangeSource for TxnWrite<'_, '_> {
    fn range_keys(&self, key: &[u8], end: Option<&[u8]>, opts: &RangeOptions) -> Result<RangeResult, EtcdError> {
        self.range(key, end, opts)
    }
}

/// etcd's `applierV3backend.Range`: filters and sorting happen after the fetch, so a limit
/// can only be pushed down when neither is asked for.
pub fn range(src: &impl RangeSource, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
    use range_request::{SortOrder, SortTarget};
    let sort_order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let filtered =
        r.min_mod_revision != 0 || r.max_mod_revision != 0 || r.min_create_revision != 0 || r.max_create_revision != 0;
    let mut limit = r.limit;
    if sort_order != SortOrder::None || filtered {
        limit = 0;
    }
    if limit > 0 {
        // one more than asked, to learn whether there is more
        limit += 1;
    }
    let opts = RangeOptions { limit: limit.max(0) as usize, rev: r.revision, count_only: r.count_only };
    let mut rr = src.range_keys(&r.key, range_end(&r.range_end), &opts)?;

    rr.kvs.retain(|kv| {
        !(r.max_mod_revision != 0 && kv.mod_revision > r.max_mod_revision
            || r.min_mod_revision != 0 && kv.mod_revision < r.min_mod_revision
            || r.max_create_revision != 0 && kv.create_revision > r.max_create_revision
            || r.min_create_revision != 0 && kv.create_revision < r.min_create_revision)
    });

    let mut order = sort_order;
    if sort_target != SortTarget::Key && order == SortOrder::None {
        // the store returns keys ascending; any other target needs an explicit sort
        order = SortOrder::Ascend;
    }
    if order != SortOrder::None {
        let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
            match sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        // Stable, like the insertion sort Go's sort.Sort uses on the short lists etcdctl
        // users look at, so ties keep key order.
        if order == SortOrder::Descend {
            rr.kvs.sort_by(|a, b| cmp(b, a));
        } else {
            rr.kvs.sort_by(cmp);
        }
    }

    let mut more = false;
    if r.limit > 0 && rr.kvs.len() > r.limit as usize {
        rr.kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut rr.kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse { header: header(rr.rev), kvs: rr.kvs, more, count: rr.count as i64 })
}

/// etcd's `applierV3backend.Put`, inside the request's write.
fn put(txn: &mut TxnWrite, p: &PutRequest) -> Result<PutResponse, EtcdError> {
    let mut value = p.value.clone();
    let mut lease = p.lease;
    let mut prev_kv = None;
    if p.ignore_value || p.ignore_lease || p.prev_kv {
        let prev = txn.get(&p.key)?;
        if (p.ignore_value || p.ignore_lease) && prev.is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if let Some(prev) = &prev {
            if p.ignore_value {
                value = prev.value.clone();
            }
            if p.ignore_lease {
                lease = prev.lease;
            }
        }
        if p.prev_kv {
            prev_kv = prev;
        }
    }
    txn.put(&p.key, value, lease)?;
    Ok(PutResponse { header: header(txn.write_rev()), prev_kv })
}

/// etcd's `applierV3backend.DeleteRange`.
fn delete_range(txn: &mut TxnWrite, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
    let end = range_end(&d.range_end);
    let prev_kvs = if d.prev_kv { txn.range(&d.key, end, &RangeOptions::default())?.kvs } else { Vec::new() };
    let deleted = txn.delete_range(&d.key, end)?;
    let rev = if deleted != 0 || txn.has_changes() { txn.write_rev() } else { txn.rev() };
    Ok(DeleteRangeResponse { header: header(rev), deleted, prev_kvs })
}

/// etcd's `applyCompare` over all compares: a txn's guard.
fn compares_hold(src: &impl RangeSource, compares: &[Compare]) -> Result<bool, EtcdError> {
    for c in compares {
        let kvs = src.range_keys(&c.key, range_end(&c.range_end), &RangeOptions::default())?.kvs;
        let holds = if kvs.is_empty() {
            // A value cannot be compared on a missing key; other targets compare as zero.
            c.target() != compare::CompareTarget::Value && compare_kv(c, &KeyValue::default())
        } else {
            kvs.iter().all(|kv| compare_kv(c, kv))
        };
        if !holds {
            return Ok(false);
        }
    }
    Ok(true)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ord = match c.target() {
        CompareTarget::Value => {
            let v: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(v)
        }
        target => {
            let want = match (&c.target_union, target) {
                (Some(TargetUnion::Version(v)), CompareTarget::Version) => *v,
                (Some(TargetUnion::CreateRevision(v)), CompareTarget::Create) => *v,
                (Some(TargetUnion::ModRevision(v)), CompareTarget::Mod) => *v,
                (Some(TargetUnion::Lease(v)), CompareTarget::Lease) => *v,
                _ => 0,
            };
            let have = match target {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            have.cmp(&want)
        }
    };
    match c.result() {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// A Put as a whole request.
pub fn apply_put(txn: &mut TxnWrite, p: &PutRequest) -> Result<PutResponse, EtcdError> {
    if p.lease != 0 && !txn.lessor().exists(p.lease) {
        return Err(EtcdError::LeaseNotFound);
    }
    put(txn, p)
}

/// A DeleteRange as a whole request.
pub fn apply_delete_range(txn: &mut TxnWrite, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
    delete_range(txn, d)
}

/// The ops of the branch a txn takes.
fn branch(t: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &t.success
    } else {
        &t.failure
    }
}

/// etcd's `compareToPath`: the branch decisions of a txn and of every nested txn on the way,
/// depth first, all made against the state *before* the txn writes anything.
fn decide_path(txn: &TxnWrite, t: &TxnRequest, path: &mut Vec<bool>) -> Result<(), EtcdError> {
    let succeeded = compares_hold(txn, &t.compare)?;
    path.push(succeeded);
    for op in branch(t, succeeded) {
        if let Some(request_op::Request::RequestTxn(inner)) = &op.request {
            decide_path(txn, inner, path)?;
        }
    }
    Ok(())
}

/// etcd's `checkRequests` along the decided path: everything that could fail half way
/// through the txn fails here, before anything is written, so a txn is all or nothing.
fn check_path(txn: &TxnWrite, t: &TxnRequest, path: &mut std::slice::Iter<'_, bool>) -> Result<(), EtcdError> {
    let succeeded = *path.next().ok_or_else(|| internal("txn path too short"))?;
    for op in branch(t, succeeded) {
        match &op.request {
            Some(request_op::Request::RequestPut(p)) => {
                if p.lease != 0 && !txn.lessor().exists(p.lease) {
                    return Err(EtcdError::LeaseNotFound);
                }
                if (p.ignore_value || p.ignore_lease) && txn.get(&p.key)?.is_none() {
                    return Err(EtcdError::KeyNotFound);
                }
            }
            Some(request_op::Request::RequestRange(r)) if r.revision != 0 => {
                if r.revision > txn.rev() {
                    return Err(EtcdError::FutureRev);
                }
                let probe = RangeOptions { rev: r.revision, count_only: true, limit: 0 };
                txn.range(&r.key, None, &probe)?;
            }
            Some(request_op::Request::RequestTxn(inner)) => check_path(txn, inner, path)?,
            _ => {}
        }
    }
    Ok(())
}

/// Runs the decided branches; nested txns run inside the same write (one revision). A
/// nested txn's response carries an empty header, the outer one the txn's revision, as etcd's.
fn exec_path(
    txn: &mut TxnWrite,
    t: &TxnRequest,
    path: &mut std::slice::Iter<'_, bool>,
    nested: bool,
) -> Result<TxnResponse, EtcdError> {
    let succeeded = *path.next().ok_or_else(|| internal("txn path too short"))?;
    let ops = branch(t, succeeded);
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(request_op::Request::RequestRange(r)) => response_op::Response::ResponseRange(range(&*txn, r)?),
            Some(request_op::Request::RequestPut(p)) => response_op::Response::ResponsePut(put(txn, p)?),
            Some(request_op::Request::RequestDeleteRange(d)) => {
                response_op::Response::ResponseDeleteRange(delete_range(txn, d)?)
            }
            Some(request_op::Request::RequestTxn(inner)) => {
                response_op::Response::ResponseTxn(exec_path(txn, inner, path, true)?)
            }
            None => continue,
        };
        responses.push(ResponseOp { response: Some(response) });
    }
    let header = if nested { Some(ResponseHeader::default()) } else { header(txn.rev()) };
    Ok(TxnResponse { header, succeeded, responses })
}

/// A Txn as a whole request (etcd's `Txn` apply): decide every branch, check the chosen ops,
/// then execute them.
pub fn apply_txn(txn: &mut TxnWrite, t: &TxnRequest) -> Result<TxnResponse, EtcdError> {
    let mut path = Vec::new();
    decide_path(txn, t, &mut path)?;
    check_path(txn, t, &mut path.iter())?;
    exec_path(txn, t, &mut path.iter(), false)
}

/// etcd's `isTxnReadonly`: every op of both branches is a Range (a nested txn counts as a
/// write). Such txns are served locally, without a Raft entry.
pub fn txn_is_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| matches!(op.request, Some(request_op::Request::RequestRange(_))))
}

/// etcd's `isTxnSerializable`: every op is a serializable Range, so no ReadIndex is needed.
pub fn txn_is_serializable(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| matches!(&op.request, Some(request_op::Request::RequestRange(r)) if r.serializable))
}

/// Reads of a read-only txn, all at one revision (etcd reads them in one read transaction).
struct PinnedRead<'s> {
    store: &'s MvccStore,
    rev: i64,
}

impl RangeSource for PinnedRead<'_> {
    fn range_keys(&self, key: &[u8], end: Option<&[u8]>, opts: &RangeOptions) -> Result<RangeResult, EtcdError> {
        let mut opts = opts.clone();
        if opts.rev > self.rev {
            return Err(EtcdError::FutureRev);
        }
        if opts.rev <= 0 {
            opts.rev = self.rev;
        }
        let mut rr = self.store.range(key, end, &opts)?;
        rr.rev = self.rev;
        Ok(rr)
    }
}

/// A read-only txn (see [`txn_is_read_only`]) against the committed store.
pub fn read_only_txn(store: &MvccStore, t: &TxnRequest) -> Result<TxnResponse, EtcdError> {
    let src = PinnedRead { store, rev: store.current_rev() };
    let succeeded = compares_hold(&src, &t.compare)?;
    let mut responses = Vec::new();
    for op in branch(t, succeeded) {
        if let Some(request_op::Request::RequestRange(r)) = &op.request {
            responses.push(ResponseOp { response: Some(response_op::Response::ResponseRange(range(&src, r)?)) });
        }
    }
    Ok(TxnResponse { header: header(src.rev), succeeded, responses })
}
