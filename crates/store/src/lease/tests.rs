use std::time::Duration;

use super::*;

#[test]
fn min_ttl_matches_etcd() {
    assert_eq!(min_ttl(100, 1000), 2);
    assert_eq!(min_ttl(100, 500), 1);
    assert_eq!(min_ttl(50, 5000), 8);
}

#[test]
fn grant_checks_and_clamps() {
    let l = Lessor::new();
    assert_eq!(l.grant(0, 10), Err(EtcdError::LeaseNotFound));
    assert_eq!(l.grant(1, MAX_LEASE_TTL + 1), Err(EtcdError::LeaseTtlTooLarge));
    assert_eq!(l.grant(1, 1), Ok(2));
    assert_eq!(l.grant(1, 10), Err(EtcdError::LeaseExists));
    assert!(l.exists(1));
}

#[test]
fn a_larger_minimum_raises_loaded_leases() {
    let l = Lessor::new();
    l.restore([(1, 3)], []);
    l.set_min_ttl(8);
    assert_eq!(l.status(1, false).unwrap().granted_ttl, 8);
}

#[test]
fn attach_moves_keys_between_leases() {
    let l = Lessor::new();
    l.grant(1, 10).unwrap();
    l.grant(2, 10).unwrap();
    l.attach(b"a", 1);
    l.attach(b"b", 1);
    assert_eq!(l.keys_of(1).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
    l.attach(b"a", 2);
    assert_eq!(l.keys_of(1).unwrap(), vec![b"b".to_vec()]);
    assert_eq!(l.keys_of(2).unwrap(), vec![b"a".to_vec()]);
    l.attach(b"b", 0);
    l.detach(b"a");
    assert!(l.keys_of(1).unwrap().is_empty());
    assert!(l.keys_of(2).unwrap().is_empty());
    // a key can only join a lease that exists
    l.attach(b"c", 7);
    l.remove(2);
    assert_eq!(l.keys_of(2), Err(EtcdError::LeaseNotFound));
}

#[test]
fn only_the_primary_expires_and_renews() {
    let l = Lessor::new();
    l.set_min_ttl(0);
    l.grant(1, 0).unwrap();
    assert_eq!(l.renew(1), Ok(RenewOutcome::NotPrimary));
    assert!(l.take_expired(10).is_empty(), "followers hold leases forever");
    l.promote(Duration::ZERO);
    assert_eq!(l.take_expired(10), vec![1]);
    assert!(l.take_expired(10).is_empty(), "a revoke in flight is not proposed again at once");
    assert_eq!(l.renew(1), Ok(RenewOutcome::Expired));
    assert_eq!(l.renew(9), Err(EtcdError::LeaseNotFound));
    l.demote();
    assert!(l.take_expired(10).is_empty());
}

#[test]
fn promotion_gives_a_full_ttl_plus_extension() {
    let l = Lessor::new();
    l.grant(1, 60).unwrap();
    assert!(l.status(1, false).unwrap().remaining > 1_000_000, "forever on a follower");
    l.promote(Duration::from_secs(1));
    let st = l.status(1, false).unwrap();
    assert_eq!(st.granted_ttl, 60);
    assert!(st.remaining == 60 || st.remaining == 59, "{st:?}");
    assert_eq!(l.renew(1), Ok(RenewOutcome::Renewed(60)));
    assert!(l.status(1, false).unwrap().remaining <= 59);
}

#[test]
fn restore_reattaches_known_leases_only() {
    let l = Lessor::new();
    l.restore([(1, 30), (2, 1)], [(b"a".to_vec(), 1), (b"b".to_vec(), 3)]);
    assert_eq!(l.keys_of(1).unwrap(), vec![b"a".to_vec()]);
    assert_eq!(l.status(2, false).unwrap().granted_ttl, 2, "restored TTLs respect the minimum");
    assert_eq!(l.ids(), vec![1, 2]);
}

#[test]
fn promotion_spreads_a_pile_of_equal_deadlines() {
    let l = Lessor::new();
    for id in 1..=2000 {
        l.grant(id, 10).unwrap();
    }
    l.promote(Duration::ZERO);
    let g = l.lock();
    let mut deadlines: Vec<Instant> = g.leases.values().filter_map(|x| x.expiry).collect();
    deadlines.sort();
    let first = deadlines[0];
    let in_first_second = deadlines.iter().filter(|d| **d < first + Duration::from_secs(1)).count();
    assert!(in_first_second <= 3 * LEASE_REVOKE_RATE / 4 + 1, "{in_first_second}");
}

// ---------------------------------------------------------------------------------------------
// With the store: grant, attach, revoke and persistence through the apply path.
// ---------------------------------------------------------------------------------------------

mod with_store {
    use kaname_proto::etcdserverpb::{
        DeleteRangeRequest, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest,
        RangeRequest, TxnRequest,
    };
    use prost::Message;

    use crate::apply;
    use crate::apply::lease::{grant, revoke};
    use crate::error::EtcdError;
    use crate::mvcc::MvccStore;

    fn open(dir: &tempfile::TempDir, name: &str) -> MvccStore {
        MvccStore::open(&dir.path().join(name)).expect("open")
    }

    fn do_grant(s: &MvccStore, id: i64, ttl: i64) -> Result<LeaseGrantResponse, EtcdError> {
        let mut b = s.write_batch().unwrap();
        let out = grant(&mut b, &LeaseGrantRequest { ttl, id }.encode_to_vec());
        b.commit(true).unwrap();
        out.map(|o| LeaseGrantResponse::decode(o.as_slice()).unwrap())
    }

    fn do_revoke(s: &MvccStore, id: i64) -> Result<LeaseRevokeResponse, EtcdError> {
        let mut b = s.write_batch().unwrap();
        let out = revoke(&mut b, &LeaseRevokeRequest { id }.encode_to_vec());
        b.commit(true).unwrap();
        out.map(|o| LeaseRevokeResponse::decode(o.as_slice()).unwrap())
    }

    fn put(s: &MvccStore, key: &str, lease: i64) -> Result<(), EtcdError> {
        let mut b = s.write_batch().unwrap();
        let out = {
            let mut t = b.txn();
            let req = PutRequest { key: key.into(), value: b"v".to_vec(), lease, ..Default::default() };
            apply::apply_put(&mut t, &req).map(|_| ())
        };
        b.commit(true).unwrap();
        out
    }

    fn lease_of(s: &MvccStore, key: &str) -> Option<i64> {
        let r = apply::range(s, &RangeRequest { key: key.into(), ..Default::default() }).unwrap();
        r.kvs.first().map(|kv| kv.lease)
    }

    #[test]
    fn put_attaches_revoke_deletes_in_one_revision() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, "db");
        assert_eq!(put(&s, "x", 5), Err(EtcdError::LeaseNotFound), "unknown lease");
        let g = do_grant(&s, 5, 60).unwrap();
        assert_eq!((g.id, g.ttl), (5, 60));
        assert_eq!(do_grant(&s, 5, 60).unwrap_err(), EtcdError::LeaseExists);
        put(&s, "a", 5).unwrap();
        put(&s, "b", 5).unwrap();
        put(&s, "c", 5).unwrap();
        put(&s, "c", 0).unwrap(); // a put without lease detaches
        put(&s, "d", 5).unwrap();
        let mut b = s.write_batch().unwrap();
        {
            let mut t = b.txn();
            apply::apply_delete_range(&mut t, &DeleteRangeRequest { key: "d".into(), ..Default::default() }).unwrap();
        }
        b.commit(true).unwrap();
        assert_eq!(s.lessor().keys_of(5).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(lease_of(&s, "a"), Some(5));

        let before = s.current_rev();
        let r = do_revoke(&s, 5).unwrap();
        assert_eq!(s.current_rev(), before + 1, "all deletes of a revoke share one revision");
        assert_eq!(r.header.unwrap().revision, before + 1);
        assert_eq!(lease_of(&s, "a"), None);
        assert_eq!(lease_of(&s, "c"), Some(0));
        assert_eq!(do_revoke(&s, 5).unwrap_err(), EtcdError::LeaseNotFound);

        // a lease without keys is revoked without a new revision, as in etcd
        do_grant(&s, 6, 60).unwrap();
        let before = s.current_rev();
        do_revoke(&s, 6).unwrap();
        assert_eq!(s.current_rev(), before);
    }

    #[test]
    fn txn_put_with_unknown_lease_writes_nothing() {
        use kaname_proto::etcdserverpb::{request_op, RequestOp};
        let dir = tempfile::tempdir().unwrap();
        let s = open(&dir, "db");
        let op = |key: &str, lease| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest { key: key.into(), lease, ..Default::default() })),
        };
        do_grant(&s, 1, 60).unwrap();
        let t = TxnRequest { success: vec![op("a", 1), op("b", 2)], ..Default::default() };
        let mut b = s.write_batch().unwrap();
        let out = {
            let mut w = b.txn();
            apply::apply_txn(&mut w, &t).map(|_| ())
        };
        b.commit(true).unwrap();
        assert_eq!(out, Err(EtcdError::LeaseNotFound));
        assert_eq!(lease_of(&s, "a"), None);
        assert!(s.lessor().keys_of(1).unwrap().is_empty());
    }

    #[test]
    fn leases_survive_reopen_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(&dir, "db");
            do_grant(&s, 7, 30).unwrap();
            do_grant(&s, 8, 40).unwrap();
            put(&s, "k1", 7).unwrap();
            put(&s, "k2", 7).unwrap();
            put(&s, "k3", 8).unwrap();
            put(&s, "k3", 7).unwrap();
            put(&s, "k2", 0).unwrap();
            do_revoke(&s, 8).unwrap();
        }
        let s = open(&dir, "db");
        assert_eq!(s.lessor().ids(), vec![7]);
        assert_eq!(s.lessor().status(7, true).unwrap().granted_ttl, 30);
        assert_eq!(s.lessor().keys_of(7).unwrap(), vec![b"k1".to_vec(), b"k3".to_vec()]);

        // the rows a snapshot streams rebuild the same lease state elsewhere
        let mut rows = Vec::new();
        s.for_each_row(|t, k, v| {
            rows.push((t, k.to_vec(), v.to_vec()));
            Ok(())
        })
        .unwrap();
        assert!(rows.iter().any(|(t, k, _)| *t == 2 && k == &7i64.to_be_bytes().to_vec()));
        let other = open(&dir, "other");
        other
            .replace_with(|put| {
                for (t, k, v) in &rows {
                    put(*t, k, v)?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(other.lessor().ids(), vec![7]);
        assert_eq!(other.lessor().keys_of(7).unwrap(), vec![b"k1".to_vec(), b"k3".to_vec()]);
        do_revoke(&other, 7).unwrap();
        assert_eq!(lease_of(&other, "k1"), None);
        assert_eq!(lease_of(&other, "k2"), Some(0));
    }
}
