//! A scheduling profile: the plugins at each extension point, in order, and how a cycle runs
//! them (upstream's `frameworkImpl`): PreFilter once, Filter per node (with the nominated pods
//! counted, as upstream's `RunFilterPluginsWithNominatedPods`), then PreScore once, Score per
//! feasible node, NormalizeScore, weighted sums.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::framework::{CycleState, Filter, NodeInfo, PodInfo, PreFilter, PreScore, Score, Snapshot, Status};
use super::queue::key;

pub struct Profile {
    pub pre_filters: Vec<Arc<dyn PreFilter>>,
    pub filters: Vec<Arc<dyn Filter>>,
    pub pre_scores: Vec<Arc<dyn PreScore>>,
    /// With their weights.
    pub scores: Vec<(Arc<dyn Score>, i64)>,
    /// The SchedulingGates PreEnqueue plugin: a pod with `spec.schedulingGates` is not queued
    /// until they are all removed.
    pub scheduling_gates: bool,
    /// `percentageOfNodesToScore` (0: upstream's adaptive percentage).
    pub percentage_of_nodes_to_score: i32,
    /// Where the next cycle starts filtering (upstream's `nextStartNodeIndex`): cycles that
    /// stop early at enough feasible nodes take turns over all of them.
    pub next_start: AtomicUsize,
}

/// Upstream's `minFeasibleNodesToFind` and `minFeasibleNodesPercentageToFind`.
const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: i32 = 5;

/// Upstream's `numFeasibleNodesToFind`: how many feasible nodes a cycle looks for before it
/// stops filtering (all of them below 100 nodes; by default 50 % minus 1 % per 125 nodes, at
/// least 5 % and at least 100 nodes).
pub fn num_feasible_nodes_to_find(percentage: i32, all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let percentage =
        if percentage == 0 { (50 - (all / 125) as i32).max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND) } else { percentage };
    (all * percentage as usize / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

impl Profile {
    /// Every PreFilter plugin over the snapshot: the cycle's state.
    pub fn pre_filter(&self, pod: &PodInfo, snapshot: &Snapshot) -> CycleState {
        let mut state = CycleState::default();
        for p in &self.pre_filters {
            p.pre_filter(&mut state, pod, snapshot);
        }
        state
    }

    /// The filters in order; the first that rules the node out gives its reasons.
    pub fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        self.filters.iter().map(|f| f.filter(state, pod, node)).find(|s| !s.fits()).unwrap_or(Status::Fits)
    }

    /// `added` counted on `node` (already added to it) in every plugin's state.
    pub fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, added: &PodInfo, node: &NodeInfo) {
        for p in &self.pre_filters {
            p.add_pod(state, pod, added, node);
        }
    }

    /// `removed` no longer counted on `node` (already taken off it) in every plugin's state.
    pub fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, removed: &PodInfo, node: &NodeInfo) {
        for p in &self.pre_filters {
            p.remove_pod(state, pod, removed, node);
        }
    }

    /// Upstream's `RunFilterPluginsWithNominatedPods`: the pods nominated to the node with at
    /// least this pod's priority are counted as if bound there (their room is reserved); if the
    /// pod fits with them, it must also fit without them, since some filters (affinity) could
    /// pass only thanks to a nominated pod that may never come.
    pub fn filter_with_nominated(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        node: &NodeInfo,
        nominated: &[PodInfo],
    ) -> Status {
        let me = key(&pod.pod);
        let ahead: Vec<&PodInfo> =
            nominated.iter().filter(|p| p.priority() >= pod.priority() && key(&p.pod) != me).collect();
        if ahead.is_empty() {
            return self.filter(state, pod, node);
        }
        let (mut with_state, mut with_node) = (state.clone(), node.clone());
        for p in ahead {
            with_node.add_pod(p.clone());
            self.add_pod(&mut with_state, pod, p, &with_node);
        }
        let status = self.filter(&with_state, pod, &with_node);
        if !status.fits() {
            return status;
        }
        self.filter(state, pod, node)
    }

    /// The nodes the pod passes on, from where the last cycle stopped until enough are
    /// feasible ([`num_feasible_nodes_to_find`]), and the status of each node looked at: all of
    /// them, in the snapshot's order, when too few fit, so a failure's message and preemption
    /// see every node.
    pub fn find_feasible<'a>(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &'a Snapshot,
    ) -> (Vec<&'a NodeInfo>, Vec<Status>) {
        let nodes = &snapshot.nodes;
        let want = num_feasible_nodes_to_find(self.percentage_of_nodes_to_score, nodes.len());
        let start = if nodes.is_empty() { 0 } else { self.next_start.load(Ordering::Relaxed) % nodes.len() };
        let mut feasible = Vec::new();
        let mut statuses = Vec::with_capacity(nodes.len());
        for i in 0..nodes.len() {
            if feasible.len() >= want {
                break;
            }
            let n = &nodes[(start + i) % nodes.len()];
            let status = self.filter_on(state, pod, n, snapshot);
            if status.fits() {
                feasible.push(&**n);
            }
            statuses.push(status);
        }
        if !nodes.is_empty() {
            self.next_start.store((start + statuses.len()) % nodes.len(), Ordering::Relaxed);
        }
        if statuses.len() == nodes.len() {
            // Every node was looked at: statuses in the snapshot's order, as preemption reads them.
            statuses.rotate_right(start);
        }
        (feasible, statuses)
    }

    /// [`Profile::filter_with_nominated`] with the snapshot's nominations for `node`.
    pub fn filter_on(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, snapshot: &Snapshot) -> Status {
        let nominated = snapshot.nominated.get(node.name()).map(Vec::as_slice).unwrap_or(&[]);
        self.filter_with_nominated(state, pod, node, nominated)
    }

    /// PreScore, then every score plugin over the feasible nodes, normalized and weighted:
    /// the total per node.
    pub fn prioritize(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        feasible: &[&NodeInfo],
    ) -> Vec<i64> {
        for p in &self.pre_scores {
            p.pre_score(state, pod, snapshot, feasible);
        }
        let mut totals = vec![0i64; feasible.len()];
        for (plugin, weight) in &self.scores {
            let mut scores: Vec<i64> = feasible.iter().map(|n| plugin.score(state, pod, n)).collect();
            plugin.normalize(state, feasible, &mut scores);
            for (t, s) in totals.iter_mut().zip(scores) {
                *t += s * weight;
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::num_feasible_nodes_to_find as find;
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod, snapshot};

    /// Rules every node out, naming it.
    struct NoneFit;
    impl Filter for NoneFit {
        fn name(&self) -> &'static str {
            "NoneFit"
        }
        fn filter(&self, _: &CycleState, _: &PodInfo, n: &NodeInfo) -> Status {
            Status::unschedulable(n.name().to_string())
        }
    }

    #[test]
    fn statuses_come_in_node_order_whatever_node_the_cycle_started_at() {
        let profile = Profile {
            pre_filters: Vec::new(),
            filters: vec![Arc::new(NoneFit)],
            pre_scores: Vec::new(),
            scores: Vec::new(),
            scheduling_gates: true,
            percentage_of_nodes_to_score: 0,
            next_start: AtomicUsize::new(2),
        };
        let snap =
            snapshot(["n1", "n2", "n3"].iter().map(|n| node(serde_json::json!({"metadata": {"name": n}}))).collect());
        let p = pod(serde_json::json!({"metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}}));
        for _ in 0..2 {
            let (feasible, statuses) = profile.find_feasible(&CycleState::default(), &p, &snap);
            assert!(feasible.is_empty());
            let reasons: Vec<&str> = statuses.iter().map(|s| s.reasons()[0].as_str()).collect();
            assert_eq!(reasons, ["n1", "n2", "n3"]);
        }
    }

    #[test]
    fn feasible_nodes_to_find_as_upstream() {
        assert_eq!(find(0, 50), 50);
        assert_eq!(find(0, 100), 100);
        assert_eq!(find(0, 1000), 420);
        assert_eq!(find(0, 5000), 500);
        assert_eq!(find(0, 10000), 500);
        assert_eq!(find(100, 1000), 1000);
        assert_eq!(find(1, 1000), 100);
    }
}
