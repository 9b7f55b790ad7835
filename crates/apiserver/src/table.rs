//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`. Columns and cells follow upstream's
//! printers (pkg/printers/internalversion) for the resources served here.

use serde_json::{json, Value};

pub struct Column {
    pub name: &'static str,
    pub kind: &'static str,
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = always shown; 1 = only with `-o wide`.
    pub priority: i32,
}

pub const fn col(
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
) -> Column {
    Column { name, kind, format, description, priority }
}

pub const NAME: Column = col(
    "Name",
    "string",
    "name",
    "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    0,
);
pub const AGE: Column = col(
    "Age",
    "string",
    "",
    "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    0,
);

pub fn name_age_columns() -> Vec<Column> {
    vec![NAME, AGE]
}

pub fn name_age_cells(o: &Value) -> Vec<Value> {
    vec![name(o), age(o)]
}

pub fn namespace_columns() -> Vec<Column> {
    vec![NAME, col("Status", "string", "", "The status of the namespace", 0), AGE]
}

pub fn namespace_cells(o: &Value) -> Vec<Value> {
    vec![name(o), json!(o["status"]["phase"].as_str().unwrap_or("")), age(o)]
}

pub fn configmap_columns() -> Vec<Column> {
    vec![NAME, col("Data", "string", "", "Data contains the configuration data.", 0), AGE]
}

pub fn configmap_cells(o: &Value) -> Vec<Value> {
    let n = count(&o["data"]) + count(&o["binaryData"]);
    vec![name(o), json!(n), age(o)]
}

pub fn secret_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Type", "string", "", "The type of the secret", 0),
        col("Data", "string", "", "The number of entries in the secret", 0),
        AGE,
    ]
}

pub fn secret_cells(o: &Value) -> Vec<Value> {
    vec![name(o), json!(o["type"].as_str().unwrap_or("")), json!(count(&o["data"])), age(o)]
}

pub fn pod_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
        col("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
        col("Restarts", "string", "", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
        AGE,
        col("IP", "string", "", "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.", 1),
        col("Node", "string", "", "NodeName is a request to schedule this pod onto a specific node. If it is non-empty, the scheduler simply schedules this pod onto that node, assuming that it fits resource requirements.", 1),
        col("Nominated Node", "string", "", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.", 1),
        col("Readiness Gates", "string", "", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates", 1),
    ]
}

/// Upstream's `printPod`, for the fields a pod can have without a kubelet: READY counts ready
/// container statuses, STATUS is the reason if set, else the phase; `<none>` for empty cells.
pub fn pod_cells(o: &Value) -> Vec<Value> {
    let total = o["spec"]["containers"].as_array().map(|a| a.len()).unwrap_or(0);
    let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    let ready = statuses.iter().filter(|s| s["ready"].as_bool() == Some(true)).count();
    let restarts: i64 = statuses.iter().map(|s| s["restartCount"].as_i64().unwrap_or(0)).sum();
    let reason = o["status"]["reason"].as_str().filter(|s| !s.is_empty());
    let status = if o["metadata"]["deletionTimestamp"].is_string() {
        "Terminating"
    } else {
        reason.or(o["status"]["phase"].as_str()).unwrap_or("")
    };
    let or_none = |v: &Value| json!(v.as_str().filter(|s| !s.is_empty()).unwrap_or("<none>"));
    let gates = o["spec"]["readinessGates"].as_array().map(|a| a.len()).unwrap_or(0);
    vec![
        name(o),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        age(o),
        or_none(&o["status"]["podIP"]),
        or_none(&o["spec"]["nodeName"]),
        or_none(&o["status"]["nominatedNodeName"]),
        if gates == 0 { json!("<none>") } else { json!(format!("0/{gates}")) },
    ]
}

pub fn event_columns() -> Vec<Column> {
    vec![
        col("Last Seen", "string", "", "Time when this Event was last observed.", 0),
        col("Type", "string", "", "Type of this event (Normal, Warning), new types could be added in the future.", 0),
        col("Reason", "string", "", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.", 0),
        col("Object", "string", "", "The object that this event is about.", 0),
        col("Message", "string", "", "A human-readable description of the status of this operation.", 0),
    ]
}

/// Upstream's `printEvent`: last seen from lastTimestamp, else eventTime, else creation;
/// OBJECT is `kind/name` in lower case.
pub fn event_cells(o: &Value) -> Vec<Value> {
    let seen = ["lastTimestamp", "eventTime"]
        .iter()
        .find_map(|f| o[*f].as_str())
        .or(o["metadata"]["creationTimestamp"].as_str());
    let obj = &o["involvedObject"];
    vec![
        json!(seen.map(since).unwrap_or_else(|| "<unknown>".into())),
        json!(o["type"].as_str().unwrap_or("")),
        json!(o["reason"].as_str().unwrap_or("")),
        json!(format!("{}/{}", obj["kind"].as_str().unwrap_or("").to_lowercase(), obj["name"].as_str().unwrap_or(""))),
        json!(o["message"].as_str().unwrap_or("").trim()),
    ]
}

pub fn service_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Type", "string", "", "The type of the service", 0),
        col("Cluster-IP", "string", "", "The cluster IP of the service", 0),
        col("External-IP", "string", "", "The external IP of the service", 0),
        col("Port(s)", "string", "", "The ports of the service", 0),
        AGE,
        col("Selector", "string", "", "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/", 1),
    ]
}

/// Upstream's `printService`: EXTERNAL-IP by type (`<pending>` for a load balancer without
/// ingress), PORT(S) as `port[:nodePort]/protocol`.
pub fn service_cells(o: &Value) -> Vec<Value> {
    let spec = &o["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array().into_iter().flatten().filter_map(|x| x.as_str().map(str::to_string)).collect()
    };
    let external_ips = strings(&spec["externalIPs"]);
    let external = match ty {
        "ExternalName" => spec["externalName"].as_str().unwrap_or("").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = o["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()).map(str::to_string))
                .collect();
            ips.extend(external_ips);
            if ips.is_empty() {
                "<pending>".to_string()
            } else {
                ips.join(",")
            }
        }
        _ if !external_ips.is_empty() => external_ips.join(","),
        _ => "<none>".to_string(),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64().filter(|n| *n > 0) {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    let or_none = |s: String| json!(if s.is_empty() { "<none>".to_string() } else { s });
    vec![
        name(o),
        json!(ty),
        or_none(spec["clusterIP"].as_str().unwrap_or("").to_string()),
        json!(external),
        or_none(ports.join(",")),
        age(o),
        or_none(format_labels(&spec["selector"])),
    ]
}

/// Upstream's `labels.FormatLabels` without the `<none>`: `k=v` pairs sorted by key.
pub fn format_labels(m: &Value) -> String {
    m.as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default()
}

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

pub fn endpoints_columns() -> Vec<Column> {
    vec![NAME, col("Endpoints", "string", "", "Endpoints of the service", 0), AGE]
}

/// Upstream's `formatEndpoints`: `ip:port` pairs, at most three, then `+ N more...`.
pub fn endpoints_cells(o: &Value) -> Vec<Value> {
    let mut pairs = Vec::new();
    for subset in o["subsets"].as_array().into_iter().flatten() {
        let ports: Vec<i64> =
            subset["ports"].as_array().into_iter().flatten().filter_map(|p| p["port"].as_i64()).collect();
        for a in subset["addresses"].as_array().into_iter().flatten() {
            let ip = a["ip"].as_str().unwrap_or("");
            if ports.is_empty() {
                pairs.push(ip.to_string());
            }
            for p in &ports {
                pairs.push(format!("{ip}:{p}"));
            }
        }
    }
    let text = if pairs.is_empty() {
        "<none>".to_string()
    } else if pairs.len() > 3 {
        format!("{} + {} more...", pairs[..3].join(","), pairs.len() - 3)
    } else {
        pairs.join(",")
    };
    vec![name(o), json!(text), age(o)]
}

pub fn name(o: &Value) -> Value {
    json!(o["metadata"]["name"].as_str().unwrap_or(""))
}

fn count(v: &Value) -> usize {
    v.as_object().map(|m| m.len()).unwrap_or(0)
}

pub fn age(o: &Value) -> Value {
    match o["metadata"]["creationTimestamp"].as_str() {
        Some(ts) => json!(since(ts)),
        None => json!("<unknown>"),
    }
}

/// How long ago an RFC 3339 time was, as kubectl shows it.
fn since(ts: &str) -> String {
    match time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339) {
        Ok(t) => human_duration((time::OffsetDateTime::now_utc() - t).whole_seconds()),
        Err(_) => "<unknown>".into(),
    }
}

/// k8s.io/apimachinery/pkg/util/duration.HumanDuration, which kubectl users read as AGE.
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// The row of one object: its cells and, as upstream's default `includeObject=Metadata`, its
/// metadata as a `PartialObjectMetadata` (kubectl reads labels and namespace from it).
pub fn row(res: &crate::resources::Resource, obj: &Value) -> Value {
    json!({
        "cells": (res.cells)(obj),
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"],
        },
    })
}

pub fn table<V: std::borrow::Borrow<Value>>(res: &crate::resources::Resource, objs: &[V], list_meta: Value) -> Value {
    let cols: Vec<Value> = (res.columns)()
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description, "priority": c.priority})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": cols,
        "rows": objs.iter().map(|o| row(res, o.borrow())).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_match_upstream() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(119), "119s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(10 * 3600), "10h");
        assert_eq!(human_duration(3 * 86400 + 3600), "3d1h");
        assert_eq!(human_duration(30 * 86400), "30d");
        assert_eq!(human_duration(-5), "<invalid>");
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.0.0.7",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}});
        let c = service_cells(&svc);
        assert_eq!(&c[1..5], &[json!("NodePort"), json!("10.0.0.7"), json!("<none>"), json!("80:30080/TCP,53/UDP")]);
        assert_eq!(c[6], "app=web");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": []}});
        assert_eq!(service_cells(&lb)[3], "<pending>");
    }
}
