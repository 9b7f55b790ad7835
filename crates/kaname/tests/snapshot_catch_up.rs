//! A follower that can only catch up through a snapshot, then a full restart
//! from snapshot + log, for both flavours (split out of `durability.rs`).
//!
//! Each scenario is generic over [`Flavor`]: the `*_etcd` variant proves the
//! test itself against real etcd 3.4, the `*_kaname` variant judges kaname.
//! Run one group: `cargo test -p kaname --test snapshot_catch_up _etcd` (or `_kaname`).
//!
//! Scenarios in this file run one at a time (a process-wide lock): each starts a
//! 3-member cluster and writes 11,000 keys, which is plenty for 2 cores.

use kaname_testkit::*;

use std::fs;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// (d) with --snapshot-count 1000, a follower down for 10,000 writes can only
//     catch up through a snapshot; (e) then the whole cluster restarts from
//     snapshot + log
// ---------------------------------------------------------------------------

/// Given to both flavours alike. Snapshots are taken every 1,000 entries, and
/// the log behind a snapshot is dropped except for a tail (etcd 3.4: 5,000
/// entries, fixed; kaname: min(5,000, snapshot-count)), so a follower more
/// than ~6,000 entries behind must be sent a snapshot by either.
const SNAPSHOT_FLAGS: [&str; 1] = ["--snapshot-count=1000"];
/// Keys of the snapshot scenario, each written by its own put: one put is one
/// Raft entry in etcd, and the few concurrent clients below keep kaname's
/// batching of concurrent proposals from folding them into few entries.
const SNAP_KEYS: usize = 10_000;
/// Keys `snap/00000..` below this are first written with an `old-` value and
/// overwritten later, so the compaction really drops revisions.
const SNAP_OVERWRITTEN: usize = 1_000;
/// Concurrent gRPC put clients. kaname folds concurrent proposals into one
/// entry, so 11,000 puts are at least 11,000 / SNAP_CLIENTS = 2,750 entries:
/// still enough for kaname to snapshot at ~2,000 and drop the log up to ~1,000,
/// past the stopped follower. (8 clients run faster but would leave only 1,375
/// entries in the worst case, not enough to force a snapshot.)
const SNAP_CLIENTS: usize = 4;

fn snap_key(k: usize) -> String {
    format!("snap/{k:05}")
}

fn snap_value(k: usize) -> String {
    format!("value-{k}")
}

/// Puts every `(key, value)` with one unary Put each, from `clients`
/// concurrent gRPC clients (etcdctl costs a process per put: far too slow for
/// 10,000). Client `c` does items c, c+clients, ...; it talks to
/// `endpoints[0]` and moves on to the next endpoint after a failure, retrying
/// the same put (puts are idempotent for what the test checks).
fn grpc_put_all(endpoints: &[String], kvs: Vec<(String, String)>, clients: usize) -> Result<(), String> {
    use kaname_proto::etcdserverpb::kv_client::KvClient;
    use kaname_proto::etcdserverpb::PutRequest;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let kvs = Arc::new(kvs);
    rt.block_on(async move {
        let tasks: Vec<_> = (0..clients)
            .map(|c| {
                let (kvs, eps) = (kvs.clone(), endpoints.to_vec());
                tokio::spawn(async move {
                    let mut which = 0usize;
                    let mut client = None;
                    let mut errors: Vec<String> = Vec::new();
                    let mut i = c;
                    while i < kvs.len() {
                        if errors.len() > 20 {
                            return Err(format!("client {c}: too many failures: {errors:?}"));
                        }
                        let ep = &eps[which % eps.len()];
                        if client.is_none() {
                            match tokio::time::timeout(
                                Duration::from_secs(5),
                                KvClient::connect(format!("http://{ep}")),
                            )
                            .await
                            {
                                Ok(Ok(k)) => client = Some(k),
                                Ok(Err(e)) => errors.push(format!("connect {ep}: {e}")),
                                Err(_) => errors.push(format!("connect {ep}: timeout")),
                            }
                            if client.is_none() {
                                which += 1;
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        }
                        let (k, v) = &kvs[i];
                        let req = PutRequest {
                            key: k.clone().into_bytes(),
                            value: v.clone().into_bytes(),
                            ..Default::default()
                        };
                        let kv = client.as_mut().expect("connected above");
                        match tokio::time::timeout(Duration::from_secs(10), kv.put(req)).await {
                            Ok(Ok(_)) => i += clients,
                            Ok(Err(status)) => {
                                errors.push(format!("put {k} on {ep}: {status}"));
                                client = None;
                                which += 1;
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            Err(_) => {
                                errors.push(format!("put {k} on {ep}: no answer in 10 s"));
                                client = None;
                                which += 1;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for t in tasks {
            t.await.map_err(|e| format!("put task: {e}"))??;
        }
        Ok(())
    })
}

/// Applied Raft index of member `i` (`raftAppliedIndex`, else `raftIndex`).
fn applied_index(c: &Cluster, i: usize) -> Result<u64, String> {
    let st = c.status(i)?;
    st["raftAppliedIndex"]
        .as_u64()
        .or(st["raftIndex"].as_u64())
        .ok_or_else(|| format!("no raft index in status of m{i}: {st}"))
}

fn status_u64(c: &Cluster, i: usize, field: &str) -> u64 {
    let st = c.status(i).unwrap_or_else(|e| panic!("{e}\n{}", c.log_tails(30)));
    st[field]
        .as_u64()
        .or_else(|| st["header"][field].as_u64())
        .unwrap_or_else(|| panic!("no {field} in status of m{i}: {st}"))
}

/// Polls until member `i` has applied Raft index `target`.
fn wait_applied(c: &Cluster, i: usize, target: u64, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let applied = applied_index(c, i);
        if applied.as_ref().is_ok_and(|&a| a >= target) {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{}: m{i} did not apply up to raft index {target} within {timeout:?} (last: {applied:?})\n{}",
                c.flavor.label(),
                c.log_tails(40)
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Every `snap/` key with its final value, read from member `i` alone with
/// serializable gets (the whole prefix, plus point gets of a sample of keys);
/// polled until right or `timeout`.
fn assert_snap_keys(c: &Cluster, i: usize, timeout: Duration) {
    let ep = c.member_endpoint(i);
    let deadline = Instant::now() + timeout;
    loop {
        let out = etcdctl_timeout(&ep, &["get", "--prefix", "snap/", "--consistency=s"], None, "20s");
        let problem = if !out.success() {
            format!("get failed ({}): {}", out.code(), out.stderr.trim())
        } else {
            let lines: Vec<&str> = out.stdout.lines().collect();
            let got: Vec<(&str, &str)> = lines.chunks(2).map(|p| (p[0], p.get(1).copied().unwrap_or(""))).collect();
            let wrong: Vec<String> = (0..SNAP_KEYS)
                .filter(|&k| got.get(k) != Some(&(snap_key(k).as_str(), snap_value(k).as_str())))
                .take(5)
                .map(|k| format!("{} = {:?}", snap_key(k), got.get(k)))
                .collect();
            if got.len() != SNAP_KEYS || !wrong.is_empty() {
                format!("{} pairs under snap/ (want {SNAP_KEYS}); first wrong: {wrong:?}", got.len())
            } else {
                String::new()
            }
        };
        if problem.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!(
                "{} m{i}: serializable get of snap/ is wrong after {timeout:?}: {problem}\n{}",
                c.flavor.label(),
                c.log_tails(40)
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
    for k in (0..SNAP_KEYS).step_by(997).chain([SNAP_OVERWRITTEN - 1, SNAP_KEYS - 1]) {
        let out = etcdctl(&ep, &["get", &snap_key(k), "--print-value-only", "--consistency=s"], None);
        assert!(
            out.success() && out.stdout.trim_end() == snap_value(k),
            "{} m{i}: serializable get {} gave {:?} (stderr {:?}), want {:?}",
            c.flavor.label(),
            snap_key(k),
            out.stdout.trim_end(),
            out.stderr.trim(),
            snap_value(k)
        );
    }
}

/// `endpoint hashkv --rev=REV` on every member must succeed and agree (hash and
/// compact revision); polled while a member still lags. Returns the hash.
fn assert_equal_hashkv(c: &Cluster, rev: i64, timeout: Duration) -> u64 {
    let rev_flag = format!("--rev={rev}");
    let deadline = Instant::now() + timeout;
    loop {
        let out = etcdctl_timeout(&c.endpoints(), &["endpoint", "hashkv", &rev_flag, "-w", "json"], None, "10s");
        let parsed: Result<Vec<(String, u64, i64)>, String> = if out.success() {
            serde_json::from_str::<serde_json::Value>(out.stdout.trim())
                .map_err(|e| format!("bad json ({e}): {}", out.stdout))
                .and_then(|v| {
                    v.as_array()
                        .ok_or_else(|| format!("not an array: {v}"))?
                        .iter()
                        .map(|e| {
                            Ok((
                                e["Endpoint"].as_str().unwrap_or("?").to_string(),
                                e["HashKV"]["hash"].as_u64().ok_or_else(|| format!("no hash: {e}"))?,
                                e["HashKV"]["compact_revision"].as_i64().unwrap_or(0),
                            ))
                        })
                        .collect()
                })
        } else {
            Err(format!("hashkv failed ({}): {}{}", out.code(), out.stdout, out.stderr))
        };
        match &parsed {
            Ok(h) if h.len() == c.size() && h.iter().all(|x| (x.1, x.2) == (h[0].1, h[0].2)) => {
                println!("{}: hashkv at rev {rev} on all members: {:?}", c.flavor.label(), h);
                return h[0].1;
            }
            _ => {}
        }
        if Instant::now() > deadline {
            panic!(
                "{}: `endpoint hashkv {rev_flag}` does not agree on all {} members after {timeout:?}: {parsed:?}\n{}",
                c.flavor.label(),
                c.size(),
                c.log_tails(30)
            );
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// kaname's snapshots of member `i`: (snapshot_id, last_log_id.index) from
/// each `<data-dir>/member/snap/*.meta` that has its `.snap` beside it.
fn kaname_snapshots(c: &Cluster, i: usize) -> Vec<(String, u64)> {
    let dir = c.member(i).data_dir.join("member").join("snap");
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("meta") {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap_or_default();
        let meta: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: bad snapshot meta JSON ({e}): {text}", path.display()));
        let id = meta["snapshot_id"].as_str().unwrap_or_default().to_string();
        let index = meta["last_log_id"]["index"].as_u64().unwrap_or(0);
        if path.with_extension("snap").exists() {
            out.push((id, index));
        }
    }
    out.sort_by_key(|s| s.1);
    out
}

/// Lines of member `i`'s log written since its last (re)start that mention snapshots.
fn snapshot_log_lines(c: &Cluster, i: usize) -> Vec<String> {
    let text = fs::read_to_string(&c.member(i).log_path).unwrap_or_default();
    let since_start = text.rsplit("=== harness: starting").next().unwrap_or("");
    since_start
        .lines()
        .skip(1) // the rest of the harness line: the command line
        .filter(|l| l.to_ascii_lowercase().contains("snapshot"))
        .map(String::from)
        .collect()
}

/// `member/snap` listing of member `i` (either flavour), for the report.
fn snap_dir_listing(c: &Cluster, i: usize) -> Vec<String> {
    let dir = c.member(i).data_dir.join("member").join("snap");
    let mut v: Vec<String> = fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// What the snapshot catch-up scenario leaves behind for the full restart.
struct SnapRun {
    c: Cluster,
    /// Revision of the last write; hashes are compared at it.
    final_rev: i64,
    /// Raft index the leader had reached after the last write.
    target: u64,
}

fn follower_snapshot_catch_up(flavor: Flavor) -> SnapRun {
    let t0 = Instant::now();
    let mut c = Cluster::start_with(flavor.clone(), 3, &SNAPSHOT_FLAGS);
    let leader = c.wait_leader(Duration::from_secs(15));
    let follower = (1..=3).find(|&i| i != leader).unwrap();
    let other = (1..=3).find(|&i| i != leader && i != follower).unwrap();
    let applied_before = applied_index(&c, follower).unwrap_or_else(|e| panic!("{e}"));
    c.kill(follower);
    let leader_index_before = status_u64(&c, leader, "raftIndex");

    // 1,000 keys with an old value, then all 10,000 with their final value.
    let eps = vec![c.member_endpoint(leader), c.member_endpoint(other)];
    let started = Instant::now();
    let old: Vec<(String, String)> = (0..SNAP_OVERWRITTEN).map(|k| (snap_key(k), format!("old-{k}"))).collect();
    let new: Vec<(String, String)> = (0..SNAP_KEYS).map(|k| (snap_key(k), snap_value(k))).collect();
    for phase in [old, new] {
        if let Err(e) = grpc_put_all(&eps, phase, SNAP_CLIENTS) {
            panic!("{}: {e}\n{}", flavor.label(), c.log_tails(30));
        }
    }
    let leader_index_after = status_u64(&c, leader, "raftIndex");
    println!(
        "{}: {} single puts with m{follower} down (applied index {applied_before} when killed) took {:?}; leader m{leader} raft index {leader_index_before} -> {leader_index_after}",
        flavor.label(),
        SNAP_OVERWRITTEN + SNAP_KEYS,
        started.elapsed(),
    );

    // Compact away the old values, then one more write so the hash revision is
    // above the compaction.
    let compact_rev = status_u64(&c, leader, "revision");
    let out = etcdctl(&c.member_endpoint(leader), &["compact", &compact_rev.to_string(), "--physical"], None);
    assert!(out.success(), "{}: compact {compact_rev} failed: {}{}", flavor.label(), out.stdout, out.stderr);
    let out = etcdctl(&c.member_endpoint(leader), &["put", "after/compact", "x", "-w", "json"], None);
    assert!(out.success(), "{}: put after compact failed: {}", flavor.label(), out.stderr);
    let final_rev = serde_json::from_str::<serde_json::Value>(out.stdout.trim())
        .ok()
        .and_then(|v| v["header"]["revision"].as_i64())
        .unwrap_or_else(|| panic!("no revision in put response: {}", out.stdout));
    let target = status_u64(&c, leader, "raftIndex");
    let mut leader_snaps = Vec::new();
    if flavor.is_kaname() {
        leader_snaps.extend(kaname_snapshots(&c, leader));
        println!("kaname: leader m{leader} snapshots before the restart: {leader_snaps:?}");
    }

    let restarted = Instant::now();
    c.restart(follower);
    c.wait_healthy();
    wait_applied(&c, follower, target, Duration::from_secs(45));
    println!("{}: m{follower} restarted and applied raft index {target} in {:?}", flavor.label(), restarted.elapsed());
    assert_snap_keys(&c, follower, Duration::from_secs(10));
    let hash = assert_equal_hashkv(&c, final_rev, Duration::from_secs(20));

    // Evidence that the follower was sent a snapshot, not just the log.
    let lines = snapshot_log_lines(&c, follower);
    println!("{}: m{follower} log lines about snapshots since its restart ({}):", flavor.label(), lines.len());
    for l in lines.iter().take(20) {
        println!("    {l}");
    }
    if lines.is_empty() {
        let text = fs::read_to_string(&c.member(follower).log_path).unwrap_or_default();
        let since = text.rsplit("=== harness: starting").next().unwrap_or("");
        println!("    (none; its log since the restart, first 15 lines:)");
        for l in since.lines().skip(1).take(15) {
            println!("    {l}");
        }
    }
    match flavor {
        Flavor::Kaname(_) => {
            leader_snaps.extend(kaname_snapshots(&c, leader));
            let mine = kaname_snapshots(&c, follower);
            println!("kaname: m{follower} snapshots after catching up: {mine:?}; leader's: {leader_snaps:?}");
            // Either it still holds the leader's snapshot, or (if it applied enough entries
            // after installing it to build its own, which replaces it) its log says it
            // installed one beyond where it stood when killed.
            let kept =
                mine.iter().any(|(id, index)| *index > applied_before && leader_snaps.iter().any(|(l, _)| l == id));
            let installed = lines.iter().any(|l| {
                l.contains("installed snapshot received from the leader")
                    && l.rsplit("index: ")
                        .next()
                        .and_then(|t| t.trim_end_matches([' ', '}', ')']).parse::<u64>().ok())
                        .is_some_and(|i| i > applied_before)
            });
            assert!(
                kept || installed,
                "kaname: restarted follower m{follower} (applied index {applied_before} when killed) holds no snapshot \
                 taken by leader m{leader} with last_log_id.index > {applied_before}: it has {mine:?} in {}, the leader had {leader_snaps:?}\n{}",
                c.member(follower).data_dir.join("member/snap").display(),
                c.log_tails(40)
            );
        }
        Flavor::Etcd(_) => {
            // etcd logs `applied snapshot` with the leader's snapshot index when
            // it applies one it was sent.
            let incoming: Vec<u64> = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["msg"] == "applied snapshot")
                .filter_map(|v| v["incoming-leader-snapshot-index"].as_u64())
                .collect();
            assert!(
                incoming.iter().any(|&i| i > applied_before),
                "etcd: restarted follower m{follower} (applied index {applied_before} when killed) logged no `applied snapshot` \
                 from the leader above that index (found {incoming:?}); snap dir: {:?}\n{}",
                snap_dir_listing(&c, follower),
                c.log_tails(40)
            );
        }
    }
    println!(
        "{}: follower catch-up through a snapshot verified (hash {hash}) in {:?} total",
        flavor.label(),
        t0.elapsed()
    );
    SnapRun { c, final_rev, target }
}

#[test]
fn follower_snapshot_catch_up_etcd() {
    let _g = serial();
    follower_snapshot_catch_up(Flavor::etcd());
}

#[test]
fn follower_snapshot_catch_up_kaname() {
    let _g = serial();
    follower_snapshot_catch_up(kaname!());
}

/// After the snapshot catch-up, kill -9 all three members and restart them:
/// each must come back from its snapshot plus the log after it.
fn restart_all_after_snapshot(flavor: Flavor) {
    let SnapRun { mut c, final_rev, target } = follower_snapshot_catch_up(flavor.clone());
    let t0 = Instant::now();
    let before: Vec<u64> = (1..=3).map(|i| applied_index(&c, i).unwrap_or(0)).collect();
    for i in 1..=3 {
        println!("{}: m{i} member/snap before kill -9 of all: {:?}", flavor.label(), snap_dir_listing(&c, i));
        if flavor.is_kaname() {
            let snaps = kaname_snapshots(&c, i);
            assert!(
                !snaps.is_empty(),
                "kaname: m{i} has no snapshot before the full restart, so it would not restart from one: {:?}",
                snap_dir_listing(&c, i)
            );
        }
    }
    for i in 1..=3 {
        c.kill(i);
    }
    for i in 1..=3 {
        c.restart(i);
    }
    c.wait_healthy();
    c.wait_leader(Duration::from_secs(15));
    for i in 1..=3 {
        wait_applied(&c, i, target, Duration::from_secs(30));
    }
    for i in 1..=3 {
        assert_snap_keys(&c, i, Duration::from_secs(20));
    }
    let out = etcdctl(&c.endpoints(), &["get", "after/compact", "--print-value-only"], None);
    assert_eq!(out.stdout.trim_end(), "x", "{}: after/compact after the full restart: {}", flavor.label(), out.stderr);
    assert_equal_hashkv(&c, final_rev, Duration::from_secs(20));
    let out = etcdctl(&c.endpoints(), &["put", "after/restart", "ok"], None);
    assert!(out.success(), "{}: put after the full restart failed: {}", flavor.label(), out.stderr);
    println!("{}: full restart (applied indexes before: {before:?}) verified in {:?}", flavor.label(), t0.elapsed());
}

#[test]
fn restart_all_after_snapshot_etcd() {
    let _g = serial();
    restart_all_after_snapshot(Flavor::etcd());
}

#[test]
fn restart_all_after_snapshot_kaname() {
    let _g = serial();
    restart_all_after_snapshot(kaname!());
}
