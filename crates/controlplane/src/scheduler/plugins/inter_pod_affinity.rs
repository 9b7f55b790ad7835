//! `InterPodAffinity`: where a pod may go, and would rather go, by the pods already there.
//!
//! The filter, over topology domains (the nodes sharing a value of the term's
//! `topologyKey`): each required affinity term needs a pod it selects in the node's domain;
//! each required anti-affinity term needs none there; and no pod already placed may have a
//! required anti-affinity term that selects the incoming pod in the node's domain (the rule
//! holds both ways). PreFilter counts the matching pods per (key, value) once, so each node is
//! a few lookups; preemption and nominated pods adjust the counts through `add_pod` /
//! `remove_pod`.
//!
//! The score adds, per domain, the weights of the incoming pod's preferred terms its pods
//! match (minus for anti-affinity), and of the placed pods' preferred terms (and, at
//! upstream's `hardPodAffinityWeight` 1, required affinity terms) the incoming pod matches;
//! then maps the nodes' sums onto 0..=100 between the lowest and the highest.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;

use crate::scheduler::framework::{
    CycleState, Filter, NodeInfo, PodInfo, PreFilter, PreScore, Score, Snapshot, Status, MAX_NODE_SCORE,
};
use crate::scheduler::selector::{labels_of, AffinityTerm, Labels};

pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";

/// Upstream's default `hardPodAffinityWeight`: what an existing pod's required affinity term
/// matching the incoming pod adds to the score of its domain.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

const FILTER_KEY: &str = "PreFilterInterPodAffinity";
const SCORE_KEY: &str = "PreScoreInterPodAffinity";

pub struct InterPodAffinity;

/// (topology key, value) → how many pods count there.
type Counts = HashMap<(String, String), i64>;

fn update(counts: &mut Counts, node: &Node, key: &str, by: i64) {
    if let Some(value) = labels_of(&node.metadata).get(key) {
        let pair = (key.to_string(), value.clone());
        let n = counts.entry(pair.clone()).or_default();
        *n += by;
        // Removals (preemption) may bring a count to zero: an absent domain.
        if *n == 0 {
            counts.remove(&pair);
        }
    }
}

#[derive(Clone)]
struct FilterState {
    /// The incoming pod's required terms, namespace selectors unrolled.
    required: Arc<Vec<AffinityTerm>>,
    required_anti: Arc<Vec<AffinityTerm>>,
    pod_matches_own_affinity: bool,
    /// The incoming pod's namespace's labels, for existing pods' namespace selectors.
    ns_labels: Arc<Labels>,
    /// Existing pods whose required anti-affinity selects the incoming pod, per domain.
    existing_anti: Counts,
    /// Existing pods that match all the incoming pod's required affinity terms, per domain.
    affinity: Counts,
    /// Existing pods matching one of its required anti-affinity terms, per domain and term.
    anti: Counts,
}

impl FilterState {
    /// Counts (by = 1) or uncounts (by = -1) `other` on `node`.
    fn update_with(&mut self, pod: &PodInfo, other: &PodInfo, node: &Node, by: i64) {
        for t in &other.affinity.required_anti {
            if t.matches(&pod.pod, &self.ns_labels) {
                update(&mut self.existing_anti, node, &t.topology_key, by);
            }
        }
        let none = Labels::new();
        if !self.required.is_empty() && self.required.iter().all(|t| t.matches(&other.pod, &none)) {
            for t in self.required.iter() {
                update(&mut self.affinity, node, &t.topology_key, by);
            }
        }
        for t in self.required_anti.iter() {
            if t.matches(&other.pod, &none) {
                update(&mut self.anti, node, &t.topology_key, by);
            }
        }
    }
}

impl PreFilter for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) {
        let anti_elsewhere = snapshot.nodes.iter().any(|n| n.pods.iter().any(|p| !p.affinity.required_anti.is_empty()));
        if pod.affinity.required.is_empty() && pod.affinity.required_anti.is_empty() && !anti_elsewhere {
            return; // nothing to check: upstream's Skip
        }
        let objects = &snapshot.objects;
        let unrolled = |terms: &[AffinityTerm]| -> Vec<AffinityTerm> {
            let mut terms = terms.to_vec();
            for t in &mut terms {
                t.unroll_namespaces(objects.namespaces_with_labels());
            }
            terms
        };
        let required = unrolled(&pod.affinity.required);
        let none = Labels::new();
        let mut s = FilterState {
            pod_matches_own_affinity: !required.is_empty() && required.iter().all(|t| t.matches(&pod.pod, &none)),
            required: Arc::new(required),
            required_anti: Arc::new(unrolled(&pod.affinity.required_anti)),
            ns_labels: Arc::new(objects.namespace_labels(pod.namespace())),
            existing_anti: Counts::new(),
            affinity: Counts::new(),
            anti: Counts::new(),
        };
        for n in &snapshot.nodes {
            for p in &n.pods {
                s.update_with(pod, p, &n.node, 1);
            }
        }
        state.write(FILTER_KEY, s);
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

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn filter(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Status {
        let Some(s) = state.read::<FilterState>(FILTER_KEY) else { return Status::Fits };
        let labels = labels_of(&node.node.metadata);
        let count = |c: &Counts, k: &str, v: &str| c.get(&(k.to_string(), v.to_string())).copied().unwrap_or(0);

        // Every term's domain must hold a matching pod; a node without the key has no domain.
        let mut pods_exist = true;
        for t in s.required.iter() {
            match labels.get(&t.topology_key) {
                Some(v) if count(&s.affinity, &t.topology_key, v) > 0 => {}
                Some(_) => pods_exist = false,
                None => return Status::unresolvable(REASON_AFFINITY),
            }
        }
        // Upstream's special case: the first of a group of pods with affinity to each other
        // matches no pod anywhere yet; it may go anywhere its own terms would match it.
        let first_of_its_kind = s.affinity.is_empty() && s.pod_matches_own_affinity;
        if !pods_exist && !first_of_its_kind {
            return Status::unresolvable(REASON_AFFINITY);
        }
        // Anti-affinity failures are only Unschedulable: preempting the matching pods helps.
        let anti_hit = s
            .required_anti
            .iter()
            .any(|t| labels.get(&t.topology_key).is_some_and(|v| count(&s.anti, &t.topology_key, v) > 0));
        if anti_hit {
            return Status::unschedulable(REASON_ANTI_AFFINITY);
        }
        if labels.iter().any(|(k, v)| count(&s.existing_anti, k, v) > 0) {
            return Status::unschedulable(REASON_EXISTING_ANTI_AFFINITY);
        }
        Status::Fits
    }
}

/// topology key → value → score.
#[derive(Clone, Default)]
struct ScoreState(HashMap<String, HashMap<String, i64>>);

impl ScoreState {
    fn add(&mut self, term: &AffinityTerm, weight: i64, pod: &PodInfo, ns_labels: &Labels, node: &Node) {
        if !term.matches(&pod.pod, ns_labels) {
            return;
        }
        if let Some(v) = labels_of(&node.metadata).get(&term.topology_key) {
            *self.0.entry(term.topology_key.clone()).or_default().entry(v.clone()).or_default() += weight;
        }
    }
}

impl PreScore for InterPodAffinity {
    fn pre_score(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot, _feasible: &[&NodeInfo]) {
        let objects = &snapshot.objects;
        let unrolled = |terms: &[(i32, AffinityTerm)]| -> Vec<(i64, AffinityTerm)> {
            terms
                .iter()
                .map(|(w, t)| {
                    let mut t = t.clone();
                    t.unroll_namespaces(objects.namespaces_with_labels());
                    (i64::from(*w), t)
                })
                .collect()
        };
        let (preferred, preferred_anti) = (unrolled(&pod.affinity.preferred), unrolled(&pod.affinity.preferred_anti));
        // Without preferences of its own, only pods with affinity terms can score anything.
        let own = !preferred.is_empty() || !preferred_anti.is_empty();
        let ns_labels = objects.namespace_labels(pod.namespace());
        let none = Labels::new();
        let mut s = ScoreState::default();
        for n in &snapshot.nodes {
            if labels_of(&n.node.metadata).is_empty() {
                continue;
            }
            for existing in n.pods.iter().filter(|p| own || !p.affinity.is_empty()) {
                for (w, t) in &preferred {
                    s.add(t, *w, existing, &none, &n.node);
                }
                for (w, t) in &preferred_anti {
                    s.add(t, -*w, existing, &none, &n.node);
                }
                for t in &existing.affinity.required {
                    s.add(t, HARD_POD_AFFINITY_WEIGHT, pod, &ns_labels, &n.node);
                }
                for (w, t) in &existing.affinity.preferred {
                    s.add(t, i64::from(*w), pod, &ns_labels, &n.node);
                }
                for (w, t) in &existing.affinity.preferred_anti {
                    s.add(t, -i64::from(*w), pod, &ns_labels, &n.node);
                }
            }
        }
        if !s.0.is_empty() {
            state.write(SCORE_KEY, s);
        }
    }
}

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ScoreState>(SCORE_KEY) else { return 0 };
        let labels = labels_of(&node.node.metadata);
        s.0.iter().filter_map(|(k, values)| labels.get(k).and_then(|v| values.get(v))).sum()
    }

    /// Upstream's: min-max scaling (sums may be negative); all equal scores 0.
    fn normalize(&self, state: &CycleState, _nodes: &[&NodeInfo], scores: &mut [i64]) {
        if state.read::<ScoreState>(SCORE_KEY).is_none() {
            return;
        }
        let (min, max) = (scores.iter().copied().min().unwrap_or(0), scores.iter().copied().max().unwrap_or(0));
        for s in scores.iter_mut() {
            *s = if max > min { (MAX_NODE_SCORE as f64 * ((*s - min) as f64 / (max - min) as f64)) as i64 } else { 0 };
        }
    }
}

#[cfg(test)]
#[path = "inter_pod_affinity_tests.rs"]
mod tests;
