//! Compaction and HashKV.

use super::*;

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
// HashKV
// ---------------------------------------------------------------------------------------------

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
