//! The HTTP surface: health, version and discovery, then the REST verbs of every resource in
//! [`crate::resources::CORE_V1`] under `/api/v1`, with authentication and authorization in
//! front (client certificates; `system:masters` may do everything).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::pki::User;
use crate::resources::{by_plural, Resource, CORE_V1};
use crate::status::{ApiError, ApiResult};
use crate::storage::Storage;

/// The Kubernetes release whose API this server speaks (kubectl picks its skew from it).
pub const KUBE_MINOR: &str = "33";

pub struct Ctx {
    pub storage: Storage,
    /// One watch cache per resource: feeds watches and resourceVersion="0"/NotOlderThan lists.
    pub caches: Arc<crate::watch_cache::Caches>,
    /// `--max-requests-inflight` (None = unlimited); watches are not counted, as upstream.
    pub inflight: Option<Arc<tokio::sync::Semaphore>>,
    /// Host:port clients are told to use in `/api` (the advertise address).
    pub server_address: String,
}

/// The identity of the connection a request came on (set per TLS connection).
#[derive(Clone)]
pub struct Identity(pub Option<User>);

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(core_resources))
        .route("/openapi/v3", get(|| async { json_response(StatusCode::OK, &crate::openapi::root()) }))
        .route("/openapi/v3/api/v1", get(|| async { json_response(StatusCode::OK, &crate::openapi::core_v1()) }))
        .route("/api/v1/{*rest}", axum::routing::any(resource))
        .fallback(|| async { ApiError::not_found_path() })
        .layer(middleware::from_fn_with_state(ctx.clone(), authenticate))
        .with_state(ctx)
}

/// 401 for anonymous requests except the health probes; 403 for authenticated users outside
/// `system:masters` on resources (there is no RBAC yet; discovery is open to them, as
/// upstream's `system:discovery` role does); 429 past `--max-requests-inflight`.
async fn authenticate(State(ctx): State<Arc<Ctx>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let public = matches!(path.as_str(), "/healthz" | "/livez" | "/readyz");
    let user = req.extensions().get::<Identity>().and_then(|i| i.0.clone());
    let Some(user) = user else {
        if public {
            return next.run(req).await;
        }
        return ApiError::unauthorized().into_response();
    };
    let is_resource = path.starts_with("/api/v1/") || path.starts_with("/apis/");
    if is_resource && !user.is_master() {
        let (verb, plural, ns) = describe(req.method(), &path, req.uri().query().unwrap_or(""));
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        return ApiError::forbidden(format!(
            "{plural} is forbidden: User \"{}\" cannot {verb} resource \"{plural}\" in API group \"\" {scope}",
            user.name
        ))
        .into_response();
    }
    let watching = req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let _permit = match (&ctx.inflight, watching) {
        (Some(sem), false) => match sem.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return ApiError::too_many_requests().into_response(),
        },
        _ => None,
    };
    next.run(req).await
}

/// The verb, resource and namespace of a request, for Forbidden messages.
fn describe(method: &Method, path: &str, query: &str) -> (&'static str, String, Option<String>) {
    let segs: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let (ns, rest) = match segs.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest.to_vec()),
        s => (None, s.to_vec()),
    };
    let item = rest.len() > 1;
    let watch = query.contains("watch=true") || query.contains("watch=1");
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if item => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if item => "delete",
        Method::DELETE => "deletecollection",
        _ => "access",
    };
    (verb, rest.first().unwrap_or(&"").to_string(), ns)
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), ctx.storage.etcd.revision()).await {
        Ok(Ok(_)) => "ok".into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
            .into_response(),
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": KUBE_MINOR,
            "gitVersion": format!("v1.{KUBE_MINOR}.0+kaname-{}", env!("CARGO_PKG_VERSION")),
            "gitCommit": "",
            "gitTreeState": "",
            "buildDate": "",
            "goVersion": "",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
        }),
    )
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether the client asked for aggregated discovery (apidiscovery.k8s.io/v2), which lists
/// every resource in one response instead of one request per group-version.
fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.contains("g=apidiscovery.k8s.io") && m.contains("v=v2;") && m.contains("as=APIGroupDiscoveryList"))
}

fn aggregated(items: Vec<Value>) -> Response {
    let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
    (StatusCode::OK, [(header::CONTENT_TYPE, AGGREGATED)], body.to_string()).into_response()
}

const VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const STATUS_VERBS: &[&str] = &["get", "patch", "update"];

async fn api_versions(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        let resources: Vec<Value> = CORE_V1
            .iter()
            .map(|r| {
                let mut v = json!({
                    "resource": r.plural,
                    "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                    "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": r.singular,
                    "verbs": VERBS,
                });
                if !r.short_names.is_empty() {
                    v["shortNames"] = json!(r.short_names);
                }
                if !r.categories.is_empty() {
                    v["categories"] = json!(r.categories);
                }
                if r.has_status {
                    v["subresources"] = json!([{
                        "subresource": "status",
                        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                        "verbs": STATUS_VERBS,
                    }]);
                }
                v
            })
            .collect();
        return aggregated(vec![json!({
            "metadata": {"creationTimestamp": null},
            "versions": [{"version": "v1", "resources": resources, "freshness": "Current"}],
        })]);
    }
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.server_address}],
        }),
    )
}

/// No API groups yet (only the legacy core group under /api).
async fn api_groups(headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(Vec::new());
    }
    json_response(StatusCode::OK, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}))
}

async fn core_resources() -> Response {
    let resources: Vec<Value> = CORE_V1
        .iter()
        .map(|r| {
            let mut v = json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
            });
            if !r.short_names.is_empty() {
                v["shortNames"] = json!(r.short_names);
            }
            if !r.categories.is_empty() {
                v["categories"] = json!(r.categories);
            }
            v
        })
        .collect();
    let mut resources = resources;
    for r in CORE_V1.iter().filter(|r| r.has_status) {
        resources.push(json!({
            "name": format!("{}/status", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": STATUS_VERBS,
        }));
    }
    json_response(StatusCode::OK, &json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}))
}

/// Where a `/api/v1/...` path points.
struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    /// The `/status` subresource of the named object.
    status: bool,
}

fn route(rest: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let find = |p: &str| by_plural(p).ok_or_else(ApiError::not_found_path);
    let t = |res, ns: Option<&str>, name: Option<&str>, status| Target {
        res,
        ns: ns.map(str::to_string),
        name: name.map(str::to_string),
        status,
    };
    let t = match segs.as_slice() {
        [plural] => t(find(plural)?, None, None, false),
        // Before the namespaced collection pattern: `namespaces/<name>/status`.
        [plural, name, "status"] => t(find(plural)?, None, Some(name), true),
        ["namespaces", ns, plural] => t(find(plural)?, Some(ns), None, false),
        ["namespaces", ns, plural, name] => t(find(plural)?, Some(ns), Some(name), false),
        ["namespaces", ns, plural, name, "status"] => t(find(plural)?, Some(ns), Some(name), true),
        [plural, name] => t(find(plural)?, None, Some(name), false),
        _ => return Err(ApiError::not_found_path()),
    };
    // A namespaced resource named without its namespace (`/api/v1/pods/x`) is no URL; a
    // cluster-scoped one has no namespace segment; only some kinds have a status.
    if (t.res.namespaced && t.ns.is_none() && t.name.is_some())
        || (!t.res.namespaced && t.ns.is_some())
        || (t.status && !t.res.has_status)
    {
        return Err(ApiError::not_found_path());
    }
    Ok(t)
}

async fn resource(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match serve(&ctx, &rest, method, &q, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.contains("as=Table") && m.contains("g=meta.k8s.io") && m.contains("v=v1"))
}

async fn serve(
    ctx: &Ctx,
    rest: &str,
    method: Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let t = route(rest)?;
    let st = &ctx.storage;
    let ns = t.ns.as_deref();
    if q.get("dryRun").is_some_and(|d| !d.is_empty()) {
        return Err(ApiError::bad_request("dryRun is not supported by this server yet"));
    }
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
                return Ok(json_response(StatusCode::OK, &crate::table::table(t.res, &l.items, meta)));
            }
            let list = json!({
                "kind": format!("{}List", t.res.kind),
                "apiVersion": t.res.api_version(),
                "metadata": meta,
                "items": l.items,
            });
            Ok(json_response(StatusCode::OK, &list))
        }
        (Method::GET, Some(name)) => {
            let obj = st.get(t.res, ns, name).await?;
            if wants_table(headers) {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                return Ok(json_response(StatusCode::OK, &crate::table::table(t.res, &[obj], meta)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (Method::POST, None) => {
            let (body, warnings) = decode_body(t.res, headers, &body, q)?;
            let obj = st.create(t.res, ns, body).await?;
            Ok(with_warnings(json_response(StatusCode::CREATED, &obj), &warnings))
        }
        (Method::PUT, Some(name)) => {
            let (body, warnings) = decode_body(t.res, headers, &body, q)?;
            let obj = st.update(t.res, ns, name, body, t.status).await?;
            Ok(with_warnings(json_response(StatusCode::OK, &obj), &warnings))
        }
        (Method::PATCH, Some(name)) => {
            let (obj, warnings) = crate::patch::apply(
                st,
                crate::patch::Target { res: t.res, ns, name, status: t.status },
                headers,
                &body,
                q,
            )
            .await?;
            Ok(with_warnings(json_response(StatusCode::OK, &obj), &warnings))
        }
        (Method::DELETE, Some(_)) if t.status => Err(ApiError::method_not_allowed()),
        (Method::DELETE, Some(name)) => {
            let opts: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?
            };
            let pre_rv = match opts["preconditions"]["resourceVersion"].as_str() {
                Some(s) => Some(s.parse().map_err(|_| ApiError::bad_request("invalid precondition resourceVersion"))?),
                None => None,
            };
            let pre_uid = opts["preconditions"]["uid"].as_str().map(str::to_string);
            let old = st.delete(t.res, ns, name, pre_rv, pre_uid).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "kind": t.res.plural, "uid": old["metadata"]["uid"]},
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A create/update body: JSON only; unknown fields per `fieldValidation` (Strict: 400,
/// Warn: warning headers, Ignore: dropped silently; upstream's default is Warn).
fn decode_body(
    res: &Resource,
    headers: &HeaderMap,
    body: &[u8],
    q: &HashMap<String, String>,
) -> ApiResult<(Value, Vec<String>)> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    let v: Value = match media {
        "application/json" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?
        }
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(body).map_err(|_| ApiError::unsupported_media_type(ct))?
        }
        _ => return Err(ApiError::unsupported_media_type(ct)),
    };
    let warnings = check_fields(res, &v, q)?;
    Ok((v, warnings))
}

/// Decodes `v` through the resource's type and applies `fieldValidation` to what the type
/// does not know: Strict fails (400), Warn returns warnings, Ignore drops them silently.
pub fn check_fields(res: &Resource, v: &Value, q: &HashMap<String, String>) -> ApiResult<Vec<String>> {
    let cannot = |why: String| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {why}",
            res.kind, res.version, res.kind
        ))
    };
    let normalized = (res.normalize)(v.clone()).map_err(cannot)?;
    let mut unknown = Vec::new();
    unknown_fields(v, &normalized, "", &mut unknown);
    let msgs: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    match q.get("fieldValidation").map(String::as_str).unwrap_or("Warn") {
        "Strict" if !msgs.is_empty() => Err(cannot(format!("strict decoding error: {}", msgs.join(", ")))),
        "Ignore" => Ok(Vec::new()),
        "Strict" | "Warn" => Ok(msgs),
        other => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}; must be one of Ignore, Warn, Strict"
        ))),
    }
}

/// Paths present (non-null) in `input` that the typed round trip dropped.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(tv) => unknown_fields(v, tv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = header::HeaderValue::from_str(&format!("299 - {}", serde_json::to_string(w).unwrap_or_default()))
        {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = route("namespaces/default/configmaps/x").unwrap();
        assert_eq!((t.res.plural, t.ns.as_deref(), t.name.as_deref()), ("configmaps", Some("default"), Some("x")));
        let t = route("namespaces/default").unwrap();
        assert_eq!((t.res.plural, t.ns.as_deref(), t.name.as_deref()), ("namespaces", None, Some("default")));
        assert_eq!(route("configmaps").unwrap().ns, None);
        assert!(route("configmaps/x").is_err());
        assert!(route("namespaces/a/namespaces").is_err());
        assert!(route("bogus").is_err());
        assert!(route("namespaces/a/pods/p/status").unwrap().status);
        assert!(route("namespaces/a/status").unwrap().status);
        assert!(route("namespaces/a/configmaps/c/status").is_err());
    }

    #[test]
    fn unknown_fields_are_found() {
        let input = json!({"metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}, "x": null});
        let typed = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let mut out = Vec::new();
        unknown_fields(&input, &typed, "", &mut out);
        assert_eq!(out, vec!["metadata.bogus"]);
    }
}
