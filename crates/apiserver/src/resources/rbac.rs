//! `rbac.authorization.k8s.io/v1`: roles and bindings. They are stored and validated now;
//! the authorizer that enforces them comes later (today only `system:masters` is allowed).

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::{json, Value};

use super::{NameRule, Resource, Scope};
use crate::status::FieldError;
use crate::table::{col, name, Column, NAME};

/// What every RBAC kind shares: names are path segments, and the printers of roles.
const fn rbac<T>() -> Resource
where
    T: k8s_openapi::Resource + serde::de::DeserializeOwned + serde::Serialize + schemars::JsonSchema,
    T::Scope: Scope,
{
    Resource {
        validate: validate_role,
        name_rule: NameRule::PathSegment,
        columns: role_columns,
        cells: role_cells,
        ..Resource::of::<T>()
    }
}

pub static CLUSTERROLEBINDING: Resource = Resource {
    validate: validate_cluster_role_binding,
    validate_update: role_ref_unchanged,
    columns: binding_columns,
    cells: binding_cells,
    ..rbac::<ClusterRoleBinding>()
};

pub static CLUSTERROLE: Resource = Resource { validate: validate_cluster_role, ..rbac::<ClusterRole>() };

pub static ROLEBINDING: Resource = Resource {
    validate: validate_role_binding,
    validate_update: role_ref_unchanged,
    columns: binding_columns,
    cells: binding_cells,
    ..rbac::<RoleBinding>()
};

pub static ROLE: Resource = rbac::<Role>();

pub static V1: &[&Resource] = &[&CLUSTERROLEBINDING, &CLUSTERROLE, &ROLEBINDING, &ROLE];

/// Upstream's `ValidatePolicyRule`: verbs always; API groups and resources, or (cluster roles
/// only) non-resource URLs.
fn validate_rules(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let len = |v: &Value| v.as_array().map(|a| a.len()).unwrap_or(0);
    for (i, r) in obj["rules"].as_array().into_iter().flatten().enumerate() {
        let path = format!("rules[{i}]");
        if len(&r["verbs"]) == 0 {
            errs.push(FieldError::required(format!("{path}.verbs"), "verbs must contain at least one value"));
        }
        let urls = len(&r["nonResourceURLs"]);
        if urls > 0 {
            if namespaced {
                errs.push(FieldError::invalid_value(
                    format!("{path}.nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if len(&r["apiGroups"]) > 0 || len(&r["resources"]) > 0 {
                errs.push(FieldError::invalid_value(
                    format!("{path}.nonResourceURLs"),
                    &r["nonResourceURLs"],
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if len(&r["apiGroups"]) == 0 {
            errs.push(FieldError::required(
                format!("{path}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if len(&r["resources"]) == 0 {
            errs.push(FieldError::required(
                format!("{path}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

fn validate_role(r: &Value) -> Vec<FieldError> {
    validate_rules(r, true)
}

fn validate_cluster_role(r: &Value) -> Vec<FieldError> {
    validate_rules(r, false)
}

/// Upstream's `ValidateRoleBinding*`: a role reference of an allowed kind, and subjects of
/// known kinds with names.
fn validate_binding(b: &Value, ref_kinds: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let role_ref = &b["roleRef"];
    if role_ref["apiGroup"].as_str().unwrap_or("") != "rbac.authorization.k8s.io" {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            role_ref["apiGroup"].as_str().unwrap_or(""),
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kind = role_ref["kind"].as_str().unwrap_or("");
    if !ref_kinds.contains(&kind) {
        errs.push(FieldError::not_supported("roleRef.kind", kind, ref_kinds));
    }
    if role_ref["name"].as_str().unwrap_or("").is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    }
    for (i, s) in b["subjects"].as_array().into_iter().flatten().enumerate() {
        let path = format!("subjects[{i}]");
        if s["name"].as_str().unwrap_or("").is_empty() {
            errs.push(FieldError::required(format!("{path}.name"), ""));
        }
        let kind = s["kind"].as_str().unwrap_or("");
        if !["Group", "ServiceAccount", "User"].contains(&kind) {
            errs.push(FieldError::not_supported(format!("{path}.kind"), kind, &["ServiceAccount", "User", "Group"]));
        }
    }
    errs
}

fn validate_role_binding(b: &Value) -> Vec<FieldError> {
    validate_binding(b, &["Role", "ClusterRole"])
}

fn validate_cluster_role_binding(b: &Value) -> Vec<FieldError> {
    validate_binding(b, &["ClusterRole"])
}

fn role_ref_unchanged(old: &Value, new: &Value) -> Vec<FieldError> {
    super::immutable(old, new, "roleRef", "cannot change roleRef")
}

fn role_columns() -> Vec<Column> {
    vec![
        NAME,
        col(
            "Created At",
            "date",
            "",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
            0,
        ),
    ]
}

fn role_cells(o: &Value) -> Vec<Value> {
    vec![name(o), json!(o["metadata"]["creationTimestamp"].as_str().unwrap_or(""))]
}

fn binding_columns() -> Vec<Column> {
    vec![
        NAME,
        col("Role", "string", "", "Role is the role the binding grants", 0),
        crate::table::AGE,
        col("Users", "string", "", "Users in the roleBinding", 1),
        col("Groups", "string", "", "Groups in the roleBinding", 1),
        col("ServiceAccounts", "string", "", "ServiceAccounts in the roleBinding", 1),
    ]
}

/// Upstream's `printRoleBinding`: ROLE is `Kind/name`; the wide columns list subjects by kind.
fn binding_cells(o: &Value) -> Vec<Value> {
    let subjects = o["subjects"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| {
        let names: Vec<String> = subjects
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| match (kind, s["namespace"].as_str()) {
                ("ServiceAccount", Some(ns)) => format!("{ns}/{}", s["name"].as_str().unwrap_or("")),
                _ => s["name"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        json!(names.join(", "))
    };
    let role =
        format!("{}/{}", o["roleRef"]["kind"].as_str().unwrap_or(""), o["roleRef"]["name"].as_str().unwrap_or(""));
    vec![name(o), json!(role), crate::table::age(o), of("User"), of("Group"), of("ServiceAccount")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_bindings() {
        let role = json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": []}]});
        assert_eq!(validate_role(&role)[0].field, "rules[0].verbs");
        let urls = json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]});
        assert!(validate_cluster_role(&urls).is_empty());
        assert_eq!(validate_role(&urls).len(), 1);
        let b = json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "ns"}, {"kind": "User", "name": "jane"}]});
        assert!(validate_role_binding(&b).is_empty());
        assert_eq!(validate_cluster_role_binding(&b)[0].field, "roleRef.kind");
        let cells = binding_cells(&b);
        assert_eq!(
            (cells[1].as_str().unwrap(), cells[3].as_str().unwrap(), cells[5].as_str().unwrap()),
            ("Role/r", "jane", "ns/robot")
        );
    }
}
