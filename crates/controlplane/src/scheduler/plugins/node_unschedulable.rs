//! `NodeUnschedulable`: a cordoned node (`spec.unschedulable`, `kubectl cordon`) takes only pods
//! that tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint.

use k8s_openapi::api::core::v1::Taint;

use super::tolerates;
use crate::scheduler::framework::{CycleState, Filter, NodeInfo, PodInfo, Status};

/// Upstream's `ErrReasonUnschedulable`.
pub const REASON: &str = "node(s) were unschedulable";

pub struct NodeUnschedulable;

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if !node.node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
            return Status::Fits;
        }
        let taint =
            Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Taint::default() };
        let tolerations = pod.pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
        if tolerations.iter().any(|t| tolerates(t, &taint)) {
            Status::Fits
        } else {
            Status::unresolvable(REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn cordoned_nodes_take_only_pods_that_tolerate_it() {
        let cordoned = node(json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}}));
        let plain = pod(json!({"spec": {"containers": []}}));
        assert_eq!(NodeUnschedulable.filter(&CycleState::default(), &plain, &cordoned), Status::unresolvable(REASON));
        let tolerant = pod(
            json!({"spec": {"containers": [], "tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}}),
        );
        assert!(NodeUnschedulable.filter(&CycleState::default(), &tolerant, &cordoned).fits());
        assert!(NodeUnschedulable
            .filter(&CycleState::default(), &plain, &node(json!({"metadata": {"name": "n2"}})))
            .fits());
    }
}
