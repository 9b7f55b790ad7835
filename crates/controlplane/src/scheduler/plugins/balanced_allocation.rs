//! `NodeResourcesBalancedAllocation`: prefers the node whose CPU and memory would be used in
//! the most equal shares after the pod (1 − the standard deviation of the used fractions),
//! counting actual requests. Pods that request neither are not scored by it (upstream skips
//! best-effort pods, so that they do not all pile onto one node).

use crate::scheduler::framework::{CycleState, NodeInfo, PodInfo, Score, MAX_NODE_SCORE};

pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (want, used, have) = (&pod.requests, &node.requested, &node.allocatable);
        if want.milli_cpu == 0 && want.memory == 0 {
            return 0;
        }
        let fractions: Vec<f64> =
            [(used.milli_cpu + want.milli_cpu, have.milli_cpu), (used.memory + want.memory, have.memory)]
                .into_iter()
                .filter(|&(_, capacity)| capacity != 0)
                .map(|(requested, capacity)| (requested as f64 / capacity as f64).min(1.0))
                .collect();
        let std = match fractions.as_slice() {
            [a, b] => ((a - b) / 2.0).abs(),
            _ => 0.0,
        };
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    #[test]
    fn equal_shares_score_best() {
        let n = node(
            json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "10"}}}),
        );
        let ask = |cpu: &str, mem: &str| {
            pod(
                json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}}),
            )
        };
        assert_eq!(BalancedAllocation.score(&CycleState::default(), &ask("2", "4Gi"), &n), 100);
        // cpu 1.0, memory 0.25: std 0.375 → 62.
        assert_eq!(BalancedAllocation.score(&CycleState::default(), &ask("4", "2Gi"), &n), 62);
        assert_eq!(
            BalancedAllocation.score(
                &CycleState::default(),
                &pod(json!({"spec": {"containers": [{"name": "c"}]}})),
                &n
            ),
            0,
            "best-effort: not scored"
        );
    }
}
