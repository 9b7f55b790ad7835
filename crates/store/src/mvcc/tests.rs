//! Unit tests of [`MvccStore`] together with etcd's request semantics ([`crate::apply`]),
//! judged against etcd: etcd-io/etcd `server/mvcc/kvstore_test.go`, `kv_test.go` and
//! `server/etcdserver/apply.go` (`applierV3backend`, `compareToPath`, `checkRequests`), and,
//! for HashKV, against hashes recorded from a real etcd 3.4.23 given the same history.
//!
//! Every request goes the way the Raft state machine sends it: `write_batch()`, one
//! `batch.txn()` per request, `apply::apply_*`, then `batch.commit(..)` (committed even when the
//! request failed, as the state machine commits the whole apply round).

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
// Revisions
// ---------------------------------------------------------------------------------------------

#[test]
fn revision_starts_at_one_and_counts_write_requests() {
    let env = Env::new();
    let s = env.open();
    assert_eq!((s.current_rev(), s.compacted_rev()), (1, -1), "a fresh store is at revision 1, never compacted");
    let empty = range(&s, &range_req("a", "")).unwrap();
    assert_eq!((rev_of(&empty.header), empty.kvs.len(), empty.count), (1, 0, 0));

    assert_eq!(rev_of(&put(&s, "a", "1").header), 2, "the first write is revision 2, as in etcd");
    assert_eq!(rev_of(&put(&s, "b", "1").header), 3);
    assert_eq!(s.current_rev(), 3);

    // Deleting nothing does not make a revision, and reports the current one.
    let d = delete(&s, "zz", "");
    assert_eq!((d.deleted, rev_of(&d.header), s.current_rev()), (0, 3, 3));
    let d = delete(&s, "x", "y");
    assert_eq!((d.deleted, rev_of(&d.header), s.current_rev()), (0, 3, 3));

    // Txns without a write: reads only, a failed guard with an empty else, a delete of nothing.
    let t = txn(&s, &TxnRequest { success: vec![op_range(range_req("a", ""))], ..Default::default() }).unwrap();
    assert_eq!((rev_of(&t.header), s.current_rev()), (3, 3), "read-only txn");
    let t = txn(
        &s,
        &TxnRequest {
            compare: vec![cmp_value("a", compare::CompareResult::Equal, "nope")],
            success: vec![op_put("a", "x")],
            failure: vec![],
        },
    )
    .unwrap();
    assert_eq!((t.succeeded, rev_of(&t.header), s.current_rev()), (false, 3, 3), "txn taking an empty else");
    let t = txn(&s, &TxnRequest { success: vec![op_del("nothing", "")], ..Default::default() }).unwrap();
    assert_eq!((rev_of(&t.header), rev_of(&resp_del(&t, 0).header), s.current_rev()), (3, 3, 3));

    // A txn with several writes is one revision.
    let t = txn(&s, &TxnRequest { success: vec![op_put("c", "1"), op_put("d", "1")], ..Default::default() }).unwrap();
    assert_eq!((rev_of(&t.header), s.current_rev()), (4, 4));

    // Deleting several keys at once is one revision.
    let d = delete(&s, "a", "d");
    assert_eq!((d.deleted, rev_of(&d.header), s.current_rev()), (3, 5, 5));

    // A failed request writes nothing and makes no revision.
    let e = try_put(&s, PutRequest { ignore_value: true, ..put_req("missing", "") });
    assert_eq!(e.unwrap_err(), EtcdError::KeyNotFound);
    let e = try_put(&s, PutRequest { lease: 42, ..put_req("leased", "v") });
    assert_eq!(e.unwrap_err(), EtcdError::LeaseNotFound);
    assert_eq!(s.current_rev(), 5);
    assert_eq!(rows(&s).len(), 7, "rows: a, b, c, d, and the three tombstones of a..d");

    // Several requests in one apply round: one revision each, published together at commit.
    let mut batch = s.write_batch().unwrap();
    for (i, key) in ["e", "f", "g"].into_iter().enumerate() {
        let mut t = batch.txn();
        let r = apply::apply_put(&mut t, &put_req(key, "1")).unwrap();
        assert_eq!(rev_of(&r.header), 6 + i as i64);
    }
    {
        let mut t = batch.txn();
        let r = apply::apply_delete_range(&mut t, &del_req("nothing", "")).unwrap();
        assert_eq!(rev_of(&r.header), 8, "a no-op inside a round sees the round's earlier writes");
    }
    assert_eq!(batch.rev(), 8);
    assert_eq!(s.current_rev(), 5, "readers do not see a round before it commits");
    assert_eq!(get(&s, "e"), None, "readers do not see a round before it commits");
    batch.commit(true).unwrap();
    assert_eq!(s.current_rev(), 8);
    assert_eq!(get(&s, "g"), Some(kv("g", "1", 8, 8, 1)));
}

#[test]
fn create_mod_revision_and_version_across_put_delete_recreate() {
    let env = Env::new();
    let s = env.open();
    put(&s, "foo", "bar");
    assert_eq!(get(&s, "foo"), Some(kv("foo", "bar", 2, 2, 1)));
    put(&s, "foo", "bar1");
    assert_eq!(get(&s, "foo"), Some(kv("foo", "bar1", 2, 3, 2)));
    put(&s, "foo", "bar2");
    assert_eq!(get(&s, "foo"), Some(kv("foo", "bar2", 2, 4, 3)));
    let d = delete(&s, "foo", "");
    assert_eq!((d.deleted, rev_of(&d.header)), (1, 5));
    assert_eq!(get(&s, "foo"), None);
    assert_eq!(delete(&s, "foo", "").deleted, 0, "deleting a deleted key deletes nothing");
    // Re-created: a new generation with its own create revision, version starting at 1.
    put(&s, "foo", "again");
    assert_eq!(get(&s, "foo"), Some(kv("foo", "again", 6, 6, 1)));
    put(&s, "foo", "again2");
    assert_eq!(get(&s, "foo"), Some(kv("foo", "again2", 6, 7, 2)));

    // The past stays readable, revision by revision.
    let history = [
        (1, None),
        (2, Some(kv("foo", "bar", 2, 2, 1))),
        (3, Some(kv("foo", "bar1", 2, 3, 2))),
        (4, Some(kv("foo", "bar2", 2, 4, 3))),
        (5, None),
        (6, Some(kv("foo", "again", 6, 6, 1))),
        (7, Some(kv("foo", "again2", 6, 7, 2))),
    ];
    for (rev, want) in history {
        assert_eq!(get_at(&s, "foo", rev).unwrap(), want, "foo at revision {rev}");
        let r = range(&s, &RangeRequest { revision: rev, ..range_req("foo", "") }).unwrap();
        assert_eq!(rev_of(&r.header), 7, "a read at a past revision reports the current revision");
    }
    assert_eq!(get_at(&s, "foo", 0).unwrap(), get_at(&s, "foo", 7).unwrap(), "revision 0 means current");
    assert_eq!(get_at(&s, "foo", -3).unwrap(), get_at(&s, "foo", 7).unwrap(), "a negative revision means current");
    assert_eq!(get_at(&s, "foo", 8), Err(EtcdError::FutureRev));
}

// ---------------------------------------------------------------------------------------------
// Compaction
// ---------------------------------------------------------------------------------------------

#[test]
fn compaction_of_a_fresh_store_at_zero_works_once() {
    // etcd 3.4.23: `compact 0` -> "compacted revision 0", again -> ErrCompacted,
    // `compact 1` -> ok, `compact 2` -> ErrFutureRev (on a store at revision 1).
    let env = Env::new();
    let s = env.open();
    assert_eq!(compact(&s, 0), Ok(()));
    assert_eq!(s.compacted_rev(), 0);
    assert_eq!(compact(&s, 0), Err(EtcdError::Compacted));
    assert_eq!(compact(&s, 1), Ok(()));
    assert_eq!(compact(&s, 2), Err(EtcdError::FutureRev));
    assert_eq!((s.current_rev(), s.compacted_rev()), (1, 1), "compaction makes no revision");
    assert_eq!(get_at(&s, "a", 1).unwrap(), None, "reading at the compacted revision itself is fine");
    assert_eq!(s.hash_by_rev(0).unwrap().hash, 1084519789, "etcd's HashKV of an empty store");
}

#[test]
fn compaction_bounds_reads_and_drops_superseded_rows() {
    let env = Env::new();
    let s = env.open();
    put(&s, "a", "1"); // 2
    put(&s, "a", "2"); // 3
    put(&s, "a", "3"); // 4
    put(&s, "b", "1"); // 5
    delete(&s, "b", ""); // 6
    put(&s, "c", "1"); // 7
    assert_eq!(compact(&s, 8), Err(EtcdError::FutureRev));
    assert_eq!(compact(&s, 6), Ok(()));
    assert_eq!((s.current_rev(), s.compacted_rev()), (7, 6));

    for rev in [1, 2, 5] {
        assert_eq!(get_at(&s, "a", rev), Err(EtcdError::Compacted), "read at {rev} below the compaction");
        assert_eq!(all_at(&s, rev), Err(EtcdError::Compacted));
    }
    assert_eq!(get_at(&s, "a", 6).unwrap(), Some(kv("a", "3", 2, 4, 3)), "create revision and version survive");
    assert_eq!(get_at(&s, "b", 6).unwrap(), None);
    assert_eq!(keys(&all_at(&s, 7).unwrap()), ["a", "c"]);
    assert_eq!(all_at(&s, 8), Err(EtcdError::FutureRev));
    assert_eq!(compact(&s, 6), Err(EtcdError::Compacted), "compacting at the same revision again");
    assert_eq!(compact(&s, 4), Err(EtcdError::Compacted), "compacting below the compaction");
    assert_eq!(s.hash_by_rev(6).map(|h| h.hash), Err(EtcdError::Compacted), "HashKV at the compaction revision");
    assert_eq!(s.hash_by_rev(5).map(|h| h.hash), Err(EtcdError::Compacted));
    assert_eq!(s.hash_by_rev(8).map(|h| h.hash), Err(EtcdError::FutureRev));

    // Superseded rows are gone from disk; what a read at >= 6 needs stays, and so does the
    // tombstone sitting exactly on the compaction revision (etcd #18274, etcd >= 3.4.34).
    let left: Vec<_> = rows(&s).into_iter().map(|(r, t, k)| (r.main, t, k)).collect();
    assert_eq!(left, [(4, false, "a".to_string()), (6, true, "b".to_string()), (7, false, "c".to_string())]);

    // Versions continue after compaction.
    put(&s, "a", "4");
    assert_eq!(get(&s, "a"), Some(kv("a", "4", 2, 8, 4)));
    put(&s, "b", "again");
    assert_eq!(get(&s, "b"), Some(kv("b", "again", 9, 9, 1)));
    assert_eq!(compact(&s, 9), Ok(()));
    let left: Vec<_> = rows(&s).into_iter().map(|(r, t, k)| (r.main, t, k)).collect();
    assert_eq!(left, [(7, false, "c".to_string()), (8, false, "a".to_string()), (9, false, "b".to_string())]);
}

#[test]
fn compaction_inside_an_apply_round_applies_to_later_requests_of_the_round() {
    let env = Env::new();
    let s = env.open();
    put(&s, "a", "1"); // 2
    put(&s, "a", "2"); // 3
    let mut batch = s.write_batch().unwrap();
    batch.compact(3).unwrap();
    {
        let t = batch.txn();
        let r = apply::range(&t, &RangeRequest { revision: 2, ..range_req("a", "") });
        assert_eq!(r.unwrap_err(), EtcdError::Compacted);
    }
    {
        let mut t = batch.txn();
        let r = apply::apply_txn(
            &mut t,
            &TxnRequest {
                success: vec![op_put("b", "1"), op_range(RangeRequest { revision: 2, ..range_req("a", "") })],
                ..Default::default()
            },
        );
        assert_eq!(r.unwrap_err(), EtcdError::Compacted, "etcd's checkRequests refuses the txn before it writes");
    }
    assert_eq!(batch.compact(3), Err(EtcdError::Compacted));
    batch.commit(true).unwrap();
    assert_eq!((s.current_rev(), s.compacted_rev()), (3, 3));
    assert_eq!(get(&s, "b"), None, "the refused txn wrote nothing");
}

// ---------------------------------------------------------------------------------------------
// Txn
// ---------------------------------------------------------------------------------------------

#[test]
fn txn_reads_its_own_writes_at_one_revision_with_increasing_sub_revisions() {
    let env = Env::new();
    let s = env.open();
    put(&s, "a", "1"); // 2
    put(&s, "x", "1"); // 3
    let t = txn(
        &s,
        &TxnRequest {
            compare: vec![cmp_mod("a", compare::CompareResult::Equal, 2)],
            success: vec![
                op_range(range_req("a", "")),
                op_put("a", "2"),
                op_range(range_req("a", "")),
                op_put("b", "1"),
                op_del("x", ""),
                op_range(range_req("", "\0")),
                op_del("nothing", ""),
            ],
            failure: vec![],
        },
    )
    .unwrap();
    assert!(t.succeeded);
    assert_eq!(rev_of(&t.header), 4);
    // Before its first write, a txn reads at the previous revision.
    let r0 = resp_range(&t, 0);
    assert_eq!((rev_of(&r0.header), r0.kvs.clone()), (3, vec![kv("a", "1", 2, 2, 1)]));
    assert_eq!(rev_of(&resp_put(&t, 1).header), 4);
    let r2 = resp_range(&t, 2);
    assert_eq!((rev_of(&r2.header), r2.kvs.clone()), (4, vec![kv("a", "2", 2, 4, 2)]), "reads its own put");
    assert_eq!(rev_of(&resp_put(&t, 3).header), 4);
    let d = resp_del(&t, 4);
    assert_eq!((d.deleted, rev_of(&d.header)), (1, 4));
    let all = resp_range(&t, 5);
    assert_eq!(all.kvs, vec![kv("a", "2", 2, 4, 2), kv("b", "1", 4, 4, 1)], "sees its own put and delete");
    assert_eq!(all.count, 2);
    let d = resp_del(&t, 6);
    assert_eq!((d.deleted, rev_of(&d.header)), (0, 4), "a no-op delete after writes reports the txn's revision");

    // One main revision, numbered by sub revision in order of the ops.
    let at4: Vec<_> = rows(&s).into_iter().filter(|(r, _, _)| r.main == 4).map(|(r, t, k)| (r.sub, t, k)).collect();
    assert_eq!(at4, [(0, false, "a".to_string()), (1, false, "b".to_string()), (2, true, "x".to_string())]);
    assert_eq!(s.current_rev(), 4);
    assert_eq!(keys(&all_at(&s, 3).unwrap()), ["a", "x"]);
    assert_eq!(all_at(&s, 3).unwrap()[0], kv("a", "1", 2, 2, 1));

    // Delete and re-create inside one txn: the key starts a new life at this revision.
    let t = txn(&s, &TxnRequest { success: vec![op_del("a", ""), op_put("a", "new")], ..Default::default() }).unwrap();
    assert_eq!(rev_of(&t.header), 5);
    assert_eq!(get(&s, "a"), Some(kv("a", "new", 5, 5, 1)));
    assert_eq!(get_at(&s, "a", 4).unwrap(), Some(kv("a", "2", 2, 4, 2)));
}

#[test]
fn txn_guard_on_missing_keys_and_refused_branches_write_nothing() {
    let env = Env::new();
    let s = env.open();
    put(&s, "a", "1"); // 2
                       // A value compare on a missing key fails; other targets compare against zero.
    let t = txn(
        &s,
        &TxnRequest {
            compare: vec![cmp_value("missing", compare::CompareResult::NotEqual, "x")],
            success: vec![op_put("s", "1")],
            failure: vec![op_put("f", "1")],
        },
    )
    .unwrap();
    assert!(!t.succeeded, "etcd: comparing the value of a missing key always fails");
    let t = txn(
        &s,
        &TxnRequest {
            compare: vec![cmp_mod("missing", compare::CompareResult::Equal, 0)],
            success: vec![op_put("s", "1")],
            failure: vec![],
        },
    )
    .unwrap();
    assert!(t.succeeded, "etcd: mod_revision of a missing key is 0");
    assert_eq!(s.current_rev(), 4);

    // etcd's checkRequests: the chosen branch is checked before anything is written.
    let refused = [
        (
            op(request_op::Request::RequestPut(PutRequest { ignore_value: true, ..put_req("nope", "") })),
            EtcdError::KeyNotFound,
        ),
        (
            op(request_op::Request::RequestPut(PutRequest { ignore_lease: true, ..put_req("nope", "v") })),
            EtcdError::KeyNotFound,
        ),
        (op(request_op::Request::RequestPut(PutRequest { lease: 7, ..put_req("l", "v") })), EtcdError::LeaseNotFound),
        (op_range(RangeRequest { revision: 99, ..range_req("a", "") }), EtcdError::FutureRev),
    ];
    for (bad, want) in refused {
        let rows_before = rows(&s).len();
        let r = txn(&s, &TxnRequest { success: vec![op_put("first", "1"), bad.clone()], ..Default::default() });
        assert_eq!(r.unwrap_err(), want, "{bad:?}");
        assert_eq!(s.current_rev(), 4, "refused txn made a revision ({bad:?})");
        assert_eq!(get(&s, "first"), None, "refused txn wrote its first op ({bad:?})");
        assert_eq!(rows(&s).len(), rows_before);
    }
    // The unchosen branch is not checked.
    let t = txn(
        &s,
        &TxnRequest {
            compare: vec![cmp_value("a", compare::CompareResult::Equal, "1")],
            success: vec![op_put("ok", "1")],
            failure: vec![op(request_op::Request::RequestPut(PutRequest {
                ignore_value: true,
                ..put_req("nope", "")
            }))],
        },
    )
    .unwrap();
    assert!(t.succeeded);
    assert_eq!(get(&s, "ok"), Some(kv("ok", "1", 5, 5, 1)));
}

/// etcd decides the path through a txn, nested txns included, by evaluating every compare
/// against the store as it was before the txn (`compareToPath` in
/// server/etcdserver/apply.go), and only then runs the ops of that path: a nested compare
/// does not see the writes of the ops before it. Checked on etcd 3.4.23 with this very txn
/// (sent as JSON to its gRPC gateway, `POST /v3/kv/txn`): b = "a was missing".
#[test]
fn nested_txn_compares_are_evaluated_before_the_txn_writes() {
    let env = Env::new();
    let s = env.open();
    let t = txn(
        &s,
        &TxnRequest {
            compare: vec![],
            success: vec![
                op_put("a", "1"),
                op_txn(TxnRequest {
                    compare: vec![cmp_value("a", compare::CompareResult::Equal, "1")],
                    success: vec![op_put("b", "saw a=1")],
                    failure: vec![op_put("b", "a was missing")],
                }),
            ],
            failure: vec![],
        },
    )
    .unwrap();
    assert_eq!(get(&s, "a"), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(
        get(&s, "b").map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        Some("a was missing".to_string()),
        "etcd evaluates the nested compare before the txn's put of a (compareToPath)"
    );
    assert!(!resp_txn(&t, 1).succeeded);
}

/// A request that fails must leave no trace. Here the branch a nested txn actually runs was
/// never checked (see the test above), so a put with ignore_value on a missing key fails half
/// way through the txn. etcd takes the nested failure branch and succeeds (checked on etcd
/// 3.4.23 through `POST /v3/kv/txn`: revision 3, a written, nested response without ops).
#[test]
fn txn_that_fails_midway_writes_nothing() {
    let env = Env::new();
    let s = env.open();
    let r = txn(
        &s,
        &TxnRequest {
            compare: vec![],
            success: vec![
                op_put("a", "1"),
                op_txn(TxnRequest {
                    compare: vec![cmp_value("a", compare::CompareResult::Equal, "1")],
                    success: vec![op(request_op::Request::RequestPut(PutRequest {
                        ignore_value: true,
                        ..put_req("c", "")
                    }))],
                    failure: vec![],
                }),
            ],
            failure: vec![],
        },
    );
    if let Err(e) = &r {
        assert_eq!(
            (s.current_rev(), get(&s, "a")),
            (1, None),
            "the txn failed ({e}) but its first put was committed anyway: a failed request must not write"
        );
    }
    // etcd 3.4: path [true, false] -> Put(a) then the nested failure branch (empty): success.
    let t = r.expect("etcd runs this txn successfully");
    assert!(!resp_txn(&t, 1).succeeded);
    assert_eq!(get(&s, "a"), Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(get(&s, "c"), None);
}

/// etcd fills only the outer TxnResponse header; a nested txn's response carries an empty
/// header (`newTxnResp` allocates `&pb.ResponseHeader{}` and nothing sets it); etcd 3.4.23
/// answers `"response_txn":{"header":{},...}`.
#[test]
fn nested_txn_response_header_is_empty_as_in_etcd() {
    let env = Env::new();
    let s = env.open();
    let t = txn(
        &s,
        &TxnRequest {
            success: vec![
                op_put("a", "1"),
                op_txn(TxnRequest { success: vec![op_put("b", "1")], ..Default::default() }),
            ],
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rev_of(&t.header), 2);
    assert_eq!(rev_of(&resp_put(resp_txn(&t, 1), 0).header), 2, "the nested put's header is filled");
    assert_eq!(resp_txn(&t, 1).header, Some(ResponseHeader::default()), "nested txn header");
}

// ---------------------------------------------------------------------------------------------
// Range options
// ---------------------------------------------------------------------------------------------

/// a: create 2, mod 9, version 3, "555"; b: 3, 3, 1, "4"; c: 4, 7, 2, "33";
/// d: 5, 5, 1, "2"; e: 6, 6, 1, "1". Current revision 9.
fn range_fixture(s: &MvccStore) {
    for (k, v) in [("a", "5"), ("b", "4"), ("c", "3"), ("d", "2"), ("e", "1"), ("c", "33"), ("a", "55"), ("a", "555")] {
        put(s, k, v);
    }
    assert_eq!(s.current_rev(), 9);
}

#[test]
fn range_limit_count_more_and_revision() {
    use range_request::{SortOrder, SortTarget};
    let env = Env::new();
    let s = env.open();
    range_fixture(&s);
    let all = RangeRequest { ..range_req("a", "\0") };
    // (request, keys, count, more)
    let cases: Vec<(RangeRequest, Vec<&str>, i64, bool)> = vec![
        (all.clone(), vec!["a", "b", "c", "d", "e"], 5, false),
        (RangeRequest { limit: 2, ..all.clone() }, vec!["a", "b"], 5, true),
        (RangeRequest { limit: 4, ..all.clone() }, vec!["a", "b", "c", "d"], 5, true),
        (RangeRequest { limit: 5, ..all.clone() }, vec!["a", "b", "c", "d", "e"], 5, false),
        (RangeRequest { limit: 6, ..all.clone() }, vec!["a", "b", "c", "d", "e"], 5, false),
        (RangeRequest { limit: -1, ..all.clone() }, vec!["a", "b", "c", "d", "e"], 5, false),
        (RangeRequest { limit: 2, sort_order: SortOrder::Descend as i32, ..all.clone() }, vec!["e", "d"], 5, true),
        // count_only: no kvs, the count, never "more"
        (RangeRequest { count_only: true, ..all.clone() }, vec![], 5, false),
        (RangeRequest { count_only: true, limit: 1, ..all.clone() }, vec![], 5, false),
        // at a past revision
        (RangeRequest { revision: 4, ..all.clone() }, vec!["a", "b", "c"], 3, false),
        (RangeRequest { revision: 4, limit: 1, ..all.clone() }, vec!["a"], 3, true),
        (RangeRequest { revision: 1, ..all.clone() }, vec![], 0, false),
        // a limit on a single key
        (RangeRequest { limit: 1, ..range_req("b", "") }, vec!["b"], 1, false),
        // A sort target without a sort order: etcd pushes the limit down (only a sort order
        // or a filter disables that), fetches a..d, then sorts them by mod revision. Checked
        // on etcd 3.4.23: `get a --from-key --sort-by=MODIFY --limit 3` gives b, d, c.
        (RangeRequest { sort_target: SortTarget::Mod as i32, limit: 3, ..all.clone() }, vec!["b", "d", "c"], 5, true),
    ];
    for (i, (req, want, count, more)) in cases.into_iter().enumerate() {
        let r = range(&s, &req).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(
            (keys(&r.kvs), r.count, r.more),
            (want.iter().map(|k| k.to_string()).collect::<Vec<_>>(), count, more),
            "case {i}: {req:?}"
        );
        assert_eq!(rev_of(&r.header), 9, "case {i}: the header carries the current revision");
    }
    let past = range(&s, &RangeRequest { revision: 4, ..all }).unwrap();
    assert_eq!(past.kvs, vec![kv("a", "5", 2, 2, 1), kv("b", "4", 3, 3, 1), kv("c", "3", 4, 4, 1)]);
}

#[test]
fn range_sort_targets_and_orders() {
    use range_request::{SortOrder, SortTarget};
    let env = Env::new();
    let s = env.open();
    range_fixture(&s);
    let sorted = |target: SortTarget, order: SortOrder| -> Vec<String> {
        let r =
            range(&s, &RangeRequest { sort_target: target as i32, sort_order: order as i32, ..range_req("", "\0") })
                .unwrap();
        assert_eq!(r.count, 5);
        keys(&r.kvs)
    };
    // (target, order, keys) — ties keep key order, as Go's insertion sort does on short lists.
    let cases = [
        (SortTarget::Key, SortOrder::None, "abcde"),
        (SortTarget::Key, SortOrder::Ascend, "abcde"),
        (SortTarget::Key, SortOrder::Descend, "edcba"),
        (SortTarget::Version, SortOrder::Ascend, "bdeca"),
        (SortTarget::Version, SortOrder::Descend, "acbde"),
        (SortTarget::Create, SortOrder::Ascend, "abcde"),
        (SortTarget::Create, SortOrder::Descend, "edcba"),
        (SortTarget::Mod, SortOrder::Ascend, "bdeca"),
        (SortTarget::Mod, SortOrder::Descend, "acedb"),
        (SortTarget::Value, SortOrder::Ascend, "edcba"),
        (SortTarget::Value, SortOrder::Descend, "abcde"),
        // etcd: a target other than KEY with order NONE sorts ascending.
        (SortTarget::Mod, SortOrder::None, "bdeca"),
        (SortTarget::Value, SortOrder::None, "edcba"),
        (SortTarget::Version, SortOrder::None, "bdeca"),
    ];
    for (target, order, want) in cases {
        let want: Vec<String> = want.chars().map(String::from).collect();
        assert_eq!(sorted(target, order), want, "{target:?} {order:?}");
    }
}

#[test]
fn range_revision_filters_keys_only_and_range_ends() {
    let env = Env::new();
    let s = env.open();
    range_fixture(&s);
    let all = range_req("", "\0");
    // (request, keys, count, more): filters apply after the fetch, so count is the unfiltered
    // number of keys in the range (etcd's resp.Count = rr.Count).
    let cases: Vec<(RangeRequest, &str, i64, bool)> = vec![
        (RangeRequest { min_mod_revision: 6, ..all.clone() }, "ace", 5, false),
        (RangeRequest { max_mod_revision: 6, ..all.clone() }, "bde", 5, false),
        (RangeRequest { min_create_revision: 4, ..all.clone() }, "cde", 5, false),
        (RangeRequest { max_create_revision: 3, ..all.clone() }, "ab", 5, false),
        (RangeRequest { min_mod_revision: 5, max_mod_revision: 7, ..all.clone() }, "cde", 5, false),
        (
            RangeRequest { min_create_revision: 3, max_create_revision: 5, min_mod_revision: 4, ..all.clone() },
            "cd",
            5,
            false,
        ),
        (RangeRequest { min_mod_revision: 6, limit: 1, ..all.clone() }, "a", 5, true),
        (RangeRequest { min_mod_revision: 6, limit: 3, ..all.clone() }, "ace", 5, false),
        (RangeRequest { min_mod_revision: 100, ..all.clone() }, "", 5, false),
        // range ends
        (range_req("c", "\0"), "cde", 3, false),
        (range_req("", "\0"), "abcde", 5, false),
        (range_req("b", "d"), "bc", 2, false),
        (range_req("c", "d"), "c", 1, false),
        (range_req("c", ""), "c", 1, false),
        (range_req("cc", ""), "", 0, false),
        (range_req("d", "b"), "", 0, false),
        (range_req("\0", "\0"), "abcde", 5, false),
        (range_req("f", "\0"), "", 0, false),
    ];
    for (i, (req, want, count, more)) in cases.into_iter().enumerate() {
        let r = range(&s, &req).unwrap_or_else(|e| panic!("case {i}: {e}"));
        let want: Vec<String> = want.chars().map(String::from).collect();
        assert_eq!((keys(&r.kvs), r.count, r.more), (want, count, more), "case {i}: {req:?}");
    }

    // A prefix: [foo, fop).
    for k in ["fo", "foo", "foo/1", "foo/2", "fooz", "fop", "fop/1"] {
        put(&s, k, "p");
    }
    let r = range(&s, &range_req("foo", "fop")).unwrap();
    assert_eq!((keys(&r.kvs), r.count), (vec!["foo".to_string(), "foo/1".into(), "foo/2".into(), "fooz".into()], 4));

    // keys_only drops the value and nothing else.
    let r = range(&s, &RangeRequest { keys_only: true, ..range_req("a", "c") }).unwrap();
    assert_eq!(r.kvs, vec![kv("a", "", 2, 9, 3), kv("b", "", 3, 3, 1)]);
    // count_only with filters still counts the whole range, and returns no kvs.
    let r = range(&s, &RangeRequest { count_only: true, min_mod_revision: 8, ..range_req("a", "f") }).unwrap();
    assert_eq!((r.kvs.len(), r.count), (0, 5));
}

// ---------------------------------------------------------------------------------------------
// Put / delete options
// ---------------------------------------------------------------------------------------------

#[test]
fn prev_kv_on_put_and_delete() {
    let env = Env::new();
    let s = env.open();
    let r = try_put(&s, PutRequest { prev_kv: true, ..put_req("a", "1") }).unwrap();
    assert_eq!(r.prev_kv, None, "no previous value on create");
    let r = try_put(&s, PutRequest { prev_kv: true, ..put_req("a", "2") }).unwrap();
    assert_eq!(r.prev_kv, Some(kv("a", "1", 2, 2, 1)));
    let r = put(&s, "a", "3");
    assert_eq!(r.prev_kv, None, "prev_kv only when asked");
    put(&s, "b", "1"); // 5
    put(&s, "c", "1"); // 6

    let d = try_delete(&s, DeleteRangeRequest { prev_kv: true, ..del_req("a", "") }).unwrap();
    assert_eq!((d.deleted, d.prev_kvs.clone(), rev_of(&d.header)), (1, vec![kv("a", "3", 2, 4, 3)], 7));
    let d = try_delete(&s, DeleteRangeRequest { prev_kv: true, ..del_req("a", "\0") }).unwrap();
    assert_eq!((d.deleted, d.prev_kvs.clone()), (2, vec![kv("b", "1", 5, 5, 1), kv("c", "1", 6, 6, 1)]));
    let d = try_delete(&s, DeleteRangeRequest { prev_kv: true, ..del_req("a", "\0") }).unwrap();
    assert_eq!((d.deleted, d.prev_kvs.len(), rev_of(&d.header)), (0, 0, 8));
    let r = try_put(&s, PutRequest { prev_kv: true, ..put_req("a", "4") }).unwrap();
    assert_eq!(r.prev_kv, None, "no previous value after a delete");
    put(&s, "d", "1");
    let d = delete(&s, "d", "");
    assert_eq!((d.deleted, d.prev_kvs.len()), (1, 0), "prev_kvs only when asked");
}

#[test]
fn ignore_value_and_ignore_lease() {
    let env = Env::new();
    let s = env.open();
    let e = try_put(&s, PutRequest { ignore_value: true, ..put_req("a", "") });
    assert_eq!(e.unwrap_err(), EtcdError::KeyNotFound);
    let e = try_put(&s, PutRequest { ignore_lease: true, ..put_req("a", "v") });
    assert_eq!(e.unwrap_err(), EtcdError::KeyNotFound);
    assert_eq!((s.current_rev(), rows(&s).len(), get(&s, "a")), (1, 0, None), "nothing written");

    put(&s, "a", "1");
    let r = try_put(&s, PutRequest { ignore_value: true, prev_kv: true, ..put_req("a", "") }).unwrap();
    assert_eq!(rev_of(&r.header), 3);
    assert_eq!(r.prev_kv, Some(kv("a", "1", 2, 2, 1)));
    assert_eq!(get(&s, "a"), Some(kv("a", "1", 2, 3, 2)), "keeps the value, makes a new version");
    let r = try_put(&s, PutRequest { ignore_lease: true, ..put_req("a", "2") }).unwrap();
    assert_eq!(rev_of(&r.header), 4);
    assert_eq!(get(&s, "a"), Some(kv("a", "2", 2, 4, 3)));

    delete(&s, "a", "");
    let e = try_put(&s, PutRequest { ignore_value: true, ..put_req("a", "") });
    assert_eq!(e.unwrap_err(), EtcdError::KeyNotFound, "a deleted key has no value to keep");
    assert_eq!(s.current_rev(), 5);
}

// ---------------------------------------------------------------------------------------------
// HashKV
// ---------------------------------------------------------------------------------------------

/// The history the HashKV values below were recorded with, on etcd 3.4.23 through etcdctl.
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

#[test]
fn hashkv_matches_etcd() {
    let env = Env::new();
    let s = env.open();
    etcd_hash_history(&s);
    // `etcdctl endpoint hashkv --rev=R` on etcd 3.4.23 with the same history.
    let before: [(i64, u32); 11] = [
        (0, 1291902356),
        (1, 1084519789),
        (2, 2587454935),
        (3, 2143169314),
        (4, 3086679940),
        (5, 1416966122),
        (6, 3977213719),
        (7, 2680139698),
        (8, 622671788),
        (9, 2102206702),
        (10, 1291902356),
    ];
    for (rev, want) in before {
        let hash_rev = if rev == 0 { 10 } else { rev };
        assert_eq!(hash(&s, rev), Ok((want, hash_rev, 10, -1)), "HashKV at {rev} before compaction");
    }
    assert_eq!(hash(&s, 11), Err(EtcdError::FutureRev));

    // After `compact 6`. HashKV at a given revision changes with the compaction, in etcd
    // too: the rows a compaction discards no longer count.
    compact(&s, 6).unwrap();
    let after6: [(i64, Result<u32, EtcdError>); 7] = [
        (0, Ok(165611861)),
        (5, Err(EtcdError::Compacted)),
        (6, Err(EtcdError::Compacted)),
        (7, Ok(4286576336)),
        (8, Ok(2284665136)),
        (9, Ok(1431162071)),
        (10, Ok(165611861)),
    ];
    for (rev, want) in after6 {
        assert_eq!(s.hash_by_rev(rev).map(|h| h.hash), want, "HashKV at {rev} after compacting at 6");
    }
    assert_eq!(hash(&s, 7).map(|h| (h.2, h.3)), Ok((10, 6)));

    put(&s, "f", "1"); // 11
    compact(&s, 10).unwrap();
    assert_eq!(hash(&s, 0), Ok((1146266026, 11, 11, 10)));
    assert_eq!(hash(&s, 11), Ok((1146266026, 11, 11, 10)));
    assert_eq!(hash(&s, 10), Err(EtcdError::Compacted));
    assert_eq!(
        all_at(&s, 0).unwrap(),
        vec![kv("b", "2", 7, 7, 1), kv("d", "2", 6, 10, 2), kv("e", "1", 9, 9, 1), kv("f", "1", 11, 11, 1)]
    );

    // The same again after a restart.
    drop(s);
    let s = env.open();
    assert_eq!(hash(&s, 0), Ok((1146266026, 11, 11, 10)));
}

/// etcd's property: once a compaction is applied, HashKV at any revision after it is the
/// same whether or not the rows the compaction discards have been removed from disk yet
/// (etcd removes them in the background; kaname right after the commit, or at the next start
/// after a crash). Compared here: a store whose compaction finished, and one where only the
/// index was compacted and the rows are all still there.
#[test]
fn hashkv_does_not_depend_on_whether_compacted_rows_are_gone() {
    for compact_at in [4, 5, 6, 8, 9, 10] {
        let (env_a, env_b) = (Env::new(), Env::new());
        let (a, b) = (env_a.open(), env_b.open());
        etcd_hash_history(&a);
        etcd_hash_history(&b);
        put(&a, "d", "3"); // 11
        put(&b, "d", "3");

        compact(&a, compact_at).unwrap();
        // b: the compaction is recorded and the index compacted, but no row is removed.
        let mut batch = b.write_batch().unwrap();
        batch.set_meta(META_COMPACTED_REV, &compact_at.to_be_bytes()).unwrap();
        batch.commit(true).unwrap();
        {
            let mut st = b.state.write().unwrap();
            st.compacted_rev = compact_at;
            let _kept = st.index.compact(compact_at);
        }
        assert!(rows(&b).len() > rows(&a).len(), "compacting at {compact_at} removed rows from a");

        for rev in (compact_at + 1)..=11 {
            assert_eq!(a.hash_by_rev(rev), b.hash_by_rev(rev), "HashKV at {rev} after compacting at {compact_at}");
            assert_eq!(all_at(&a, rev), all_at(&b, rev));
        }
        assert_eq!(a.hash_by_rev(0), b.hash_by_rev(0));

        // Reopening b finishes its compaction (as after a crash between commit and cleanup).
        drop(b);
        let b = env_b.open();
        assert_eq!(rows(&a), rows(&b), "restart after compacting at {compact_at} finished the compaction");
        assert_eq!(view(&a), view(&b), "compacted at {compact_at}");
    }
}

// ---------------------------------------------------------------------------------------------
// Restart and crash
// ---------------------------------------------------------------------------------------------

/// Runs the same requests on two stores, one of which is closed and reopened between phases:
/// everything observable must stay identical, and writing after a restart must continue the
/// same history (revisions, create revisions, versions).
#[test]
fn restart_rebuilds_the_same_index() {
    let (env_live, env_restarted) = (Env::new(), Env::new());
    let live = env_live.open();
    let mut restarted = env_restarted.open();
    let both = |live: &MvccStore, restarted: &MvccStore, f: &dyn Fn(&MvccStore)| {
        f(live);
        f(restarted);
    };
    let check = |live: &MvccStore, restarted: &MvccStore, phase: &str| {
        assert_eq!(view(live), view(restarted), "after {phase}");
        assert_eq!(rows(live), rows(restarted), "rows after {phase}");
        assert_eq!(meta_i64(restarted, META_CURRENT_REV), Some(restarted.current_rev()));
    };

    // Phase 1: a history with sub revisions, deletes and re-creations.
    both(&live, &restarted, &|s| {
        etcd_hash_history(s);
        txn(
            s,
            &TxnRequest { success: vec![op_put("x", "1"), op_put("y", "1"), op_put("z", "1")], ..Default::default() },
        )
        .unwrap(); // 11
        put(s, "y", "2"); // 12
        txn(s, &TxnRequest { success: vec![op_del("x", ""), op_put("x", "again")], ..Default::default() }).unwrap();
        // 13
    });
    drop(restarted);
    restarted = env_restarted.open();
    check(&live, &restarted, "restart 1");

    // Phase 2: writes after the restart continue each key's life.
    both(&live, &restarted, &|s| {
        let r = try_put(s, PutRequest { prev_kv: true, ..put_req("y", "3") }).unwrap(); // 14
        assert_eq!(r.prev_kv, Some(kv("y", "2", 11, 12, 2)));
        assert_eq!(get(s, "y"), Some(kv("y", "3", 11, 14, 3)), "a key created at sub revision 1");
        put(s, "z", "2"); // 15
        assert_eq!(get(s, "z"), Some(kv("z", "2", 11, 15, 2)), "a key created at sub revision 2");
        delete(s, "e", ""); // 16
        put(s, "a", "back"); // 17
    });
    check(&live, &restarted, "writes after restart 1");
    drop(restarted);
    restarted = env_restarted.open();
    check(&live, &restarted, "restart 2");

    // Phase 3: compaction on a revision with a tombstone (e deleted at 16), restart.
    both(&live, &restarted, &|s| compact(s, 16).unwrap());
    check(&live, &restarted, "compaction at 16");
    drop(restarted);
    restarted = env_restarted.open();
    check(&live, &restarted, "restart after compaction at 16");
    assert_eq!(compact(&restarted, 16), Err(EtcdError::Compacted), "the compaction is remembered");
    assert_eq!(all_at(&restarted, 15), Err(EtcdError::Compacted));

    // Phase 4: keys whose older versions were compacted keep create revision and version;
    // the key deleted on the compaction revision comes back as a new life.
    both(&live, &restarted, &|s| {
        put(s, "y", "4"); // 18
        assert_eq!(get(s, "y"), Some(kv("y", "4", 11, 18, 4)));
        put(s, "x", "3"); // 19
        assert_eq!(get(s, "x"), Some(kv("x", "3", 13, 19, 2)));
        put(s, "e", "new"); // 20
        assert_eq!(get(s, "e"), Some(kv("e", "new", 20, 20, 1)));
        delete(s, "b", ""); // 21
        compact(s, 20).unwrap();
    });
    check(&live, &restarted, "second compaction");
    drop(restarted);
    restarted = env_restarted.open();
    check(&live, &restarted, "restart after the second compaction");
    both(&live, &restarted, &|s| {
        put(s, "b", "5"); // 22
        assert_eq!(get(s, "b"), Some(kv("b", "5", 22, 22, 1)));
    });
    drop(restarted);
    restarted = env_restarted.open();
    check(&live, &restarted, "final restart");
}

/// A crash (kill -9) right after a non-durable commit leaves whatever the file holds at that
/// moment; a copy of the open file is exactly that. Reopened, the store must be in one of the
/// states it was committed in, never in between, with its recorded current revision (and the
/// Raft position written in the same commit) matching its rows.
#[test]
fn crash_after_non_durable_commit_is_all_or_nothing() {
    let env = Env::new();
    let s = env.open();
    put(&s, "base", "0"); // 2, durable
    let mut batch = s.write_batch().unwrap();
    batch.set_meta("test_applied", b"round-base").unwrap();
    batch.commit(true).unwrap();

    // Per committed state: (current revision, applied marker, every read at every revision).
    type State = (i64, String, Vec<Result<Vec<KeyValue>, EtcdError>>);
    let state_of = |s: &MvccStore, marker: &str| -> State {
        (s.current_rev(), marker.to_string(), (1..=s.current_rev()).map(|r| all_at(s, r)).collect())
    };
    let mut states: Vec<State> = vec![state_of(&s, "round-base")];
    let mut outcomes = Vec::new();

    for round in 0..6 {
        let mut batch = s.write_batch().unwrap();
        for i in 0..3 {
            let mut t = batch.txn();
            apply::apply_put(&mut t, &put_req(&format!("r{round}/k{i}"), &format!("v{round}"))).unwrap();
        }
        {
            let mut t = batch.txn();
            apply::apply_put(&mut t, &put_req("base", &format!("{round}"))).unwrap();
        }
        if round > 0 {
            let mut t = batch.txn();
            let d =
                apply::apply_delete_range(&mut t, &del_req(&format!("r{}/", round - 1), &format!("r{}0", round - 1)))
                    .unwrap();
            assert_eq!(d.deleted, 3);
        }
        {
            let mut t = batch.txn();
            apply::apply_txn(
                &mut t,
                &TxnRequest { success: vec![op_put("t1", "x"), op_put("t2", "x")], ..Default::default() },
            )
            .unwrap();
        }
        let marker = format!("round-{round}");
        batch.set_meta("test_applied", marker.as_bytes()).unwrap();
        batch.commit(false).unwrap();
        states.push(state_of(&s, &marker));

        let crashed = env.dir.path().join(format!("crash-{round}.redb"));
        std::fs::copy(env.path(), &crashed).unwrap();
        let c = MvccStore::open(&crashed).expect("a crashed store opens");
        let rev = c.current_rev();
        let marker = String::from_utf8(c.get_meta("test_applied").unwrap().expect("applied marker")).unwrap();
        let got = state_of(&c, &marker);
        assert!(
            states.contains(&got),
            "round {round}: after a crash the store is at revision {rev} with marker {marker:?}, which is no committed state"
        );
        assert_eq!(meta_i64(&c, META_CURRENT_REV), Some(rev));
        let max_row = rows(&c).iter().map(|(r, _, _)| r.main).max();
        assert_eq!(max_row, Some(rev), "round {round}: rows beyond or short of the recorded revision");
        outcomes.push((round, rev == s.current_rev()));
        drop(c);
        std::fs::remove_file(&crashed).unwrap();
    }
    eprintln!("non-durable commit present after a crash (round, present): {outcomes:?}");

    // Once synced, the latest commit survives a crash.
    s.sync().unwrap();
    let crashed = env.dir.path().join("crash-synced.redb");
    std::fs::copy(env.path(), &crashed).unwrap();
    let c = MvccStore::open(&crashed).unwrap();
    assert_eq!(state_of(&c, "round-5"), *states.last().unwrap());
    assert_eq!(hash(&c, 0), hash(&s, 0));
}

/// A crash after a compaction's commit but before its rows were removed: the next start
/// finishes the compaction, and the result is the same as if it had run to the end.
#[test]
fn crash_between_compaction_commit_and_row_removal() {
    let (env_a, env_b) = (Env::new(), Env::new());
    let (a, b) = (env_a.open(), env_b.open());
    for s in [&a, &b] {
        etcd_hash_history(s);
    }
    compact(&a, 8).unwrap();
    // b crashed right after committing the compaction: only its record is on disk.
    let mut batch = b.write_batch().unwrap();
    batch.set_meta(META_COMPACTED_REV, &8i64.to_be_bytes()).unwrap();
    batch.commit(true).unwrap();
    drop(b);
    let b = env_b.open();
    assert_eq!(b.compacted_rev(), 8);
    assert_eq!(rows(&a), rows(&b));
    assert_eq!(view(&a), view(&b));
}

// ---------------------------------------------------------------------------------------------
// Read-only txns served without Raft
// ---------------------------------------------------------------------------------------------

/// A txn of ranges only answers exactly what the same txn answers through the apply path
/// (which does not bump the revision either), and reads at one revision.
#[test]
fn read_only_txn_answers_like_the_apply_path() {
    let env = Env::new();
    let s = env.open();
    put(&s, "a", "1");
    put(&s, "b", "2");
    let req = TxnRequest {
        compare: vec![cmp_value("a", compare::CompareResult::Equal, "1")],
        success: vec![op_range(range_req("a", "c")), op_range(range_req("b", ""))],
        failure: vec![op_range(range_req("z", ""))],
    };
    assert!(apply::txn_is_read_only(&req));
    assert!(!apply::txn_is_serializable(&req));
    let local = apply::read_only_txn(&s, &req).expect("read-only txn");
    let applied = txn(&s, &req).expect("applied txn");
    assert_eq!(local, applied);
    assert!(local.succeeded);
    assert_eq!(keys(&resp_range(&local, 0).kvs), vec!["a", "b"]);
    assert_eq!(rev_of(&local.header), 3, "no write, no new revision");

    let failing = TxnRequest { compare: vec![cmp_value("a", compare::CompareResult::Equal, "x")], ..req.clone() };
    assert_eq!(apply::read_only_txn(&s, &failing).unwrap(), txn(&s, &failing).unwrap());

    let with_put = TxnRequest { success: vec![op_put("c", "3")], ..req };
    assert!(!apply::txn_is_read_only(&with_put));
}
