#![allow(dead_code)] // each test crate uses a part

//! What the scheduler tests share: a store and API server, nodes registered through the API
//! as kubelets would (the test plays them), the scheduler in this process under a leader
//! election, and reading back placements and events.

use kaname_testkit::*;

use std::time::{Duration, Instant};

use kaname_controlplane::leader_election::{Config, Elector};
use kaname_controlplane::scheduler::Scheduler;
use tokio_util::sync::CancellationToken;

/// A Node with these allocatable CPUs and memory, labels and taints, Ready.
pub fn node_manifest(
    name: &str,
    cpu: &str,
    memory: &str,
    labels: serde_json::Value,
    taints: serde_json::Value,
) -> String {
    let mut all = serde_json::json!({"kubernetes.io/hostname": name});
    all.as_object_mut().unwrap().extend(labels.as_object().cloned().unwrap_or_default());
    serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": all},
        "spec": {"taints": taints},
        "status": {"capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                   "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                   "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}})
    .to_string()
}

pub fn create(api: &Apiserver, manifest: &str) {
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(manifest));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
}

pub fn node_of(api: &Apiserver, pod: &str) -> String {
    api.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The message of the last event `reason` about pod `name`.
pub fn event(api: &Apiserver, name: &str, reason: &str) -> Option<String> {
    let events = json(&api.ok(&["get", "events", "-o", "json"]));
    events["items"]
        .as_array()?
        .iter()
        .rfind(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
}

/// The messages of every event `reason` about pod `name`, oldest first.
pub fn events(api: &Apiserver, name: &str, reason: &str) -> Vec<String> {
    let events = json(&api.ok(&["get", "events", "-o", "json"]));
    let items = events["items"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .filter(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits for the pod's first `FailedScheduling` event and returns its message.
pub fn failed_scheduling(api: &Apiserver, pod: &str) -> String {
    wait_until(&format!("{pod}'s FailedScheduling event"), Duration::from_secs(30), || {
        event(api, pod, "FailedScheduling").is_some()
    });
    event(api, pod, "FailedScheduling").unwrap()
}

pub fn wait_bound(api: &Apiserver, pod: &str) -> String {
    wait_until(&format!("{pod} bound"), Duration::from_secs(30), || !node_of(api, pod).is_empty());
    node_of(api, pod)
}

/// A store, an API server and the scheduler (leader of `kube-system/kube-scheduler`) running
/// on `rt` until dropped.
pub struct Env {
    pub api: Apiserver,
    pub rt: tokio::runtime::Runtime,
    _store: Cluster,
    stop: CancellationToken,
    run: Option<tokio::task::JoinHandle<()>>,
}

impl Env {
    /// Starts with these nodes registered; the scheduler starts after them.
    pub fn start(nodes: &[String]) -> Env {
        let store = Cluster::start(kaname!(), 1);
        let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
        for n in nodes {
            create(&api, n);
        }
        let rt = tokio::runtime::Runtime::new().unwrap();
        let client = api.kube_client(&rt);
        let cfg = Config {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(500),
            namespace: "kube-system".into(),
            name: "kube-scheduler".into(),
            identity: format!("test_{}", std::process::id()),
            component: "kube-scheduler".into(),
        };
        let elector = Elector::new(client.clone(), cfg).unwrap();
        let stop = CancellationToken::new();
        let scheduler = Scheduler::new(client);
        let run = {
            let stop = stop.clone();
            rt.spawn(async move {
                let _ = elector.run(stop, move |term| scheduler.run(term)).await;
            })
        };
        Env { api, rt, _store: store, stop, run: Some(run) }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
        // The elector releases the lease before the API server goes.
        if let Some(run) = self.run.take() {
            let _ = self.rt.block_on(run);
        }
    }
}
