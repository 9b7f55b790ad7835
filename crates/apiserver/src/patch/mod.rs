//! PATCH, in the four ways upstream accepts it: JSON patch (RFC 6902, the `json-patch`
//! crate), JSON merge patch (RFC 7386), strategic merge patch ([`strategic`]) and server-side
//! apply ([`managed`]); every write path also keeps `metadata.managedFields` ([`managed`]).

pub mod fieldset;
pub mod managed;
pub mod schema;
pub mod strategic;

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use serde_json::{json, Map, Value};

use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

/// The object a patch applies to; `status` selects the status subresource.
pub struct Target<'a> {
    pub res: &'static Resource,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub status: bool,
}

/// What a patch did: the stored object, warnings, and whether apply created it (201).
pub struct Patched {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Upstream's limit on the operations of one JSON patch.
const MAX_JSON_PATCH_OPERATIONS: usize = 10000;

pub async fn apply(
    st: &Storage,
    target: Target<'_>,
    headers: &HeaderMap,
    body: &[u8],
    q: &HashMap<String, String>,
) -> ApiResult<Patched> {
    let Target { res, ns, name, status } = target;
    let kind = match crate::codec::media_type(headers).as_deref() {
        Some("application/json-patch+json") => Kind::Json,
        Some("application/merge-patch+json") => Kind::Merge,
        Some("application/strategic-merge-patch+json") => Kind::Strategic,
        Some("application/apply-patch+yaml") => Kind::Apply,
        // Upstream has no default patch type: a PATCH without Content-Type is refused.
        _ => return Err(ApiError::unsupported_media_type(&PATCH_MEDIA_TYPES)),
    };
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let manager = managed::manager_name(q.get("fieldManager").map(String::as_str), user_agent);
    let force = match q.get("force").map(String::as_str) {
        None => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") | Some("") => Some(false),
        Some(other) => return Err(ApiError::bad_request(format!("invalid force parameter {other:?}"))),
    };
    check_options(kind, q.get("fieldManager").map(String::as_str).unwrap_or(""), force.is_some())?;
    if kind == Kind::Apply {
        return server_side_apply(st, res, ns, name, status, body, &manager, force.unwrap_or(false)).await;
    }
    let patch = decode_patch(kind, body)?;
    // The patch may pin a resourceVersion itself (then a stale one is a 409); otherwise it
    // applies to whatever is current, retried if another write lands in between.
    let pinned = patch.get("metadata").is_some_and(|m| m["resourceVersion"].is_string());
    loop {
        let cur = st.get(res, ns, name).await?;
        let mut patched = match kind {
            Kind::Json => json_patch(&cur, &patch)?,
            Kind::Merge => {
                let mut m = cur.clone();
                merge(&mut m, &patch);
                m
            }
            _ => {
                let schema = schema::Node::kind(res.group, res.version, res.kind).unwrap_or_else(schema::Node::unknown);
                strategic::apply(&cur, &patch, schema).map_err(smp_error)?
            }
        };
        if !pinned {
            patched["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        }
        let warnings = crate::codec::check_fields(res, &patched, q)?;
        managed::record_update(res, Some(&cur), &mut patched, &manager, status);
        match st.update(res, ns, name, patched, status).await {
            Err(e) if e.is_retryable_conflict() && !pinned => continue,
            r => return r.map(|object| Patched { object, warnings, created: false }),
        }
    }
}

/// Upstream's patch types, in the order its error lists them.
pub const PATCH_MEDIA_TYPES: [&str; 4] = [
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
    "application/strategic-merge-patch+json",
];

/// Upstream's `ValidatePatchOptions`.
fn check_options(kind: Kind, field_manager: &str, force_given: bool) -> ApiResult<()> {
    let mut errs = Vec::new();
    if kind != Kind::Apply && force_given {
        errs.push(crate::status::FieldError::forbidden("force", "may not be specified for non-apply patch"));
    }
    if kind == Kind::Apply && field_manager.is_empty() {
        errs.push(crate::status::FieldError::required("fieldManager", "is required for apply patch"));
    }
    if field_manager.chars().count() > 128 {
        errs.push(crate::status::FieldError {
            kind: "FieldValueTooLong",
            field: "fieldManager".into(),
            detail: "Too long: may not be more than 128 bytes".to_string(),
        });
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("PatchOptions.meta.k8s.io", "", &errs))
    }
}

fn decode_patch(kind: Kind, body: &[u8]) -> ApiResult<Value> {
    let v: Value = serde_json::from_slice(body).map_err(|e| match kind {
        Kind::Json => ApiError::bad_request(e.to_string()),
        _ => ApiError::bad_request(format!("error decoding patch: {e}")),
    })?;
    match kind {
        Kind::Json if !v.is_array() => Err(ApiError::bad_request(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            go_type(&v)
        ))),
        Kind::Json => {
            let n = v.as_array().map(Vec::len).unwrap_or(0);
            if n > MAX_JSON_PATCH_OPERATIONS {
                return Err(ApiError::too_large(format!(
                    "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {n}"
                )));
            }
            Ok(v)
        }
        _ if !v.is_object() => Err(ApiError::bad_request(format!(
            "error decoding patch: json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
            go_type(&v)
        ))),
        _ => Ok(v),
    }
}

fn go_type(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Null => "null",
    }
}

/// RFC 6902 through the `json-patch` crate; a failing operation is a 422 whose cause carries
/// the message upstream's evanphx/json-patch gives for it.
fn json_patch(cur: &Value, ops: &Value) -> ApiResult<Value> {
    let list = ops.as_array().expect("checked: a JSON patch is an array");
    for op in list {
        let kind = op.get("op").and_then(Value::as_str).unwrap_or("");
        if !matches!(kind, "add" | "remove" | "replace" | "move" | "copy" | "test") {
            return Err(patch_rejected(format!("Unexpected kind: {kind}")));
        }
    }
    let patch: json_patch::Patch =
        serde_json::from_value(ops.clone()).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut doc = cur.clone();
    if let Err(e) = json_patch::patch(&mut doc, &patch) {
        let op = &list[e.operation];
        let path = op["path"].as_str().unwrap_or("");
        let from = op["from"].as_str().unwrap_or("");
        let last = path.rsplit('/').next().unwrap_or("");
        let why = match op["op"].as_str().unwrap_or("") {
            "test" => format!("testing value {path} failed: test failed"),
            "remove" => {
                format!("error in remove for path: '{path}': Unable to remove nonexistent key: {last}: missing value")
            }
            "replace" => format!("replace operation does not apply: doc is missing key: {path}: missing value"),
            "add" => format!("add operation does not apply: doc is missing path: \"{path}\": missing value"),
            "move" => format!("move operation does not apply: doc is missing from path: {from}: missing value"),
            _ => format!("copy operation does not apply: doc is missing from path: {from}: missing value"),
        };
        return Err(patch_rejected(why));
    }
    Ok(doc)
}

/// Upstream's `NewGenericServerResponse(422, ...)` for a patch that does not apply.
fn patch_rejected(why: String) -> ApiError {
    ApiError {
        code: 422,
        reason: "Invalid",
        message: "the server rejected our request due to an error in our request".into(),
        details: Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": why}]})),
    }
}

/// A strategic merge patch that cannot apply: upstream passes the error through unwrapped,
/// which its handler turns into a 500 with the bare message.
fn smp_error(why: String) -> ApiError {
    ApiError { code: 500, reason: "", message: why, details: None }
}

/// RFC 7386: objects merge recursively, null deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// `application/apply-patch+yaml`: the body is the configuration (YAML or JSON); the object
/// is created if it does not exist.
#[allow(clippy::too_many_arguments)]
async fn server_side_apply(
    st: &Storage,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    status: bool,
    body: &[u8],
    manager: &str,
    force: bool,
) -> ApiResult<Patched> {
    let config: Value =
        serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding patch: json: cannot unmarshal into Go value of type map[string]interface {}",
        ));
    }
    check_applied_identity(res, &config, name)?;
    let schema = schema::Node::kind(res.group, res.version, res.kind).unwrap_or_else(schema::Node::unknown);
    let mut unknown = Vec::new();
    schema::undeclared_fields(&config, schema, "", &mut unknown);
    if let Some(first) = unknown.first() {
        return Err(ApiError::bad_request(format!(
            "failed to create typed patch object ({}, Kind={}): .{first}: field not declared in schema",
            if res.group.is_empty() { format!("/{}", res.version) } else { format!("{}/{}", res.group, res.version) },
            res.kind
        )));
    }
    loop {
        let live = match st.get(res, ns, name).await {
            Ok(v) => Some(v),
            Err(e) if e.reason == "NotFound" && !status => None,
            Err(e) => return Err(e),
        };
        let obj = managed::apply(res, live.as_ref(), &config, manager, force, status)?;
        let r = match &live {
            None => st.create(res, ns, obj).await,
            Some(_) => st.update(res, ns, name, obj, status).await,
        };
        match r {
            Err(e) if e.is_retryable_conflict() || (live.is_none() && e.reason == "AlreadyExists") => continue,
            r => return r.map(|object| Patched { object, warnings: Vec::new(), created: live.is_none() }),
        }
    }
}

/// The applied configuration must name the object of the URL and the resource's kind.
fn check_applied_identity(res: &Resource, config: &Value, name: &str) -> ApiResult<()> {
    let api_version = config["apiVersion"].as_str().unwrap_or("");
    let kind = config["kind"].as_str().unwrap_or("");
    if api_version.is_empty() || kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "error decoding patch: Object 'Kind' is missing in '{}'",
            serde_json::to_string(config).unwrap_or_default()
        )));
    }
    if api_version != res.api_version() || kind != res.kind {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            res.api_version()
        )));
    }
    match config["metadata"]["name"].as_str() {
        Some(n) if n == name => Ok(()),
        Some(n) if !n.is_empty() => Err(ApiError::bad_request(format!(
            "the name of the object ({n}) does not match the name on the URL ({name})"
        ))),
        _ => Err(ApiError::bad_request("metadata.name is required for apply patch")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn json_patch_errors_read_as_upstream() {
        let cur = json!({"data": {"a": "1"}});
        let e = json_patch(&cur, &json!([{"op": "test", "path": "/data/a", "value": "2"}])).unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(e.details.unwrap()["causes"][0]["message"], "testing value /data/a failed: test failed");
        let e = json_patch(&cur, &json!([{"op": "remove", "path": "/data/b"}])).unwrap_err();
        assert_eq!(
            e.details.unwrap()["causes"][0]["message"],
            "error in remove for path: '/data/b': Unable to remove nonexistent key: b: missing value"
        );
        let ok = json_patch(
            &cur,
            &json!([{"op": "add", "path": "/data/b", "value": "2"}, {"op": "remove", "path": "/data/a"}]),
        );
        assert_eq!(ok.unwrap(), json!({"data": {"b": "2"}}));
        assert_eq!(decode_patch(Kind::Json, b"{}").unwrap_err().code, 400);
    }
}
