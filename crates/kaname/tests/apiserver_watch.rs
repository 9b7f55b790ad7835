//! The watch cache and the resourceVersion rules of list and watch, over raw HTTPS with the
//! admin certificate (so status codes and bodies are seen as sent), on real etcd 3.4 and on
//! `kaname etcd`; and that a hundred watchers cost the store no extra etcd watch.
//!
//! Run: `cargo test -p kaname --test apiserver_watch`. Needs etcd (scripts/install-test-deps.sh)
//! and kubectl (the harness waits for readiness with it).

use kaname_testkit::*;

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn get(api: &Apiserver, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = api.admin_curl("GET", path);
    (code, json(&body))
}

/// Lines of a watch that ends by its timeoutSeconds, and how long it took.
fn watch_lines(api: &Apiserver, path: &str) -> (Vec<serde_json::Value>, Duration) {
    let started = Instant::now();
    let (code, body) = api.admin_curl("GET", path);
    assert_eq!(code, 200, "{body}");
    (body.lines().map(json).collect(), started.elapsed())
}

fn types(events: &[serde_json::Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

fn semantics(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    api.ok(&["create", "configmap", "a", "--from-literal=k=1"]);
    let (_, list) = get(&api, CMS);
    let rv: i64 = list["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();

    // resourceVersion=0 and NotOlderThan come from the cache, at a revision no older.
    for q in ["?resourceVersion=0", &format!("?resourceVersion={rv}&resourceVersionMatch=NotOlderThan")] {
        let (code, l) = get(&api, &format!("{CMS}{q}"));
        assert_eq!(code, 200, "{l}");
        assert_eq!(l["items"].as_array().unwrap().len(), 1, "{l}");
        assert!(l["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() >= rv);
    }
    // A revision the store has not reached: 504 after the cache waited for it.
    let (code, s) = get(&api, &format!("{CMS}?resourceVersion={}&resourceVersionMatch=NotOlderThan", rv + 1000));
    assert_eq!((code, s["reason"].as_str()), (504, Some("Timeout")), "{s}");
    assert_eq!(s["message"], format!("Too large resource version: {}, current: {rv}", rv + 1000).as_str());
    // Contradictions are upstream's 422s.
    let (code, s) = get(&api, &format!("{CMS}?resourceVersionMatch=Exact"));
    assert_eq!(code, 422);
    assert_eq!(
        s["message"],
        "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
    );
    let (code, s) = get(&api, &format!("{CMS}?watch=true&resourceVersionMatch=NotOlderThan"));
    assert_eq!(code, 422, "{s}");

    // Exact reads etcd at that revision: the object's old data.
    api.ok(&["create", "configmap", "b", "--from-literal=k=2"]);
    let (code, l) = get(&api, &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"));
    assert_eq!(code, 200, "{l}");
    assert_eq!(l["items"].as_array().unwrap().len(), 1);
    assert_eq!(l["metadata"]["resourceVersion"], rv.to_string().as_str());

    // A watch with a selector: an object that stops matching is DELETED (its last matching
    // state, at the revision of the change); bookmarks only when asked for; timeoutSeconds
    // ends the stream cleanly.
    api.ok(&["label", "configmap", "a", "app=x"]);
    api.ok(&["label", "configmap", "a", "app-"]);
    let sel = format!("{CMS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dx&timeoutSeconds=3");
    let (events, took) = watch_lines(&api, &sel);
    assert!(took >= Duration::from_secs(3), "ended after {took:?}");
    assert_eq!(types(&events), ["ADDED", "DELETED"], "{events:?}");
    assert_eq!(events[1]["object"]["metadata"]["labels"]["app"], "x");
    let deleted_rv: i64 = events[1]["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(deleted_rv > events[0]["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap());
    let (events, _) = watch_lines(&api, &format!("{sel}&allowWatchBookmarks=true"));
    assert_eq!(types(&events), ["ADDED", "DELETED", "BOOKMARK"], "{events:?}");
    let bookmark = &events[2]["object"];
    assert_eq!((bookmark["kind"].as_str(), bookmark["apiVersion"].as_str()), (Some("ConfigMap"), Some("v1")));
    assert!(bookmark["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() >= deleted_rv);

    // No resourceVersion: the current state as ADDED, then changes. WatchList: the state, then
    // the initial-events-end bookmark.
    let (events, _) = watch_lines(&api, &format!("{CMS}?watch=true&timeoutSeconds=1"));
    assert_eq!(types(&events), ["ADDED", "ADDED"], "{events:?}");
    let (events, _) = watch_lines(
        &api,
        &format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"),
    );
    assert_eq!(types(&events), ["ADDED", "ADDED", "BOOKMARK"], "{events:?}");
    assert_eq!(events[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");

    // After a compaction: Exact at a compacted revision is 410 with upstream's list message; a
    // watch from one is an in-stream 410 ERROR.
    let now = get(&api, "/api/v1/namespaces").1["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let c = etcdctl(&store.member_endpoint(1), &["compact", &now], None);
    assert!(c.success(), "{}", c.stderr);
    let (code, s) = get(&api, &format!("{CMS}?resourceVersion={rv}&resourceVersionMatch=Exact"));
    assert_eq!((code, s["reason"].as_str()), (410, Some("Expired")), "{s}");
    assert_eq!(s["message"], "The resourceVersion for the provided list is too old.");
    let (events, _) = watch_lines(&api, &format!("{CMS}?watch=true&resourceVersion={rv}&timeoutSeconds=5"));
    assert_eq!(types(&events), ["ERROR"]);
    assert_eq!(events[0]["object"]["code"], 410);
}

#[test]
fn semantics_on_etcd() {
    semantics(Flavor::etcd());
}

#[test]
fn semantics_on_kaname() {
    semantics(kaname!());
}

/// etcd's count of watchers (`etcd_debugging_mvcc_watcher_total`, kaname exports it too).
fn etcd_watchers(endpoint: &str) -> i64 {
    let out = std::process::Command::new("curl").args(["-s", &format!("http://{endpoint}/metrics")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("etcd_debugging_mvcc_watcher_total ")).expect("watcher gauge");
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() as i64
}

/// A hundred watchers of one apiserver share its one etcd watch per resource, and each gets
/// every event.
fn many_watchers_one_etcd_watch(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let endpoint = store.member_endpoint(1);
    let api = Apiserver::start(kaname_bin!(), &endpoint);
    // The caches start their etcd watches right after the server starts.
    let served = kaname_apiserver::resources::GROUPS.iter().map(|gv| gv.resources.len() as i64).sum::<i64>();
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcd_watchers(&endpoint) < served {
        assert!(Instant::now() < deadline, "the watch caches did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = etcd_watchers(&endpoint);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = api.kube_client(&rt);
    let received = rt.block_on(async {
        let cms: Api<ConfigMap> = Api::default_namespaced(client);
        let mut streams = Vec::new();
        for _ in 0..100 {
            streams.push(cms.watch(&WatchParams::default().timeout(30), "0").await.unwrap().boxed());
        }
        assert_eq!(etcd_watchers(&endpoint), before, "watchers of the apiserver opened etcd watches");
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some("fan-out".into());
        cms.create(&PostParams::default(), &cm).await.unwrap();
        let mut received = 0;
        for mut s in streams {
            let ev = tokio::time::timeout(Duration::from_secs(20), s.next()).await.unwrap();
            if let Some(Ok(WatchEvent::Added(cm))) = ev {
                assert_eq!(cm.metadata.name.as_deref(), Some("fan-out"));
                received += 1;
            }
        }
        received
    });
    assert_eq!(received, 100);
    // One per resource kind served, whatever the number of HTTP watchers.
    assert_eq!(before, served, "etcd watchers for the apiserver's {served} resources");
}

#[test]
fn many_watchers_one_etcd_watch_on_etcd() {
    many_watchers_one_etcd_watch(Flavor::etcd());
}

#[test]
fn many_watchers_one_etcd_watch_on_kaname() {
    many_watchers_one_etcd_watch(kaname!());
}

/// A store restart breaks the caches' etcd watches: they resume from the last revision they
/// saw, so an HTTP watch open across the restart misses nothing and repeats nothing.
fn survives_a_store_restart(flavor: Flavor) {
    let mut store = Cluster::start(flavor.clone(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let rv = get(&api, CMS).1["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let path = format!("{CMS}?watch=true&resourceVersion={rv}&timeoutSeconds=25");
    let watch = std::thread::scope(|s| {
        let w = s.spawn(|| watch_lines(&api, &path).0);
        api.ok(&["create", "configmap", "before", "--from-literal=k=1"]);
        store.kill(1);
        std::thread::sleep(Duration::from_secs(1));
        store.restart(1);
        store.wait_healthy();
        let deadline = Instant::now() + Duration::from_secs(15);
        while !api.kubectl(&["create", "configmap", "after", "--from-literal=k=2"]).success() {
            assert!(Instant::now() < deadline, "no write after the store restart\n{}", api.log());
            std::thread::sleep(Duration::from_millis(300));
        }
        w.join().unwrap()
    });
    let names: Vec<(&str, &str)> = watch
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["object"]["metadata"]["name"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(names, [("ADDED", "before"), ("ADDED", "after")], "{watch:?}");
}

#[test]
fn survives_a_store_restart_on_etcd() {
    survives_a_store_restart(Flavor::etcd());
}

#[test]
fn survives_a_store_restart_on_kaname() {
    survives_a_store_restart(kaname!());
}
