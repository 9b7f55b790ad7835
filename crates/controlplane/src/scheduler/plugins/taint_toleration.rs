//! `TaintToleration`: a node's `NoSchedule` and `NoExecute` taints keep off every pod that does
//! not tolerate them; the first untolerated taint is the reason users see.

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

use crate::scheduler::framework::{default_normalize, CycleState, Filter, NodeInfo, PodInfo, Score, Status};

pub struct TaintToleration;

/// Upstream's `Toleration.ToleratesTaint`: an empty effect or key matches any; operator
/// `Exists` matches any value, `Equal` (or none) only the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// The first of the node's `NoSchedule` / `NoExecute` taints the pod does not tolerate.
pub fn untolerated<'a>(pod: &Pod, node: &'a Node) -> Option<&'a Taint> {
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match untolerated(&pod.pod, &node.node) {
            None => Status::Fits,
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
        }
    }
}

/// The score: fewer `PreferNoSchedule` taints the pod does not tolerate is better (counted,
/// then normalized in reverse, as upstream's).
impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let taints = node.node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or(&[]);
        // Only tolerations that may apply to PreferNoSchedule count here.
        let tolerations: Vec<&Toleration> = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[])
            .iter()
            .filter(|t| matches!(t.effect.as_deref(), None | Some("") | Some("PreferNoSchedule")))
            .collect();
        taints
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule")
            .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
            .count() as i64
    }

    fn normalize(&self, _state: &CycleState, _nodes: &[&NodeInfo], scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn prefer_no_schedule_taints_lower_the_score() {
        let soft = |n: usize| {
            let taints: Vec<_> =
                (0..n).map(|i| json!({"key": format!("k{i}"), "effect": "PreferNoSchedule"})).collect();
            node(json!({"metadata": {"name": "n"}, "spec": {"taints": taints}}))
        };
        let p = pod(json!({"spec": {"containers": []}}));
        let nodes = [soft(0), soft(1), soft(2)];
        let mut s: Vec<i64> = nodes.iter().map(|n| TaintToleration.score(&CycleState::default(), &p, n)).collect();
        TaintToleration.normalize(&CycleState::default(), &[], &mut s);
        assert_eq!(s, [100, 50, 0]);
        let tolerant = pod(
            json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists", "effect": "PreferNoSchedule"}]}}),
        );
        assert_eq!(TaintToleration.score(&CycleState::default(), &tolerant, &soft(2)), 0);
    }

    #[test]
    fn untolerated_schedule_taints_keep_pods_off() {
        let n = node(json!({"metadata": {"name": "n1"}, "spec": {"taints": [
            {"key": "soft", "value": "x", "effect": "PreferNoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
        ]}}));
        let plain = pod(json!({"spec": {"containers": []}}));
        assert_eq!(
            TaintToleration.filter(&CycleState::default(), &plain, &n),
            Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}")
        );
        let equal = pod(
            json!({"spec": {"containers": [], "tolerations": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
        );
        assert!(TaintToleration.filter(&CycleState::default(), &equal, &n).fits());
        let other_value = pod(
            json!({"spec": {"containers": [], "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "cpu"}]}}),
        );
        assert!(!TaintToleration.filter(&CycleState::default(), &other_value, &n).fits());
        let everything = pod(json!({"spec": {"containers": [], "tolerations": [{"operator": "Exists"}]}}));
        assert!(TaintToleration.filter(&CycleState::default(), &everything, &n).fits());
        let wrong_effect = pod(
            json!({"spec": {"containers": [], "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]}}),
        );
        assert!(!TaintToleration.filter(&CycleState::default(), &wrong_effect, &n).fits());
    }
}
