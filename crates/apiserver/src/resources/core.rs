//! The legacy core group, `/api/v1`.

use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service, ServiceAccount};
use serde_json::{json, Value};

use super::{check_name, no_defaults, no_update_rules, no_validation, nothing_to_prepare, typed, NameRule, Resource};
use crate::status::FieldError;

/// Every resource served under `/api/v1`.
pub static CORE_V1: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        has_status: true,
        has_scale: false,
        generation: false,
        selectable: &["status.phase"],
        normalize: typed::<Namespace>,
        validate: no_validation,
        validate_update: no_update_rules,
        defaults: no_defaults,
        prepare_create: prepare_namespace,
        name_rule: NameRule::Dns1123Label,
        columns: crate::table::namespace_columns,
        cells: crate::table::namespace_cells,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        has_status: false,
        has_scale: false,
        generation: false,
        selectable: &[],
        normalize: typed::<ConfigMap>,
        validate: validate_configmap,
        validate_update: no_update_rules,
        defaults: no_defaults,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::configmap_columns,
        cells: crate::table::configmap_cells,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        has_status: false,
        has_scale: false,
        generation: false,
        selectable: &["type"],
        normalize: typed::<Secret>,
        validate: validate_secret,
        validate_update: no_update_rules,
        defaults: default_secret,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::secret_columns,
        cells: crate::table::secret_cells,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: &["all"],
        has_status: true,
        has_scale: false,
        generation: false,
        selectable: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
        ],
        normalize: typed::<Pod>,
        validate: validate_pod,
        validate_update: pod_update_rules,
        defaults: default_pod,
        prepare_create: prepare_pod,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::pod_columns,
        cells: crate::table::pod_cells,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        has_status: false,
        has_scale: false,
        generation: false,
        selectable: &[],
        normalize: typed::<ServiceAccount>,
        validate: no_validation,
        validate_update: no_update_rules,
        defaults: no_defaults,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::name_age_columns,
        cells: crate::table::name_age_cells,
    },
    // A service's cluster IP comes from `--service-cluster-ip-range` (see `service_ips`).
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: &["all"],
        has_status: true,
        has_scale: false,
        generation: false,
        selectable: &[],
        normalize: typed::<Service>,
        validate: validate_service,
        validate_update: service_update_rules,
        defaults: default_service,
        prepare_create: prepare_service,
        name_rule: NameRule::Dns1123Label,
        columns: crate::table::service_columns,
        cells: crate::table::service_cells,
    },
    // Events are what `kubectl describe` looks up for an object (by involvedObject fields).
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        has_status: false,
        has_scale: false,
        generation: false,
        selectable: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "type",
        ],
        normalize: typed::<Event>,
        validate: no_validation,
        validate_update: no_update_rules,
        defaults: no_defaults,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::event_columns,
        cells: crate::table::event_cells,
    },
    // Nodes are registered by kubelets (none yet) and read by the scheduler; their status
    // is the kubelet's heartbeat.
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        has_status: true,
        has_scale: false,
        generation: false,
        selectable: &["spec.unschedulable"],
        normalize: typed::<Node>,
        validate: no_validation,
        validate_update: no_update_rules,
        defaults: no_defaults,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::node_columns,
        cells: crate::table::node_cells,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        has_status: false,
        has_scale: false,
        generation: false,
        selectable: &[],
        normalize: typed::<Endpoints>,
        validate: no_validation,
        validate_update: no_update_rules,
        defaults: no_defaults,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::endpoints_columns,
        cells: crate::table::endpoints_cells,
    },
];

fn prepare_namespace(obj: &mut Value) {
    // Upstream's namespace strategy: phase Active and the `kubernetes` finalizer.
    obj["spec"] = json!({"finalizers": ["kubernetes"]});
    obj["status"] = json!({"phase": "Active"});
}

fn default_secret(obj: &mut Value) {
    if obj.get("type").and_then(Value::as_str).unwrap_or("").is_empty() {
        obj["type"] = json!("Opaque");
    }
}

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

/// Upstream's `MaxSecretSize`: the most data a ConfigMap or a Secret may hold.
const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Keys, and at most 1 MiB of `data` and `binaryData` together (upstream reports that on the
/// whole object, whose field path prints as `[]`).
fn validate_configmap(cm: &Value) -> Vec<FieldError> {
    let mut errs = validate_data_keys(cm);
    let text = cm["data"].as_object().into_iter().flatten().map(|(_, v)| v.as_str().map_or(0, str::len));
    let binary = cm["binaryData"].as_object().into_iter().flatten().map(|(_, v)| decoded_len(v));
    if text.chain(binary).sum::<usize>() > MAX_DATA_BYTES {
        errs.push(FieldError::too_long("[]", MAX_DATA_BYTES));
    }
    errs
}

/// Keys, and at most 1 MiB of data (`stringData` counts, as upstream merges it into `data`
/// before validating).
fn validate_secret(secret: &Value) -> Vec<FieldError> {
    let mut errs = validate_data_keys(secret);
    let data = secret["data"].as_object();
    let strings = secret["stringData"].as_object();
    let mut total: usize = strings.into_iter().flatten().map(|(_, v)| v.as_str().map_or(0, str::len)).sum();
    for (k, v) in data.into_iter().flatten() {
        if strings.is_none_or(|s| !s.contains_key(k)) {
            total += decoded_len(v);
        }
    }
    if total > MAX_DATA_BYTES {
        errs.push(FieldError::too_long("data", MAX_DATA_BYTES));
    }
    errs
}

/// The length of the bytes a base64 JSON string stands for.
fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    let padding = s.bytes().rev().take_while(|&b| b == b'=').count();
    (s.len() / 4 * 3).saturating_sub(padding)
}

/// ConfigMap and Secret keys: upstream's `IsConfigMapKey`.
fn validate_data_keys(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["data", "binaryData", "stringData"] {
        if let Some(m) = obj.get(field).and_then(Value::as_object) {
            for k in m.keys() {
                let ok = !k.is_empty()
                    && k.len() <= 253
                    && k != "."
                    && k != ".."
                    && !k.starts_with("..")
                    && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
                if !ok {
                    errs.push(FieldError::invalid(
                        format!("{field}[{k}]"),
                        k,
                        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
                    ));
                }
            }
        }
    }
    errs
}

/// The part of upstream's `ValidatePod` a pod without a scheduler or kubelet needs.
fn validate_pod(pod: &Value) -> Vec<FieldError> {
    validate_pod_spec(&pod["spec"], "spec")
}

/// At least one container, each with a DNS-1123 label name (unique) and an image; also the
/// template of every workload (`path` = `spec.template.spec`).
pub(super) fn validate_pod_spec(spec: &Value, path: &str) -> Vec<FieldError> {
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
                errs.push(FieldError {
                    kind: "FieldValueDuplicate",
                    field: format!("{path}.name"),
                    detail: format!("Duplicate value: {}", serde_json::to_string(name).unwrap_or_default()),
                });
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

/// Upstream lets a pod's spec change only in a few fields once created; here: images (the
/// scheduler sets `spec.nodeName` through `pods/binding`, not through an update).
fn pod_update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    let blank = |spec: &Value| {
        let mut s = spec.clone();
        if let Some(cs) = s["containers"].as_array_mut() {
            for c in cs {
                c["image"] = json!("");
            }
        }
        s
    };
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
pub(super) fn default_pod_spec(spec: &mut Value) {
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

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Upstream's service defaults (`SetDefaults_Service`): type ClusterIP, session affinity
/// None, TCP ports whose targetPort is the port. The cluster IP itself is allocated by the
/// registry (`service_ips`), in the same transaction that stores the service.
fn default_service(svc: &mut Value) {
    let spec = &mut svc["spec"];
    if !spec.is_object() {
        *spec = json!({});
    }
    if spec["type"].is_null() {
        spec["type"] = json!("ClusterIP");
    }
    if spec["sessionAffinity"].is_null() {
        spec["sessionAffinity"] = json!("None");
    }
    let external_name = spec["type"] == "ExternalName";
    if !external_name && spec["internalTrafficPolicy"].is_null() {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    for p in spec["ports"].as_array_mut().into_iter().flatten() {
        if p["protocol"].is_null() {
            p["protocol"] = json!("TCP");
        }
        if p["targetPort"].is_null() {
            p["targetPort"] = p["port"].clone();
        }
    }
}

fn prepare_service(svc: &mut Value) {
    svc["status"] = json!({"loadBalancer": {}});
}

/// The part of upstream's `ValidateService` for the fields served: type, ports, cluster IP.
fn validate_service(svc: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec = &svc["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, SERVICE_TYPES));
    }
    let cluster_ip = spec["clusterIP"].as_str().unwrap_or("");
    let headless = cluster_ip == "None";
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && ty != "ExternalName" && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if ty == "ExternalName" && spec["externalName"].as_str().unwrap_or("").is_empty() {
        errs.push(FieldError::required("spec.externalName", ""));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        } else if !name.is_empty() {
            for why in check_name(NameRule::Dns1123Label, name) {
                errs.push(FieldError::invalid(format!("{path}.name"), name, &why));
            }
            if !names.insert(name.to_string()) {
                errs.push(FieldError {
                    kind: "FieldValueDuplicate",
                    field: format!("{path}.name"),
                    detail: format!("Duplicate value: {name:?}"),
                });
            }
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            errs.push(FieldError::invalid_value(
                format!("{path}.port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !["SCTP", "TCP", "UDP"].contains(&proto) {
            errs.push(FieldError::not_supported(format!("{path}.protocol"), proto, &["SCTP", "TCP", "UDP"]));
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<std::net::IpAddr>().is_err() {
        errs.push(FieldError::invalid_value(
            "spec.clusterIPs[0]",
            &json!(cluster_ip),
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    errs
}

/// A service's cluster IP may not change once set (upstream's `ValidateServiceUpdate`); the
/// registry copies it from the stored object when an update leaves it out.
fn service_update_rules(old: &Value, new: &Value) -> Vec<FieldError> {
    if old["spec"]["clusterIP"] != new["spec"]["clusterIP"] {
        return vec![FieldError::invalid_value(
            "spec.clusterIPs[0]",
            &new["spec"]["clusterIPs"],
            "may not change once set",
        )];
    }
    Vec::new()
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
    fn data_is_at_most_one_mebibyte() {
        let mib = "a".repeat(MAX_DATA_BYTES);
        assert!(validate_configmap(&json!({"data": {"a": mib}})).is_empty());
        let errs = validate_configmap(&json!({"data": {"a": mib}, "binaryData": {"b": "AA=="}}));
        assert_eq!((errs[0].field.as_str(), errs[0].kind), ("[]", "FieldValueTooLong"));
        // Secret data counts decoded: 4 base64 characters are 3 bytes.
        let b64 = "QUJD".repeat(MAX_DATA_BYTES / 3);
        assert!(validate_secret(&json!({"data": {"a": b64}})).is_empty());
        let errs = validate_secret(&json!({"data": {"a": b64}, "stringData": {"b": "xy"}}));
        assert_eq!(errs[0].detail, "Too long: may not be more than 1048576 bytes");
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
    fn services_need_ports_and_keep_their_cluster_ip() {
        let errs = validate_service(&json!({"spec": {"type": "ClusterIP"}}));
        assert_eq!(errs[0].field, "spec.ports");
        assert!(validate_service(&json!({"spec": {"clusterIP": "None"}})).is_empty());
        let old = json!({"spec": {"clusterIP": "10.0.0.5", "clusterIPs": ["10.0.0.5"]}});
        let new = json!({"spec": {"clusterIP": "10.0.0.6", "clusterIPs": ["10.0.0.6"]}});
        assert_eq!(
            service_update_rules(&old, &new)[0].detail,
            r#"Invalid value: ["10.0.0.6"]: may not change once set"#
        );
    }
}
