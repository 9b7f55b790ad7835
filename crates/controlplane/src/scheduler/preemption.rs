//! Preemption, as upstream's DefaultPreemption PostFilter: when a pod fits no node, find the
//! node where evicting the fewest and least important lower-priority pods lets it fit.
//!
//! For every node the filters ruled out as merely Unschedulable (not Unresolvable: a taint or a
//! selector no eviction changes), a dry run takes every lower-priority pod off the node; if
//! the pod then fits (counting the pods nominated there), the taken pods are put back one by
//! one, most important first, and those it does not fit beside are the victims. Among the
//! nodes with victims upstream's order picks one: the lowest highest-priority victim, then the
//! lowest sum of priorities, the fewest victims, the latest start among the highest-priority
//! victims, then the first. Upstream ranks by PodDisruptionBudget violations before all that;
//! this scheduler does not watch PDBs, so no eviction counts as violating one.
//!
//! This file decides; `schedule.rs` carries the decision out through the API (victims marked
//! `DisruptionTarget` and deleted gracefully, the pod's `status.nominatedNodeName` set).

use k8s_openapi::api::core::v1::Pod;

use super::framework::{fit_error, pod_priority, CycleState, NodeInfo, PodInfo, Snapshot, Status};
use super::profile::Profile;
use super::queue::key;

pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// A node and the pods to evict from it, most important first.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub node: String,
    pub victims: Vec<PodInfo>,
}

#[derive(Debug)]
pub enum Outcome {
    /// The pod may not preempt (its policy, or its victims are still going): the message for
    /// `FailedScheduling`; its nomination stays.
    NotEligible(String),
    /// No eviction would help: the message; a nomination is cleared.
    NoCandidate(String),
    Preempt(Candidate),
}

/// Whether `p` is being deleted by a preemption (upstream's `podTerminatingByPreemption`).
pub fn terminating_by_preemption(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
        && p.status.iter().flat_map(|s| s.conditions.iter().flatten()).any(|c| {
            c.type_ == "DisruptionTarget" && c.status == "True" && c.reason.as_deref() == Some("PreemptionByScheduler")
        })
}

/// Upstream's `MoreImportantPod` order: higher priority, then started earlier (a pod that has
/// not started counts as starting now).
fn start_nanos(p: &PodInfo) -> i128 {
    p.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0.as_nanosecond()).unwrap_or(i128::MAX)
}

fn more_important_first(a: &PodInfo, b: &PodInfo) -> std::cmp::Ordering {
    b.priority().cmp(&a.priority()).then_with(|| start_nanos(a).cmp(&start_nanos(b)))
}

/// The PostFilter: `statuses` are the filters' verdicts per node of the snapshot.
pub fn preempt(
    profile: &Profile,
    state: &CycleState,
    pod: &PodInfo,
    snapshot: &Snapshot,
    statuses: &[Status],
) -> Outcome {
    let spec = pod.pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Outcome::NotEligible("preemption: not eligible due to preemptionPolicy=Never.".into());
    }
    // Once it has preempted, a pod waits for its victims to go rather than preempting again,
    // unless its nominated node became hopeless.
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty());
    if let Some(i) = nominated.and_then(|n| snapshot.nodes.iter().position(|x| x.name() == n)) {
        let hopeless = matches!(statuses.get(i), Some(Status::UnschedulableAndUnresolvable(_)));
        let waiting =
            snapshot.nodes[i].pods.iter().any(|p| p.priority() < pod.priority() && terminating_by_preemption(&p.pod));
        if !hopeless && waiting {
            return Outcome::NotEligible(
                "preemption: not eligible due to a terminating pod on the nominated node.".into(),
            );
        }
    }

    let n = snapshot.nodes.len();
    let mut dry_run: Vec<Status> = vec![Status::unresolvable(NOT_HELPFUL); n];
    let mut candidates = Vec::new();
    for (i, node) in snapshot.nodes.iter().enumerate() {
        if !matches!(statuses.get(i), Some(Status::Unschedulable(_))) {
            continue;
        }
        match select_victims(profile, state.clone(), pod, node, snapshot) {
            Ok(victims) if !victims.is_empty() => candidates.push(Candidate { node: node.name().to_string(), victims }),
            Ok(_) => {
                dry_run[i] =
                    Status::unschedulable(format!("expected at least one victim pod on node {:?}", node.name()))
            }
            Err(status) => dry_run[i] = status,
        }
    }
    match pick(candidates) {
        Some(c) => Outcome::Preempt(c),
        None => Outcome::NoCandidate(format!("preemption: {}", fit_error(n, &dry_run, None))),
    }
}

/// Upstream's `SelectVictimsOnNode`: the fewest lower-priority pods whose eviction lets the
/// pod fit on `node`, or why none does.
fn select_victims(
    profile: &Profile,
    mut state: CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Result<Vec<PodInfo>, Status> {
    let nominated = snapshot.nominated.get(node.name()).map(Vec::as_slice).unwrap_or(&[]);
    let mut node = node.clone();
    let mut potential: Vec<PodInfo> = node.pods.iter().filter(|p| p.priority() < pod.priority()).cloned().collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    for p in &potential {
        node.remove_pod(&key(&p.pod));
        profile.remove_pod(&mut state, pod, p, &node);
    }
    // Not even with all of them gone. (Upstream does not try to keep pods the incoming pod
    // has affinity to; neither does this.)
    let status = profile.filter_with_nominated(&state, pod, &node, nominated);
    if !status.fits() {
        return Err(status);
    }
    potential.sort_by(more_important_first);
    let mut victims = Vec::new();
    for p in potential {
        node.add_pod(p.clone());
        profile.add_pod(&mut state, pod, &p, &node);
        if !profile.filter_with_nominated(&state, pod, &node, nominated).fits() {
            node.remove_pod(&key(&p.pod));
            profile.remove_pod(&mut state, pod, &p, &node);
            victims.push(p);
        }
    }
    Ok(victims)
}

/// Upstream's `pickOneNodeForPreemption` (less PDB violations, not counted here).
fn pick(candidates: Vec<Candidate>) -> Option<Candidate> {
    let highest = |c: &Candidate| c.victims.first().map(PodInfo::priority).unwrap_or(i32::MIN);
    // Offset so that negative priorities still add up to more with more victims.
    let sum = |c: &Candidate| c.victims.iter().map(|v| i64::from(v.priority()) + i64::from(i32::MAX) + 1).sum::<i64>();
    // The earliest start among the victims of the highest priority: later is better.
    let earliest = |c: &Candidate| {
        let top = highest(c);
        c.victims.iter().filter(|v| v.priority() == top).map(start_nanos).min().unwrap_or(i128::MAX)
    };
    let mut best: Option<Candidate> = None;
    for c in candidates {
        let better = match &best {
            None => true,
            Some(b) => {
                (highest(&c), sum(&c), c.victims.len(), std::cmp::Reverse(earliest(&c)))
                    < (highest(b), sum(b), b.victims.len(), std::cmp::Reverse(earliest(b)))
            }
        };
        if better {
            best = Some(c);
        }
    }
    best
}

/// The pods nominated to `node` with a lower priority than `pod`: preempting for `pod` there
/// takes the room reserved for them, so their nominations are cleared (upstream's
/// `getLowerPriorityNominatedPods`).
pub fn lower_priority_nominated<'a>(pod: &Pod, node: &str, snapshot: &'a Snapshot) -> Vec<&'a PodInfo> {
    let prio = pod_priority(pod);
    snapshot.nominated.get(node).into_iter().flatten().filter(|p| p.priority() < prio).collect()
}

#[cfg(test)]
#[path = "preemption_tests.rs"]
mod tests;
