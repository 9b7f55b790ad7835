//! `NodePorts`: a container port with a `hostPort` takes that (protocol, port) on the node's
//! address `hostIP`, or on all of them for `0.0.0.0` (the default). A pod does not go where one
//! of its host ports is taken already: the same protocol and port on the same address, or on
//! any address if either side binds them all.

use k8s_openapi::api::core::v1::{ContainerPort, Pod};

use crate::scheduler::framework::{CycleState, Filter, NodeInfo, PodInfo, Status};

/// Upstream's `ErrReason`.
pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

const ALL_ADDRESSES: &str = "0.0.0.0";

pub struct NodePorts;

/// (address, protocol, port) of each host port the pod's containers ask for, with upstream's
/// defaults (no address: all of them; no protocol: TCP). Init containers take none, as
/// upstream counts only `containers`.
fn host_ports(pod: &Pod) -> Vec<(&str, &str, i32)> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or(&[]);
    containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.is_some_and(|h| h > 0))
        .map(|p: &ContainerPort| {
            let ip = p.host_ip.as_deref().filter(|ip| !ip.is_empty()).unwrap_or(ALL_ADDRESSES);
            let protocol = p.protocol.as_deref().filter(|p| !p.is_empty()).unwrap_or("TCP");
            (ip, protocol, p.host_port.unwrap_or(0))
        })
        .collect()
}

/// Upstream's `HostPortInfo.CheckConflict`.
fn conflicts(want: (&str, &str, i32), used: (&str, &str, i32)) -> bool {
    let same_port = want.1 == used.1 && want.2 == used.2;
    same_port && (want.0 == ALL_ADDRESSES || used.0 == ALL_ADDRESSES || want.0 == used.0)
}

impl Filter for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let wanted = host_ports(&pod.pod);
        if wanted.is_empty() {
            return Status::Fits;
        }
        let taken = node.pods.iter().any(|p| {
            let used = host_ports(&p.pod);
            wanted.iter().any(|w| used.iter().any(|u| conflicts(*w, *u)))
        });
        // Unschedulable, not unresolvable: preempting the pod holding the port frees it.
        if taken {
            Status::unschedulable(REASON)
        } else {
            Status::Fits
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::testing::{node, pod};
    use serde_json::json;

    fn with_port(port: serde_json::Value) -> PodInfo {
        pod(json!({"metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "ports": [port]}]}}))
    }

    fn on_node_with(port: serde_json::Value) -> NodeInfo {
        let mut n = node(json!({"metadata": {"name": "n1"}}));
        n.add_pod(with_port(port));
        n
    }

    fn fits(want: serde_json::Value, used: serde_json::Value) -> bool {
        NodePorts.filter(&CycleState::default(), &with_port(want), &on_node_with(used)).fits()
    }

    #[test]
    fn host_ports_conflict_by_protocol_port_and_address() {
        let p = |ip: &str, proto: &str, port: i32| json!({"containerPort": 80, "hostIP": ip, "protocol": proto, "hostPort": port});
        assert!(!fits(p("", "", 8080), p("", "TCP", 8080)), "defaults: TCP on every address");
        assert!(fits(p("", "UDP", 8080), p("", "TCP", 8080)), "another protocol");
        assert!(fits(p("", "TCP", 8081), p("", "TCP", 8080)), "another port");
        assert!(fits(p("10.0.0.1", "TCP", 8080), p("10.0.0.2", "TCP", 8080)), "other addresses");
        assert!(!fits(p("10.0.0.1", "TCP", 8080), p("10.0.0.1", "TCP", 8080)));
        assert!(!fits(p("10.0.0.1", "TCP", 8080), p("0.0.0.0", "TCP", 8080)), "taken on all addresses");
        assert!(!fits(p("0.0.0.0", "TCP", 8080), p("10.0.0.1", "TCP", 8080)), "wants all addresses");
        // A container port without hostPort takes nothing on the node.
        assert!(fits(json!({"containerPort": 8080}), json!({"containerPort": 8080})));
        assert_eq!(
            NodePorts.filter(&CycleState::default(), &with_port(p("", "", 80)), &on_node_with(p("", "", 80))),
            Status::unschedulable(REASON)
        );
    }
}
