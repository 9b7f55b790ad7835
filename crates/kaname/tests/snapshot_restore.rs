//! `etcdctl snapshot save` from a running kaname cluster, `kaname etcdctl snapshot restore` into
//! the data dirs of a new 3-member cluster, and that cluster serving the data: same keys, same
//! revision, same leases, equal HashKV on every member, and new writes on top.

use kaname_testkit::*;
use std::process::Command;

fn restore(snapshot: &str, c: &Cluster, i: usize, extra: &[&str]) -> std::process::Output {
    let m = c.member(i);
    let peer = format!("http://127.0.0.1:{}", m.peer.port);
    Command::new(env!("CARGO_BIN_EXE_kaname"))
        .args(["etcdctl", "snapshot", "restore", snapshot])
        .args(["--name", &m.name, "--data-dir", m.data_dir.to_str().unwrap()])
        .args(["--initial-cluster", &c.initial_cluster(), "--initial-cluster-token", c.token()])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(extra)
        .output()
        .expect("run kaname etcdctl snapshot restore")
}

#[test]
fn saved_snapshot_restores_into_a_new_cluster() {
    // The source: one member with some history, a lease and a compaction.
    let src = Cluster::start(kaname!(), 1);
    let ep = src.member_endpoint(1);
    for i in 0..20 {
        assert!(etcdctl(&ep, &["put", &format!("key{i}"), &format!("value{i}")], None).success());
    }
    assert!(etcdctl(&ep, &["del", "key0"], None).success());
    let grant = etcdctl(&ep, &["lease", "grant", "600"], None);
    let lease = grant.stdout.split_whitespace().nth(1).expect("lease id").to_string();
    assert!(etcdctl(&ep, &["put", "leased", "x", &format!("--lease={lease}")], None).success());
    let status = src.status(1).unwrap();
    let revision = status["header"]["revision"].as_i64().unwrap();
    let snap = src.root().join("backup.db");
    let snap = snap.to_str().unwrap();
    let saved = etcdctl(&ep, &["snapshot", "save", snap], None);
    assert!(saved.success(), "snapshot save: {}", saved.stderr);

    // The new cluster: restore into each member's data dir, then start them.
    let mut dst = Cluster::prepare(kaname!(), 3);
    for i in 1..=3 {
        let out = restore(snap, &dst, i, &[]);
        assert!(
            out.status.success(),
            "restore m{i}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A second restore into the same dir is refused, as etcdctl refuses it.
    let again = restore(snap, &dst, 1, &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists"), "{}", String::from_utf8_lossy(&again.stderr));
    dst.start_all();

    for i in 1..=3 {
        let ep = dst.member_endpoint(i);
        let keys = etcdctl(&ep, &["get", "key", "--prefix", "--keys-only"], None).stdout;
        assert_eq!(keys.lines().filter(|l| !l.is_empty()).count(), 19, "m{i}: {keys}");
        let v = etcdctl(&ep, &["get", "key7", "--print-value-only"], None).stdout;
        assert_eq!(v.trim(), "value7");
        let st = dst.status(i).unwrap();
        assert!(st["header"]["revision"].as_i64().unwrap() >= revision, "m{i} revision went back");
        let ttl = etcdctl(&ep, &["lease", "timetolive", &lease, "--keys"], None).stdout;
        assert!(ttl.contains("leased"), "m{i}: lease lost: {ttl}");
    }
    // New writes continue the old revision sequence.
    let put = etcdctl(&dst.member_endpoint(2), &["put", "after", "restore", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(put.stdout.trim()).expect("put json");
    assert_eq!(v["header"]["revision"].as_i64().unwrap(), revision + 1);
    // Every member holds the same history.
    let hashes: Vec<String> = (1..=3)
        .map(|i| {
            let out = etcdctl(&dst.member_endpoint(i), &["endpoint", "hashkv", "-w", "json"], None).stdout;
            let v: serde_json::Value = serde_json::from_str(out.trim()).expect("hashkv json");
            v[0]["HashKV"]["hash"].to_string()
        })
        .collect();
    assert!(hashes.iter().all(|h| h == &hashes[0]), "HashKV differs: {hashes:?}");
}

#[test]
fn corrupted_snapshot_is_refused() {
    let src = Cluster::start(kaname!(), 1);
    let ep = src.member_endpoint(1);
    assert!(etcdctl(&ep, &["put", "a", "1"], None).success());
    let path = src.root().join("backup.db");
    assert!(etcdctl(&ep, &["snapshot", "save", path.to_str().unwrap()], None).success());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let dst = Cluster::prepare(kaname!(), 1);
    let out = restore(path.to_str().unwrap(), &dst, 1, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expected sha256"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dst.member(1).data_dir.exists(), "a failed restore must not leave a data dir");
}
