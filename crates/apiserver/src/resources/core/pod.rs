//! Pods: defaults and QoS class as upstream's strategy, only images change after creation,
//! the scheduler binds them through `pods/binding`, and a pod on a node is deleted
//! gracefully (its kubelet stops it first); a delete answers with the pod.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::resources::{check_name, NameRule, Resource, Subresource};
use crate::status::FieldError;
use crate::table::{age, col, name, Column, AGE, NAME};

pub static POD: Resource = Resource {
    short_names: &["po"],
    categories: &["all"],
    subresources: &[Subresource::Binding, Subresource::Status],
    selectable: &[
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "status.phase",
        "status.podIP",
    ],
    validate: validate_pod,
    validate_update: pod_update_rules,
    defaults: default_pod,
    prepare_create: prepare_pod,
    admission: &[&crate::resources::priority::POD_PRIORITY],
    grace_period: pod_grace,
    returns_deleted_object: true,
    columns: pod_columns,
    cells: pod_cells,
    ..Resource::of::<Pod>()
};

fn default_pod(obj: &mut Value) {
    default_pod_spec(&mut obj["spec"]);
}

fn prepare_pod(obj: &mut Value) {
    // Upstream's pod strategy: a new pod is Pending, with its QoS class computed from the
    // containers' requests and limits.
    let qos = pod_qos(obj);
    obj["status"] = json!({"phase": "Pending", "qosClass": qos});
}

/// Upstream's `qos.GetPodQOS`, for cpu and memory.
fn pod_qos(pod: &Value) -> &'static str {
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in &containers {
        let req = &c["resources"]["requests"];
        let lim = &c["resources"]["limits"];
        for r in ["cpu", "memory"] {
            if !req[r].is_null() || !lim[r].is_null() {
                any = true;
            }
            // Requests default to limits, so only the limit must be set (and equal if both are).
            if lim[r].is_null() || (!req[r].is_null() && req[r] != lim[r]) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The part of upstream's `ValidatePod` a pod without a scheduler or kubelet needs.
fn validate_pod(pod: &Value) -> Vec<FieldError> {
    validate_pod_spec(&pod["spec"], "spec")
}

/// At least one container, each with a DNS-1123 label name (unique) and an image; also the
/// template of every workload (`path` = `spec.template.spec`).
pub(crate) fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("");
        let path = format!("{path}.containers[{i}]");
        if name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else {
            for why in check_name(NameRule::Dns1123Label, name) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, &why));
            }
            if !seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(format!("{path}.name"), name));
            }
        }
        if c["image"].as_str().unwrap_or("").trim().is_empty() {
            errs.push(FieldError::required(format!("{path}.image"), ""));
        }
    }
    let restart = spec["restartPolicy"].as_str().unwrap_or("Always");
    if !["Always", "OnFailure", "Never"].contains(&restart) {
        errs.push(FieldError::not_supported(
            format!("{path}.restartPolicy"),
            restart,
            &["Always", "OnFailure", "Never"],
        ));
    }
    errs
}

/// Upstream lets a pod's spec change only in a few fields once created; here: images, and
/// scheduling gates, which may only be removed (upstream's `validateOnlyDeletedSchedulingGates`;
/// the scheduler sets `spec.nodeName` through `pods/binding`, not through an update).
fn pod_update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    let blank = |spec: &Value| {
        let mut s = spec.clone();
        if let Some(cs) = s["containers"].as_array_mut() {
            for c in cs {
                c["image"] = json!("");
            }
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("schedulingGates");
        }
        s
    };
    let gates = |spec: &Value| -> Vec<String> {
        spec["schedulingGates"].as_array().into_iter().flatten().filter_map(|g| g["name"].as_str().map(String::from)).collect()
    };
    let (before, after) = (gates(&old["spec"]), gates(&new["spec"]));
    if let Some(added) = after.iter().find(|g| !before.contains(g)) {
        return vec![FieldError::forbidden(
            "spec.schedulingGates",
            &format!("only deletion is allowed, but found new scheduling gate '{added}'"),
        )];
    }
    if blank(&old["spec"]) != blank(&new["spec"]) {
        return vec![FieldError::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        )];
    }
    Vec::new()
}

/// Upstream's pod template defaults (`SetDefaults_PodSpec`, `SetDefaults_Container`), which
/// a pod and every workload template get, so `-o yaml` shows what upstream shows.
pub(crate) fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    for (field, value) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("securityContext", json!({})),
        ("schedulerName", json!("default-scheduler")),
    ] {
        if spec[field].is_null() {
            spec[field] = value;
        }
    }
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if c["terminationMessagePath"].is_null() {
                c["terminationMessagePath"] = json!("/dev/termination-log");
            }
            if c["terminationMessagePolicy"].is_null() {
                c["terminationMessagePolicy"] = json!("File");
            }
            if c["imagePullPolicy"].is_null() {
                // `:latest` (or no tag) pulls Always, anything else IfNotPresent.
                let image = c["image"].as_str().unwrap_or("");
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest = !image.contains('@') && tag.split_once(':').is_none_or(|(_, t)| t == "latest");
                c["imagePullPolicy"] = json!(if latest { "Always" } else { "IfNotPresent" });
            }
            if c["resources"].is_null() {
                c["resources"] = json!({});
            }
        }
    }
}

/// Upstream's pod grace period: only a pod on a node (with a kubelet to stop it) waits; the
/// request's period, else the pod's `terminationGracePeriodSeconds`.
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let on_node = !pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty();
    let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !on_node || finished {
        return 0;
    }
    requested.or(pod["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30).max(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos() {
        let p = json!({"spec": {"containers": [{"name": "a", "image": "x"}]}});
        assert_eq!(pod_qos(&p), "BestEffort");
        let p = json!({"spec": {"containers": [{"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        assert_eq!(pod_qos(&p), "Guaranteed");
        let p = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "1"}}}]}});
        assert_eq!(pod_qos(&p), "Burstable");
    }

    #[test]
    fn image_pull_policy_defaults_by_tag() {
        let mut spec =
            json!({"containers": [{"image": "nginx"}, {"image": "nginx:1.27"}, {"image": "reg:5000/x:latest"}]});
        default_pod_spec(&mut spec);
        let got: Vec<&str> =
            spec["containers"].as_array().unwrap().iter().map(|c| c["imagePullPolicy"].as_str().unwrap()).collect();
        assert_eq!(got, ["Always", "IfNotPresent", "Always"]);
    }

    #[test]
    fn scheduling_gates_may_only_be_removed() {
        let gated = |gates: &[&str]| {
            let gates: Vec<Value> = gates.iter().map(|g| json!({"name": g})).collect();
            json!({"spec": {"schedulingGates": gates, "containers": [{"name": "c", "image": "x"}]}})
        };
        assert!(pod_update_rules(&gated(&["a", "b"]), &gated(&["b"])).is_empty());
        assert!(pod_update_rules(&gated(&["a"]), &json!({"spec": {"containers": [{"name": "c", "image": "x"}]}})).is_empty());
        let errs = pod_update_rules(&gated(&["a"]), &gated(&["a", "c"]));
        assert_eq!(
            (errs[0].field.as_str(), errs[0].detail.as_str()),
            ("spec.schedulingGates", "Forbidden: only deletion is allowed, but found new scheduling gate 'c'")
        );
        // Anything else in the spec stays immutable, gates or not.
        let mut other = gated(&["a"]);
        other["spec"]["containers"][0]["name"] = json!("d");
        assert_eq!(pod_update_rules(&gated(&["a"]), &other)[0].field, "spec");
    }

    #[test]
    fn only_a_pod_on_a_node_waits() {
        let pending = json!({"spec": {}});
        assert_eq!(pod_grace(&pending, Some(30)), 0);
        let running = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        assert_eq!((pod_grace(&running, None), pod_grace(&running, Some(0))), (5, 0));
    }
}
