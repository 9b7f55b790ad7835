//! `NodeAffinity` (the filter): the pod's `nodeSelector` and its required node affinity
//! (`requiredDuringSchedulingIgnoredDuringExecution`) must both match the node.

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};

use crate::scheduler::framework::{default_normalize, CycleState, Filter, NodeInfo, PodInfo, Score, Status};

/// Upstream's `ErrReasonPod`.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if matches_required(&pod.pod, &node.node) {
            Status::Fits
        } else {
            Status::unresolvable(REASON)
        }
    }
}

/// Whether the node meets the pod's `nodeSelector` and required node affinity (upstream's
/// `GetRequiredNodeAffinity(pod).Match(node)`, which spreading uses too).
pub fn matches_required(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    // Terms are ORed; a selector without terms matches no node.
    selector_ok && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node)))
}

/// The score: the summed weights of the preferred terms
/// (`preferredDuringSchedulingIgnoredDuringExecution`) the node matches, normalized so the best
/// node scores 100.
impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let preferred = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_deref())
            .unwrap_or(&[]);
        preferred
            .iter()
            .filter(|p| p.weight != 0 && term_matches(&p.preference, &node.node))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, _state: &CycleState, _nodes: &[&NodeInfo], scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

/// A term's expressions and fields are ANDed; a term with neither matches nothing. A malformed
/// requirement (unknown operator, Gt without one integer) does not match, as upstream ignores
/// terms it cannot parse.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let name = node.metadata.name.clone().unwrap_or_default();
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == "metadata.name"
                && matches!(r.operator.as_str(), "In" | "NotIn")
                && requirement_matches(r, Some(&name))
        })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        op @ ("Gt" | "Lt") => {
            let (Some(v), [bound]) = (value, values) else { return false };
            let (Ok(v), Ok(bound)) = (v.parse::<i64>(), bound.parse::<i64>()) else { return false };
            if op == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    fn with_affinity(terms: serde_json::Value) -> PodInfo {
        pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}),
        )
    }

    #[test]
    fn preferred_terms_add_their_weights() {
        let p = pod(
            json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 80, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
            ]}}}}),
        );
        let n = |labels: serde_json::Value| node(json!({"metadata": {"name": "n", "labels": labels}}));
        let nodes = [n(json!({"zone": "a", "disk": "ssd"})), n(json!({"zone": "a"})), n(json!({"zone": "b"}))];
        let mut s: Vec<i64> = nodes.iter().map(|x| NodeAffinity.score(&CycleState::default(), &p, x)).collect();
        assert_eq!(s, [100, 80, 0]);
        NodeAffinity.normalize(&CycleState::default(), &[], &mut s);
        assert_eq!(s, [100, 80, 0]);
    }

    #[test]
    fn selector_and_required_affinity() {
        let n = node(json!({"metadata": {"name": "n1", "labels": {"zone": "a", "disk": "ssd", "cores": "8"}}}));
        let sel = |v: serde_json::Value| pod(json!({"spec": {"containers": [], "nodeSelector": v}}));
        assert!(NodeAffinity.filter(&CycleState::default(), &sel(json!({"zone": "a"})), &n).fits());
        assert_eq!(
            NodeAffinity.filter(&CycleState::default(), &sel(json!({"zone": "b"})), &n),
            Status::unresolvable(REASON)
        );

        let expr = |key: &str, op: &str, values: &[&str]| json!({"matchExpressions": [{"key": key, "operator": op, "values": values}]});
        assert!(NodeAffinity
            .filter(&CycleState::default(), &with_affinity(json!([expr("zone", "In", &["a", "b"])])), &n)
            .fits());
        assert!(!NodeAffinity
            .filter(&CycleState::default(), &with_affinity(json!([expr("zone", "NotIn", &["a"])])), &n)
            .fits());
        assert!(NodeAffinity
            .filter(&CycleState::default(), &with_affinity(json!([expr("gpu", "DoesNotExist", &[])])), &n)
            .fits());
        assert!(NodeAffinity
            .filter(&CycleState::default(), &with_affinity(json!([expr("cores", "Gt", &["4"])])), &n)
            .fits());
        assert!(!NodeAffinity
            .filter(&CycleState::default(), &with_affinity(json!([expr("cores", "Lt", &["4"])])), &n)
            .fits());
        // Terms are ORed.
        assert!(NodeAffinity
            .filter(
                &CycleState::default(),
                &with_affinity(json!([expr("zone", "In", &["b"]), expr("disk", "Exists", &[])])),
                &n
            )
            .fits());
        // Fields: metadata.name only.
        let by_name = json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]);
        assert!(NodeAffinity.filter(&CycleState::default(), &with_affinity(by_name), &n).fits());
        assert!(
            !NodeAffinity.filter(&CycleState::default(), &with_affinity(json!([{}])), &n).fits(),
            "an empty term matches nothing"
        );
        assert!(
            !NodeAffinity.filter(&CycleState::default(), &with_affinity(json!([])), &n).fits(),
            "no terms match nothing"
        );
    }
}
