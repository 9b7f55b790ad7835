//! Nodes: registered by kubelets (none yet) and read by the scheduler; their status is the
//! kubelet's heartbeat.

use k8s_openapi::api::core::v1::Node;
use serde_json::{json, Value};

use crate::resources::{Resource, Subresource};
use crate::table::{age, col, name, Column, AGE, NAME};

pub static NODE: Resource = Resource {
    short_names: &["no"],
    subresources: &[Subresource::Status],
    selectable: &["spec.unschedulable"],
    columns: node_columns,
    cells: node_cells,
    ..Resource::of::<Node>()
};

pub fn node_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Status", "string", "", "The status of the node", 0),
        col("Roles", "string", "", "The roles of the node", 0),
        AGE,
        col("Version", "string", "", "Kubelet Version reported by the node.", 0),
        col(
            "Internal-IP",
            "string",
            "",
            "List of addresses reachable to the node. Queried from cloud provider, if available.",
            1,
        ),
        col(
            "External-IP",
            "string",
            "",
            "List of addresses reachable to the node. Queried from cloud provider, if available.",
            1,
        ),
        col(
            "OS-Image",
            "string",
            "",
            "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            1,
        ),
        col(
            "Kernel-Version",
            "string",
            "",
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            1,
        ),
        col(
            "Container-Runtime",
            "string",
            "",
            "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            1,
        ),
    ]
}

/// Upstream's `printNode`: STATUS from the Ready condition (plus SchedulingDisabled), ROLES
/// from the `node-role.kubernetes.io/<role>` labels.
pub fn node_cells(o: &Value) -> Vec<Value> {
    let ready = o["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Ready");
    let mut status = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if o["spec"]["unschedulable"].as_bool() == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = o["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) if !role.is_empty() => Some(role.to_string()),
            _ if k == "kubernetes.io/role" => v.as_str().map(str::to_string),
            _ => None,
        })
        .collect();
    roles.sort();
    let address = |ty: &str| {
        o["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == ty)
            .and_then(|a| a["address"].as_str())
            .unwrap_or("<none>")
            .to_string()
    };
    let info = &o["status"]["nodeInfo"];
    let or_unknown = |v: &Value| json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or("<unknown>"));
    vec![
        name(o),
        json!(status),
        json!(if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }),
        age(o),
        json!(info["kubeletVersion"].as_str().unwrap_or("")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        or_unknown(&info["osImage"]),
        or_unknown(&info["kernelVersion"]),
        or_unknown(&info["containerRuntimeVersion"]),
    ]
}
