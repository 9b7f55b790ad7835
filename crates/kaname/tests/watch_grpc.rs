//! The Watch API at the gRPC level, with the generated clients of `kaname-proto`:
//! - what etcdctl cannot show (explicit and duplicate watch ids, empty ranges, cancel,
//!   filters, fragments, WatchProgressRequest), checked against real etcd 3.4 and kaname
//!   with the same assertions;
//! - progress notifications (kaname only: the interval is shortened through
//!   `KANAME_WATCH_PROGRESS_NOTIFY_INTERVAL_MS`);
//! - 1,000 watchers while writes go on, one stream never reading: writes keep going, every
//!   other watcher gets each of its events exactly once in order, and the stuck one gets
//!   everything once it reads again (caught up from storage).
//!
//! Run: `cargo test -p kaname --test watch_grpc`.

use std::time::{Duration, Instant};

use kaname_proto::etcdserverpb::kv_client::KvClient;
use kaname_proto::etcdserverpb::watch_client::WatchClient;
use kaname_proto::etcdserverpb::watch_create_request::FilterType;
use kaname_proto::etcdserverpb::{
    watch_request::RequestUnion, DeleteRangeRequest, PutRequest, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use kaname_proto::mvccpb::event::EventType;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use kaname_testkit::*;

const STEP: Duration = Duration::from_secs(10);

/// One Watch stream: requests in, responses out.
struct Stream {
    tx: mpsc::Sender<WatchRequest>,
    rx: tonic::Streaming<WatchResponse>,
}

impl Stream {
    /// Opens a stream whose first request creates `first`. (etcd's gRPC server sends the
    /// response headers, which the client waits for, only with the first response.)
    async fn open(ch: &Channel, first: WatchCreateRequest) -> Stream {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(first)) }).await.unwrap();
        let mut client = WatchClient::new(ch.clone());
        let call = client.watch(ReceiverStream::new(rx));
        let rx = tokio::time::timeout(STEP, call).await.expect("stream opens").expect("watch").into_inner();
        Stream { tx, rx }
    }

    async fn send(&self, r: RequestUnion) {
        self.tx.send(WatchRequest { request_union: Some(r) }).await.expect("send");
    }

    async fn create(&self, c: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    async fn recv(&mut self) -> WatchResponse {
        tokio::time::timeout(STEP, self.rx.message()).await.expect("a response in time").expect("stream").expect("open")
    }

    /// Nothing arrives within `d`.
    async fn quiet(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.message()).await.is_err()
    }
}

fn key(k: &str) -> WatchCreateRequest {
    WatchCreateRequest { key: k.as_bytes().to_vec(), ..Default::default() }
}

fn prefix(p: &str) -> WatchCreateRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    WatchCreateRequest { key: p.as_bytes().to_vec(), range_end: end, ..Default::default() }
}

async fn put(kv: &mut KvClient<Channel>, k: &str, v: &[u8]) -> i64 {
    let r = kv.put(PutRequest { key: k.into(), value: v.to_vec(), ..Default::default() }).await.expect("put");
    r.into_inner().header.unwrap().revision
}

/// Protocol details checked the same way on etcd 3.4 and on kaname.
async fn semantics(c: &Cluster) {
    let ch = grpc_channel(c, 1).await;
    let mut kv = KvClient::new(ch.clone());
    let rev0 = put(&mut kv, "a", b"0").await;

    // Auto ids count from 0 per stream; an explicit id is kept; a duplicate one is refused.
    let mut s = Stream::open(&ch, key("a")).await;
    let r = s.recv().await;
    assert!(r.created && !r.canceled, "{r:?}");
    assert_eq!((r.watch_id, r.header.as_ref().unwrap().revision), (0, rev0));
    s.create(WatchCreateRequest { watch_id: 7, ..prefix("b") }).await;
    assert_eq!(s.recv().await.watch_id, 7);
    s.create(WatchCreateRequest { watch_id: 7, ..key("c") }).await;
    let r = s.recv().await;
    assert!(r.created && r.canceled, "{r:?}");
    assert_eq!((r.watch_id, r.cancel_reason.as_str()), (-1, "mvcc: duplicate watch ID provided on the WatchStream"));
    // key >= range_end: refused as an empty range.
    s.create(WatchCreateRequest { range_end: b"a".to_vec(), ..key("z") }).await;
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.canceled, r.cancel_reason.as_str()), (-1, true, "mvcc: watcher range is empty"));
    s.create(WatchCreateRequest { filters: vec![FilterType::Noput as i32], prev_kv: true, ..key("n") }).await;
    assert_eq!(s.recv().await.watch_id, 1);

    // Events: one response per revision, with its revision in the header.
    let rev1 = put(&mut kv, "b/1", b"x").await;
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.header.as_ref().unwrap().revision, r.events.len()), (7, rev1, 1));
    // NOPUT: only the delete arrives, with prev_kv.
    put(&mut kv, "n", b"old").await;
    let del = kv.delete_range(DeleteRangeRequest { key: b"n".to_vec(), ..Default::default() }).await.unwrap();
    let rev2 = del.into_inner().header.unwrap().revision;
    let r = s.recv().await;
    assert_eq!(r.watch_id, 1);
    assert_eq!(r.events.len(), 1);
    let ev = &r.events[0];
    assert_eq!(ev.r#type, EventType::Delete as i32);
    assert_eq!(ev.kv.as_ref().unwrap().mod_revision, rev2);
    assert_eq!(ev.prev_kv.as_ref().unwrap().value, b"old");

    // Progress request: every watcher is synced, so one response for the stream, id -1.
    s.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.events.len(), r.header.as_ref().unwrap().revision), (-1, 0, rev2));

    // Cancel: answered with canceled; then nothing more for that id. Unknown ids: silence.
    s.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 0 })).await;
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.canceled, r.created), (0, true, false));
    s.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id: 42 })).await;
    put(&mut kv, "a", b"1").await;
    assert!(s.quiet(Duration::from_millis(300)).await, "no event for a cancelled watch");

    // Historical start: the past comes first, in order.
    s.create(WatchCreateRequest { start_revision: rev0, ..key("a") }).await;
    let r = s.recv().await;
    assert_eq!(r.watch_id, 2, "the next free auto id");
    let mut revs = Vec::new();
    while revs.len() < 2 {
        revs.extend(s.recv().await.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert_eq!(revs.first(), Some(&rev0));
    assert!(revs.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn watch_semantics_etcd() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(Flavor::etcd(), 1)).await.unwrap();
    semantics(&c).await;
}

#[tokio::test]
async fn watch_semantics_kaname() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(kaname!(), 1)).await.unwrap();
    semantics(&c).await;
}

/// A delete of many keys with prev_kv makes one large response; with `fragment` it arrives
/// in parts smaller than --max-request-bytes plus etcd's 512 KiB gRPC allowance, all but the
/// last marked, nothing lost.
async fn fragments(c: &Cluster) {
    let ch = grpc_channel(c, 1).await;
    let mut kv = KvClient::new(ch.clone());
    for i in 0..200 {
        put(&mut kv, &format!("f/{i:03}"), &[b'v'; 3000]).await;
    }
    let mut s = Stream::open(&ch, WatchCreateRequest { fragment: true, prev_kv: true, ..prefix("f/") }).await;
    assert!(s.recv().await.created);
    kv.delete_range(DeleteRangeRequest { key: b"f/".to_vec(), range_end: b"f0".to_vec(), ..Default::default() })
        .await
        .unwrap();
    let mut parts = Vec::new();
    loop {
        let r = s.recv().await;
        let more = r.fragment;
        parts.push(r);
        if !more {
            break;
        }
    }
    assert!(parts.len() > 1, "fragmented");
    assert_eq!(parts.iter().map(|p| p.events.len()).sum::<usize>(), 200);
    assert!(parts.iter().all(|p| p.encoded_len() < 10_000 + 512 * 1024));
    assert!(parts.iter().flat_map(|p| &p.events).all(|e| e.prev_kv.as_ref().unwrap().value.len() == 3000));
}

#[tokio::test]
async fn watch_fragments_etcd() {
    let c = tokio::task::spawn_blocking(|| Cluster::start_with(Flavor::etcd(), 1, &["--max-request-bytes=10000"]))
        .await
        .unwrap();
    fragments(&c).await;
}

#[tokio::test]
async fn watch_fragments_kaname() {
    let c = tokio::task::spawn_blocking(|| Cluster::start_with(kaname!(), 1, &["--max-request-bytes=10000"]))
        .await
        .unwrap();
    fragments(&c).await;
}

/// progress_notify: a quiet watch hears the current revision every interval; a busy one does
/// not (events already told it).
#[tokio::test]
async fn watch_progress_notify_kaname() {
    std::env::set_var("KANAME_WATCH_PROGRESS_NOTIFY_INTERVAL_MS", "300");
    let c = tokio::task::spawn_blocking(|| Cluster::start(kaname!(), 1)).await.unwrap();
    let ch = grpc_channel(&c, 1).await;
    let mut kv = KvClient::new(ch.clone());
    let mut s = Stream::open(&ch, WatchCreateRequest { progress_notify: true, ..key("quiet") }).await;
    assert!(s.recv().await.created);
    let rev = put(&mut kv, "other", b"x").await;
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.events.len(), r.header.as_ref().unwrap().revision), (0, 0, rev));
    let r = s.recv().await;
    assert_eq!((r.watch_id, r.events.len()), (0, 0), "again after another interval");
}

/// 1,000 watchers on 10 streams plus one stream that never reads, while 4 writers put 1,000
/// keys of 4 KiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_stream_slows_nobody_and_catches_up() {
    let c = tokio::task::spawn_blocking(|| Cluster::start(kaname!(), 1)).await.unwrap();
    let ch = grpc_channel(&c, 1).await;
    let mut kv = KvClient::new(ch.clone());
    let start = put(&mut kv, "start", b"").await;
    const KEYS: usize = 100;
    const PUTS: usize = 1000;

    // The stuck stream: a prefix watch that will not be read until the end.
    let mut stuck = Stream::open(&grpc_channel(&c, 1).await, prefix("k/")).await;
    assert!(stuck.recv().await.created);

    // 10 streams x 100 watchers: watcher j of stream s watches key k/(j) when j < 99, and
    // stream s's last watcher the whole prefix.
    let mut readers = Vec::new();
    for _ in 0..10 {
        let mut s = Stream::open(&ch, key("k/000")).await;
        for j in 1..99 {
            s.create(key(&format!("k/{j:03}"))).await;
        }
        s.create(prefix("k/")).await;
        for _ in 0..100 {
            assert!(s.recv().await.created);
        }
        readers.push(tokio::spawn(async move {
            // per watch id: the revisions received
            let mut got: Vec<Vec<i64>> = vec![Vec::new(); 100];
            let total = PUTS / KEYS * 99 + PUTS;
            let mut n = 0;
            while n < total {
                let r = s.recv().await;
                for e in &r.events {
                    got[r.watch_id as usize].push(e.kv.as_ref().unwrap().mod_revision);
                }
                n += r.events.len();
            }
            got
        }));
    }

    let t0 = Instant::now();
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut kv = KvClient::new(ch.clone());
        writers.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in (w..PUTS).step_by(4) {
                revs.push((i % KEYS, put(&mut kv, &format!("k/{:03}", i % KEYS), &[b'v'; 4096]).await));
            }
            revs
        }));
    }
    let mut written: Vec<(usize, i64)> = Vec::new();
    for w in writers {
        written.extend(tokio::time::timeout(Duration::from_secs(60), w).await.expect("writes keep going").unwrap());
    }
    let took = t0.elapsed();
    written.sort_by_key(|x| x.1);
    let all: Vec<i64> = written.iter().map(|x| x.1).collect();
    let of_key = |k: usize| -> Vec<i64> { written.iter().filter(|x| x.0 == k).map(|x| x.1).collect() };

    for r in readers {
        let got = tokio::time::timeout(Duration::from_secs(60), r).await.expect("readers get everything").unwrap();
        for (j, revs) in got.iter().enumerate().take(99) {
            assert_eq!(revs, &of_key(j), "watcher of k/{j:03}");
        }
        assert_eq!(got[99], all, "prefix watcher: every revision once, in order");
    }
    let (_, slow) = tokio::task::spawn_blocking({
        let port = c.member(1).client.port;
        move || watcher_gauges(port)
    })
    .await
    .unwrap();
    assert!(slow >= 1, "the stuck watcher fell back to catch-up ({slow} slow watchers)");

    // The stuck stream reads now: everything, once, in order, from storage.
    let mut revs = Vec::new();
    while revs.len() < PUTS {
        let r = stuck.recv().await;
        revs.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert_eq!(revs, all);
    assert!(all[0] > start);
    eprintln!("{PUTS} puts with 1,001 watchers (one stuck) took {took:?}");
}

/// (watchers, slow watchers) from the member's /metrics.
fn watcher_gauges(port: u16) -> (i64, i64) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    let gauge = |name: &str| -> i64 {
        body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()).unwrap()
    };
    (gauge("etcd_debugging_mvcc_watcher_total"), gauge("etcd_debugging_mvcc_slow_watcher_total"))
}

/// A watch served by a follower that falls so far behind that the leader sends it a Raft
/// snapshot (which replaces its store wholesale): the watcher still gets every event once,
/// in order, read back from the installed store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_watch_survives_snapshot_install() {
    let c = tokio::task::spawn_blocking(|| {
        let c = Cluster::start_with(kaname!(), 3, &["--snapshot-count=100"]);
        let leader = c.wait_leader(Duration::from_secs(20));
        (c, leader)
    });
    let (c, leader) = c.await.unwrap();
    let follower = if leader == 1 { 2 } else { 1 };
    let mut kv = KvClient::new(grpc_channel(&c, leader).await);
    let mut s = Stream::open(&grpc_channel(&c, follower).await, prefix("s/")).await;
    assert!(s.recv().await.created);

    let mut written = Vec::new();
    for i in 0..10 {
        written.push(put(&mut kv, &format!("s/{i}"), b"before").await);
    }
    let pid = c.pid(follower).unwrap().to_string();
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success());
    };
    signal("-STOP");
    for i in 0..600 {
        written.push(put(&mut kv, &format!("s/{}", i % 50), b"while stopped").await);
    }
    signal("-CONT");
    for i in 0..10 {
        written.push(put(&mut kv, &format!("s/{i}"), b"after").await);
    }

    let mut got = Vec::new();
    while got.len() < written.len() {
        let r = tokio::time::timeout(Duration::from_secs(30), s.rx.message())
            .await
            .expect("events keep coming after the snapshot")
            .unwrap()
            .unwrap();
        got.extend(r.events.iter().map(|e| e.kv.as_ref().unwrap().mod_revision));
    }
    assert_eq!(got, written, "every revision once, in order");
    assert!(s.quiet(Duration::from_millis(300)).await, "nothing more");
    let log = std::fs::read_to_string(&c.member(follower).log_path).unwrap();
    assert!(
        log.contains("installed snapshot received from the leader"),
        "the follower was expected to catch up by snapshot; its log:\n{}",
        c.log_tails(30)
    );
}
