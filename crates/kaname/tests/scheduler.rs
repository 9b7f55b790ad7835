//! The scheduler (`kaname-controlplane`'s `Scheduler`, in this process under a leader
//! election) against a real `kaname apiserver` on `kaname etcd`, with Node objects created
//! through the API as a kubelet would register them (no kubelet yet: the test plays the nodes).
//!
//! Injected: three nodes (2 CPUs, 4 GiB, 110 pods; n3 tainted `dedicated=gpu:NoSchedule`), then
//! pods. Checked: pods are bound to the untainted nodes and spread over both, with upstream's
//! `Scheduled` event; a pod whose selector matches no node and one asking for 10 CPUs get
//! upstream's `FailedScheduling` message (with what preemption found) and `PodScheduled=False`
//! (`Unschedulable`); labelling a node (a cluster event) gets the first one bound there.
//!
//! Run: `cargo test -p kaname --test scheduler`. Needs kubectl.

use kaname_testkit::*;

use std::time::Duration;

#[path = "support/scheduling.rs"]
mod scheduling;
use scheduling::*;

fn pod_manifest(name: &str, cpu: &str, selector: Option<(&str, &str)>) -> String {
    let sel = selector.map(|(k, v)| format!(r#", "nodeSelector": {{"{k}": "{v}"}}"#)).unwrap_or_default();
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "{name}"}},
            "spec": {{"containers": [{{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": {{"requests": {{"cpu": "{cpu}", "memory": "256Mi"}}}}}}]{sel}}}}}"#
    )
}

#[test]
fn binds_spreads_and_explains() {
    let _g = serial();
    let gpu = serde_json::json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
    let nodes: Vec<String> = [("n1", false), ("n2", false), ("n3", true)]
        .iter()
        .map(|(n, taint)| {
            node_manifest(
                n,
                "2",
                "4Gi",
                serde_json::json!({}),
                if *taint { gpu.clone() } else { serde_json::json!([]) },
            )
        })
        .collect();
    let env = Env::start(&nodes);
    let api = &env.api;
    assert_eq!(api.ok(&["get", "node", "n1", "-o", "jsonpath={.status.allocatable.cpu}"]), "2");

    // Six pods of half a CPU: bound to n1 and n2 (n3's taint is not tolerated), spread.
    for i in 0..6 {
        create(api, &pod_manifest(&format!("p{i}"), "500m", None));
    }
    let mut on = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        let p = format!("p{i}");
        wait_until(&format!("{p} bound"), Duration::from_secs(30), || !node_of(api, &p).is_empty());
        *on.entry(node_of(api, &p)).or_default() += 1;
    }
    assert!(!on.contains_key("n3"), "bound to the tainted node: {on:?}");
    assert!(on.get("n1").copied().unwrap_or(0) >= 2 && on.get("n2").copied().unwrap_or(0) >= 2, "not spread: {on:?}");
    let p0_node = node_of(api, "p0");
    wait_until("the Scheduled event", Duration::from_secs(10), || event(api, "p0", "Scheduled").is_some());
    assert_eq!(event(api, "p0", "Scheduled").unwrap(), format!("Successfully assigned default/p0 to {p0_node}"));
    assert_eq!(
        api.ok(&["get", "pod", "p0", "-o", "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}"]),
        "True"
    );

    // A selector no node matches: explained as upstream, then bound once a node matches.
    create(api, &pod_manifest("picky", "100m", Some(("disk", "ssd"))));
    wait_until("picky's FailedScheduling event", Duration::from_secs(20), || {
        event(api, "picky", "FailedScheduling").is_some()
    });
    assert_eq!(
        event(api, "picky", "FailedScheduling").unwrap(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
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
    wait_until("picky bound after the node was labelled", Duration::from_secs(30), || node_of(api, "picky") == "n2");

    // More than any node has.
    create(api, &pod_manifest("huge", "10", None));
    wait_until("huge's FailedScheduling event", Duration::from_secs(20), || {
        event(api, "huge", "FailedScheduling").is_some()
    });
    assert_eq!(
        event(api, "huge", "FailedScheduling").unwrap(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.."
    );
    assert_eq!(node_of(api, "huge"), "");
}
