//! The filter plugins, by upstream's names, each in its own file.

mod balanced_allocation;
mod node_affinity;
mod node_name;
mod node_resources_fit;
mod node_unschedulable;
mod taint_toleration;

pub use balanced_allocation::BalancedAllocation;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_resources_fit::{LeastAllocated, NodeResourcesFit};
pub use node_unschedulable::NodeUnschedulable;
pub use taint_toleration::{tolerates, TaintToleration};

use super::framework::{Filter, Score};

/// The default profile's filters, in upstream's order.
pub fn default_filters() -> Vec<Box<dyn Filter>> {
    vec![
        Box::new(NodeUnschedulable),
        Box::new(NodeName),
        Box::new(TaintToleration),
        Box::new(NodeAffinity),
        Box::new(NodeResourcesFit),
    ]
}

/// The default profile's scores with upstream's weights (TaintToleration 3, NodeAffinity 2,
/// NodeResourcesFit 1, NodeResourcesBalancedAllocation 1).
pub fn default_scores() -> Vec<(Box<dyn Score>, i64)> {
    vec![
        (Box::new(TaintToleration), 3),
        (Box::new(NodeAffinity), 2),
        (Box::new(LeastAllocated), 1),
        (Box::new(BalancedAllocation), 1),
    ]
}

#[cfg(test)]
pub(crate) mod testing {
    //! Pods and nodes from JSON, as they come from the API.
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};

    use crate::scheduler::framework::{NodeInfo, PodInfo};

    pub fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(serde_json::from_value::<Pod>(v).unwrap()))
    }

    pub fn node(v: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(serde_json::from_value::<Node>(v).unwrap()))
    }
}
