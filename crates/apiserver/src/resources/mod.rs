//! What the server knows about each resource: its names (for URLs, discovery and errors),
//! whether it is namespaced, how to check a body against its typed schema (`k8s-openapi`),
//! what create fills in, how it validates, and its `kubectl get` table columns.
//!
//! One module per API group (`core` is the legacy group under `/api/v1`); [`GROUPS`] lists
//! them all, in upstream's discovery order.

mod apps;
mod coordination;
mod core;
mod discovery;
mod rbac;
pub mod service_ips;

pub use self::core::CORE_V1;
pub use apps::APPS_V1;
pub use coordination::COORDINATION_V1;
pub use discovery::DISCOVERY_V1;
pub use rbac::RBAC_V1;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::status::FieldError;
use crate::table::Column;

/// One served resource; the generic registry (`storage`), the routes and discovery (`http`)
/// and the printers (`table`) all work from this entry rather than per-kind code.
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
    /// Has a `/scale` subresource (`autoscaling/v1` Scale over `spec.replicas`).
    pub has_scale: bool,
    /// `metadata.generation` starts at 1 and is bumped by every change of the spec (and by
    /// the start of a graceful deletion), as upstream's strategies do for these kinds.
    pub generation: bool,
    /// Fields a list or watch can select on besides metadata.name/namespace (upstream's
    /// field label conversions for the kind).
    pub selectable: &'static [&'static str],
    /// Decodes a body through the typed struct and back, so wrong field types are a 400 and
    /// unknown fields are dropped, as upstream's decoder does.
    pub normalize: fn(Value) -> Result<Value, String>,
    /// Type-specific validation beyond the name (upstream's `ValidateX`).
    pub validate: fn(&Value) -> Vec<FieldError>,
    /// What an update may not change (upstream's `ValidateXUpdate`): `(old, new)`.
    pub validate_update: fn(&Value, &Value) -> Vec<FieldError>,
    /// Upstream's defaulting (`SetDefaults_<Kind>`): fills in what a client left out, on
    /// every decoded write (create, update, and the body a patch produces), so a PUT of a
    /// minimal manifest compares equal to the defaulted object stored at create.
    pub defaults: fn(&mut Value),
    /// Fills in what the server owns on create (upstream's `PrepareForCreate`): status and
    /// the like; runs after `defaults`.
    pub prepare_create: fn(&mut Value),
    pub name_rule: NameRule,
    pub columns: fn() -> Vec<Column>,
    pub cells: fn(&Value) -> Vec<Value>,
}

#[derive(Clone, Copy)]
pub enum NameRule {
    Dns1123Subdomain,
    Dns1123Label,
    /// Upstream's `path.ValidatePathSegmentName` (RBAC objects: anything but `.`, `..`, `/`, `%`).
    PathSegment,
}

impl Resource {
    /// The resource as errors name it: `configmaps`, `deployments.apps`.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The kind as `Invalid` errors name it: `Pod`, `Deployment.apps`.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// The resources of one group-version, as served under `/api/v1` or `/apis/<group>/<version>`.
pub struct GroupVersion {
    pub group: &'static str,
    pub version: &'static str,
    pub resources: &'static [Resource],
}

/// Every served group-version: the legacy core group first, then the named groups in
/// upstream's discovery order.
pub static GROUPS: &[GroupVersion] = &[
    GroupVersion { group: "", version: "v1", resources: CORE_V1 },
    GroupVersion { group: "apps", version: "v1", resources: APPS_V1 },
    GroupVersion { group: "rbac.authorization.k8s.io", version: "v1", resources: RBAC_V1 },
    GroupVersion { group: "coordination.k8s.io", version: "v1", resources: COORDINATION_V1 },
    GroupVersion { group: "discovery.k8s.io", version: "v1", resources: DISCOVERY_V1 },
];

/// A core (`/api/v1`) resource by its plural.
pub fn by_plural(plural: &str) -> Option<&'static Resource> {
    CORE_V1.iter().find(|r| r.plural == plural)
}

/// A resource of any group by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    GROUPS
        .iter()
        .filter(|g| g.group == group && g.version == version)
        .flat_map(|g| g.resources.iter())
        .find(|r| r.plural == plural)
}

/// Every served resource of every group.
pub fn all() -> impl Iterator<Item = &'static Resource> {
    GROUPS.iter().flat_map(|g| g.resources.iter())
}

fn typed<T: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let t: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(t).map_err(|e| e.to_string())
}

fn no_validation(_: &Value) -> Vec<FieldError> {
    Vec::new()
}
fn no_update_rules(_: &Value, _: &Value) -> Vec<FieldError> {
    Vec::new()
}
fn nothing_to_prepare(_: &mut Value) {}
fn no_defaults(_: &mut Value) {}

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// Upstream's `IsDNS1123Label`/`IsDNS1123Subdomain`/`ValidatePathSegmentName`: the list of
/// reasons `value` fails.
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
        NameRule::PathSegment => {
            if value == "." || value == ".." {
                why.push(format!("may not be '{value}'"));
            }
            for bad in ["/", "%"] {
                if value.contains(bad) {
                    why.push(format!("may not contain '{bad}'"));
                }
            }
        }
    }
    why
}

/// Upstream's `ValidateLabelSelector` plus the workload rule that the selector must be
/// non-empty and select the pod template's labels (`ValidateDeploymentSpec` and its kin).
fn validate_workload_selector(obj: &Value, empty_msg: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sel = &obj["spec"]["selector"];
    let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty())
        && sel["matchExpressions"].as_array().is_none_or(|a| a.is_empty());
    let labels = &obj["spec"]["template"]["metadata"]["labels"];
    let mismatch = || {
        FieldError::invalid_value(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        )
    };
    // The typed round trip turns a missing selector into `{}`: both count as not given, and
    // (as upstream's nil selector, which selects nothing) match no template either.
    if sel.as_object().is_none_or(|m| m.is_empty()) {
        errs.push(FieldError::required("spec.selector", ""));
        errs.push(mismatch());
        return errs;
    }
    if empty {
        errs.push(FieldError::invalid_value("spec.selector", sel, empty_msg));
        return errs;
    }
    match crate::selector::LabelSelector::from_api(sel) {
        Ok(s) if s.matches(labels) => {}
        Ok(_) => errs.push(mismatch()),
        Err(why) => errs.push(FieldError::invalid_value("spec.selector", sel, &why)),
    }
    errs
}

/// The error for a field at dotted `path` that an update changed though it may not, with
/// upstream's per-field `message` ("field is immutable", "cannot change roleRef").
fn immutable(old: &Value, new: &Value, path: &str, message: &str) -> Vec<FieldError> {
    let at = |v: &Value| path.split('.').fold(v.clone(), |v, k| v[k].clone());
    let (before, after) = (at(old), at(new));
    if before != after {
        return vec![FieldError::invalid_value(path, &after, message)];
    }
    Vec::new()
}

/// A workload's selector cannot change once created (apps/v1).
fn selector_unchanged(old: &Value, new: &Value) -> Vec<FieldError> {
    immutable(old, new, "spec.selector", "field is immutable")
}

/// `spec.replicas` must not be negative (upstream's `ValidateNonnegativeField`).
fn validate_replicas(obj: &Value) -> Vec<FieldError> {
    match obj["spec"]["replicas"].as_i64() {
        Some(n) if n < 0 => vec![FieldError::invalid_value(
            "spec.replicas",
            &obj["spec"]["replicas"],
            "must be greater than or equal to 0",
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(check_name(NameRule::Dns1123Subdomain, "a.b-c").is_empty());
        assert_eq!(check_name(NameRule::Dns1123Subdomain, "Bad_Name").len(), 1);
        assert_eq!(check_name(NameRule::Dns1123Label, "a.b").len(), 1);
        assert_eq!(check_name(NameRule::Dns1123Label, &"a".repeat(64)).len(), 1);
        assert!(check_name(NameRule::PathSegment, "system:admin").is_empty());
        assert_eq!(check_name(NameRule::PathSegment, "a/b"), ["may not contain '/'"]);
    }

    #[test]
    fn every_resource_is_found_by_its_group_and_plural() {
        for g in GROUPS {
            for r in g.resources {
                assert_eq!((r.group, r.version), (g.group, g.version), "{}", r.plural);
                assert!(std::ptr::eq(find(g.group, g.version, r.plural).unwrap(), r));
            }
        }
        assert!(find("apps", "v1", "pods").is_none());
    }

    #[test]
    fn workload_selectors_must_match_the_template() {
        let d = |sel: Value, labels: Value| json!({"spec": {"selector": sel, "template": {"metadata": {"labels": labels}}}});
        assert!(
            validate_workload_selector(&d(json!({"matchLabels": {"app": "a"}}), json!({"app": "a"})), "").is_empty()
        );
        let errs = validate_workload_selector(&d(json!({"matchLabels": {"app": "a"}}), json!({"app": "b"})), "");
        assert_eq!(errs[0].field, "spec.template.metadata.labels");
        assert_eq!(errs[0].detail, r#"Invalid value: {"app":"b"}: `selector` does not match template `labels`"#);
        assert_eq!(validate_workload_selector(&json!({"spec": {}}), "")[0].detail, "Required value");
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
