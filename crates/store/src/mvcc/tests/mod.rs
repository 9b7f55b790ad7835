//! Unit tests of [`MvccStore`] together with etcd's request semantics ([`crate::apply`]),
//! judged against etcd: etcd-io/etcd `server/mvcc/kvstore_test.go`, `kv_test.go` and
//! `server/etcdserver/apply.go` (`applierV3backend`, `compareToPath`, `checkRequests`), and,
//! for HashKV, against hashes recorded from a real etcd 3.4.23 given the same history.
//!
//! Every request goes the way the Raft state machine sends it: `write_batch()`, one
//! `batch.txn()` per request, `apply::apply_*`, then `batch.commit(..)` (committed even when the
//! request failed, as the state machine commits the whole apply round).

mod compaction_and_hash;
mod restart_and_crash;
mod revisions_and_ranges;
mod txn;

use std::path::PathBuf;

use kaname_proto::etcdserverpb::{
    compare, range_request, request_op, response_op, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse,
};
use kaname_proto::mvccpb::KeyValue;
use redb::{ReadableDatabase, ReadableTable};

use super::{bytes_to_rev, KvHash, MvccStore, Revision, TxnWrite, KEY_TABLE, META_COMPACTED_REV, META_CURRENT_REV};
use crate::apply;
use crate::error::EtcdError;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// A temp dir holding one store file; the dir (and every file in it) goes when this drops.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env { dir: tempfile::Builder::new().prefix("kaname-mvcc-test-").tempdir().expect("tempdir") }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("db.redb")
    }

    fn open(&self) -> MvccStore {
        MvccStore::open(&self.path()).expect("open store")
    }
}

/// Applies one request in its own apply round, durably; the round is committed whatever the
/// request answered, as the state machine does.
fn apply_one<T>(s: &MvccStore, f: impl FnOnce(&mut TxnWrite<'_, '_>) -> Result<T, EtcdError>) -> Result<T, EtcdError> {
    let mut batch = s.write_batch().expect("write batch");
    let out = {
        let mut txn = batch.txn();
        f(&mut txn)
    };
    batch.commit(true).expect("commit");
    out
}

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

fn del_req(key: &str, end: &str) -> DeleteRangeRequest {
    DeleteRangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

fn range_req(key: &str, end: &str) -> RangeRequest {
    RangeRequest { key: key.into(), range_end: end.into(), ..Default::default() }
}

fn try_put(s: &MvccStore, req: PutRequest) -> Result<PutResponse, EtcdError> {
    apply_one(s, |t| apply::apply_put(t, &req))
}

fn put(s: &MvccStore, key: &str, value: &str) -> PutResponse {
    try_put(s, put_req(key, value)).unwrap_or_else(|e| panic!("put {key}={value}: {e}"))
}

fn try_delete(s: &MvccStore, req: DeleteRangeRequest) -> Result<DeleteRangeResponse, EtcdError> {
    apply_one(s, |t| apply::apply_delete_range(t, &req))
}

fn delete(s: &MvccStore, key: &str, end: &str) -> DeleteRangeResponse {
    try_delete(s, del_req(key, end)).unwrap_or_else(|e| panic!("delete {key:?}..{end:?}: {e}"))
}

fn txn(s: &MvccStore, req: &TxnRequest) -> Result<TxnResponse, EtcdError> {
    apply_one(s, |t| apply::apply_txn(t, req))
}

fn compact(s: &MvccStore, rev: i64) -> Result<(), EtcdError> {
    let mut batch = s.write_batch().expect("write batch");
    let out = batch.compact(rev);
    batch.commit(true).expect("commit");
    out
}

fn range(s: &MvccStore, req: &RangeRequest) -> Result<RangeResponse, EtcdError> {
    apply::range(s, req)
}

fn get_at(s: &MvccStore, key: &str, rev: i64) -> Result<Option<KeyValue>, EtcdError> {
    let resp = range(s, &RangeRequest { revision: rev, ..range_req(key, "") })?;
    assert!(resp.kvs.len() <= 1, "a single-key range returned {:?}", resp.kvs);
    Ok(resp.kvs.into_iter().next())
}

fn get(s: &MvccStore, key: &str) -> Option<KeyValue> {
    get_at(s, key, 0).expect("get at the current revision")
}

/// Every live key at `rev` (0: current), as `get "" --from-key`.
fn all_at(s: &MvccStore, rev: i64) -> Result<Vec<KeyValue>, EtcdError> {
    Ok(range(s, &RangeRequest { revision: rev, ..range_req("", "\0") })?.kvs)
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

fn rev_of(header: &Option<ResponseHeader>) -> i64 {
    header.as_ref().expect("response header").revision
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

fn op_put(key: &str, value: &str) -> RequestOp {
    op(request_op::Request::RequestPut(put_req(key, value)))
}

fn op_del(key: &str, end: &str) -> RequestOp {
    op(request_op::Request::RequestDeleteRange(del_req(key, end)))
}

fn op_range(req: RangeRequest) -> RequestOp {
    op(request_op::Request::RequestRange(req))
}

fn op_txn(req: TxnRequest) -> RequestOp {
    op(request_op::Request::RequestTxn(req))
}

fn cmp_value(key: &str, result: compare::CompareResult, value: &str) -> Compare {
    Compare {
        result: result as i32,
        target: compare::CompareTarget::Value as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::Value(value.into())),
    }
}

fn cmp_mod(key: &str, result: compare::CompareResult, rev: i64) -> Compare {
    Compare {
        result: result as i32,
        target: compare::CompareTarget::Mod as i32,
        key: key.into(),
        range_end: Vec::new(),
        target_union: Some(compare::TargetUnion::ModRevision(rev)),
    }
}

fn resp_put(r: &TxnResponse, i: usize) -> &PutResponse {
    match r.responses[i].response.as_ref() {
        Some(response_op::Response::ResponsePut(p)) => p,
        other => panic!("response {i} is not a put: {other:?}"),
    }
}

fn resp_range(r: &TxnResponse, i: usize) -> &RangeResponse {
    match r.responses[i].response.as_ref() {
        Some(response_op::Response::ResponseRange(p)) => p,
        other => panic!("response {i} is not a range: {other:?}"),
    }
}

fn resp_del(r: &TxnResponse, i: usize) -> &DeleteRangeResponse {
    match r.responses[i].response.as_ref() {
        Some(response_op::Response::ResponseDeleteRange(p)) => p,
        other => panic!("response {i} is not a delete: {other:?}"),
    }
}

fn resp_txn(r: &TxnResponse, i: usize) -> &TxnResponse {
    match r.responses[i].response.as_ref() {
        Some(response_op::Response::ResponseTxn(p)) => p,
        other => panic!("response {i} is not a txn: {other:?}"),
    }
}

/// Every history row on disk: (revision, tombstone, key).
fn rows(s: &MvccStore) -> Vec<(Revision, bool, String)> {
    let db = s.db();
    let txn = db.begin_read().expect("read txn");
    let table = txn.open_table(KEY_TABLE).expect("key table");
    let mut out = Vec::new();
    for row in table.iter().expect("iter") {
        let (k, v) = row.expect("row");
        let (rev, tomb) = bytes_to_rev(k.value());
        let kv = <KeyValue as prost::Message>::decode(v.value()).expect("decode row");
        out.push((rev, tomb, String::from_utf8_lossy(&kv.key).into_owned()));
    }
    out
}

fn meta_i64(s: &MvccStore, name: &str) -> Option<i64> {
    s.get_meta(name).expect("get meta").map(|b| i64::from_be_bytes(b.as_slice().try_into().expect("8 bytes")))
}

/// Everything a client can observe of a store: reads of the whole key space and HashKV at
/// every revision from 0 to one past the current one (so Compacted/FutureRev answers count).
#[derive(Debug, PartialEq)]
struct View {
    current: i64,
    compacted: i64,
    reads: Vec<(i64, Result<Vec<KeyValue>, EtcdError>)>,
    hashes: Vec<(i64, Result<KvHash, EtcdError>)>,
    index_keys: usize,
}

fn view(s: &MvccStore) -> View {
    let current = s.current_rev();
    View {
        current,
        compacted: s.compacted_rev(),
        reads: (0..=current + 1).map(|r| (r, all_at(s, r))).collect(),
        hashes: (0..=current + 1).map(|r| (r, s.hash_by_rev(r))).collect(),
        index_keys: s.state.read().expect("index lock").index.len(),
    }
}

// ---------------------------------------------------------------------------------------------
// HashKV history (shared by compaction_and_hash and restart_and_crash)
// ---------------------------------------------------------------------------------------------

/// The history the HashKV values in `compaction_and_hash.rs` were recorded with, on etcd 3.4.23 through etcdctl.
fn etcd_hash_history(s: &MvccStore) {
    let always = || vec![cmp_mod("zz", compare::CompareResult::Equal, 0)];
    put(s, "a", "1"); // 2
    put(s, "b", "1"); // 3
    put(s, "a", "2"); // 4
    delete(s, "b", ""); // 5
    let t =
        txn(s, &TxnRequest { compare: always(), success: vec![op_put("c", "1"), op_put("d", "1")], failure: vec![] });
    assert_eq!(rev_of(&t.unwrap().header), 6);
    put(s, "b", "2"); // 7
    delete(s, "a", ""); // 8
    let t =
        txn(s, &TxnRequest { compare: always(), success: vec![op_put("e", "1"), op_del("c", "")], failure: vec![] });
    assert_eq!(rev_of(&t.unwrap().header), 9);
    put(s, "d", "2"); // 10
}

fn hash(s: &MvccStore, rev: i64) -> Result<(u32, i64, i64, i64), EtcdError> {
    s.hash_by_rev(rev).map(|h| (h.hash, h.hash_rev, h.current_rev, h.compacted_rev))
}
