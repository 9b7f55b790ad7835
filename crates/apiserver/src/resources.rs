//! What the server knows about each resource: its names (for URLs, discovery and errors),
//! whether it is namespaced, how to check a body against its typed schema (`k8s-openapi`),
//! what create fills in, how it validates, and its `kubectl get` table columns.

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Pod, Secret, Service, ServiceAccount};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::status::FieldError;
use crate::table::Column;

pub struct Resource {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// URL and storage segment: `/registry/<plural>/...`, `/api/v1/.../<plural>`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Discovery categories (`kubectl get all` lists the `all` category).
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource: the main resource cannot change the status, and the
    /// subresource changes nothing else.
    pub has_status: bool,
    /// Fields a list or watch can select on besides metadata.name/namespace (upstream's
    /// field label conversions for the kind).
    pub selectable: &'static [&'static str],
    /// Decodes a body through the typed struct and back, so wrong field types are a 400 and
    /// unknown fields are dropped, as upstream's decoder does.
    pub normalize: fn(Value) -> Result<Value, String>,
    /// Type-specific validation beyond the name (upstream's `ValidateX`).
    pub validate: fn(&Value) -> Vec<FieldError>,
    /// Fills in what the server owns on create (upstream's `PrepareForCreate`).
    pub prepare_create: fn(&mut Value),
    pub name_rule: NameRule,
    pub columns: fn() -> Vec<Column>,
    pub cells: fn(&Value) -> Vec<Value>,
}

#[derive(Clone, Copy)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn typed<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

fn no_validation(_: &Value) -> Vec<FieldError> {
    Vec::new()
}
fn nothing_to_prepare(_: &mut Value) {}

/// Every resource served under `/api/v1`, in discovery order.
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
        selectable: &["status.phase"],
        normalize: typed::<Namespace>,
        validate: no_validation,
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
        selectable: &[],
        normalize: typed::<ConfigMap>,
        validate: validate_data_keys,
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
        selectable: &["type"],
        normalize: typed::<Secret>,
        validate: validate_data_keys,
        prepare_create: prepare_secret,
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
        selectable: &[],
        normalize: typed::<ServiceAccount>,
        validate: no_validation,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::name_age_columns,
        cells: crate::table::name_age_cells,
    },
    // Services are stored and listed, but no cluster IP is allocated yet: the body is kept
    // as given (see README "what is missing").
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
        selectable: &[],
        normalize: typed::<Service>,
        validate: no_validation,
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Label,
        columns: crate::table::name_age_columns,
        cells: crate::table::name_age_cells,
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
        prepare_create: nothing_to_prepare,
        name_rule: NameRule::Dns1123Subdomain,
        columns: crate::table::event_columns,
        cells: crate::table::event_cells,
    },
];

pub fn by_plural(plural: &str) -> Option<&'static Resource> {
    CORE_V1.iter().find(|r| r.plural == plural)
}

fn prepare_namespace(obj: &mut Value) {
    // Upstream's namespace strategy: phase Active and the `kubernetes` finalizer.
    obj["spec"] = json!({"finalizers": ["kubernetes"]});
    obj["status"] = json!({"phase": "Active"});
}

fn prepare_secret(obj: &mut Value) {
    if obj.get("type").and_then(Value::as_str).unwrap_or("").is_empty() {
        obj["type"] = json!("Opaque");
    }
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

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// Upstream's `IsDNS1123Label`/`IsDNS1123Subdomain`: the list of reasons `value` fails.
pub fn check_name(rule: NameRule, value: &str) -> Vec<String> {
    let mut why = Vec::new();
    match rule {
        NameRule::Dns1123Label => {
            if value.len() > 63 {
                why.push("must be no more than 63 characters".to_string());
            }
            if !is_label(value) {
                why.push(DNS1123_LABEL_MSG.to_string());
            }
        }
        NameRule::Dns1123Subdomain => {
            if value.len() > 253 {
                why.push("must be no more than 253 characters".to_string());
            }
            if !value.split('.').all(is_label) {
                why.push(DNS1123_SUBDOMAIN_MSG.to_string());
            }
        }
    }
    why
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

/// The part of upstream's `ValidatePod` a pod without a scheduler or kubelet needs: at least
/// one container, each with a DNS-1123 label name (unique) and an image.
fn validate_pod(pod: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let containers = pod["spec"]["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        errs.push(FieldError::required("spec.containers", ""));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c["name"].as_str().unwrap_or("");
        let path = format!("spec.containers[{i}]");
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
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name(NameRule::Dns1123Subdomain, "a.b-c").is_empty());
        assert_eq!(check_name(NameRule::Dns1123Subdomain, "Bad_Name").len(), 1);
        assert_eq!(check_name(NameRule::Dns1123Label, "a.b").len(), 1);
        assert_eq!(check_name(NameRule::Dns1123Label, &"a".repeat(64)).len(), 1);
    }

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
    fn typed_decoding_rejects_wrong_types_and_drops_unknown_fields() {
        let v = (by_plural("configmaps").unwrap().normalize)(
            json!({"metadata": {"name": "a"}, "data": {"k": "v"}, "bogus": 1}),
        )
        .unwrap();
        assert!(v.get("bogus").is_none());
        assert!((by_plural("configmaps").unwrap().normalize)(json!({"data": {"k": 1}})).is_err());
    }
}
