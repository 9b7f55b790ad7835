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

use std::sync::atomic::AtomicUsize;
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

use super::config;
use super::framework::{Filter, Score};
use super::profile::Profile;

/// Upstream's default profile (without the volume plugins and ImageLocality,
/// which need what this scheduler does not have): filters in upstream's order
/// (NodeUnschedulable, NodeName, TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit,
/// PodTopologySpread, InterPodAffinity), scores with upstream's weights (TaintToleration 3,
/// NodeAffinity 2, PodTopologySpread 2, InterPodAffinity 2, NodeResourcesFit 1,
/// NodeResourcesBalancedAllocation 1).
pub fn default_profile() -> Profile {
    profile(&config::Profile::default_named(super::DEFAULT_SCHEDULER_NAME), 0)
}

/// The plugins a configured profile names, by upstream's names, in its order; `percentage` is
/// the configuration's global `percentageOfNodesToScore` (the profile's own wins).
pub fn profile(cfg: &config::Profile, percentage: i32) -> Profile {
    let (spread, affinity) = (Arc::new(PodTopologySpread), Arc::new(InterPodAffinity));
    let mut p = Profile {
        pre_filters: Vec::new(),
        filters: Vec::new(),
        pre_scores: Vec::new(),
        scores: Vec::new(),
        scheduling_gates: cfg.enabled("SchedulingGates"),
        percentage_of_nodes_to_score: cfg.percentage_of_nodes_to_score.unwrap_or(percentage),
        next_start: AtomicUsize::new(0),
    };
    for name in &cfg.plugins {
        let filter: Arc<dyn Filter> = match name.as_str() {
            "NodeUnschedulable" => Arc::new(NodeUnschedulable),
            "NodeName" => Arc::new(NodeName),
            "TaintToleration" => Arc::new(TaintToleration),
            "NodeAffinity" => Arc::new(NodeAffinity),
            "NodePorts" => Arc::new(NodePorts),
            "NodeResourcesFit" => Arc::new(NodeResourcesFit),
            "PodTopologySpread" => {
                p.pre_filters.push(spread.clone());
                spread.clone()
            }
            "InterPodAffinity" => {
                p.pre_filters.push(affinity.clone());
                affinity.clone()
            }
            // Not filters (queue sort, preemption, binding), or not built (config::INERT_PLUGINS).
            _ => continue,
        };
        p.filters.push(filter);
    }
    for (name, weight) in &cfg.scores {
        let score: Arc<dyn Score> = match name.as_str() {
            "TaintToleration" => Arc::new(TaintToleration),
            "NodeAffinity" => Arc::new(NodeAffinity),
            "NodeResourcesFit" => Arc::new(LeastAllocated),
            "NodeResourcesBalancedAllocation" => Arc::new(BalancedAllocation),
            "PodTopologySpread" => {
                p.pre_scores.push(spread.clone());
                spread.clone()
            }
            "InterPodAffinity" => {
                p.pre_scores.push(affinity.clone());
                affinity.clone()
            }
            _ => continue,
        };
        p.scores.push((score, *weight));
    }
    p
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
        Snapshot { nodes: nodes.into_iter().map(Arc::new).collect(), ..Snapshot::default() }
    }
}
