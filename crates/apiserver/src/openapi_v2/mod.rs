//! `/openapi/v2`: the Swagger 2.0 document of everything served, built from the same kind
//! schemas as `/openapi/v3` ([`crate::patch::schema::DEFINITIONS`]), as kube-apiserver still
//! serves it beside v3.
//!
//! Who reads it: kubectl's client-side schema validation, which `kubectl create|apply -f`
//! runs with `--validate=strict` (the default) for whatever the v3 document cannot vouch for
//! the server checking itself, first of all a `kind: List` (what `kubectl get -o yaml` of
//! several objects writes, so the backup-and-restore habit needs it); and `kubectl explain
//! --output plaintext-openapiv2`. kubectl asks for it as protobuf (gnostic's `OpenAPIv2`
//! messages, [`proto`]); anyone else gets JSON.
//!
//! Served as upstream's kube-openapi handler serves it: by `Accept` (406 when neither form is
//! acceptable), `Vary: Accept`, an ETag (SHA-512 of the JSON, upper-case hex, quoted; the
//! same for both forms) answered with 304 on `If-None-Match`, and `Last-Modified`.

pub mod proto;

use std::sync::LazyLock;

use serde_json::{json, Map, Value};
use sha2::Digest;

use crate::openapi::{gv_id, gv_path, LIST_PARAMS, PATCH_PARAMS, PATCH_TYPES, WRITE_PARAMS};
use crate::patch::schema::{ref_name, DEFINITIONS};
use crate::resources::{Resource, Subresource};

/// The document in both forms, built once (it only changes with the binary).
pub struct Spec {
    pub json: Vec<u8>,
    pub proto: Vec<u8>,
    /// The quoted ETag header value.
    pub etag: String,
    /// When this server built it, as an HTTP date (upstream's `Last-Modified`).
    pub last_modified: String,
}

pub static SPEC: LazyLock<Spec> = LazyLock::new(|| {
    let doc = document();
    let json = serde_json::to_vec(&doc).expect("the document serializes");
    let proto = proto::encode(&doc).expect("the document is Swagger 2.0 as gnostic reads it");
    let hash: String = sha2::Sha512::digest(&json).iter().map(|b| format!("{b:02X}")).collect();
    Spec { json, proto, etag: format!("\"{hash}\""), last_modified: http_date(time::OffsetDateTime::now_utc()) }
});

/// What `/openapi/v2` answers with: JSON, or the protobuf form.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Form {
    Json,
    Protobuf,
}

impl Form {
    pub fn content_type(self) -> &'static str {
        match self {
            Form::Json => "application/json",
            // Upstream answers the deprecated `@` subtype kubectl asks for with this one.
            Form::Protobuf => "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
        }
    }
}

/// Upstream's negotiation (goautoneg): the media ranges of `Accept` by quality (the more
/// specific first among equals); the first one that JSON or protobuf matches wins. No
/// `Accept` means `*/*`, i.e. JSON.
pub fn negotiate(accept: Option<&str>) -> Option<Form> {
    let accept = accept.filter(|a| !a.trim().is_empty()).unwrap_or("*/*");
    let mut ranges: Vec<(f32, usize, &str)> = Vec::new();
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let q = parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse().ok()).unwrap_or(1.0);
        let wildcards = media.matches('*').count();
        if q > 0.0 {
            ranges.push((q, wildcards, media));
        }
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let offered = [
        ("application", "json", Form::Json),
        ("application", "com.github.proto-openapi.spec.v2@v1.0+protobuf", Form::Protobuf),
        ("application", "com.github.proto-openapi.spec.v2.v1.0+protobuf", Form::Protobuf),
    ];
    for (_, _, media) in ranges {
        let (ty, sub) = media.split_once('/').unwrap_or((media, ""));
        for (oty, osub, form) in offered {
            if (ty == oty || ty == "*") && (sub == osub || sub == "*") {
                return Some(form);
            }
        }
    }
    None
}

/// `Tue, 08 Dec 2026 00:20:04 GMT`.
fn http_date(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&f).unwrap_or_default()
}

/// The definitions as Swagger 2.0 has them: `#/definitions/` references, no `nullable`,
/// `oneOf` or `anyOf` (OpenAPI 3 only), a lone `allOf` reference as a plain `$ref` (what
/// upstream's v2 has, and the only form kubectl's v2 reader follows), and int-or-string
/// types as upstream's v2 spells them (`type: string, format: int-or-string`).
pub fn v2_schema(v: &Value) -> Value {
    let Some(m) = v.as_object() else { return v.clone() };
    let mut out = Map::new();
    for (k, x) in m {
        match k.as_str() {
            "nullable" | "oneOf" | "anyOf" | "not" => {}
            "$ref" | "allOf" => {
                if let Some(name) = ref_name(v) {
                    out.insert("$ref".into(), json!(format!("#/definitions/{name}")));
                } else if k == "allOf" {
                    out.insert(k.clone(), Value::Array(x.as_array().into_iter().flatten().map(v2_schema).collect()));
                }
            }
            "properties" => {
                let props = x.as_object().into_iter().flatten().map(|(f, s)| (f.clone(), v2_schema(s))).collect();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" => {
                out.insert(k.clone(), v2_schema(x));
            }
            _ => {
                out.insert(k.clone(), x.clone());
            }
        }
    }
    if m.get("x-kubernetes-int-or-string") == Some(&json!(true)) && !m.contains_key("type") {
        out.insert("type".into(), json!("string"));
        out.insert("format".into(), json!("int-or-string"));
    }
    Value::Object(out)
}

/// Upstream's tag of a group-version's operations: `core_v1`, `apps_v1`,
/// `rbacAuthorization_v1`.
fn tag(r: &Resource) -> String {
    // gv_id is the group's part then the version's, each capitalized: `RbacAuthorizationV1`.
    let id = gv_id(r);
    let group = &id[..id.len() - r.version.len()];
    let mut c = group.chars();
    let first = c.next().map(|f| f.to_lowercase().to_string()).unwrap_or_default();
    format!("{first}{}_{}", c.as_str(), r.version)
}

const JSON_YAML_PROTOBUF: &[&str] = &["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"];
const WATCHABLE: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];

fn query_param(name: &str) -> Value {
    let ty = match name {
        "watch" | "allowWatchBookmarks" | "force" => "boolean",
        "limit" | "timeoutSeconds" | "gracePeriodSeconds" => "integer",
        _ => "string",
    };
    json!({"name": name, "in": "query", "type": ty, "uniqueItems": true})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "type": "string", "uniqueItems": true, "description": description})
}

fn definition_ref(name: &str) -> Value {
    json!({"$ref": format!("#/definitions/{name}")})
}

/// The definition every PATCH body refers to, as upstream's.
const PATCH_DEFINITION: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";

/// One operation: what it does (`action`), its description, query parameters, body and the
/// schema of what it answers with, in upstream's layout.
struct Op<'a> {
    action: &'a str,
    id: String,
    description: String,
    query: &'a [&'a str],
    body: Option<Value>,
    answers: Option<&'a str>,
    codes: &'a [&'a str],
}

fn operation(r: &Resource, op: Op<'_>) -> Value {
    let mut params: Vec<Value> = Vec::new();
    if let Some(schema) = op.body {
        params.push(json!({"name": "body", "in": "body", "required": true, "schema": schema}));
    }
    params.extend(op.query.iter().map(|q| query_param(q)));
    let mut responses = Map::new();
    for code in op.codes {
        let text = match *code {
            "200" => "OK",
            "201" => "Created",
            _ => "Accepted",
        };
        let mut resp = json!({"description": text});
        if let Some(schema) = op.answers {
            resp["schema"] = definition_ref(schema);
        }
        responses.insert(code.to_string(), resp);
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    let consumes: Vec<&str> = if op.action == "patch" { PATCH_TYPES.to_vec() } else { vec!["*/*"] };
    let produces = if matches!(op.action, "list" | "watch") { WATCHABLE } else { JSON_YAML_PROTOBUF };
    json!({
        "description": op.description,
        "operationId": op.id,
        "consumes": consumes,
        "produces": produces,
        "schemes": ["https"],
        "tags": [tag(r)],
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    })
}

/// The paths of one resource: its collection (list, create, deletecollection), its objects
/// (read, replace, patch, delete), their status, and for namespaced kinds the list across
/// namespaces.
fn resource_paths(r: &Resource, paths: &mut Map<String, Value>) {
    let schema = DEFINITIONS.kinds.iter().find(|k| k.0 == r.group && k.1 == r.version && k.2 == r.kind);
    let schema = schema.map(|k| k.3.as_str());
    let body = schema.map(definition_ref);
    let prefix = format!("/{}", gv_path(r));
    let (gv, kind) = (gv_id(r), r.kind);
    let (collection, scope, mut shared) = if r.namespaced {
        let ns = path_param("namespace", "object name and auth scope, such as for teams and projects");
        (format!("{prefix}/namespaces/{{namespace}}/{}", r.plural), "Namespaced", vec![ns])
    } else {
        (format!("{prefix}/{}", r.plural), "", vec![])
    };
    shared.push(query_param("pretty"));
    let list = |id: String| Op {
        action: "list",
        id,
        description: format!("list or watch objects of kind {kind}"),
        query: LIST_PARAMS,
        body: None,
        answers: None,
        codes: &["200"],
    };
    paths.insert(
        collection.clone(),
        json!({
            "parameters": shared,
            "get": operation(r, list(format!("list{gv}{scope}{kind}"))),
            "post": operation(r, Op {
                action: "post",
                id: format!("create{gv}{scope}{kind}"),
                description: format!("create a {kind}"),
                query: WRITE_PARAMS,
                body: body.clone(),
                answers: schema,
                codes: &["200", "201", "202"],
            }),
            "delete": operation(r, Op {
                action: "deletecollection",
                id: format!("deletecollection{gv}{scope}{kind}"),
                description: format!("delete collection of {kind}"),
                query: &["dryRun", "fieldSelector", "gracePeriodSeconds", "labelSelector", "resourceVersion"],
                body: None,
                answers: None,
                codes: &["200"],
            }),
        }),
    );
    let mut item_params = shared.clone();
    item_params.insert(item_params.len() - 1, path_param("name", &format!("name of the {kind}")));
    let item = |sub: &str, what: &str| {
        let mut v = json!({
            "parameters": item_params,
            "get": operation(r, Op {
                action: "get",
                id: format!("read{gv}{scope}{kind}{sub}"),
                description: format!("read {what}the specified {kind}"),
                query: &[],
                body: None,
                answers: schema,
                codes: &["200"],
            }),
            "put": operation(r, Op {
                action: "put",
                id: format!("replace{gv}{scope}{kind}{sub}"),
                description: format!("replace {what}the specified {kind}"),
                query: WRITE_PARAMS,
                body: body.clone(),
                answers: schema,
                codes: &["200", "201"],
            }),
            "patch": operation(r, Op {
                action: "patch",
                id: format!("patch{gv}{scope}{kind}{sub}"),
                description: format!("partially update {what}the specified {kind}"),
                query: PATCH_PARAMS,
                body: Some(definition_ref(PATCH_DEFINITION)),
                answers: schema,
                codes: &["200", "201"],
            }),
        });
        if sub.is_empty() {
            v["delete"] = operation(
                r,
                Op {
                    action: "delete",
                    id: format!("delete{gv}{scope}{kind}"),
                    description: format!("delete a {kind}"),
                    query: &["dryRun", "gracePeriodSeconds"],
                    body: None,
                    answers: None,
                    codes: &["200", "202"],
                },
            );
        }
        v
    };
    paths.insert(format!("{collection}/{{name}}"), item("", ""));
    if r.serves(Subresource::Status) {
        paths.insert(format!("{collection}/{{name}}/status"), item("Status", "status of "));
    }
    if r.namespaced {
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({
                "parameters": [query_param("pretty")],
                "get": operation(r, list(format!("list{gv}{kind}ForAllNamespaces"))),
            }),
        );
    }
}

/// The whole document: every served resource's paths, every definition their kinds use.
pub fn document() -> Value {
    let mut paths = Map::new();
    for r in crate::resources::all() {
        resource_paths(r, &mut paths);
    }
    let mut definitions: Map<String, Value> =
        DEFINITIONS.schemas.iter().map(|(name, s)| (name.clone(), v2_schema(s))).collect();
    definitions.insert(
        PATCH_DEFINITION.into(),
        json!({"description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.", "type": "object"}),
    );
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::KUBE_MINOR)},
        "paths": paths,
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {"description": "Bearer Token authentication", "type": "apiKey", "name": "authorization", "in": "header"},
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_named_and_tagged_as_upstream_and_refer_only_to_definitions() {
        let doc = document();
        let defs = doc["definitions"].as_object().unwrap();
        let pod = &defs["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"], json!([{"group": "", "version": "v1", "kind": "Pod"}]));
        assert_eq!(pod["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.core.v1.PodSpec");
        assert_eq!(defs["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"][0]["group"], "apps");
        let port = &defs["io.k8s.api.core.v1.ContainerPort"];
        assert_eq!(port["required"], json!(["containerPort"]));
        let target = &defs["io.k8s.api.core.v1.ServicePort"]["properties"]["targetPort"];
        assert_eq!(target["$ref"], "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString");
        let ios = &defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
        assert_eq!((ios["type"].as_str(), ios["format"].as_str()), (Some("string"), Some("int-or-string")));
        let text = doc.to_string();
        assert!(!text.contains("#/components/"), "an OpenAPI 3 reference is left");
        assert!(!text.contains("\"nullable\""));
        let mut refs = Vec::new();
        collect(&doc, &mut refs);
        for r in refs {
            let name = r.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("{r} is no definition"));
            assert!(defs.contains_key(name), "dangling $ref {r}");
        }
    }

    fn collect(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.to_string());
                }
                m.values().for_each(|c| collect(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| collect(c, out)),
            _ => {}
        }
    }

    #[test]
    fn patch_operations_name_their_kind_and_field_validation() {
        let doc = document();
        let p = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
        assert_eq!(p["operationId"], "patchCoreV1NamespacedConfigMap");
        assert_eq!(p["x-kubernetes-group-version-kind"], json!({"group": "", "version": "v1", "kind": "ConfigMap"}));
        assert!(p["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "fieldValidation" && q["in"] == "query"));
        assert_eq!(p["tags"], json!(["core_v1"]));
        let rb = &doc["paths"]["/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}"]["get"];
        assert_eq!(
            (rb["operationId"].as_str(), rb["tags"][0].as_str()),
            (Some("readRbacAuthorizationV1ClusterRole"), Some("rbacAuthorization_v1"))
        );
        assert!(doc["paths"]["/api/v1/pods"]["get"].is_object());
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]["put"].is_object());
    }

    #[test]
    fn negotiation_follows_accept() {
        assert_eq!(negotiate(None), Some(Form::Json));
        assert_eq!(negotiate(Some("application/com.github.proto-openapi.spec.v2@v1.0+protobuf")), Some(Form::Protobuf));
        assert_eq!(negotiate(Some("application/json, */*")), Some(Form::Json));
        assert_eq!(
            negotiate(Some("application/json;q=0.5, application/com.github.proto-openapi.spec.v2.v1.0+protobuf")),
            Some(Form::Protobuf)
        );
        assert_eq!(negotiate(Some("text/html")), None);
        assert_eq!(negotiate(Some("*/*")), Some(Form::Json));
    }
}
