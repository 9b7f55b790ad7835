//! Two `kaname apiserver` instances on one store (as behind a load balancer), on real etcd 3.4
//! and on `kaname etcd`:
//!
//! - a write through one instance is seen by `kubectl get -w` on the other (each instance has
//!   its own watch cache, fed by its own etcd watch);
//! - concurrent read-modify-write rounds through both never lose an update: each one either
//!   succeeds or gets 409 Conflict, the final object holds exactly the successful ones, and a
//!   watch on one instance sees every successful update, in order.
//!
//! Run: `cargo test -p kaname --test apiserver_ha`. Needs etcd (scripts/install-test-deps.sh)
//! and kubectl.

use kaname_testkit::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};

/// `kubectl get -w` on `b` sees what is written through `a`.
fn watch_across(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let a = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let b = a.start_sibling();
    assert_ne!(a.port.port, b.port.port);
    let w = Command::new("kubectl")
        .env_remove("KUBECONFIG")
        .arg(format!("--kubeconfig={}", b.kubeconfig.display()))
        .arg(format!("--cache-dir={}", b.dir.path().join("cache").display()))
        .args(["get", "configmaps", "-w", "--output-watch-events", "--request-timeout=6s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    a.ok(&["create", "configmap", "across", "--from-literal=a=1"]);
    a.ok(&["label", "configmap", "across", "seen=yes"]);
    a.ok(&["delete", "configmap", "across"]);
    let out = w.wait_with_output().unwrap();
    let rows = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<&str> = rows.lines().skip(1).map(|l| l.split_whitespace().next().unwrap_or("")).collect();
    assert_eq!(events, ["ADDED", "MODIFIED", "DELETED"], "{rows}{}", String::from_utf8_lossy(&out.stderr));
    assert!(rows.lines().skip(1).all(|l| l.split_whitespace().nth(1) == Some("across")), "{rows}");
}

#[test]
fn watch_across_instances_on_etcd() {
    watch_across(Flavor::etcd());
}

#[test]
fn watch_across_instances_on_kaname() {
    watch_across(kaname!());
}

/// What one writer did: the tokens of its successful updates and how many conflicts it met.
#[derive(Default)]
struct Tally {
    committed: Vec<(i64, String)>,
    conflicts: usize,
}

/// Rounds of get → append a token to `data.log` → replace with the read resourceVersion.
async fn writer(api: Api<ConfigMap>, id: usize, rounds: usize) -> Tally {
    let mut tally = Tally::default();
    for round in 0..rounds {
        let mut cm = api.get("counter").await.unwrap();
        let token = format!("w{id}.{round}");
        let data = cm.data.get_or_insert_with(Default::default);
        let log = data.entry("log".into()).or_default();
        if !log.is_empty() {
            log.push(',');
        }
        log.push_str(&token);
        match api.replace("counter", &PostParams::default(), &cm).await {
            Ok(new) => {
                let rv = new.metadata.resource_version.unwrap().parse().unwrap();
                tally.committed.push((rv, token));
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                assert_eq!(e.reason, "Conflict", "{e:?}");
                tally.conflicts += 1;
            }
            Err(e) => panic!("writer {id}: update failed with neither success nor 409: {e}"),
        }
    }
    tally
}

fn no_lost_updates(flavor: Flavor) {
    let store = Cluster::start(flavor.clone(), 1);
    let a = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    let b = a.start_sibling();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ca, cb) = (a.kube_client(&rt), b.kube_client(&rt));
    let (api_a, api_b): (Api<ConfigMap>, Api<ConfigMap>) = (Api::default_namespaced(ca), Api::default_namespaced(cb));
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("counter".into());
    cm.data = Some([("log".to_string(), String::new())].into());
    let created = rt.block_on(api_a.create(&PostParams::default(), &cm)).unwrap();
    let start_rv = created.metadata.resource_version.unwrap();

    // A watch on instance b from the creation on, collecting every update it is told of.
    let watched = rt.spawn({
        let api = api_b.clone();
        async move {
            let mut seen: Vec<(i64, String)> = Vec::new();
            let mut stream = api.watch(&WatchParams::default().timeout(60), &start_rv).await.unwrap().boxed();
            let deadline = Instant::now() + Duration::from_secs(60);
            while let Some(ev) = stream.next().await {
                match ev.unwrap() {
                    WatchEvent::Modified(cm) => {
                        let rv = cm.metadata.resource_version.unwrap().parse().unwrap();
                        let log = cm.data.unwrap_or_default().remove("log").unwrap_or_default();
                        let done = log.ends_with("#end");
                        seen.push((rv, log));
                        if done || Instant::now() > deadline {
                            break;
                        }
                    }
                    WatchEvent::Error(e) => panic!("watch error: {e:?}"),
                    _ => {}
                }
            }
            seen
        }
    });

    let (writers, rounds) = (4, 30);
    let tallies: Vec<Tally> = rt.block_on(async {
        let tasks: Vec<_> = (0..writers)
            .map(|id| tokio::spawn(writer(if id % 2 == 0 { api_a.clone() } else { api_b.clone() }, id, rounds)))
            .collect();
        futures::future::join_all(tasks).await.into_iter().map(Result::unwrap).collect()
    });
    let mut committed: Vec<(i64, String)> = tallies.iter().flat_map(|t| t.committed.clone()).collect();
    committed.sort();
    let conflicts: usize = tallies.iter().map(|t| t.conflicts).sum();
    assert_eq!(committed.len() + conflicts, writers * rounds);
    assert!(!committed.is_empty());

    // The final value is exactly the successful updates, in the order of their revisions.
    let tokens: Vec<&str> = committed.iter().map(|(_, t)| t.as_str()).collect();
    let last = rt.block_on(api_b.get("counter")).unwrap();
    assert_eq!(last.data.as_ref().unwrap()["log"], tokens.join(","), "conflicts: {conflicts}");

    // Mark the end so the watcher stops, then compare what it saw with what was committed.
    let mut end = last.clone();
    end.data.as_mut().unwrap().get_mut("log").unwrap().push_str(",#end");
    rt.block_on(api_a.replace("counter", &PostParams::default(), &end)).unwrap();
    let seen = rt.block_on(watched).unwrap();
    let seen_rvs: Vec<i64> = seen.iter().map(|(rv, _)| *rv).take(committed.len()).collect();
    let committed_rvs: Vec<i64> = committed.iter().map(|(rv, _)| *rv).collect();
    assert_eq!(seen_rvs, committed_rvs, "the watch on the other instance missed or reordered updates");
    for ((_, log), i) in seen.iter().zip(1..) {
        if i <= tokens.len() {
            assert_eq!(log, &tokens[..i].join(","));
        }
    }
    println!("{} updates committed, {conflicts} conflicts", committed.len());
}

#[test]
fn no_lost_updates_on_etcd() {
    no_lost_updates(Flavor::etcd());
}

#[test]
fn no_lost_updates_on_kaname() {
    no_lost_updates(kaname!());
}
