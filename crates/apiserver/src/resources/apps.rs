//! `apps/v1`: the workload kinds. Each has a pod template, a selector that must match it
//! (and never changes), a generation bumped by spec changes, a status subresource, and
//! (all but daemonsets) a scale subresource over `spec.replicas`.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use serde_json::{json, Value};

use super::core::pod::{default_pod_spec, validate_pod_spec};
use super::{selector_unchanged, validate_replicas, validate_workload_selector, Resource, Scope, Subresource};
use crate::status::FieldError;
use crate::table::{age, col, name, Column, AGE, NAME};

/// What every workload kind shares.
const fn workload<T>() -> Resource
where
    T: k8s_openapi::Resource + serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
    T::Scope: Scope,
{
    Resource {
        categories: &["all"],
        subresources: &[Subresource::Scale, Subresource::Status],
        generation: true,
        validate_update: selector_unchanged,
        ..Resource::of::<T>()
    }
}

pub static DAEMONSET: Resource = Resource {
    short_names: &["ds"],
    subresources: &[Subresource::Status],
    validate: validate_daemonset,
    defaults: default_daemonset,
    prepare_create: prepare_daemonset,
    columns: daemonset_columns,
    cells: daemonset_cells,
    ..workload::<DaemonSet>()
};

pub static DEPLOYMENT: Resource = Resource {
    short_names: &["deploy"],
    validate: validate_deployment,
    defaults: default_deployment,
    prepare_create: prepare_deployment,
    columns: deployment_columns,
    cells: deployment_cells,
    ..workload::<Deployment>()
};

pub static REPLICASET: Resource = Resource {
    short_names: &["rs"],
    validate: validate_replicaset,
    defaults: default_replicaset,
    prepare_create: prepare_replicaset,
    columns: replicaset_columns,
    cells: replicaset_cells,
    ..workload::<ReplicaSet>()
};

pub static STATEFULSET: Resource = Resource {
    short_names: &["sts"],
    validate: validate_statefulset,
    validate_update: statefulset_update_rules,
    defaults: default_statefulset,
    prepare_create: prepare_statefulset,
    columns: statefulset_columns,
    cells: statefulset_cells,
    ..workload::<StatefulSet>()
};

pub static V1: &[&Resource] = &[&DAEMONSET, &DEPLOYMENT, &REPLICASET, &STATEFULSET];

fn set_default(obj: &mut Value, field: &str, value: Value) {
    if obj[field].is_null() {
        obj[field] = value;
    }
}

fn default_deployment(d: &mut Value) {
    let spec = &mut d["spec"];
    set_default(spec, "replicas", json!(1));
    set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
    if spec["strategy"]["type"] == "RollingUpdate" {
        set_default(&mut spec["strategy"], "rollingUpdate", json!({"maxUnavailable": "25%", "maxSurge": "25%"}));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    default_pod_spec(&mut spec["template"]["spec"]);
}

fn prepare_deployment(d: &mut Value) {
    d["status"] = json!({});
}

fn default_replicaset(rs: &mut Value) {
    set_default(&mut rs["spec"], "replicas", json!(1));
    default_pod_spec(&mut rs["spec"]["template"]["spec"]);
}

fn prepare_replicaset(rs: &mut Value) {
    rs["status"] = json!({"replicas": 0});
}

fn default_statefulset(s: &mut Value) {
    let spec = &mut s["spec"];
    set_default(spec, "replicas", json!(1));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "updateStrategy", json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({"whenDeleted": "Retain", "whenScaled": "Retain"}));
    default_pod_spec(&mut spec["template"]["spec"]);
}

fn prepare_statefulset(s: &mut Value) {
    s["status"] = json!({"replicas": 0, "availableReplicas": 0});
}

fn default_daemonset(ds: &mut Value) {
    let spec = &mut ds["spec"];
    set_default(
        spec,
        "updateStrategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    );
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_pod_spec(&mut spec["template"]["spec"]);
}

fn prepare_daemonset(ds: &mut Value) {
    ds["status"] =
        json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0});
}

fn validate_template(obj: &Value, empty_selector_msg: &str) -> Vec<FieldError> {
    let mut errs = validate_workload_selector(obj, empty_selector_msg);
    errs.extend(validate_pod_spec(&obj["spec"]["template"]["spec"], "spec.template.spec"));
    errs
}

fn validate_deployment(d: &Value) -> Vec<FieldError> {
    let mut errs = validate_replicas(d);
    errs.extend(validate_template(d, "empty selector is invalid for deployment"));
    let restart = d["spec"]["template"]["spec"]["restartPolicy"].as_str().unwrap_or("Always");
    if restart != "Always" {
        errs.push(FieldError::not_supported("spec.template.spec.restartPolicy", restart, &["Always"]));
    }
    errs
}

fn validate_replicaset(rs: &Value) -> Vec<FieldError> {
    let mut errs = validate_replicas(rs);
    errs.extend(validate_template(rs, "empty selector is invalid for deployment"));
    errs
}

fn validate_statefulset(s: &Value) -> Vec<FieldError> {
    let mut errs = validate_replicas(s);
    errs.extend(validate_template(s, "empty selector is invalid for statefulset"));
    errs
}

fn validate_daemonset(ds: &Value) -> Vec<FieldError> {
    validate_template(ds, "empty selector is not valid for daemonset.")
}

/// Upstream's `ValidateStatefulSetUpdate`: only some of the spec may change.
fn statefulset_update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    let rest = |s: &Value| {
        let mut spec = s["spec"].clone();
        if let Some(m) = spec.as_object_mut() {
            for f in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ] {
                m.remove(f);
            }
        }
        spec
    };
    if rest(old) != rest(new) {
        return vec![FieldError::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )];
    }
    selector_unchanged(old, new)
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn containers(o: &Value) -> Value {
    let cs = o["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
    json!(cs.iter().map(|c| c["name"].as_str().unwrap_or("")).collect::<Vec<_>>().join(","))
}

fn images(o: &Value) -> Value {
    let cs = o["spec"]["template"]["spec"]["containers"].as_array().cloned().unwrap_or_default();
    json!(cs.iter().map(|c| c["image"].as_str().unwrap_or("")).collect::<Vec<_>>().join(","))
}

/// Upstream's `metav1.FormatLabelSelector`: `<none>` when empty.
fn selector(o: &Value) -> Value {
    let s = crate::selector::LabelSelector::from_api(&o["spec"]["selector"]).map(|s| s.to_string()).unwrap_or_default();
    json!(if s.is_empty() { "<none>".to_string() } else { s })
}

const CONTAINERS: Column = col("Containers", "string", "", "Names of each container in the template.", 1);
const IMAGES: Column = col("Images", "string", "", "Images referenced by each container in the template.", 1);
const SELECTOR: Column =
    col("Selector", "string", "", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1);

fn deployment_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Ready", "string", "", "Number of the pod with ready state", 0),
        col("Up-to-date", "string", "", "Total number of non-terminating pods targeted by this deployment that have the desired template spec.", 0),
        col("Available", "string", "", "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]
}

fn deployment_cells(o: &Value) -> Vec<Value> {
    let (spec, status) = (&o["spec"], &o["status"]);
    vec![
        name(o),
        json!(format!("{}/{}", status["readyReplicas"].as_i64().unwrap_or(0), spec["replicas"].as_i64().unwrap_or(0))),
        int(&status["updatedReplicas"]),
        int(&status["availableReplicas"]),
        age(o),
        containers(o),
        images(o),
        selector(o),
    ]
}

fn replicaset_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Desired", "integer", "", "Number of desired pods.", 0),
        col("Current", "integer", "", "Replicas is the most recently observed number of non-terminating pods.", 0),
        col(
            "Ready",
            "integer",
            "",
            "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
            0,
        ),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]
}

fn replicaset_cells(o: &Value) -> Vec<Value> {
    vec![
        name(o),
        int(&o["spec"]["replicas"]),
        int(&o["status"]["replicas"]),
        int(&o["status"]["readyReplicas"]),
        age(o),
        containers(o),
        images(o),
        selector(o),
    ]
}

fn statefulset_columns() -> Vec<Column> {
    vec![NAME, col("Ready", "string", "", "Number of the pod with ready state", 0), AGE, CONTAINERS, IMAGES]
}

fn statefulset_cells(o: &Value) -> Vec<Value> {
    vec![
        name(o),
        json!(format!(
            "{}/{}",
            o["status"]["readyReplicas"].as_i64().unwrap_or(0),
            o["spec"]["replicas"].as_i64().unwrap_or(0)
        )),
        age(o),
        containers(o),
        images(o),
    ]
}

fn daemonset_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Desired", "integer", "", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).", 0),
        col("Current", "integer", "", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.", 0),
        col("Ready", "integer", "", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.", 0),
        col("Up-to-date", "integer", "", "The total number of nodes that are running updated daemon pod", 0),
        col("Available", "integer", "", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)", 0),
        col("Node Selector", "string", "", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node.", 0),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]
}

fn daemonset_cells(o: &Value) -> Vec<Value> {
    let st = &o["status"];
    // Upstream's `labels.FormatLabels`: k=v pairs sorted by key, `<none>` when empty.
    let node_selector = o["spec"]["template"]["spec"]["nodeSelector"]
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        name(o),
        int(&st["desiredNumberScheduled"]),
        int(&st["currentNumberScheduled"]),
        int(&st["numberReady"]),
        int(&st["updatedNumberScheduled"]),
        int(&st["numberAvailable"]),
        json!(node_selector),
        age(o),
        containers(o),
        images(o),
        selector(o),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_rows_and_defaults() {
        let mut d = json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}});
        default_deployment(&mut d);
        prepare_deployment(&mut d);
        assert!(validate_deployment(&d).is_empty());
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let cells = deployment_cells(&d);
        assert_eq!(cells[1], "0/1");
        assert_eq!(&cells[5..], &[json!("nginx"), json!("nginx:1.27"), json!("app=web")]);
    }

    #[test]
    fn statefulset_spec_is_mostly_immutable() {
        let old = json!({"spec": {"replicas": 1, "serviceName": "a", "selector": {"matchLabels": {"a": "b"}}}});
        let scaled = json!({"spec": {"replicas": 3, "serviceName": "a", "selector": {"matchLabels": {"a": "b"}}}});
        assert!(statefulset_update_rules(&old, &scaled).is_empty());
        let renamed = json!({"spec": {"replicas": 1, "serviceName": "b", "selector": {"matchLabels": {"a": "b"}}}});
        assert_eq!(statefulset_update_rules(&old, &renamed)[0].field, "spec");
    }
}
