//! The scheduler (`kaname-controlplane`'s `Scheduler`, in this process under a leader
//! election) against a real `kaname apiserver` on `kaname etcd`, with Node objects created
//! through the API as a kubelet would register them (no kubelet yet: the test plays the nodes).
//!
//! Injected: three nodes (2 CPUs, 4 GiB, 110 pods; n3 tainted `dedicated=gpu:NoSchedule`), then
//! pods. Checked: pods are bound to the untainted nodes and spread over both, with upstream's
//! `Scheduled` event; a pod whose selector matches no node and one asking for 10 CPUs get
//! upstream's `FailedScheduling` message and `PodScheduled=False` (`Unschedulable`); labelling
//! a node (a cluster event) gets the first one bound there.
//!
//! Run: `cargo test -p kaname --test scheduler`. Needs kubectl.

use kaname_testkit::*;

use std::time::{Duration, Instant};

use kaname_controlplane::leader_election::{Config, Elector};
use kaname_controlplane::scheduler::Scheduler;
use tokio_util::sync::CancellationToken;

fn node_manifest(name: &str, taint: bool) -> String {
    let taints = if taint { r#"[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]"# } else { "[]" };
    format!(
        r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}", "labels": {{"kubernetes.io/hostname": "{name}"}}}},
            "spec": {{"taints": {taints}}},
            "status": {{"capacity": {{"cpu": "2", "memory": "4Gi", "pods": "110"}},
                        "allocatable": {{"cpu": "2", "memory": "4Gi", "pods": "110"}},
                        "conditions": [{{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}}]}}}}"#
    )
}

fn pod_manifest(name: &str, cpu: &str, selector: Option<(&str, &str)>) -> String {
    let sel = selector.map(|(k, v)| format!(r#", "nodeSelector": {{"{k}": "{v}"}}"#)).unwrap_or_default();
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"containers": [{{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {{"requests": {{"cpu": "{cpu}", "memory": "256Mi"}}}}}}]{sel}}}}}"#
    )
}

fn create(api: &Apiserver, manifest: &str) {
    let out = api.kubectl_stdin(&["create", "-f", "-"], Some(manifest));
    assert!(out.success(), "{}{}", out.stdout, out.stderr);
}

fn node_of(api: &Apiserver, pod: &str) -> String {
    api.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The message of the last event `reason` about pod `name`.
fn event(api: &Apiserver, name: &str, reason: &str) -> Option<String> {
    let events = json(&api.ok(&["get", "events", "-o", "json"]));
    events["items"]
        .as_array()?
        .iter()
        .rfind(|e| e["involvedObject"]["name"] == name && e["reason"] == reason)
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
}

#[test]
fn binds_spreads_and_explains() {
    let _g = serial();
    let store = Cluster::start(kaname!(), 1);
    let api = Apiserver::start(kaname_bin!(), &store.member_endpoint(1));
    for (n, taint) in [("n1", false), ("n2", false), ("n3", true)] {
        create(&api, &node_manifest(n, taint));
    }
    assert_eq!(api.ok(&["get", "node", "n1", "-o", "jsonpath={.status.allocatable.cpu}"]), "2");

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
        rt.spawn(async move { elector.run(stop, move |term| scheduler.run(term)).await })
    };

    // Six pods of half a CPU: bound to n1 and n2 (n3's taint is not tolerated), spread.
    for i in 0..6 {
        create(&api, &pod_manifest(&format!("p{i}"), "500m", None));
    }
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        let p = format!("p{i}");
        wait_until(&format!("{p} bound"), Duration::from_secs(30), || !node_of(&api, &p).is_empty());
        *on.entry(node_of(&api, &p)).or_default() += 1;
    }
    assert!(!on.contains_key("n3"), "bound to the tainted node: {on:?}");
    assert!(on.get("n1").copied().unwrap_or(0) >= 2 && on.get("n2").copied().unwrap_or(0) >= 2, "not spread: {on:?}");
    let p0_node = node_of(&api, "p0");
    wait_until("the Scheduled event", Duration::from_secs(10), || event(&api, "p0", "Scheduled").is_some());
    assert_eq!(event(&api, "p0", "Scheduled").unwrap(), format!("Successfully assigned default/p0 to {p0_node}"));
    assert_eq!(
        api.ok(&["get", "pod", "p0", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}"]),
        "True"
    );

    // A selector no node matches: explained as upstream, then bound once a node matches.
    create(&api, &pod_manifest("picky", "100m", Some(("disk", "ssd"))));
    wait_until("picky's FailedScheduling event", Duration::from_secs(20), || {
        event(&api, "picky", "FailedScheduling").is_some()
    });
    assert_eq!(
        event(&api, "picky", "FailedScheduling").unwrap(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector."
    );
    let cond = json(&api.ok(&["get", "pod", "picky", "-o", "json"]));
    let scheduled =
        cond["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "PodScheduled").cloned();
    let scheduled = scheduled.unwrap_or_else(|| panic!("no PodScheduled condition: {cond}"));
    assert_eq!(
        (scheduled["status"].as_str(), scheduled["reason"].as_str()),
        (Some("False"), Some("Unschedulable")),
        "{scheduled}"
    );
    api.ok(&["label", "node", "n2", "disk=ssd"]);
    wait_until("picky bound after the node was labelled", Duration::from_secs(30), || node_of(&api, "picky") == "n2");

    // More than any node has.
    create(&api, &pod_manifest("huge", "10", None));
    wait_until("huge's FailedScheduling event", Duration::from_secs(20), || {
        event(&api, "huge", "FailedScheduling").is_some()
    });
    assert_eq!(
        event(&api, "huge", "FailedScheduling").unwrap(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
    );
    assert_eq!(node_of(&api, "huge"), "");

    stop.cancel();
    let _ = rt.block_on(run);
}
