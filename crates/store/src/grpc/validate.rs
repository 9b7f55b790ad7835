//! Request checks done at the gRPC edge before anything is proposed (etcd's `v3rpc/key.go`):
//! they answer with etcd's `InvalidArgument` errors and never cost a Raft round.

use std::collections::HashSet;

use kaname_proto::etcdserverpb::{request_op, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

use crate::error::EtcdError;

pub fn check_range(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

pub fn check_put(r: &PutRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(r: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` followed by `checkIntervals` on both branches.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_ops(r: &TxnRequest, max_txn_ops: usize) -> Result<(), EtcdError> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_txn_ops {
        return Err(EtcdError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in r.success.iter().chain(r.failure.iter()) {
        match &op.request {
            Some(request_op::Request::RequestRange(x)) => check_range(x)?,
            Some(request_op::Request::RequestPut(x)) => check_put(x)?,
            Some(request_op::Request::RequestDeleteRange(x)) => check_delete(x)?,
            Some(request_op::Request::RequestTxn(x)) => check_txn_ops(x, max_txn_ops)?,
            None => {}
        }
    }
    Ok(())
}

/// A deleted interval: a single key when `end` is empty, otherwise `[start, end)` compared
/// as plain byte strings (etcd's affine string intervals, where "\0" is just a string).
#[derive(Clone)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn contains(&self, k: &[u8]) -> bool {
        match &self.end {
            None => self.start == k,
            Some(end) => self.start.as_slice() <= k && k < end.as_slice(),
        }
    }
}

/// Rejects a txn branch that writes the same key twice, or puts a key it also deletes
/// (etcd's `checkIntervals`); a nested txn's two branches exclude each other, so a key
/// may appear in both.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>), EtcdError> {
    let mut dels: Vec<Interval> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(request_op::Request::RequestDeleteRange(d)) => {
                Some(Interval { start: d.key.clone(), end: (!d.range_end.is_empty()).then(|| d.range_end.clone()) })
            }
            _ => None,
        })
        .collect();
    let hits = |dels: &[Interval], k: &[u8]| dels.iter().any(|iv| iv.contains(k));

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || hits(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || hits(&dels, k) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || hits(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}
