//! `NodeName`: a pod that names its node (`spec.nodeName`) fits only there.

use crate::scheduler::framework::{CycleState, Filter, NodeInfo, PodInfo, Status};

/// Upstream's `ErrReason`.
pub const REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name() => Status::unresolvable(REASON),
            _ => Status::Fits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn only_the_named_node() {
        let n1 = node(json!({"metadata": {"name": "n1"}}));
        let p = pod(json!({"spec": {"containers": [], "nodeName": "n2"}}));
        assert_eq!(NodeName.filter(&CycleState::default(), &p, &n1), Status::unresolvable(REASON));
        let p = pod(json!({"spec": {"containers": [], "nodeName": "n1"}}));
        assert!(NodeName.filter(&CycleState::default(), &p, &n1).fits());
        assert!(NodeName.filter(&CycleState::default(), &pod(json!({"spec": {"containers": []}})), &n1).fits());
    }
}
