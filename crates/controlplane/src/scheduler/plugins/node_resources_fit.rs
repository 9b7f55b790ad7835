//! `NodeResourcesFit` (the filter): the pod's requests must fit in what the node's allocatable
//! leaves after the pods already on it, and the node must take one more pod. Reasons as
//! upstream's: "Too many pods", "Insufficient cpu", "Insufficient memory", "Insufficient
//! ephemeral-storage", "Insufficient <extended resource>".

use crate::scheduler::framework::{Filter, NodeInfo, PodInfo, Status};

pub struct NodeResourcesFit;

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, pod: &PodInfo, node: &NodeInfo) -> Status {
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
    fn requests_must_fit_what_is_left() {
        let mut n = node(
            json!({"metadata": {"name": "n1"}, "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "2"}}}),
        );
        assert!(NodeResourcesFit.filter(&asking("1500m", "1Gi"), &n).fits());
        n.add_pod(asking("1", "3Gi"));
        assert_eq!(
            NodeResourcesFit.filter(&asking("1500m", "2Gi"), &n),
            Status::Unschedulable(vec!["Insufficient cpu".into(), "Insufficient memory".into()])
        );
        assert!(NodeResourcesFit.filter(&asking("1", "1Gi"), &n).fits(), "exactly what is left fits");
        n.add_pod(asking("0", "0"));
        assert_eq!(NodeResourcesFit.filter(&asking("0", "0"), &n), Status::unschedulable("Too many pods"));
        let gpu =
            pod(json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"example.com/gpu": "1"}}}]}}));
        let n = node(json!({"metadata": {"name": "n2"}, "status": {"allocatable": {"cpu": "2", "pods": "10"}}}));
        assert_eq!(NodeResourcesFit.filter(&gpu, &n), Status::unschedulable("Insufficient example.com/gpu"));
    }
}
