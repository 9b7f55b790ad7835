//! The scheduler's filters and scores that look at other pods (NodePorts, InterPodAffinity,
//! PodTopologySpread with its system defaults), against a real `kaname apiserver` on `kaname
//! etcd`, nodes registered through the API (the test plays the kubelets).
//!
//! Injected: three nodes, n1 and n2 in zone a, n3 in zone b (2 CPUs each; for the spreading
//! test n1 has 16), then pods. Checked: each filter keeps a pod off the nodes it must with
//! upstream's exact `FailedScheduling` text; pods waiting for an affinity match are bound once
//! the matching pod is; anti-affinity and DoNotSchedule spreading place replicas one per
//! node / zone; a ReplicaSet's replicas spread by the system default constraints although
//! resource scoring alone would put them all on the big node; a pod of higher priority that
//! fits nowhere preempts the lowest-priority pod (marked DisruptionTarget, deleted gracefully,
//! `Preempted` event), is nominated to its node, keeps the room there against a lower-priority
//! pod and is bound once the victim is gone; preemption's part of the message when it cannot
//! help, as upstream words it. Each `FailedScheduling` text also carries what preemption found.
//!
//! Run: `cargo test -p kaname --test scheduler_plugins`. Needs kubectl.

use kaname_testkit::*;

use std::collections::BTreeMap;

use serde_json::{json, Value};

#[path = "support/scheduling.rs"]
mod scheduling;
use scheduling::*;

const ZONE: &str = "topology.kubernetes.io/zone";

fn nodes(n1_cpu: &str, n1_memory: &str) -> Vec<String> {
    vec![
        node_manifest("n1", n1_cpu, n1_memory, json!({ZONE: "a"}), json!([])),
        node_manifest("n2", "2", "4Gi", json!({ZONE: "a"}), json!([])),
        node_manifest("n3", "2", "4Gi", json!({ZONE: "b"}), json!([])),
    ]
}

/// A pod of 100m CPU labelled `app`, with `spec` fields merged in.
fn pod(name: &str, app: &str, spec: Value) -> String {
    let mut s = json!({"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]});
    s.as_object_mut().unwrap().extend(spec.as_object().cloned().unwrap_or_default());
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}}, "spec": s})
        .to_string()
}

fn required(kind: &str, app: &str, key: &str) -> Value {
    json!({"affinity": {kind: {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}})
}

fn spread(app: &str, key: &str, policy: Option<&str>) -> Value {
    let mut c = json!({"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": app}}});
    if let Some(p) = policy {
        c["nodeAffinityPolicy"] = json!(p);
    }
    json!({"topologySpreadConstraints": [c]})
}

fn merged(mut a: Value, b: Value) -> Value {
    a.as_object_mut().unwrap().extend(b.as_object().cloned().unwrap_or_default());
    a
}

fn zone_of(node: &str) -> &'static str {
    if node == "n3" {
        "b"
    } else {
        "a"
    }
}

#[test]
fn filters_keep_pods_off_with_upstreams_reasons() {
    let _g = serial();
    let env = Env::start(&nodes("2", "4Gi"));
    let api = &env.api;

    // NodePorts: a second pod on the same host port only fits elsewhere.
    let port =
        |p: u16| json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": p}]}]});
    create(api, &pod("port-0", "port", port(8080)));
    let taken = wait_bound(api, "port-0");
    create(api, &pod("port-1", "port", merged(port(8080), json!({"nodeSelector": {"kubernetes.io/hostname": taken}}))));
    assert_eq!(
        failed_scheduling(api, "port-1"),
        "0/3 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, 2 node(s) didn't match Pod's node affinity/selector. \
         preemption: 0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.."
    );
    create(api, &pod("port-2", "port", port(8081)));
    wait_bound(api, "port-2");

    // InterPodAffinity, required affinity: no db pod anywhere, then one in zone b.
    create(api, &pod("needs-db", "web", required("podAffinity", "db", ZONE)));
    assert_eq!(
        failed_scheduling(api, "needs-db"),
        "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
    create(api, &pod("db", "db", json!({"nodeSelector": {"kubernetes.io/hostname": "n3"}})));
    assert_eq!(wait_bound(api, "db"), "n3");
    assert_eq!(wait_bound(api, "needs-db"), "n3", "the only node in the db pod's zone");

    // Required anti-affinity by hostname: one per node, the fourth nowhere; and a plain pod
    // the placed ones reject is kept off by their rule.
    let mut solo_nodes = Vec::new();
    for i in 0..3 {
        let name = format!("solo-{i}");
        create(api, &pod(&name, "solo", required("podAntiAffinity", "solo", "kubernetes.io/hostname")));
        solo_nodes.push(wait_bound(api, &name));
    }
    solo_nodes.sort();
    assert_eq!(solo_nodes, ["n1", "n2", "n3"]);
    create(api, &pod("solo-3", "solo", required("podAntiAffinity", "solo", "kubernetes.io/hostname")));
    assert_eq!(
        failed_scheduling(api, "solo-3"),
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
    );
    create(api, &pod("not-solo", "solo", json!({})));
    assert_eq!(
        failed_scheduling(api, "not-solo"),
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. \
         preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
    );

    // PodTopologySpread, DoNotSchedule by zone with maxSkew 1: four pods go two and two.
    let mut zones = BTreeMap::<&str, usize>::new();
    for i in 0..4 {
        let name = format!("spread-{i}");
        create(api, &pod(&name, "spread", spread("spread", ZONE, None)));
        *zones.entry(zone_of(&wait_bound(api, &name))).or_default() += 1;
    }
    assert_eq!(zones, BTreeMap::from([("a", 2), ("b", 2)]));
    // Pinned to zone a with the other zones counted (nodeAffinityPolicy Ignore): a third
    // pod there is within the skew, a fourth is not.
    let pinned = |policy| merged(spread("spread", ZONE, Some(policy)), json!({"nodeSelector": {ZONE: "a"}}));
    create(api, &pod("spread-a1", "spread", pinned("Ignore")));
    assert_eq!(zone_of(&wait_bound(api, "spread-a1")), "a");
    create(api, &pod("spread-a2", "spread", pinned("Ignore")));
    assert_eq!(
        failed_scheduling(api, "spread-a2"),
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 2 node(s) didn't match pod topology spread constraints. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.."
    );
    // With the default (Honor), zone a is the only domain: the same pod fits.
    create(api, &pod("spread-a3", "spread", pinned("Honor")));
    assert_eq!(zone_of(&wait_bound(api, "spread-a3")), "a");
    // A topology key no node has.
    create(api, &pod("spread-rack", "rack", spread("rack", "rack", None)));
    assert_eq!(
        failed_scheduling(api, "spread-rack"),
        "0/3 nodes are available: 3 node(s) didn't match pod topology spread constraints (missing required label). \
         preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.."
    );
}

#[test]
fn replica_sets_spread_by_the_system_defaults() {
    let _g = serial();
    // n1 is eight times the others: least-allocated scoring alone puts every replica there.
    let env = Env::start(&nodes("16", "32Gi"));
    let api = &env.api;
    create(
        api,
        &json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
            "spec": {"replicas": 6, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
        .to_string(),
    );
    let uid = api.ok(&["get", "rs", "web", "-o", "jsonpath={.metadata.uid}"]);
    // The test plays the ReplicaSet controller: its pods, owned by it.
    let owned = |name: &str, app: &str, owner: bool| {
        let mut p: Value = serde_json::from_str(&pod(name, app, json!({}))).unwrap();
        p["spec"]["containers"][0]["resources"]["requests"] = json!({"cpu": "200m", "memory": "256Mi"});
        if owner {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": "web", "uid": uid, "controller": true}]);
        }
        p.to_string()
    };
    let mut on = BTreeMap::<String, usize>::new();
    for i in 0..6 {
        let name = format!("web-{i}");
        create(api, &owned(&name, "web", true));
        *on.entry(wait_bound(api, &name)).or_default() += 1;
    }
    assert!(on.len() == 3 && on["n1"] <= 3, "replicas not spread: {on:?}");
    // The same pods without an owner (nothing selects them) are placed by resources alone.
    let mut alone = BTreeMap::<String, usize>::new();
    for i in 0..3 {
        let name = format!("lone-{i}");
        create(api, &owned(&name, "lone", false));
        *alone.entry(wait_bound(api, &name)).or_default() += 1;
    }
    assert_eq!(alone, BTreeMap::from([("n1".to_string(), 3)]), "the control: resources alone pick n1");
}

#[test]
fn preemption_evicts_the_lowest_priority_pod() {
    let _g = serial();
    let env = Env::start(&nodes("2", "4Gi"));
    let api = &env.api;
    // Priorities through classes, as users give them (the API server's Priority admission
    // fills spec.priority and spec.preemptionPolicy from the class).
    for (class, value, policy) in
        [("p1", 1, None), ("p2", 2, None), ("p5", 5, None), ("p10", 10, None), ("p100-never", 100, Some("Never"))]
    {
        let mut pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": class}, "value": value});
        if let Some(p) = policy {
            pc["preemptionPolicy"] = json!(p);
        }
        create(api, &pc.to_string());
    }
    let sized = |name: &str, cpu: &str, class: &str, extra: Value| {
        let spec = json!({"priorityClassName": class,
            "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]});
        pod(name, name, merged(spec, extra))
    };
    let on = |node: &str| json!({"nodeSelector": {"kubernetes.io/hostname": node}});
    for (name, class, node) in [("low", "p1", "n1"), ("mid-2", "p5", "n2"), ("mid-3", "p5", "n3")] {
        create(api, &sized(name, "1500m", class, on(node)));
        assert_eq!(wait_bound(api, name), node);
    }
    assert_eq!(api.ok(&["get", "pod", "low", "-o", "jsonpath={.spec.priority}"]), "1");

    create(api, &sized("urgent", "1", "p10", json!({})));
    wait_until("urgent nominated", std::time::Duration::from_secs(30), || {
        api.ok(&["get", "pod", "urgent", "-o", "jsonpath={.status.nominatedNodeName}"]) == "n1"
    });
    // Preemption succeeded: the message is the filters' alone.
    assert_eq!(events(api, "urgent", "FailedScheduling")[0], "0/3 nodes are available: 3 Insufficient cpu.");
    let low = json(&api.ok(&["get", "pod", "low", "-o", "json"]));
    assert!(low["metadata"]["deletionTimestamp"].is_string(), "the victim is being deleted: {low}");
    let conditions = low["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let target = conditions.iter().find(|c| c["type"] == "DisruptionTarget").cloned().unwrap_or_default();
    assert_eq!((target["status"].as_str(), target["reason"].as_str()), (Some("True"), Some("PreemptionByScheduler")));
    let uid = api.ok(&["get", "pod", "urgent", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(event(api, "low", "Preempted").unwrap(), format!("Preempted by pod {uid} on node n1"));
    for mid in ["mid-2", "mid-3"] {
        assert_eq!(api.ok(&["get", "pod", mid, "-o", "jsonpath={.metadata.deletionTimestamp}"]), "", "{mid} spared");
    }

    // The test plays n1's kubelet: the victim's containers stopped, its object goes. A pod of
    // lower priority than urgent's, created now, must not take the room urgent was promised.
    api.ok(&["delete", "pod", "low", "--grace-period=0", "--force"]);
    create(api, &sized("sneaky", "1500m", "p2", json!({})));
    assert_eq!(wait_bound(api, "urgent"), "n1");
    failed_scheduling(api, "sneaky");
    assert_eq!(node_of(api, "sneaky"), "");
    wait_until("sneaky's last attempt after urgent's binding", std::time::Duration::from_secs(30), || {
        event(api, "sneaky", "FailedScheduling").unwrap()
            == "0/3 nodes are available: 3 Insufficient cpu. \
                preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.."
    });

    // Who may not preempt: a pod with preemptionPolicy Never (from its class), whatever its
    // priority.
    create(api, &sized("polite", "1500m", "p100-never", json!({})));
    assert_eq!(
        failed_scheduling(api, "polite"),
        "0/3 nodes are available: 3 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.."
    );
    assert_eq!(api.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.deletionTimestamp}"]), "");
}
