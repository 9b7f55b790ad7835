//! `PodTopologySpread`: keeps the pods a constraint selects spread over the domains of its
//! `topologyKey`. The filter enforces the `DoNotSchedule` constraints (the domain the node is
//! in, with this pod, may exceed the least populated domain by at most `maxSkew`); the score
//! prefers, for the `ScheduleAnyway` ones, the nodes whose domains hold fewer such pods.
//!
//! A pod without constraints of its own gets upstream's system defaults (hostname maxSkew 3,
//! zone maxSkew 5, both ScheduleAnyway) over the pods selected by the Services, ReplicaSets,
//! ReplicationControllers and StatefulSets that select it (upstream's `DefaultSelector`), so
//! a ReplicaSet's replicas spread without asking.
//!
//! As upstream's defaults: `minDomains` 1, `nodeAffinityPolicy` Honor (nodes the pod's node
//! selector and required node affinity rule out are not domains and their pods are not
//! counted), `nodeTaintsPolicy` Ignore; `matchLabelKeys` add the pod's values of those labels
//! to the selector.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, TopologySpreadConstraint};

use super::node_affinity::matches_required;
use super::taint_toleration::untolerated;
use crate::scheduler::framework::{
    CycleState, Filter, NodeInfo, PodInfo, PreFilter, PreScore, Score, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::scheduler::selector::{labels_of, Labels, Requirement, Selector};
use crate::scheduler::snapshot::Objects;

pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// Upstream's `systemDefaultConstraints`: (topology key, maxSkew), ScheduleAnyway.
pub const SYSTEM_DEFAULTS: [(&str, i32); 2] = [(LABEL_HOSTNAME, 3), (LABEL_ZONE, 5)];

const FILTER_KEY: &str = "PreFilterPodTopologySpread";
const SCORE_KEY: &str = "PreScorePodTopologySpread";

pub struct PodTopologySpread;

/// One constraint, parsed.
#[derive(Clone, Debug)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: Selector,
    pub min_domains: usize,
    pub honor_node_affinity: bool,
    pub honor_node_taints: bool,
}

impl Constraint {
    /// Whether `node` is one of this constraint's domains' nodes for `pod` (upstream's
    /// `matchNodeInclusionPolicies`).
    fn includes(&self, pod: &Pod, node: &Node, affinity_ok: bool) -> bool {
        (!self.honor_node_affinity || affinity_ok) && (!self.honor_node_taints || untolerated(pod, node).is_none())
    }
}

fn parse(pod: &Pod, c: &TopologySpreadConstraint) -> Constraint {
    let mut selector = Selector::from_label_selector(c.label_selector.as_ref());
    let pod_labels = labels_of(&pod.metadata);
    let from_keys: Labels =
        c.match_label_keys.iter().flatten().filter_map(|k| pod_labels.get(k).map(|v| (k.clone(), v.clone()))).collect();
    if !from_keys.is_empty() {
        // Upstream's mergeLabelSetWithSelector: the keys' values, then the selector's
        // requirements (a nil selector has none).
        let mut merged = Selector::from_set(&from_keys);
        merged.add(selector.requirements().iter().cloned());
        selector = merged;
    }
    Constraint {
        max_skew: i64::from(c.max_skew),
        topology_key: c.topology_key.clone(),
        selector,
        min_domains: c.min_domains.map(|m| m.max(1) as usize).unwrap_or(1),
        honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
    }
}

/// The pod's constraints with this `whenUnsatisfiable`, or (if it has none at all) the system
/// defaults that apply; and whether they are the system defaults.
pub fn constraints(pod: &Pod, objects: &Objects, action: &str) -> (Vec<Constraint>, bool) {
    let own = pod.spec.as_ref().and_then(|s| s.topology_spread_constraints.as_deref()).unwrap_or(&[]);
    if !own.is_empty() {
        return (own.iter().filter(|c| c.when_unsatisfiable == action).map(|c| parse(pod, c)).collect(), false);
    }
    if action != "ScheduleAnyway" {
        return (Vec::new(), true);
    }
    let selector = default_selector(pod, objects);
    if selector.is_empty() {
        return (Vec::new(), true);
    }
    let defaults = SYSTEM_DEFAULTS.iter().map(|(key, skew)| Constraint {
        max_skew: i64::from(*skew),
        topology_key: key.to_string(),
        selector: selector.clone(),
        min_domains: 1,
        honor_node_affinity: true,
        honor_node_taints: false,
    });
    (defaults.collect(), true)
}

/// Upstream's `helper.DefaultSelector`: the selectors of the Services in the pod's namespace
/// that select it, merged, plus its controller's (ReplicationController: merged the same way;
/// ReplicaSet or StatefulSet: its selector's requirements added). Empty when nothing selects it.
pub fn default_selector(pod: &Pod, objects: &Objects) -> Selector {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let pod_labels = labels_of(&pod.metadata);
    let in_ns = |key: &str| key.split_once('/').is_some_and(|(n, _)| n == ns);
    let mut set = Labels::new();
    for (k, svc) in &objects.services {
        let sel = svc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
        // As upstream, a Service without selector selects (and adds) nothing but still counts.
        if in_ns(k) && Selector::from_set(&sel).matches(pod_labels) {
            set.extend(sel);
        }
    }
    let mut selector = Selector::from_set(&set);
    let owners = pod.metadata.owner_references.as_deref().unwrap_or(&[]);
    let Some(owner) = owners.iter().find(|o| o.controller == Some(true)) else { return selector };
    let key = format!("{ns}/{}", owner.name);
    let more: Vec<Requirement> = match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("v1", "ReplicationController") => {
            if let Some(rc) = objects.replication_controllers.get(&key) {
                set.extend(rc.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default());
                selector = Selector::from_set(&set);
            }
            Vec::new()
        }
        ("apps/v1", "ReplicaSet") => objects
            .replica_sets
            .get(&key)
            .map(|rs| Selector::from_label_selector(rs.spec.as_ref().map(|s| &s.selector)).requirements().to_vec())
            .unwrap_or_default(),
        ("apps/v1", "StatefulSet") => objects
            .stateful_sets
            .get(&key)
            .map(|ss| Selector::from_label_selector(ss.spec.as_ref().map(|s| &s.selector)).requirements().to_vec())
            .unwrap_or_default(),
        _ => Vec::new(),
    };
    selector.add(more);
    selector
}

fn has_all_keys(node: &Node, constraints: &[Constraint]) -> bool {
    let labels = labels_of(&node.metadata);
    constraints.iter().all(|c| labels.contains_key(&c.topology_key))
}

/// Upstream's `countPodsMatchSelector`: pods in `ns`, not terminating, that `selector` selects.
fn count_matching(pods: &[PodInfo], selector: &Selector, ns: &str) -> i64 {
    pods.iter()
        .filter(|p| p.pod.metadata.deletion_timestamp.is_none() && p.namespace() == ns)
        .filter(|p| selector.matches(labels_of(&p.pod.metadata)))
        .count() as i64
}

#[derive(Clone)]
struct FilterState {
    constraints: Arc<Vec<Constraint>>,
    /// Per constraint: domain (topology value) → matching pods there.
    counts: Vec<HashMap<String, i64>>,
}

impl FilterState {
    /// The global minimum for the skew: the least populated domain's count, or 0 while there
    /// are fewer domains than `minDomains`.
    fn min_match(&self, i: usize) -> i64 {
        let counts = &self.counts[i];
        if counts.len() < self.constraints[i].min_domains {
            return 0;
        }
        counts.values().copied().min().unwrap_or(0)
    }

    fn update_with(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node, by: i64) {
        if other.namespace() != pod.namespace() || !has_all_keys(node, &self.constraints) {
            return;
        }
        let affinity_ok = matches_required(&pod.pod, node);
        let labels = labels_of(&node.metadata);
        for (i, c) in self.constraints.iter().enumerate() {
            if c.selector.matches(labels_of(&other.pod.metadata)) && c.includes(&pod.pod, node, affinity_ok) {
                *self.counts[i].entry(labels[&c.topology_key].clone()).or_default() += by;
            }
        }
    }
}

impl PreFilter for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) {
        let (constraints, _) = constraints(&pod.pod, &snapshot.objects, "DoNotSchedule");
        if constraints.is_empty() {
            return;
        }
        let mut counts = vec![HashMap::new(); constraints.len()];
        for n in snapshot.nodes.iter().filter(|n| has_all_keys(&n.node, &constraints)) {
            let affinity_ok = matches_required(&pod.pod, &n.node);
            let labels = labels_of(&n.node.metadata);
            for (i, c) in constraints.iter().enumerate() {
                if c.includes(&pod.pod, &n.node, affinity_ok) {
                    let here = count_matching(&n.pods, &c.selector, pod.namespace());
                    *counts[i].entry(labels[&c.topology_key].clone()).or_default() += here;
                }
            }
        }
        state.write(FILTER_KEY, FilterState { constraints: Arc::new(constraints), counts });
    }

    fn add_pod(&self, state: &mut CycleState, pod: &PodInfo, added: &PodInfo, node: &NodeInfo) {
        if let Some(s) = state.read_mut::<FilterState>(FILTER_KEY) {
            s.update_with(pod, added, &node.node, 1);
        }
    }

    fn remove_pod(&self, state: &mut CycleState, pod: &PodInfo, removed: &PodInfo, node: &NodeInfo) {
        if let Some(s) = state.read_mut::<FilterState>(FILTER_KEY) {
            s.update_with(pod, removed, &node.node, -1);
        }
    }
}

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else { return Status::Fits };
        let labels = labels_of(&node.node.metadata);
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else {
                return Status::unresolvable(REASON_MISSING_LABEL);
            };
            let this_pod = i64::from(c.selector.matches(labels_of(&pod.pod.metadata)));
            let here = s.counts[i].get(value).copied().unwrap_or(0);
            // Unschedulable: preempting matching pods here can lower the skew.
            if here + this_pod - s.min_match(i) > c.max_skew {
                return Status::unschedulable(REASON);
            }
        }
        Status::Fits
    }
}

#[derive(Clone)]
struct ScoreState {
    constraints: Vec<Constraint>,
    /// Feasible nodes missing a topology key: scored 0.
    ignored: HashSet<String>,
    /// Per constraint (hostname ones counted per node instead): domain → matching pods.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: ln(domains + 2), so that the counts of a topology with few domains
    /// are not watered down by one with many.
    weights: Vec<f64>,
}

impl PreScore for PodTopologySpread {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot, feasible: &[&NodeInfo]) {
        let (constraints, system_defaulted) = constraints(&pod.pod, &snapshot.objects, "ScheduleAnyway");
        if constraints.is_empty() || snapshot.nodes.is_empty() {
            return;
        }
        // The system defaults do not require every key, so that nodes without a zone still
        // spread by hostname.
        let require_all = !system_defaulted;
        let mut s = ScoreState {
            ignored: HashSet::new(),
            counts: vec![HashMap::new(); constraints.len()],
            weights: Vec::new(),
            constraints,
        };
        for n in feasible {
            if require_all && !has_all_keys(&n.node, &s.constraints) {
                s.ignored.insert(n.name().to_string());
                continue;
            }
            let labels = labels_of(&n.node.metadata);
            for (i, c) in s.constraints.iter().enumerate() {
                if c.topology_key != LABEL_HOSTNAME {
                    let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
                    s.counts[i].entry(value).or_insert(0);
                }
            }
        }
        s.weights = s
            .constraints
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size =
                    if c.topology_key == LABEL_HOSTNAME { feasible.len() - s.ignored.len() } else { s.counts[i].len() };
                ((size + 2) as f64).ln()
            })
            .collect();
        for n in &snapshot.nodes {
            if require_all && !has_all_keys(&n.node, &s.constraints) {
                continue;
            }
            let affinity_ok = matches_required(&pod.pod, &n.node);
            let labels = labels_of(&n.node.metadata);
            for (i, c) in s.constraints.iter().enumerate() {
                if !c.includes(&pod.pod, &n.node, affinity_ok) {
                    continue;
                }
                let value = labels.get(&c.topology_key).cloned().unwrap_or_default();
                // Only domains of feasible nodes are counted (hostname: in score).
                if let Some(count) = s.counts[i].get_mut(&value) {
                    *count += count_matching(&n.pods, &c.selector, pod.namespace());
                }
            }
        }
        state.write(SCORE_KEY, s);
    }
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    /// The matching pods in the node's domains, weighted, plus maxSkew − 1 per constraint
    /// (so small skews matter less): fewer is better, reversed in `normalize`.
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else { return 0 };
        if s.ignored.contains(node.name()) {
            return 0;
        }
        let labels = labels_of(&node.node.metadata);
        let mut score = 0.0;
        for (i, c) in s.constraints.iter().enumerate() {
            let Some(value) = labels.get(&c.topology_key) else { continue };
            let count = if c.topology_key == LABEL_HOSTNAME {
                count_matching(&node.pods, &c.selector, pod.namespace())
            } else {
                s.counts[i].get(value).copied().unwrap_or(0)
            };
            score += count as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    /// Upstream's: ignored nodes 0; otherwise `100 * (max + min - score) / max` over the
    /// others, all 100 when every score is 0.
    fn normalize(&self, state: &CycleState, nodes: &[&NodeInfo], scores: &mut [i64]) {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else { return };
        let counted = |i: usize| !s.ignored.contains(nodes[i].name());
        let (mut min, mut max) = (i64::MAX, 0);
        for (_, &score) in scores.iter().enumerate().filter(|(i, _)| counted(*i)) {
            min = min.min(score);
            max = max.max(score);
        }
        for (i, score) in scores.iter_mut().enumerate() {
            *score = if !counted(i) {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *score) / max
            };
        }
    }
}

#[cfg(test)]
#[path = "pod_topology_spread_tests.rs"]
mod tests;
