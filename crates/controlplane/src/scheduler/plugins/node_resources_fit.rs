//! `NodeResourcesFit` (the filter): the pod's requests must fit in what the node's allocatable
//! leaves after the pods already on it, and the node must take one more pod. Reasons as
//! upstream's: "Too many pods", "Insufficient cpu", "Insufficient memory", "Insufficient
//! ephemeral-storage", "Insufficient <extended resource>".

use crate::scheduler::framework::{CycleState, Filter, NodeInfo, PodInfo, Score, Status, MAX_NODE_SCORE};

pub struct NodeResourcesFit;

/// The scoring half of `NodeResourcesFit` with upstream's default strategy, LeastAllocated
/// (cpu and memory, weight 1 each): the more a node has free after the pod, the better;
/// containers without requests count as 100m CPU and 200 MiB, so such pods still spread.
pub struct LeastAllocated;

impl Score for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (used, want, have) = (&node.non_zero_requested, &pod.non_zero_requests, &node.allocatable);
        let pairs = [(used.milli_cpu + want.milli_cpu, have.milli_cpu), (used.memory + want.memory, have.memory)];
        let (mut total, mut weights) = (0, 0);
        for (requested, capacity) in pairs {
            if capacity == 0 {
                continue;
            }
            total += if requested > capacity { 0 } else { (capacity - requested) * MAX_NODE_SCORE / capacity };
            weights += 1;
        }
        if weights == 0 {
            0
        } else {
            total / weights
        }
    }
}

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let (want, have, used) = (&pod.requests, &node.allocatable, &node.requested);
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > have.allowed_pods {
            reasons.push("Too many pods".to_string());
        }
        if !want.is_zero() {
            if want.milli_cpu > 0 && want.milli_cpu > have.milli_cpu - used.milli_cpu {
                reasons.push("Insufficient cpu".into());
            }
            if want.memory > 0 && want.memory > have.memory - used.memory {
                reasons.push("Insufficient memory".into());
            }
            if want.ephemeral_storage > 0 && want.ephemeral_storage > have.ephemeral_storage - used.ephemeral_storage {
                reasons.push("Insufficient ephemeral-storage".into());
            }
            for (name, &q) in &want.scalar {
                let free = have.scalar.get(name).copied().unwrap_or(0) - used.scalar.get(name).copied().unwrap_or(0);
                if q > 0 && q > free {
                    reasons.push(format!("Insufficient {name}"));
                }
            }
        }
        if reasons.is_empty() {
            Status::Fits
        } else {
            Status::Unschedulable(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    fn asking(cpu: &str, mem: &str) -> PodInfo {
        pod(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}))
    }

    #[test]
    fn least_allocated_prefers_free_nodes() {
        let n = |cpu: &str, mem: &str| {
            node(
                json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "10"}}}),
            )
        };
        // cpu (4000-1000)/4000 = 75, memory (8-2)/8 = 75.
        assert_eq!(LeastAllocated.score(&CycleState::default(), &asking("1", "2Gi"), &n("4", "8Gi")), 75);
        // cpu 50, memory (4-2)/4 = 50.
        assert_eq!(LeastAllocated.score(&CycleState::default(), &asking("1", "2Gi"), &n("2", "4Gi")), 50);
        // A pod without requests counts 100m and 200Mi.
        let none = pod(json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(LeastAllocated.score(&CycleState::default(), &none, &n("1", "2000Mi")), (90 + 90) / 2);
    }

    #[test]
    fn requests_must_fit_what_is_left() {
        let mut n = node(
            json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "2"}}}),
        );
        assert!(NodeResourcesFit.filter(&CycleState::default(), &asking("1500m", "1Gi"), &n).fits());
        n.add_pod(asking("1", "3Gi"));
        assert_eq!(
            NodeResourcesFit.filter(&CycleState::default(), &asking("1500m", "2Gi"), &n),
            Status::Unschedulable(vec!["Insufficient cpu".into(), "Insufficient memory".into()])
        );
        assert!(
            NodeResourcesFit.filter(&CycleState::default(), &asking("1", "1Gi"), &n).fits(),
            "exactly what is left fits"
        );
        n.add_pod(asking("0", "0"));
        assert_eq!(
            NodeResourcesFit.filter(&CycleState::default(), &asking("0", "0"), &n),
            Status::unschedulable("Too many pods")
        );
        let gpu =
            pod(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}}));
        let n = node(json!({"metadata": {"name": "n2"}, "status": {"allocatable": {"cpu": "2", "pods": "10"}}}));
        assert_eq!(
            NodeResourcesFit.filter(&CycleState::default(), &gpu, &n),
            Status::unschedulable("Insufficient example.com/gpu")
        );
    }
}
