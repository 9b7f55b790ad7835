use super::*;
use crate::scheduler::plugins::default_profile;
use crate::scheduler::plugins::testing::{node, pod, snapshot};
use serde_json::json;

fn pods_node(name: &str, taint: bool, pods: &[(&str, &str, i32)]) -> NodeInfo {
    let taints = if taint { json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]) } else { json!([]) };
    let mut n = node(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {"taints": taints},
        "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"}}}));
    for (p, cpu, prio) in pods {
        n.add_pod(asking(p, cpu, *prio));
    }
    n
}

fn asking(name: &str, cpu: &str, priority: i32) -> PodInfo {
    pod(json!({"metadata": {"name": name, "namespace": "default"},
        "spec": {"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}))
}

fn run(incoming: &PodInfo, nodes: Vec<NodeInfo>) -> Outcome {
    let profile = default_profile();
    let snap = snapshot(nodes);
    let state = profile.pre_filter(incoming, &snap);
    let (feasible, statuses) = profile.find_feasible(&state, incoming, &snap);
    assert!(feasible.is_empty(), "the pod fits somewhere");
    preempt(&profile, &state, incoming, &snap, &statuses)
}

fn victims(o: Outcome) -> (String, Vec<String>) {
    match o {
        Outcome::Preempt(c) => (c.node, c.victims.iter().map(|v| v.name().to_string()).collect()),
        other => panic!("no preemption: {other:?}"),
    }
}

#[test]
fn the_lowest_priority_victims_go() {
    let nodes = vec![
        pods_node("n1", false, &[("mid", "1500m", 5)]),
        pods_node("n2", false, &[("low", "1500m", 0)]),
        pods_node("n3", false, &[("high", "1500m", 100)]),
    ];
    assert_eq!(victims(run(&asking("p", "1", 10), nodes)), ("n2".into(), vec!["low".into()]));
}

#[test]
fn fewer_victims_win_among_equal_priorities() {
    let nodes = vec![
        pods_node("n1", false, &[("a", "1", 0), ("b", "1", 0)]),
        pods_node("n2", false, &[("c", "1500m", 0), ("d", "100m", 0)]),
    ];
    // n1 needs both gone; on n2 d is reprieved.
    assert_eq!(victims(run(&asking("p", "1500m", 10), nodes)), ("n2".into(), vec!["c".into()]));
}

#[test]
fn more_important_pods_are_reprieved_first() {
    let nodes = vec![pods_node("n1", false, &[("q", "1", 0), ("r", "500m", 1), ("s", "1", 2)])];
    // 2500m used of 2: s (2) and r (1) fit back beside the pod's 500m; q does not.
    assert_eq!(victims(run(&asking("p", "500m", 10), nodes)), ("n1".into(), vec!["q".into()]));
}

#[test]
fn explains_when_no_eviction_helps() {
    let nodes = vec![
        pods_node("n1", false, &[("high", "1500m", 100)]),
        pods_node("n2", false, &[]),
        pods_node("n3", true, &[("low", "1500m", 0)]),
    ];
    // n2 is empty but too small; n3's taint is not preemption's to lift.
    match run(&asking("p", "3", 10), nodes) {
        Outcome::NoCandidate(msg) => assert_eq!(
            msg,
            "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
        ),
        other => panic!("{other:?}"),
    }
    let mut never = asking("p", "3", 10);
    let mut p = (*never.pod).clone();
    p.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
    never = PodInfo::new(std::sync::Arc::new(p));
    match run(&never, vec![pods_node("n1", false, &[("low", "1500m", 0)])]) {
        Outcome::NotEligible(msg) => assert_eq!(msg, "preemption: not eligible due to preemptionPolicy=Never."),
        other => panic!("{other:?}"),
    }
}

#[test]
fn still_too_small_after_evicting_everything() {
    let nodes = vec![pods_node("n1", false, &[("low", "1", 0)])];
    match run(&asking("p", "3", 10), nodes) {
        Outcome::NoCandidate(msg) => assert_eq!(msg, "preemption: 0/1 nodes are available: 1 Insufficient cpu."),
        other => panic!("{other:?}"),
    }
}

#[test]
fn nominated_pods_keep_their_room() {
    let profile = default_profile();
    let mut snap = snapshot(vec![pods_node("n1", false, &[("low", "1", 0)]), pods_node("n2", false, &[])]);
    // n2 is free, but a pod of higher priority is nominated there for all of it.
    snap.nominated.insert("n2".into(), vec![asking("waiting", "2", 20)]);
    let p = asking("p", "1500m", 10);
    let state = profile.pre_filter(&p, &snap);
    let (feasible, statuses) = profile.find_feasible(&state, &p, &snap);
    assert!(feasible.is_empty());
    assert_eq!(statuses[1], Status::unschedulable("Insufficient cpu"));
    assert_eq!(victims(preempt(&profile, &state, &p, &snap, &statuses)), ("n1".into(), vec!["low".into()]));
    // One of lower priority reserves nothing against it.
    snap.nominated.insert("n2".into(), vec![asking("waiting", "2", 5)]);
    let (feasible, _) = profile.find_feasible(&state, &p, &snap);
    assert_eq!(feasible.iter().map(|n| n.name()).collect::<Vec<_>>(), ["n2"]);
}
