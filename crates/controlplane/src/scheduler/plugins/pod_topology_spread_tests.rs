use super::*;
use crate::scheduler::plugins::testing::{node, pod, snapshot};
use serde_json::json;

/// n1, n2 in zone a; n3 in zone b; n4 in zone c with label disk=hdd; n5 without a zone.
fn nodes() -> Vec<NodeInfo> {
    let n = |name: &str, zone: Option<&str>| {
        let mut labels = json!({LABEL_HOSTNAME: name});
        if let Some(z) = zone {
            labels["zone"] = json!(z);
        }
        if name == "n4" {
            labels["disk"] = json!("hdd");
        }
        node(json!({"metadata": {"name": name, "labels": labels}}))
    };
    vec![n("n1", Some("a")), n("n2", Some("a")), n("n3", Some("b")), n("n4", Some("c")), n("n5", None)]
}

fn app(name: &str, app: &str) -> PodInfo {
    pod(json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": app}}, "spec": {"containers": []}}))
}

fn spread(name: &str, constraint: serde_json::Value, extra: serde_json::Value) -> PodInfo {
    let mut spec = json!({"containers": [], "topologySpreadConstraints": [constraint]});
    if let serde_json::Value::Object(m) = extra {
        spec.as_object_mut().unwrap().extend(m);
    }
    pod(json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web", "rev": "2"}}, "spec": spec}))
}

fn zone_constraint(max_skew: i32) -> serde_json::Value {
    json!({"maxSkew": max_skew, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "web"}}})
}

fn verdicts(incoming: &PodInfo, placed: &[(&str, usize)]) -> Vec<Status> {
    let mut ns = nodes();
    for (i, (app_label, n)) in placed.iter().enumerate() {
        ns[*n].add_pod(app(&format!("p{i}"), app_label));
    }
    let snap = snapshot(ns);
    let mut state = CycleState::default();
    PodTopologySpread.pre_filter(&mut state, incoming, &snap);
    snap.nodes.iter().map(|n| PodTopologySpread.filter(&state, incoming, n)).collect()
}

#[test]
fn skew_over_max_keeps_pods_off() {
    let incoming = spread("w", zone_constraint(1), json!({}));
    // zone a: 2 web pods (and a db pod, not selected), b: 1, c: 0.
    let v = verdicts(&incoming, &[("web", 0), ("web", 1), ("db", 1), ("web", 2)]);
    let (off, missing) = (Status::unschedulable(REASON), Status::unresolvable(REASON_MISSING_LABEL));
    // a: 2 + 1 - 0 > 1; b: 1 + 1 - 0 > 1; c: 0 + 1 - 0 fits.
    assert_eq!(v, [off.clone(), off.clone(), off, Status::Fits, missing]);
    let v = verdicts(&spread("w", zone_constraint(2), json!({})), &[("web", 0), ("web", 1), ("web", 2)]);
    assert_eq!(v[..4], [Status::unschedulable(REASON), Status::unschedulable(REASON), Status::Fits, Status::Fits]);
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    let mut c = zone_constraint(1);
    c["minDomains"] = json!(4);
    // Three zones, four wanted: the global minimum is 0 even though every zone has a pod.
    let v = verdicts(&spread("w", c, json!({})), &[("web", 0), ("web", 2), ("web", 3)]);
    assert!(v[..4].iter().all(|s| !s.fits()), "{v:?}");
    let v = verdicts(&spread("w", zone_constraint(1), json!({})), &[("web", 0), ("web", 2), ("web", 3)]);
    assert!(v[..4].iter().all(Status::fits), "{v:?}");
}

#[test]
fn node_affinity_policy_honor_leaves_other_nodes_out() {
    // The pod may only go to disk=hdd (zone c): zone a's pods are not counted, so c is the
    // only domain and its own count is the minimum.
    let selector = json!({"nodeSelector": {"disk": "hdd"}});
    let v = verdicts(&spread("w", zone_constraint(1), selector.clone()), &[("web", 3), ("web", 3)]);
    assert!(v[3].fits(), "{v:?}");
    let mut ignore = zone_constraint(1);
    ignore["nodeAffinityPolicy"] = json!("Ignore");
    let v = verdicts(&spread("w", ignore, selector), &[("web", 3), ("web", 3)]);
    assert_eq!(v[3], Status::unschedulable(REASON), "zones a and b count with Ignore: min 0");
}

#[test]
fn match_label_keys_narrow_the_selector() {
    let mut c = zone_constraint(1);
    c["matchLabelKeys"] = json!(["rev"]);
    let old = |n: &str| {
        pod(
            json!({"metadata": {"name": n, "namespace": "default", "labels": {"app": "web", "rev": "1"}}, "spec": {"containers": []}}),
        )
    };
    let mut ns = nodes();
    ns[0].add_pod(old("o1"));
    ns[0].add_pod(old("o2"));
    let snap = snapshot(ns);
    let incoming = spread("w", c, json!({}));
    let mut state = CycleState::default();
    PodTopologySpread.pre_filter(&mut state, &incoming, &snap);
    assert!(PodTopologySpread.filter(&state, &incoming, &snap.nodes[0]).fits(), "rev 1 pods are another spread");
}

#[test]
fn system_defaults_follow_the_owner() {
    let rs: k8s_openapi::api::apps::v1::ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "web-abc", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}}}))
    .unwrap();
    let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"}, "spec": {"selector": {"tier": "front"}}}))
    .unwrap();
    let mut objects = Objects::default();
    objects.replica_sets.insert("default/web-abc".into(), Arc::new(rs));
    objects.services.insert("default/web".into(), Arc::new(svc));
    let owned: Pod = serde_json::from_value(json!({"metadata": {"name": "w", "namespace": "default",
        "labels": {"app": "web", "tier": "front"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "u", "controller": true}]}}))
    .unwrap();
    let sel = default_selector(&owned, &objects);
    assert!(sel.matches(&serde_json::from_value(json!({"app": "web", "tier": "front"})).unwrap()));
    assert!(!sel.matches(&serde_json::from_value(json!({"app": "web"})).unwrap()), "the service's labels too");
    let (cs, defaulted) = constraints(&owned, &objects, "ScheduleAnyway");
    assert!(defaulted);
    assert_eq!(
        cs.iter().map(|c| (c.topology_key.as_str(), c.max_skew)).collect::<Vec<_>>(),
        [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)]
    );
    assert!(constraints(&owned, &objects, "DoNotSchedule").0.is_empty());
    let alone: Pod =
        serde_json::from_value(json!({"metadata": {"name": "x", "namespace": "default", "labels": {"app": "x"}}}))
            .unwrap();
    assert!(constraints(&alone, &objects, "ScheduleAnyway").0.is_empty(), "nothing selects it: no defaults");
}

#[test]
fn score_prefers_emptier_domains() {
    let c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app": "web"}}});
    let incoming = spread("w", c, json!({}));
    let mut ns = nodes();
    ns[0].add_pod(app("a1", "web"));
    ns[1].add_pod(app("a2", "web"));
    ns[2].add_pod(app("b1", "web"));
    let snap = snapshot(ns);
    let feasible: Vec<&NodeInfo> = snap.nodes.iter().map(|n| &**n).collect();
    let mut state = CycleState::default();
    PodTopologySpread.pre_score(&mut state, &incoming, &snap, &feasible);
    let mut s: Vec<i64> = feasible.iter().map(|n| PodTopologySpread.score(&state, &incoming, n)).collect();
    // Three zones among the feasible nodes: weight ln(5); a: 2, b: 1, c: 0; n5 is ignored.
    assert_eq!(s, [3, 3, 2, 0, 0], "round(2 ln 5), round(ln 5)");
    PodTopologySpread.normalize(&state, &feasible, &mut s);
    // max 3, min 0: 100 * (3 + 0 - s) / 3.
    assert_eq!(s, [0, 0, 33, 100, 0]);
}
