use super::*;
use crate::scheduler::plugins::testing::{node, pod, snapshot};
use serde_json::json;

/// n1, n2 in zone a, n3 in zone b, n4 without a zone; all with a hostname.
fn nodes() -> Vec<NodeInfo> {
    let n = |name: &str, zone: Option<&str>| {
        let mut labels = json!({"kubernetes.io/hostname": name});
        if let Some(z) = zone {
            labels["zone"] = json!(z);
        }
        node(json!({"metadata": {"name": name, "labels": labels}}))
    };
    vec![n("n1", Some("a")), n("n2", Some("a")), n("n3", Some("b")), n("n4", None)]
}

fn labelled(name: &str, ns: &str, app: &str, affinity: serde_json::Value) -> PodInfo {
    pod(json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "spec": {"containers": [], "affinity": affinity}}))
}

fn term(app: &str, key: &str) -> serde_json::Value {
    json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
}

fn required(kind: &str, t: serde_json::Value) -> serde_json::Value {
    json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": [t]}})
}

/// The filter's verdict on each node of `nodes` with `placed` pods (pod, node index).
fn verdicts(incoming: &PodInfo, placed: Vec<(PodInfo, usize)>) -> Vec<Status> {
    let mut ns = nodes();
    for (p, i) in placed {
        ns[i].add_pod(p);
    }
    let snap = snapshot(ns);
    let mut state = CycleState::default();
    InterPodAffinity.pre_filter(&mut state, incoming, &snap);
    snap.nodes.iter().map(|n| InterPodAffinity.filter(&state, incoming, n)).collect()
}

#[test]
fn required_affinity_needs_a_matching_pod_in_the_domain() {
    let incoming = labelled("web", "default", "web", required("podAffinity", term("db", "zone")));
    let db = labelled("db", "default", "db", json!(null));
    let v = verdicts(&incoming, vec![(db.clone(), 0)]);
    let no = Status::unresolvable(REASON_AFFINITY);
    assert_eq!(v, [Status::Fits, Status::Fits, no.clone(), no.clone()], "zone a only; n4 has no zone");
    // The db pod in another namespace is not selected by a term that names none.
    let elsewhere = labelled("db", "other", "db", json!(null));
    let v = verdicts(&incoming, vec![(elsewhere.clone(), 0)]);
    assert!(v.iter().all(|s| *s == no), "{v:?}");
    // Unless the term lists that namespace, or selects namespaces by label.
    let mut t = term("db", "zone");
    t["namespaces"] = json!(["other"]);
    let listed = labelled("web", "default", "web", required("podAffinity", t));
    assert!(verdicts(&listed, vec![(elsewhere.clone(), 2)])[2].fits());
}

#[test]
fn a_pod_with_affinity_to_its_own_kind_may_go_first() {
    let incoming = labelled("web-0", "default", "web", required("podAffinity", term("web", "zone")));
    let v = verdicts(&incoming, vec![]);
    assert_eq!(v[..3], [Status::Fits, Status::Fits, Status::Fits], "no web pod anywhere: any zoned node");
    assert_eq!(v[3], Status::unresolvable(REASON_AFFINITY), "but the topology key must be there");
    // Once one exists, the others follow it.
    let v = verdicts(&incoming, vec![(labelled("web-1", "default", "web", json!(null)), 2)]);
    assert_eq!(v[..3], [Status::unresolvable(REASON_AFFINITY), Status::unresolvable(REASON_AFFINITY), Status::Fits]);
    // A pod its own terms do not select gets no such pass.
    let other = labelled("api", "default", "api", required("podAffinity", term("web", "zone")));
    assert!(verdicts(&other, vec![]).iter().all(|s| !s.fits()));
}

#[test]
fn anti_affinity_both_ways() {
    let web = |name: &str| {
        labelled(name, "default", "web", required("podAntiAffinity", term("web", "kubernetes.io/hostname")))
    };
    let v = verdicts(&web("web-1"), vec![(web("web-0"), 0)]);
    // The incoming pod's own rule is checked first.
    assert_eq!(v, [Status::unschedulable(REASON_ANTI_AFFINITY), Status::Fits, Status::Fits, Status::Fits]);

    // A placed pod that wants no web pod in its zone keeps a plain web pod out of zone a.
    let guard = labelled("guard", "default", "guard", required("podAntiAffinity", term("web", "zone")));
    let plain = labelled("web-2", "default", "web", json!(null));
    let v = verdicts(&plain, vec![(guard.clone(), 1)]);
    let no = Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
    assert_eq!(v, [no.clone(), no, Status::Fits, Status::Fits]);
    // Its term covers only its own namespace.
    let v = verdicts(&labelled("web-3", "other", "web", json!(null)), vec![(guard, 1)]);
    assert!(v.iter().all(Status::fits));
}

#[test]
fn removed_pods_no_longer_count() {
    let web = labelled("web-1", "default", "web", required("podAntiAffinity", term("web", "zone")));
    let old = labelled("web-0", "default", "web", json!(null));
    let mut ns = nodes();
    ns[0].add_pod(old.clone());
    let snap = snapshot(ns);
    let mut state = CycleState::default();
    InterPodAffinity.pre_filter(&mut state, &web, &snap);
    assert!(!InterPodAffinity.filter(&state, &web, &snap.nodes[1]).fits());
    let mut n1 = (*snap.nodes[0]).clone();
    n1.remove_pod("default/web-0");
    InterPodAffinity.remove_pod(&mut state, &web, &old, &n1);
    assert!(InterPodAffinity.filter(&state, &web, &snap.nodes[1]).fits(), "preempting web-0 frees zone a");
    InterPodAffinity.add_pod(&mut state, &web, &old, &snap.nodes[2]);
    assert!(!InterPodAffinity.filter(&state, &web, &snap.nodes[2]).fits(), "counted in zone b now");
}

#[test]
fn preferred_terms_score_their_domains() {
    let preferred = |kind: &str, w: i32, t: serde_json::Value| json!({kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": w, "podAffinityTerm": t}]}});
    let mut affinity = preferred("podAffinity", 10, term("db", "zone"));
    affinity["podAntiAffinity"] =
        preferred("podAntiAffinity", 4, term("web", "kubernetes.io/hostname"))["podAntiAffinity"].clone();
    let incoming = labelled("web-1", "default", "web", affinity);
    let mut ns = nodes();
    ns[0].add_pod(labelled("db", "default", "db", json!(null)));
    ns[0].add_pod(labelled("web-0", "default", "web", json!(null)));
    // A placed pod whose required affinity selects web pods by zone: +1 for zone b.
    ns[2].add_pod(labelled("cache", "default", "cache", required("podAffinity", term("web", "zone"))));
    let snap = snapshot(ns);
    let mut state = CycleState::default();
    let feasible: Vec<&NodeInfo> = snap.nodes.iter().map(|n| &**n).collect();
    InterPodAffinity.pre_score(&mut state, &incoming, &snap, &feasible);
    let mut s: Vec<i64> = feasible.iter().map(|n| InterPodAffinity.score(&state, &incoming, n)).collect();
    // n1: zone a +10, host n1 -4; n2: zone a +10; n3: zone b +1; n4: nothing.
    assert_eq!(s, [6, 10, 1, 0]);
    InterPodAffinity.normalize(&state, &feasible, &mut s);
    assert_eq!(s, [60, 100, 10, 0]);

    // Nothing to prefer anywhere: no state, every node 0.
    let plain = labelled("x", "default", "x", json!(null));
    let snap = snapshot(nodes());
    let mut state = CycleState::default();
    InterPodAffinity.pre_score(&mut state, &plain, &snap, &feasible);
    assert_eq!(InterPodAffinity.score(&state, &plain, &snap.nodes[0]), 0);
}
