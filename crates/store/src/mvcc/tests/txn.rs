//! Txns, nested txns, and read-only txns served without Raft.

use super::*;

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
