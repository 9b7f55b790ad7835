//! The HTTP surface: health, version and discovery, then the REST verbs of every resource in
//! [`crate::resources::GROUPS`] under `/api/v1` and `/apis/<group>/<version>`, with
//! authentication and authorization in front (client certificates; `system:masters` may do
//! everything).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::discovery::{aggregated, aggregated_group, wants_aggregated};
use crate::pki::User;
use crate::resources::{Resource, GROUPS};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::storage::{DeleteOptions, Storage};

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
    /// Wakes the namespace controller when a namespace is marked for deletion here.
    pub namespace_deleted: Arc<tokio::sync::Notify>,
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
        .route("/apis", get(|headers: HeaderMap| async move { crate::discovery::groups(&headers) }))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/api/v1", get(|| async { group_version_resources("", "v1") }))
        .route("/openapi/v3", get(|| async { json_response(StatusCode::OK, &crate::openapi::root()) }))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api/v1/{*rest}", axum::routing::any(core_resource))
        .route("/apis/{group}/{version}/{*rest}", axum::routing::any(group_resource))
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
    if is_resource_path(&path) && !user.is_master() {
        let (verb, plural, ns, group) = describe(req.method(), &path, req.uri().query().unwrap_or(""));
        let scope = match ns {
            Some(ns) => format!("in the namespace \"{ns}\""),
            None => "at the cluster scope".to_string(),
        };
        let qualified = if group.is_empty() { plural.clone() } else { format!("{plural}.{group}") };
        return ApiError::forbidden(format!(
            "{qualified} is forbidden: User \"{}\" cannot {verb} resource \"{plural}\" in API group \"{group}\" {scope}",
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

/// Whether a path is a resource (not discovery, which every authenticated user may read):
/// below `/api/v1/` or `/apis/<group>/<version>/`.
fn is_resource_path(path: &str) -> bool {
    path.starts_with("/api/v1/")
        || path.strip_prefix("/apis/").is_some_and(|r| r.split('/').filter(|s| !s.is_empty()).count() > 2)
}

/// The verb, resource, namespace and API group of a request, for Forbidden messages.
fn describe(method: &Method, path: &str, query: &str) -> (&'static str, String, Option<String>, String) {
    let (group, rest) = match path.strip_prefix("/apis/") {
        Some(r) => {
            let mut parts = r.splitn(3, '/');
            let group = parts.next().unwrap_or("").to_string();
            (group, parts.nth(1).unwrap_or(""))
        }
        None => (String::new(), path.trim_start_matches("/api/v1/")),
    };
    let segs: Vec<&str> = rest.split('/').collect();
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
    (verb, rest.first().unwrap_or(&"").to_string(), ns, group)
}

/// One group-version's OpenAPI document (`api/v1`, `apis/<group>/<version>`).
async fn openapi_document(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match crate::openapi::DOCUMENTS.get(path.trim_end_matches('/')) {
        Some(d) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], d.body.clone()).into_response(),
        None => ApiError::not_found_path().into_response(),
    }
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), ctx.storage.etcd.revision()).await {
        Ok(Ok(_)) => "ok".into_response(),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n")
            .into_response(),
    }
}

pub fn json_response(code: StatusCode, v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
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

async fn api_versions(State(ctx): State<Arc<Ctx>>, headers: HeaderMap) -> Response {
    if wants_aggregated(&headers) {
        return aggregated(GROUPS.iter().filter(|g| g.group.is_empty()).map(aggregated_group).collect());
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

async fn api_group(axum::extract::Path(group): axum::extract::Path<String>) -> Response {
    match crate::discovery::find_group(&group) {
        Some(g) => json_response(StatusCode::OK, &crate::discovery::group(g)),
        None => ApiError::not_found_path().into_response(),
    }
}

async fn group_resources(axum::extract::Path((group, version)): axum::extract::Path<(String, String)>) -> Response {
    group_version_resources(&group, &version)
}

fn group_version_resources(group: &str, version: &str) -> Response {
    match crate::discovery::find_group_version(group, version) {
        Some(gv) => json_response(StatusCode::OK, &crate::discovery::resource_list(gv)),
        None => ApiError::not_found_path().into_response(),
    }
}

/// Where a resource path (below `/api/v1` or `/apis/<group>/<version>`) points.
struct Target {
    res: &'static Resource,
    ns: Option<String>,
    name: Option<String>,
    sub: Sub,
}

/// The subresource a path names, if any.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Sub {
    None,
    Status,
    Scale,
    Binding,
    Finalize,
}

impl Sub {
    fn parse(s: &str) -> Option<Sub> {
        match s {
            "status" => Some(Sub::Status),
            "scale" => Some(Sub::Scale),
            "binding" => Some(Sub::Binding),
            "finalize" => Some(Sub::Finalize),
            _ => None,
        }
    }

    fn served_by(self, r: &Resource) -> bool {
        let core = |plural: &str| r.group.is_empty() && r.plural == plural;
        match self {
            Sub::None => true,
            Sub::Status => r.has_status,
            Sub::Scale => r.has_scale,
            Sub::Binding => core("pods"),
            Sub::Finalize => core("namespaces"),
        }
    }
}

fn route(group: &str, version: &str, rest: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let find = |p: &str| crate::resources::find(group, version, p).ok_or_else(ApiError::not_found_path);
    let t = |res, ns: Option<&str>, name: Option<&str>, sub| Target {
        res,
        ns: ns.map(str::to_string),
        name: name.map(str::to_string),
        sub,
    };
    let sub = |s: &str| Sub::parse(s).ok_or_else(ApiError::not_found_path);
    let t = match segs.as_slice() {
        [plural] => t(find(plural)?, None, None, Sub::None),
        // Before the namespaced collection pattern: `namespaces/<name>/status|finalize`.
        ["namespaces", name, s] if group.is_empty() && Sub::parse(s).is_some() => {
            t(find("namespaces")?, None, Some(name), sub(s)?)
        }
        ["namespaces", ns, plural] => t(find(plural)?, Some(ns), None, Sub::None),
        ["namespaces", ns, plural, name] => t(find(plural)?, Some(ns), Some(name), Sub::None),
        ["namespaces", ns, plural, name, s] => t(find(plural)?, Some(ns), Some(name), sub(s)?),
        [plural, name] => t(find(plural)?, None, Some(name), Sub::None),
        [plural, name, s] => t(find(plural)?, None, Some(name), sub(s)?),
        _ => return Err(ApiError::not_found_path()),
    };
    // A namespaced resource named without its namespace (`/api/v1/pods/x`) is no URL; a
    // cluster-scoped one has no namespace segment; only some kinds have each subresource.
    if (t.res.namespaced && t.ns.is_none() && t.name.is_some())
        || (!t.res.namespaced && t.ns.is_some())
        || !t.sub.served_by(t.res)
    {
        return Err(ApiError::not_found_path());
    }
    Ok(t)
}

async fn core_resource(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match serve(&ctx, route("", "v1", &rest), method, &q, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn group_resource(
    State(ctx): State<Arc<Ctx>>,
    axum::extract::Path((group, version, rest)): axum::extract::Path<(String, String, String)>,
    method: Method,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match serve(&ctx, route(&group, &version, &rest), method, &q, &headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// Upstream's limit on a request body (`MaxRequestBodyBytes`): twice etcd's default
/// 1.5 MiB request limit, since JSON is bulkier than what is stored.
const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads a resource request's body, refusing a longer one as upstream does (413 Status).
async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES).await.map_err(|e| {
        let too_long = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_long {
            ApiError::too_large(format!("limit is {MAX_REQUEST_BODY_BYTES}"))
        } else {
            ApiError::bad_request(format!("error reading the request body: {e}"))
        }
    })
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
    target: ApiResult<Target>,
    method: Method,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let t = target?;
    let dry_storage;
    let st = if dry_run(&method, q, &body)? {
        dry_storage = ctx.storage.dry_run();
        &dry_storage
    } else {
        &ctx.storage
    };
    let ns = t.ns.as_deref();
    if let Some(name) = t.name.as_deref() {
        match (t.sub, &method) {
            (Sub::Scale, &Method::GET) => {
                return Ok(json_response(StatusCode::OK, &crate::subresources::get_scale(st, t.res, ns, name).await?))
            }
            (Sub::Scale, &Method::PUT) => {
                let scale: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
                let out = crate::subresources::put_scale(st, t.res, ns, name, &scale).await?;
                return Ok(json_response(StatusCode::OK, &out));
            }
            (Sub::Scale, &Method::PATCH) => {
                let out = crate::subresources::patch_scale(st, t.res, ns, name, headers, &body).await?;
                return Ok(json_response(StatusCode::OK, &out));
            }
            (Sub::Binding, &Method::POST) => {
                crate::subresources::bind(st, t.res, ns, name, &body).await?;
                let ok =
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
                return Ok(json_response(StatusCode::CREATED, &ok));
            }
            (Sub::Finalize, &Method::PUT) => {
                let (body, warnings) = decode_body(t.res, headers, &body, q)?;
                let obj = st.update_part(t.res, ns, name, body, crate::storage::Part::Finalize).await?;
                return Ok(with_warnings(json_response(StatusCode::OK, &obj), &warnings));
            }
            (Sub::Scale | Sub::Binding | Sub::Finalize, _) => return Err(ApiError::method_not_allowed()),
            (Sub::None | Sub::Status, _) => {}
        }
    }
    let status = t.sub == Sub::Status;
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
                return Ok(json_response(StatusCode::OK, &crate::table::table(t.res, &[obj], meta)));
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
            if t.res.group.is_empty() && t.res.plural == "namespaces" {
                ctx.namespace_deleted.notify_one();
            }
            // Upstream answers with the object while it waits (finalizers, a pod's grace
            // period) and for kinds that return what they deleted (pods); otherwise Status.
            if !deleted.gone || (t.res.group.is_empty() && t.res.plural == "pods") {
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
            if t.res.group.is_empty() && t.res.plural == "namespaces" {
                ctx.namespace_deleted.notify_one();
            }
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

/// The manager a write is recorded under in managedFields.
fn field_manager(q: &HashMap<String, String>, headers: &HeaderMap) -> String {
    let user_agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or("");
    crate::patch::managed::manager_name(q.get("fieldManager").map(String::as_str), user_agent)
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
        let route = |rest: &str| super::route("", "v1", rest);
        let t = route("namespaces/default/configmaps/x").unwrap();
        assert_eq!((t.res.plural, t.ns.as_deref(), t.name.as_deref()), ("configmaps", Some("default"), Some("x")));
        let t = route("namespaces/default").unwrap();
        assert_eq!((t.res.plural, t.ns.as_deref(), t.name.as_deref()), ("namespaces", None, Some("default")));
        assert_eq!(route("configmaps").unwrap().ns, None);
        assert!(route("configmaps/x").is_err());
        assert!(route("namespaces/a/namespaces").is_err());
        assert!(route("bogus").is_err());
        assert_eq!(route("namespaces/a/pods/p/status").unwrap().sub, Sub::Status);
        assert_eq!(route("namespaces/a/status").unwrap().sub, Sub::Status);
        assert_eq!(route("namespaces/a/finalize").unwrap().sub, Sub::Finalize);
        assert_eq!(route("namespaces/a/pods/p/binding").unwrap().sub, Sub::Binding);
        assert!(route("namespaces/a/configmaps/c/status").is_err());
        assert!(route("namespaces/a/deployments").is_err(), "deployments are in apps/v1");
        let t = super::route("apps", "v1", "namespaces/a/deployments/d/scale").unwrap();
        assert_eq!((t.res.kind, t.sub), ("Deployment", Sub::Scale));
        assert!(super::route("apps", "v1", "namespaces/a/daemonsets/d/scale").is_err());
        let t = super::route("rbac.authorization.k8s.io", "v1", "clusterroles/admin").unwrap();
        assert_eq!((t.res.kind, t.ns.as_deref()), ("ClusterRole", None));
        assert!(super::route("apps", "v2", "deployments").is_err());
    }

    #[test]
    fn forbidden_messages_name_the_api_group() {
        let d = describe(&Method::GET, "/apis/apps/v1/namespaces/dev/deployments", "");
        assert_eq!(d, ("list", "deployments".to_string(), Some("dev".to_string()), "apps".to_string()));
        let d = describe(&Method::DELETE, "/api/v1/namespaces/dev", "");
        assert_eq!(d, ("delete", "namespaces".to_string(), None, String::new()));
        assert!(is_resource_path("/apis/apps/v1/deployments") && is_resource_path("/api/v1/pods"));
        assert!(!is_resource_path("/apis/apps/v1") && !is_resource_path("/apis/apps") && !is_resource_path("/apis"));
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
