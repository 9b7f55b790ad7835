//! The hub against a real store: every watcher gets every event of its range exactly once, in
//! revision order, whether it stays synced, starts in the past, falls behind because its
//! stream is full, or lives through a store replacement; writers never wait for it.

use std::sync::Arc;
use std::time::Duration;

use kaname_proto::mvccpb::event::EventType;
use kaname_proto::mvccpb::Event;
use tokio::sync::mpsc;

use super::{Update, WatchConfig, WatchHub, WatchSpec};
use crate::mvcc::MvccStore;

struct Env {
    _dir: tempfile::TempDir,
    store: Arc<MvccStore>,
    hub: Arc<WatchHub>,
}

fn env(config: WatchConfig) -> Env {
    let dir = tempfile::Builder::new().prefix("kaname-watch-test-").tempdir().expect("tempdir");
    let store = Arc::new(MvccStore::open(&dir.path().join("db.redb")).expect("open store"));
    let hub = WatchHub::new(store.clone(), config);
    Env { _dir: dir, store, hub }
}

impl Env {
    /// One apply round of puts (`Some(value)`) and deletes (`None`), each its own request
    /// (its own revision), notified after commit as the state machine does.
    fn apply(&self, ops: &[(&str, Option<&str>)]) {
        let mut batch = self.store.write_batch().expect("batch");
        for (k, v) in ops {
            let mut txn = batch.txn();
            match v {
                Some(v) => txn.put(k.as_bytes(), v.as_bytes().to_vec(), 0).expect("put"),
                None => {
                    txn.delete_range(k.as_bytes(), None).expect("delete");
                }
            }
        }
        let (events, rev) = (batch.take_events(), batch.rev());
        batch.commit(false).expect("commit");
        self.hub.notify(events, rev);
    }

    fn put(&self, k: &str, v: &str) {
        self.apply(&[(k, Some(v))]);
    }

    fn compact(&self, rev: i64) {
        let mut batch = self.store.write_batch().expect("batch");
        batch.compact(rev).expect("compact");
        batch.commit(true).expect("commit");
    }

    fn watch(&self, key: &str, end: Option<&str>, start: i64, cap: usize) -> (u64, mpsc::Receiver<Update>) {
        let (tx, rx) = mpsc::channel(cap);
        let spec = WatchSpec {
            key: key.as_bytes().to_vec(),
            end: end.map(|e| e.as_bytes().to_vec()),
            start_revision: start,
            no_put: false,
            no_delete: false,
            watch_id: 7,
        };
        (self.hub.register(spec, tx).0, rx)
    }

    /// Runs catch-up rounds until no watcher is unsynced.
    fn sync_all(&self) {
        for _ in 0..1000 {
            if self.hub.counts().1 == 0 {
                return;
            }
            self.hub.sync_once().expect("sync");
        }
        panic!("watchers did not catch up");
    }
}

fn drain(rx: &mut mpsc::Receiver<Update>) -> Vec<Update> {
    let mut out = Vec::new();
    while let Ok(u) = rx.try_recv() {
        out.push(u);
    }
    out
}

/// (type, key, value, mod_revision) of every event, for compact assertions.
fn flat(us: &[Update]) -> Vec<(i32, String, String, i64)> {
    us.iter()
        .flat_map(|u| u.events.iter())
        .map(|e: &Event| {
            let kv = e.kv.as_ref().unwrap();
            (
                e.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.mod_revision,
            )
        })
        .collect()
}

const PUT: i32 = EventType::Put as i32;
const DEL: i32 = EventType::Delete as i32;

#[test]
fn synced_watchers_get_each_revision_once_for_their_range() {
    let e = env(WatchConfig::default());
    let (_, mut key) = e.watch("foo", None, 0, 64);
    let (_, mut prefix) = e.watch("foo", Some("fop"), 0, 64);
    let (_, mut from) = e.watch("g", Some(""), 0, 64);
    e.put("foo", "1"); // rev 2
    e.apply(&[("foo/a", Some("2")), ("zoo", Some("3")), ("foo", None)]); // revs 3, 4, 5
    e.put("fo", "x"); // rev 6
    assert_eq!(flat(&drain(&mut key)), vec![(PUT, "foo".into(), "1".into(), 2), (DEL, "foo".into(), "".into(), 5)]);
    let p = drain(&mut prefix);
    assert_eq!(p.iter().map(|u| u.revision).collect::<Vec<_>>(), vec![2, 3, 5], "one update per revision");
    assert_eq!(flat(&p).iter().map(|x| x.3).collect::<Vec<_>>(), vec![2, 3, 5]);
    assert_eq!(flat(&drain(&mut from)), vec![(PUT, "zoo".into(), "3".into(), 4)]);
    assert_eq!(e.hub.rev(), 6);
}

#[test]
fn filters_drop_puts_or_deletes() {
    let e = env(WatchConfig::default());
    let (tx, mut rx) = mpsc::channel(16);
    let spec =
        WatchSpec { key: b"k".to_vec(), end: None, start_revision: 0, no_put: true, no_delete: false, watch_id: 1 };
    e.hub.register(spec, tx);
    e.put("k", "v");
    e.apply(&[("k", None)]);
    assert_eq!(flat(&drain(&mut rx)), vec![(DEL, "k".into(), "".into(), 3)]);
}

#[test]
fn historical_start_catches_up_from_storage_then_stays_synced() {
    let e = env(WatchConfig::default());
    for i in 0..20 {
        e.put(&format!("k{}", i % 3), &i.to_string());
    }
    e.apply(&[("k1", None)]);
    let (_, mut rx) = e.watch("k", Some("l"), 5, 64);
    assert_eq!(e.hub.counts(), (1, 1), "starts unsynced");
    e.sync_all();
    let first = drain(&mut rx);
    assert_eq!(first.len(), 1, "history comes in one update");
    assert_eq!(first[0].revision, 22, "its header revision is the store's");
    let got = flat(&first);
    assert_eq!(got.iter().map(|x| x.3).collect::<Vec<_>>(), (5..=22).collect::<Vec<_>>());
    assert_eq!(got.last().unwrap().0, DEL, "tombstones come back as deletes");
    e.put("k9", "after");
    assert_eq!(flat(&drain(&mut rx)), vec![(PUT, "k9".into(), "after".into(), 23)]);
}

#[test]
fn catch_up_reads_in_bounded_rounds_without_splitting_revisions() {
    bounded_rounds(WatchConfig { max_rows_per_sync: 4, ..WatchConfig::default() }, 5);
    bounded_rounds(WatchConfig { max_bytes_per_sync: 1, ..WatchConfig::default() }, 10);
}

fn bounded_rounds(config: WatchConfig, min_updates: usize) {
    let e = env(config);
    for i in 0..10 {
        // two keys per revision: rows come in pairs
        let mut batch = e.store.write_batch().unwrap();
        let mut txn = batch.txn();
        txn.put(format!("a{i}").as_bytes(), b"x".to_vec(), 0).unwrap();
        txn.put(format!("b{i}").as_bytes(), b"y".to_vec(), 0).unwrap();
        drop(txn);
        let (ev, rev) = (batch.take_events(), batch.rev());
        batch.commit(false).unwrap();
        e.hub.notify(ev, rev);
    }
    let (_, mut rx) = e.watch("", Some("\u{7f}"), 2, 64);
    e.sync_all();
    let us = drain(&mut rx);
    assert!(us.len() >= min_updates, "several rounds: {}", us.len());
    assert!(us.iter().all(|u| u.events.len() % 2 == 0), "a revision is never split");
    assert_eq!(flat(&us).len(), 20);
}

#[test]
fn full_stream_falls_back_to_catch_up_and_loses_nothing() {
    let e = env(WatchConfig::default());
    let (_, mut slow) = e.watch("k", None, 0, 2);
    let (_, mut fast) = e.watch("k", None, 0, 1024);
    for i in 0..100 {
        e.put("k", &i.to_string());
    }
    assert_eq!(e.hub.counts(), (2, 1), "only the slow one fell behind");
    assert_eq!(flat(&drain(&mut fast)).len(), 100);
    let mut got = Vec::new();
    for _ in 0..500 {
        got.extend(flat(&drain(&mut slow)));
        if e.hub.counts().1 == 0 {
            break;
        }
        e.hub.sync_once().unwrap();
    }
    got.extend(flat(&drain(&mut slow)));
    assert_eq!(got.iter().map(|x| x.3).collect::<Vec<_>>(), (2..=101).collect::<Vec<_>>());
    e.put("k", "synced again");
    assert_eq!(flat(&drain(&mut slow)).len(), 1);
}

#[test]
fn start_below_compaction_is_cancelled_with_the_compact_revision() {
    let e = env(WatchConfig::default());
    for i in 0..5 {
        e.put("k", &i.to_string());
    }
    e.compact(4);
    let (_, mut rx) = e.watch("k", None, 2, 8);
    e.sync_all();
    let us = drain(&mut rx);
    assert_eq!(us.len(), 1);
    assert_eq!(us[0].compact_revision, 4);
    assert!(us[0].events.is_empty());
    assert_eq!(e.hub.counts(), (0, 0), "the watcher is gone");
    // At the compacted revision itself the watch works, as etcd's `minRev < compactRev`.
    let (_, mut rx) = e.watch("k", None, 4, 8);
    e.sync_all();
    assert_eq!(flat(&drain(&mut rx)).iter().map(|x| x.3).collect::<Vec<_>>(), vec![4, 5, 6]);
}

#[test]
fn progress_is_only_sent_when_synced() {
    let e = env(WatchConfig::default());
    e.put("a", "1");
    let (tx, mut rx) = mpsc::channel(8);
    let spec = |start| WatchSpec {
        key: b"a".to_vec(),
        end: None,
        start_revision: start,
        no_put: false,
        no_delete: false,
        watch_id: 0,
    };
    let (synced, _) = e.hub.register(spec(0), tx.clone());
    let (behind, _) = e.hub.register(spec(1), tx);
    e.hub.progress(behind);
    assert!(!e.hub.progress_all(&[synced, behind]), "one watcher is behind");
    assert!(drain(&mut rx).is_empty());
    e.hub.progress(synced);
    e.sync_all();
    assert!(e.hub.progress_all(&[synced, behind]));
    let us = drain(&mut rx);
    assert_eq!(
        us.iter().map(|u| (u.watch_id, u.events.len(), u.revision)).collect::<Vec<_>>(),
        vec![(0, 0, 2), (0, 1, 2), (-1, 0, 2)]
    );
}

#[test]
fn store_replacement_makes_watchers_reread_from_the_new_store() {
    let e = env(WatchConfig::default());
    e.put("k", "0");
    let (_, mut rx) = e.watch("k", None, 0, 64);
    // Another store that went further, standing in for the snapshot the leader sends.
    let other = env(WatchConfig::default());
    for i in 0..5 {
        other.put("k", &format!("new{i}"));
    }
    e.store
        .replace_with(|put| {
            other.store.for_each_row(|t, k, v| put(t, k, v).map_err(|e| std::io::Error::other(e.to_string())))
        })
        .unwrap();
    e.hub.store_replaced();
    e.sync_all();
    let got = flat(&drain(&mut rx));
    assert_eq!(got.iter().map(|x| x.3).collect::<Vec<_>>(), vec![3, 4, 5, 6], "what it had not seen, once");
}

/// Writers on one thread, the catch-up loop on the runtime, a slow reader with a tiny buffer
/// and a fast one: both see every revision exactly once, in order, and the writer never
/// waits for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_reach_slow_and_fast_watchers_exactly_once() {
    let e = Arc::new(env(WatchConfig { sync_interval: Duration::from_millis(5), ..WatchConfig::default() }));
    tokio::spawn(e.hub.clone().run_sync_loop());
    let (_, slow) = e.watch("k/", Some("k0"), 0, 1);
    let (_, fast) = e.watch("k/", Some("k0"), 0, 4096);
    const N: i64 = 2000;
    let writer = {
        let e = e.clone();
        std::thread::spawn(move || {
            for i in 0..N {
                e.put(&format!("k/{}", i % 17), &i.to_string());
            }
        })
    };
    let collect = |mut rx: mpsc::Receiver<Update>, delay: bool| async move {
        let mut revs = Vec::new();
        while (revs.len() as i64) < N {
            let u =
                tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.expect("events keep coming").unwrap();
            revs.extend(u.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
            if delay {
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
        revs
    };
    let (slow_revs, fast_revs) = tokio::join!(collect(slow, true), collect(fast, false));
    writer.join().unwrap();
    let want: Vec<i64> = (2..N + 2).collect();
    assert_eq!(fast_revs, want);
    assert_eq!(slow_revs, want);
}

#[test]
fn stuck_watchers_do_not_starve_others_of_catch_up() {
    let e = env(WatchConfig { max_watchers_per_sync: 2, ..WatchConfig::default() });
    for i in 0..5 {
        e.put("k", &i.to_string());
    }
    // Five watchers whose streams are full (registered first: lowest ids), then one reading.
    let mut stuck = Vec::new();
    for _ in 0..5 {
        let (_, rx) = e.watch("k", None, 2, 1);
        stuck.push(rx);
    }
    for _ in 0..3 {
        e.hub.sync_once().unwrap();
    }
    assert_eq!(e.hub.counts(), (5, 0), "each got its history (one update fills its buffer)");
    e.put("k", "5");
    e.put("k", "6");
    assert_eq!(e.hub.counts(), (5, 5), "full streams fell behind");
    let (_, mut healthy) = e.watch("k", None, 2, 64);
    for _ in 0..6 {
        e.hub.sync_once().unwrap();
    }
    assert_eq!(flat(&drain(&mut healthy)).iter().map(|x| x.3).collect::<Vec<_>>(), (2..=8).collect::<Vec<_>>());
    assert_eq!(e.hub.counts(), (6, 5));
    // The stuck ones read again and catch up too.
    for rx in &mut stuck {
        drain(rx);
    }
    e.sync_all();
}

#[test]
fn future_start_revision_waits_for_it() {
    let e = env(WatchConfig::default());
    e.put("k", "a"); // rev 2
    let (_, mut rx) = e.watch("k", None, 4, 8);
    assert_eq!(e.hub.counts(), (1, 0), "synced: nothing to read yet");
    e.put("k", "b"); // rev 3: before the start
    e.put("k", "c"); // rev 4
    assert_eq!(flat(&drain(&mut rx)), vec![(PUT, "k".into(), "c".into(), 4)]);
}
