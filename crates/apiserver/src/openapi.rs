//! A minimal OpenAPI v3 document for `/api/v1`: the paths and operations this server serves,
//! each tagged with its group-version-kind and the query parameters it honours.
//!
//! Why it exists: kubectl (`--validate=strict`, its default) asks /openapi/v3 whether the
//! server validates fields itself (a PATCH operation for the kind that lists the
//! `fieldValidation` parameter). If so, it sends `fieldValidation=Strict` and leaves checking to
//! the server; otherwise it wants the full schema for client-side validation. No component
//! schemas are published yet, so `kubectl explain` has nothing to show.

use serde_json::{json, Map, Value};

use crate::resources::{Resource, CORE_V1};

/// A stable version tag for the document, so clients can cache it by URL (upstream uses a hash).
pub fn hash() -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    for r in CORE_V1 {
        r.plural.hash(&mut h);
    }
    format!("{:016X}", h.finish())
}

pub fn root() -> Value {
    json!({"paths": {"api/v1": {"serverRelativeURL": format!("/openapi/v3/api/v1?hash={}", hash())}}})
}

fn param(name: &str, location: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "schema": {"type": "string", "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

fn op(res: &Resource, action: &str, query: &[&str], id: String) -> Value {
    json!({
        "operationId": id,
        "parameters": query.iter().map(|q| param(q, "query")).collect::<Vec<_>>(),
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
    })
}

const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const LIST_PARAMS: &[&str] = &[
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "watch",
];

pub fn core_v1() -> Value {
    let mut paths = Map::new();
    for r in CORE_V1 {
        let (collection, path_params): (String, Vec<Value>) = if r.namespaced {
            (format!("/api/v1/namespaces/{{namespace}}/{}", r.plural), vec![param("namespace", "path")])
        } else {
            (format!("/api/v1/{}", r.plural), vec![])
        };
        let mut item_params = path_params.clone();
        item_params.push(param("name", "path"));
        paths.insert(
            collection.clone(),
            json!({
                "parameters": path_params,
                "get": op(r, "list", LIST_PARAMS, format!("listCoreV1{}", r.kind)),
                "post": op(r, "post", WRITE_PARAMS, format!("createCoreV1{}", r.kind)),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "parameters": item_params,
                "get": op(r, "get", &[], format!("readCoreV1{}", r.kind)),
                "put": op(r, "put", WRITE_PARAMS, format!("replaceCoreV1{}", r.kind)),
                "patch": op(r, "patch", WRITE_PARAMS, format!("patchCoreV1{}", r.kind)),
                "delete": op(r, "delete", &["dryRun"], format!("deleteCoreV1{}", r.kind)),
            }),
        );
        if r.namespaced {
            paths.insert(
                format!("/api/v1/{}", r.plural),
                json!({"get": op(r, "list", LIST_PARAMS, format!("listCoreV1{}ForAllNamespaces", r.kind))}),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::http::KUBE_MINOR)},
        "paths": paths,
        "components": {},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_carry_their_kind_and_field_validation() {
        let doc = core_v1();
        let p = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert!(p["parameters"].as_array().unwrap().iter().any(|q| q["name"] == "fieldValidation"));
        assert!(doc["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
    }
}
