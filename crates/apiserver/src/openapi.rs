//! OpenAPI v3 for every group-version the `Resource` table serves: `/openapi/v3` lists one
//! document per group-version (`api/v1`, `apis/<group>/<version>`) under a content hash, and
//! each document has the paths and operations served plus the kinds' schemas (from
//! [`crate::patch::schema`], generated from k8s-openapi's types).
//!
//! Who reads it: `kubectl explain` (schemas, found by `x-kubernetes-group-version-kind`),
//! kubectl's client-side apply (patch merge keys), and kubectl's `--validate` (if a kind's
//! PATCH operation lists the `fieldValidation` parameter, kubectl leaves unknown-field
//! checking to the server with `fieldValidation=Strict`, as it does with upstream servers).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::patch::schema::{ref_name, DEFINITIONS};
use crate::resources::{Resource, Subresource};

/// One group-version's document, serialized once.
pub struct Document {
    pub body: String,
    /// Upstream's: SHA-512 of the document, upper-case hex.
    pub hash: String,
}

/// Documents by their path under `/openapi/v3/` (`api/v1`, `apis/apps/v1`).
pub static DOCUMENTS: LazyLock<BTreeMap<String, Document>> = LazyLock::new(|| {
    let mut by_gv: BTreeMap<String, Vec<&'static Resource>> = BTreeMap::new();
    for r in crate::resources::GROUPS.iter().flat_map(|gv| gv.resources.iter()) {
        by_gv.entry(gv_path(r)).or_default().push(r);
    }
    by_gv
        .into_iter()
        .map(|(path, resources)| {
            let body = document(&resources).to_string();
            let hash = sha2::Sha512::digest(body.as_bytes()).iter().map(|b| format!("{b:02X}")).collect();
            (path, Document { body, hash })
        })
        .collect()
});

pub(crate) fn gv_path(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("api/{}", r.version)
    } else {
        format!("apis/{}/{}", r.group, r.version)
    }
}

pub fn root() -> Value {
    let paths: Map<String, Value> = DOCUMENTS
        .iter()
        .map(|(p, d)| (p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", d.hash)})))
        .collect();
    json!({"paths": paths})
}

fn param(name: &str, location: &str) -> Value {
    let mut p = json!({"name": name, "in": location, "schema": {"type": "string", "uniqueItems": true}});
    if location == "path" {
        p["required"] = json!(true);
    }
    p
}

/// The part of upstream's operation IDs naming the group-version: `CoreV1`, `AppsV1`,
/// `RbacAuthorizationV1`, `CoordinationV1`.
pub(crate) fn gv_id(r: &Resource) -> String {
    let group = if r.group.is_empty() { "core" } else { r.group.trim_end_matches(".k8s.io") };
    let mut out = String::new();
    for part in group.split('.').chain(std::iter::once(r.version)) {
        let mut c = part.chars();
        if let Some(first) = c.next() {
            out.extend(first.to_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

/// The patch formats a PATCH accepts (kubectl's client-side apply computes a strategic merge
/// patch from these schemas only if the operation lists that format).
pub(crate) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

fn op(r: &Resource, action: &str, query: &[&str], id: String, schema: Option<&str>) -> Value {
    let mut ok = json!({"description": "OK"});
    if let Some(name) = schema {
        ok["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}});
    }
    let mut body = Map::new();
    if action == "patch" {
        for t in PATCH_TYPES {
            body.insert(t.to_string(), json!({"schema": {"type": "object", "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body."}}));
        }
    } else if let (Some(name), "post" | "put") = (schema, action) {
        body.insert("*/*".into(), json!({"schema": {"$ref": format!("#/components/schemas/{name}")}}));
    }
    let mut o = json!({
        "operationId": id,
        "parameters": query.iter().map(|q| param(q, "query")).collect::<Vec<_>>(),
        "responses": {"200": ok},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    if !body.is_empty() {
        o["requestBody"] = json!({"content": body, "required": true});
    }
    o
}

pub(crate) const WRITE_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
pub(crate) const PATCH_PARAMS: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
pub(crate) const LIST_PARAMS: &[&str] = &[
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "watch",
];

fn document(resources: &[&'static Resource]) -> Value {
    let mut paths = Map::new();
    let mut wanted = Vec::new();
    for &r in resources {
        let schema = DEFINITIONS.kinds.iter().find(|k| k.0 == r.group && k.1 == r.version && k.2 == r.kind);
        let schema = schema.map(|k| k.3.as_str());
        wanted.extend(schema.map(str::to_string));
        let prefix = format!("/{}", gv_path(r));
        let gv = gv_id(r);
        let (collection, path_params, scope) = if r.namespaced {
            (format!("{prefix}/namespaces/{{namespace}}/{}", r.plural), vec![param("namespace", "path")], "Namespaced")
        } else {
            (format!("{prefix}/{}", r.plural), vec![], "")
        };
        let mut item_params = path_params.clone();
        item_params.push(param("name", "path"));
        let kind = r.kind;
        paths.insert(
            collection.clone(),
            json!({
                "parameters": path_params,
                "get": op(r, "list", LIST_PARAMS, format!("list{gv}{scope}{kind}"), None),
                "post": op(r, "post", WRITE_PARAMS, format!("create{gv}{scope}{kind}"), schema),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "parameters": item_params,
                "get": op(r, "get", &[], format!("read{gv}{scope}{kind}"), schema),
                "put": op(r, "put", WRITE_PARAMS, format!("replace{gv}{scope}{kind}"), schema),
                "patch": op(r, "patch", PATCH_PARAMS, format!("patch{gv}{scope}{kind}"), schema),
                "delete": op(r, "delete", &["dryRun"], format!("delete{gv}{scope}{kind}"), None),
            }),
        );
        if r.serves(Subresource::Status) {
            paths.insert(
                format!("{collection}/{{name}}/status"),
                json!({
                    "parameters": item_params,
                    "get": op(r, "get", &[], format!("read{gv}{scope}{kind}Status"), schema),
                    "put": op(r, "put", WRITE_PARAMS, format!("replace{gv}{scope}{kind}Status"), schema),
                    "patch": op(r, "patch", PATCH_PARAMS, format!("patch{gv}{scope}{kind}Status"), schema),
                }),
            );
        }
        if r.namespaced {
            paths.insert(
                format!("{prefix}/{}", r.plural),
                json!({"get": op(r, "list", LIST_PARAMS, format!("list{gv}{kind}ForAllNamespaces"), None)}),
            );
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": reachable(wanted)},
    })
}

/// The named definitions and everything they refer to.
fn reachable(mut todo: Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    while let Some(name) = todo.pop() {
        if out.contains_key(&name) {
            continue;
        }
        let Some(s) = DEFINITIONS.schemas.get(&name) else { continue };
        collect_refs(s, &mut todo);
        out.insert(name, s.clone());
    }
    out
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(name) = ref_name(v) {
                out.push(name.to_string());
            }
            m.values().for_each(|c| collect_refs(c, out));
        }
        Value::Array(a) => a.iter().for_each(|c| collect_refs(c, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core() -> Value {
        serde_json::from_str(&DOCUMENTS["api/v1"].body).unwrap()
    }

    #[test]
    fn patch_operations_carry_their_kind_and_field_validation() {
        let doc = core();
        let p = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(p["x-kubernetes-group-version-kind"]["kind"], "ConfigMap");
        assert_eq!(p["operationId"], "patchCoreV1NamespacedConfigMap");
        assert!(p["parameters"].as_array().unwrap().iter().any(|q| q["name"] == "fieldValidation"));
        assert!(doc["paths"]["/api/v1/namespaces/{name}"]["patch"].is_object());
    }

    #[test]
    fn schemas_are_complete_and_tagged() {
        let doc = core();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let pod = &schemas["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "version": "v1", "kind": "Pod"}]));
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        for r in refs {
            assert!(schemas.contains_key(&r), "dangling $ref {r}");
        }
        assert!(root()["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash="));
    }
}
