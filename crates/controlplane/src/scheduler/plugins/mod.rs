//! The plugins, by upstream's names, each in its own file.

mod balanced_allocation;
mod inter_pod_affinity;
mod node_affinity;
mod node_name;
mod node_ports;
mod node_resources_fit;
mod node_unschedulable;
mod pod_topology_spread;
mod taint_toleration;

use std::sync::Arc;

pub use balanced_allocation::BalancedAllocation;
pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_fit::{LeastAllocated, NodeResourcesFit};
pub use node_unschedulable::NodeUnschedulable;
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::{tolerates, TaintToleration};

use super::profile::Profile;

/// Upstream's default profile (without the volume plugins and ImageLocality, which need
/// objects this scheduler does not watch): filters in upstream's order (NodeUnschedulable,
/// NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, PodTopologySpread,
/// InterPodAffinity), scores with upstream's weights (TaintToleration 3, NodeAffinity 2,
/// PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit 1,
/// NodeResourcesBalancedAllocation 1).
pub fn default_profile() -> Profile {
    let (spread, affinity) = (Arc::new(PodTopologySpread), Arc::new(InterPodAffinity));
    Profile {
        pre_filters: vec![spread.clone(), affinity.clone()],
        filters: vec![
            Arc::new(NodeUnschedulable),
            Arc::new(NodeName),
            Arc::new(TaintToleration),
            Arc::new(NodeAffinity),
            Arc::new(NodePorts),
            Arc::new(NodeResourcesFit),
            spread.clone(),
            affinity.clone(),
        ],
        pre_scores: vec![spread.clone(), affinity.clone()],
        scores: vec![
            (Arc::new(TaintToleration), 3),
            (Arc::new(NodeAffinity), 2),
            (spread, 2),
            (affinity, 2),
            (Arc::new(LeastAllocated), 1),
            (Arc::new(BalancedAllocation), 1),
        ],
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Pods and nodes from JSON, as they come from the API.
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};

    use crate::scheduler::framework::{NodeInfo, PodInfo, Snapshot};

    pub fn pod(v: serde_json::Value) -> PodInfo {
        PodInfo::new(Arc::new(serde_json::from_value::<Pod>(v).unwrap()))
    }

    pub fn node(v: serde_json::Value) -> NodeInfo {
        NodeInfo::new(Arc::new(serde_json::from_value::<Node>(v).unwrap()))
    }

    /// A snapshot of these nodes (sorted by name, as the cache gives them).
    pub fn snapshot(mut nodes: Vec<NodeInfo>) -> Snapshot {
        nodes.sort_by(|a, b| a.name().cmp(b.name()));
        Snapshot { nodes, ..Snapshot::default() }
    }
}
