//! Revisions, range options, and put/delete options.

use super::*;

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
