//! Restart and crash recovery.

use super::*;

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
