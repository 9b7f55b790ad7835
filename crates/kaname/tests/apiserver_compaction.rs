//! `--etcd-compaction-interval`: the API servers compact the store's history as kube-apiserver
//! does, once per interval however many of them share the store (the compare-and-swap on
//! `compact_rev_key`), and clients behind the compaction get 410 and relist.
//!
//! Injected: two API servers with a 2 s interval on one store, a busy ConfigMap updated 20
//! times. Checked: the busy object's first revision is compacted away in etcd itself (read by
//! etcdctl at that revision), an Exact list and a watch from there answer 410 as upstream, the
//! current object is intact, and the number of compactions (the version of `compact_rev_key`)
//! is at most one per interval of elapsed time, not one per server.
//!
//! Run: `cargo test -p kaname --test apiserver_compaction`. Needs etcd and etcdctl
//! (scripts/install-test-deps.sh) and kubectl.

use kaname_testkit::*;

use std::thread;
use std::time::{Duration, Instant};

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const INTERVAL_SECS: u64 = 2;

fn compaction(flavor: Flavor) {
    let store = Cluster::start(flavor, 1);
    let ep = store.member_endpoint(1);
    let started = Instant::now();
    let args = [format!("--etcd-servers=http://{ep}"), format!("--etcd-compaction-interval={INTERVAL_SECS}s")];
    let a = Apiserver::start_args(kaname_bin!(), &args);
    let b = a.start_sibling();

    a.ok(&["create", "configmap", "busy", "--from-literal=n=0"]);
    let first = json(&a.ok(&["get", "configmap", "busy", "-o", "json"]));
    let first_rv = first["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    for n in 1..=20 {
        let server = if n % 2 == 0 { &a } else { &b };
        server.ok(&["label", "--overwrite", "configmap", "busy", &format!("n={n}")]);
    }

    // The store itself no longer has the first revision once a compaction passed it (the
    // first round only starts counting, the next compacts to what the first saw).
    let key = "/registry/configmaps/default/busy";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl(&ep, &["get", key, &format!("--rev={first_rv}")], None);
        if !out.success() {
            assert!(out.stderr.contains("required revision has been compacted"), "{out:?}");
            break;
        }
        assert!(Instant::now() < deadline, "no compaction passed revision {first_rv} within 60 s\n{}", a.log());
        thread::sleep(Duration::from_millis(500));
    }

    // Clients behind the compaction: 410 with upstream's messages.
    let (code, body) = a.admin_curl("GET", &format!("{CMS}?resourceVersion={first_rv}&resourceVersionMatch=Exact"));
    let st = json(&body);
    assert_eq!((code, st["reason"].as_str()), (410, Some("Expired")), "{st}");
    assert_eq!(st["message"], "The resourceVersion for the provided list is too old.");
    let (code, body) = b.admin_curl("GET", &format!("{CMS}?watch=true&resourceVersion={first_rv}&timeoutSeconds=3"));
    assert_eq!(code, 200, "{body}");
    let events: Vec<serde_json::Value> = body.lines().map(json).collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "ERROR", "{events:?}");
    assert_eq!(events[0]["object"]["code"], 410, "{events:?}");

    // What is current is untouched.
    let now = json(&b.ok(&["get", "configmap", "busy", "-o", "json"]));
    assert_eq!(now["metadata"]["labels"]["n"], "20", "{now}");

    // Two servers, one compaction per interval: the key's version counts the rounds won.
    thread::sleep(Duration::from_secs(3 * INTERVAL_SECS));
    let out = etcdctl(&ep, &["get", "compact_rev_key", "-w", "json"], None);
    assert!(out.success(), "{out:?}");
    let kv = &json(&out.stdout)["kvs"][0];
    let rounds = kv["version"].as_i64().unwrap();
    let intervals = started.elapsed().as_secs() / INTERVAL_SECS;
    assert!(rounds >= 2, "compact_rev_key version {rounds}");
    assert!(
        rounds as u64 <= intervals + 1,
        "{rounds} compactions in {intervals} intervals: the servers did not share the work\n{}\n{}",
        a.log(),
        b.log()
    );
}

#[test]
fn compaction_on_etcd() {
    compaction(Flavor::etcd());
}

#[test]
fn compaction_on_kaname() {
    compaction(kaname!());
}

/// `--etcd-compaction-interval=0` turns it off, and a value Go would refuse is refused with
/// Go's words.
#[test]
fn compaction_interval_flag() {
    let store = Cluster::start(kaname!(), 1);
    let ep = store.member_endpoint(1);
    let a = Apiserver::start_args(
        kaname_bin!(),
        &[format!("--etcd-servers=http://{ep}"), "--etcd-compaction-interval=0".into()],
    );
    a.ok(&["create", "configmap", "c", "--from-literal=n=0"]);
    thread::sleep(Duration::from_secs(2));
    let out = etcdctl(&ep, &["get", "compact_rev_key"], None);
    assert_eq!(out.stdout, "", "{out:?}");

    let out = std::process::Command::new(kaname_bin!())
        .args(["apiserver", &format!("--etcd-servers=http://{ep}"), "--etcd-compaction-interval=5"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("time: missing unit in duration \"5\""), "{err}");
}
