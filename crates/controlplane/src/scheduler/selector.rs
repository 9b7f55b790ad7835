//! Label selectors as the scheduler matches them (apimachinery's `labels.Selector`), and the
//! inter-pod affinity terms built on them (the scheduler framework's `AffinityTerm`), parsed
//! once per pod.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

/// The labels of an object, none as empty.
pub fn labels_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &Labels {
    static EMPTY: Labels = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Labels) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Op::In => v.is_some_and(|v| self.values.contains(v)),
            Op::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
        }
    }
}

/// A parsed selector: `Nothing` matches no object (a nil `LabelSelector`, or one that does not
/// parse), `All(requirements)` those that meet every requirement (none: every object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Nothing,
    All(Vec<Requirement>),
}

impl Selector {
    pub fn everything() -> Selector {
        Selector::All(Vec::new())
    }

    /// apimachinery's `LabelSelectorAsSelector`: nil selects nothing, `{}` everything;
    /// `matchLabels` are `In` one value; an unknown operator (or values where none belong) is
    /// an error there, nothing here.
    pub fn from_label_selector(s: Option<&LabelSelector>) -> Selector {
        let Some(s) = s else { return Selector::Nothing };
        let mut reqs: Vec<Requirement> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Requirement { key: k.clone(), op: Op::In, values: vec![v.clone()] })
            .collect();
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" if !values.is_empty() => Op::In,
                "NotIn" if !values.is_empty() => Op::NotIn,
                "Exists" if values.is_empty() => Op::Exists,
                "DoesNotExist" if values.is_empty() => Op::DoesNotExist,
                _ => return Selector::Nothing,
            };
            reqs.push(Requirement { key: e.key.clone(), op, values });
        }
        Selector::All(reqs)
    }

    /// `labels.Set(m).AsSelector()`: each label must be equal.
    pub fn from_set(m: &Labels) -> Selector {
        Selector::All(
            m.iter().map(|(k, v)| Requirement { key: k.clone(), op: Op::In, values: vec![v.clone()] }).collect(),
        )
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::All(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// Selects every object (apimachinery's `Empty()`).
    pub fn is_empty(&self) -> bool {
        matches!(self, Selector::All(r) if r.is_empty())
    }

    /// Adds requirements (apimachinery's `Add`; a `Nothing` stays nothing).
    pub fn add(&mut self, more: impl IntoIterator<Item = Requirement>) {
        if let Selector::All(reqs) = self {
            reqs.extend(more);
        }
    }

    pub fn requirements(&self) -> &[Requirement] {
        match self {
            Selector::Nothing => &[],
            Selector::All(r) => r,
        }
    }
}

/// One pod (anti-)affinity term, parsed: which namespaces and which pods in them it selects,
/// over which topology.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub namespaces: BTreeSet<String>,
    pub namespace_selector: Selector,
    pub selector: Selector,
    pub topology_key: String,
}

impl AffinityTerm {
    /// Upstream's `newAffinityTerm`: no namespaces and no namespace selector mean the pod's own
    /// namespace; a nil namespace selector selects no namespace, `{}` every one.
    pub fn new(pod: &Pod, t: &PodAffinityTerm) -> AffinityTerm {
        let listed = t.namespaces.clone().unwrap_or_default();
        let mut namespaces: BTreeSet<String> = listed.into_iter().collect();
        if namespaces.is_empty() && t.namespace_selector.is_none() {
            namespaces.insert(pod.metadata.namespace.clone().unwrap_or_default());
        }
        AffinityTerm {
            namespaces,
            namespace_selector: Selector::from_label_selector(t.namespace_selector.as_ref()),
            selector: Selector::from_label_selector(t.label_selector.as_ref()),
            topology_key: t.topology_key.clone(),
        }
    }

    /// Whether `pod` (in a namespace labelled `ns_labels`) is one the term selects.
    pub fn matches(&self, pod: &Pod, ns_labels: &Labels) -> bool {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        (self.namespaces.contains(ns) || self.namespace_selector.matches(ns_labels))
            && self.selector.matches(labels_of(&pod.metadata))
    }

    /// Upstream's `mergeAffinityTermNamespacesIfNotEmpty`, for the incoming pod's terms: a
    /// namespace selector that is not `{}` is replaced by the namespaces it selects now, so that
    /// matching existing pods needs no lookup of their namespaces' labels.
    pub fn unroll_namespaces<'a>(&mut self, namespaces: impl Iterator<Item = (&'a String, &'a Labels)>) {
        if self.namespace_selector.is_empty() {
            return;
        }
        for (name, labels) in namespaces {
            if self.namespace_selector.matches(labels) {
                self.namespaces.insert(name.clone());
            }
        }
        self.namespace_selector = Selector::Nothing;
    }
}

/// A pod's inter-pod affinity, parsed once (upstream keeps it in `PodInfo`).
#[derive(Clone, Debug, Default)]
pub struct PodAffinity {
    pub required: Vec<AffinityTerm>,
    pub required_anti: Vec<AffinityTerm>,
    pub preferred: Vec<(i32, AffinityTerm)>,
    pub preferred_anti: Vec<(i32, AffinityTerm)>,
}

impl PodAffinity {
    pub fn of(pod: &Pod) -> PodAffinity {
        let Some(a) = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()) else { return PodAffinity::default() };
        let terms = |t: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            t.into_iter().flatten().map(|t| AffinityTerm::new(pod, t)).collect()
        };
        let weighted = |t: Option<&Vec<WeightedPodAffinityTerm>>| -> Vec<(i32, AffinityTerm)> {
            t.into_iter().flatten().map(|w| (w.weight, AffinityTerm::new(pod, &w.pod_affinity_term))).collect()
        };
        let (aff, anti) = (a.pod_affinity.as_ref(), a.pod_anti_affinity.as_ref());
        PodAffinity {
            required: terms(aff.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
            required_anti: terms(anti.and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())),
            preferred: weighted(aff.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref())),
            preferred_anti: weighted(
                anti.and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()),
            ),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.required.is_empty()
            && self.required_anti.is_empty()
            && self.preferred.is_empty()
            && self.preferred_anti.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: serde_json::Value) -> Labels {
        serde_json::from_value(v).unwrap()
    }

    fn selector(v: serde_json::Value) -> Selector {
        Selector::from_label_selector(Some(&serde_json::from_value(v).unwrap()))
    }

    #[test]
    fn selectors_match_as_apimachinery() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        assert!(selector(json!({})).matches(&l));
        assert!(selector(json!({})).is_empty());
        assert!(!Selector::from_label_selector(None).matches(&l), "nil selects nothing");
        assert!(selector(json!({"matchLabels": {"app": "web"}})).matches(&l));
        assert!(!selector(json!({"matchLabels": {"app": "db"}})).matches(&l));
        let expr = |op: &str, values: &[&str]| {
            selector(json!({"matchExpressions": [{"key": "tier", "operator": op, "values": values}]}))
        };
        assert!(expr("In", &["front", "back"]).matches(&l));
        assert!(!expr("NotIn", &["front"]).matches(&l));
        assert!(expr("NotIn", &["back"]).matches(&labels(json!({}))), "NotIn matches a missing label");
        assert!(expr("Exists", &[]).matches(&l));
        assert!(!expr("DoesNotExist", &[]).matches(&l));
        assert_eq!(expr("In", &[]), Selector::Nothing, "In without values does not parse");
        assert_eq!(expr("Gt", &["1"]), Selector::Nothing);
    }

    #[test]
    fn affinity_terms_default_to_the_pods_namespace() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "a"}})).unwrap();
        let other: Pod =
            serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "b", "labels": {"app": "x"}}}))
                .unwrap();
        let term = |t: serde_json::Value| AffinityTerm::new(&pod, &serde_json::from_value(t).unwrap());
        let sel = json!({"matchLabels": {"app": "x"}});
        let own = term(json!({"topologyKey": "zone", "labelSelector": sel}));
        assert!(!own.matches(&other, &Labels::new()), "q is in another namespace");
        let listed = term(json!({"topologyKey": "zone", "labelSelector": sel, "namespaces": ["b"]}));
        assert!(listed.matches(&other, &Labels::new()));
        let all = term(json!({"topologyKey": "zone", "labelSelector": sel, "namespaceSelector": {}}));
        assert!(all.matches(&other, &Labels::new()));
        let mut by_label = term(
            json!({"topologyKey": "zone", "labelSelector": sel, "namespaceSelector": {"matchLabels": {"team": "t"}}}),
        );
        assert!(by_label.matches(&other, &labels(json!({"team": "t"}))));
        let (b, t) = ("b".to_string(), labels(json!({"team": "t"})));
        by_label.unroll_namespaces([(&b, &t)].into_iter());
        assert!(by_label.matches(&other, &Labels::new()), "unrolled: no labels needed");
    }
}
