//! The REST verbs of every served resource: get, list, watch, create, update, patch,
//! delete, deletecollection, and the subresources (status, scale, binding, finalize), each
//! mapped from the request's method onto the generic registry ([`crate::storage`]) or the
//! module that owns the subresource.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::target::Target;
use super::Ctx;
use crate::codec::{decode_body, read_body};
use crate::request_info::RequestInfo;
use crate::resources::Subresource;
use crate::response::{json_response, wants_table, with_warnings};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::storage::DeleteOptions;

/// Every resource request, whatever its group: the filter chain has parsed its
/// [`RequestInfo`]; the route only says it is one.
pub async fn resource(
    State(ctx): State<Arc<Ctx>>,
    Extension(info): Extension<RequestInfo>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match serve(&ctx, Target::resolve(&info), method, &q, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// A list as the API returns it, serialized straight from the (possibly cache-shared) objects
/// instead of being assembled into one more `Value` tree first.
#[derive(serde::Serialize)]
struct ListBody<'a> {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
    metadata: Value,
    items: Vec<&'a Value>,
}

async fn serve(
    ctx: &Ctx,
    target: ApiResult<Target>,
    method: Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let t = target?;
    // A dry run, or a leader's fenced write, runs on a variant of the storage.
    let mut variant = dry_run(&method, q, &body)?.then(|| ctx.storage.dry_run());
    if let Some(f) = crate::fence::Fence::from_headers(headers, |res, ns, name| ctx.storage.key(res, Some(ns), name))? {
        variant = Some(variant.as_ref().unwrap_or(&ctx.storage).fenced(f));
    }
    let st = variant.as_ref().unwrap_or(&ctx.storage);
    let ns = t.ns.as_deref();
    if let Some(name) = t.name.as_deref() {
        match (t.sub, &method) {
            (Some(Subresource::Scale), &Method::GET) => {
                return Ok(json_response(StatusCode::OK, &crate::subresources::get_scale(st, t.res, ns, name).await?))
            }
            (Some(Subresource::Scale), &Method::PUT) => {
                let scale: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
                let out = crate::subresources::put_scale(st, t.res, ns, name, &scale).await?;
                return Ok(json_response(StatusCode::OK, &out));
            }
            (Some(Subresource::Scale), &Method::PATCH) => {
                let out = crate::subresources::patch_scale(st, t.res, ns, name, headers, &body).await?;
                return Ok(json_response(StatusCode::OK, &out));
            }
            (Some(Subresource::Binding), &Method::POST) => {
                crate::subresources::bind(st, t.res, ns, name, &body).await?;
                let ok =
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                return Ok(json_response(StatusCode::CREATED, &ok));
            }
            (Some(Subresource::Finalize), &Method::PUT) => {
                let (body, warnings) = decode_body(t.res, headers, &body, q)?;
                let obj = st.update_part(t.res, ns, name, body, crate::storage::Part::Finalize).await?;
                return Ok(with_warnings(json_response(StatusCode::OK, &obj), &warnings));
            }
            (Some(Subresource::Scale | Subresource::Binding | Subresource::Finalize), _) => {
                return Err(ApiError::method_not_allowed())
            }
            (None | Some(Subresource::Status), _) => {}
        }
    }
    let status = t.sub == Some(Subresource::Status);
    match (method, &t.name) {
        (Method::POST, Some(_)) => Err(ApiError::method_not_allowed()),
        (Method::GET, None) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            let opts = crate::consistency::watch_options(t.res, q, wants_table(headers))?;
            crate::consistency::watch(st, &ctx.caches, t.res, ns, opts).await
        }
        (Method::GET, None) => {
            let l = crate::consistency::list(st, &ctx.caches, t.res, ns, q).await?;
            let mut meta = json!({"resourceVersion": l.revision.to_string()});
            if let Some(c) = l.continue_token {
                meta["continue"] = json!(c);
            }
            if wants_table(headers) {
                return Ok(json_response(StatusCode::OK, &t.res.table(&l.items, meta)));
            }
            let list = ListBody {
                kind: format!("{}List", t.res.kind),
                api_version: t.res.api_version(),
                metadata: meta,
                items: l.items.iter().map(|o| &**o).collect(),
            };
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::GET, Some(name)) => {
            let obj = st.get(t.res, ns, name).await?;
            if wants_table(headers) {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                return Ok(json_response(StatusCode::OK, &t.res.table(&[obj], meta)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::POST, None) => {
            let (mut body, warnings) = decode_body(t.res, headers, &body, q)?;
            crate::patch::managed::record_update(t.res, None, &mut body, &field_manager(q, headers), false);
            let obj = st.create(t.res, ns, body).await?;
            Ok(with_warnings(json_response(StatusCode::CREATED, &obj), &warnings))
        }
        (Method::PUT, Some(name)) => {
            let (mut body, warnings) = decode_body(t.res, headers, &body, q)?;
            // The managers are computed against the object read here; a write in between
            // fails the body's resourceVersion precondition, if it has one.
            let old = st.get(t.res, ns, name).await?;
            crate::patch::managed::record_update(t.res, Some(&old), &mut body, &field_manager(q, headers), status);
            let obj = st.update(t.res, ns, name, body, status).await?;
            Ok(with_warnings(json_response(StatusCode::OK, &obj), &warnings))
        }
        (Method::PATCH, Some(name)) => {
            let target = crate::patch::Target { res: t.res, ns, name, status };
            let p = crate::patch::apply(st, target, headers, &body, q).await?;
            let code = if p.created { StatusCode::CREATED } else { StatusCode::OK };
            Ok(with_warnings(json_response(code, &p.object), &p.warnings))
        }
        (Method::DELETE, Some(_)) if status => Err(ApiError::method_not_allowed()),
        (Method::DELETE, Some(name)) => {
            let opts = delete_options(q, &body)?;
            let deleted = st.delete(t.res, ns, name, &opts).await?;
            ctx.namespace_deleted.deleted(t.res);
            // Upstream answers with the object while it waits (finalizers, a pod's grace
            // period) and for kinds that return what they deleted (pods); otherwise Status.
            if !deleted.gone || t.res.returns_deleted_object {
                return Ok(json_response(StatusCode::OK, &deleted.object));
            }
            let mut details = json!({"name": name, "kind": t.res.plural, "uid": deleted.object["metadata"]["uid"]});
            if !t.res.group.is_empty() {
                details["group"] = json!(t.res.group);
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            ))
        }
        (Method::DELETE, None) => {
            let list = crate::consistency::selectors(t.res, q)?;
            let opts = delete_options(q, &body)?;
            let items = st.delete_collection(t.res, ns, &list, &opts).await?;
            ctx.namespace_deleted.deleted(t.res);
            let out = json!({
                "kind": format!("{}List", t.res.kind),
                "apiVersion": t.res.api_version(),
                "metadata": {},
                "items": items,
            });
            Ok(json_response(StatusCode::OK, &out))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Whether a write is a dry run: `dryRun` from the query, or for a delete also from the
/// DeleteOptions body (client-go sends it there). `All` is the only value upstream knows;
/// anything else is refused as upstream's options validation refuses it.
fn dry_run(method: &Method, q: &HashMap<String, String>, body: &[u8]) -> ApiResult<bool> {
    let options = match *method {
        Method::POST => "CreateOptions",
        Method::PUT => "UpdateOptions",
        Method::PATCH => "PatchOptions",
        Method::DELETE => "DeleteOptions",
        _ => return Ok(false),
    };
    let mut values: Vec<String> = q.get("dryRun").filter(|v| !v.is_empty()).into_iter().cloned().collect();
    if *method == Method::DELETE && !body.is_empty() {
        if let Ok(opts) = serde_json::from_slice::<Value>(body) {
            let listed = opts["dryRun"].as_array().into_iter().flatten().filter_map(Value::as_str);
            values.extend(listed.map(str::to_string));
        }
    }
    if values.iter().any(|v| v != "All") {
        let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        let err = FieldError {
            kind: "FieldValueNotSupported",
            field: "dryRun".into(),
            detail: format!("Unsupported value: []string{{{}}}: supported values: \"All\"", quoted.join(", ")),
        };
        return Err(ApiError::invalid(&format!("{options}.meta.k8s.io"), "", &[err]));
    }
    Ok(!values.is_empty())
}

/// DeleteOptions from the body (kubectl sends one) and the `gracePeriodSeconds` parameter.
fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> ApiResult<DeleteOptions> {
    let opts: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
    };
    let resource_version = match opts["preconditions"]["resourceVersion"].as_str() {
        Some(s) => Some(s.parse().map_err(|_| ApiError::bad_request("invalid precondition resourceVersion"))?),
        None => None,
    };
    let grace_period = match (opts["gracePeriodSeconds"].as_i64(), q.get("gracePeriodSeconds")) {
        (Some(g), _) => Some(g),
        (None, Some(s)) => {
            Some(s.parse().map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {s:?}")))?)
        }
        (None, None) => None,
    };
    let uid = opts["preconditions"]["uid"].as_str().map(str::to_string);
    Ok(DeleteOptions { resource_version, uid, grace_period })
}

/// The manager a write is recorded under in managedFields.
fn field_manager(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    crate::patch::managed::manager_name(q.get("fieldManager").map(String::as_str), user_agent)
}
