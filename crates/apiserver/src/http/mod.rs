//! The HTTP surface, as kube-apiserver's generic server builds it: a filter chain
//! ([`filters`]: request info, authentication, in-flight limit, authorization) in front of
//! the routes. Non-resource routes (health, `/version`, discovery, OpenAPI v2 and v3) are answered
//! here; everything under `/api/v1` and `/apis/<group>/<version>` goes to the REST verbs in
//! [`handlers`], which find their resource through [`target`].

mod filters;
mod handlers;
mod target;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::auth::{Authenticators, Authorizers};
use crate::discovery::{aggregated, aggregated_group, wants_aggregated};
use crate::resources::GROUPS;
use crate::response::json_response;
use crate::status::ApiError;
use crate::storage::Storage;
use crate::KUBE_MINOR;

/// What every request handler shares: the registry, the watch caches, the filter chain's
/// parts, and the few facts the non-resource routes report.
pub struct Ctx {
    pub storage: Storage,
    /// One watch cache per resource: feeds watches and resourceVersion="0"/NotOlderThan lists.
    pub caches: Arc<crate::watch_cache::Caches>,
    pub authenticators: Authenticators,
    pub authorizers: Authorizers,
    /// `--max-requests-inflight` (None = unlimited); watches are not counted, as upstream.
    pub inflight: Option<Arc<tokio::sync::Semaphore>>,
    /// Host:port clients are told to use in `/api` (the advertise address).
    pub server_address: String,
    /// Wakes the namespace controller when a namespace is marked for deletion here.
    pub namespace_deleted: crate::namespace_controller::in_server::Nudge,
    /// Set once the built-in priority classes exist (upstream's post-start hook, which
    /// `/readyz` waits for).
    pub priority_classes_ready: Arc<std::sync::atomic::AtomicBool>,
}

pub fn router(ctx: Arc<Ctx>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Upstream serves these through go-restful, which takes a trailing slash as the same
        // path (`/version/` is what some client libraries ask for).
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/api", get(api_versions))
        .route("/api/", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/apis/", get(api_groups))
        .route("/apis/{group}", get(api_group))
        .route("/apis/{group}/", get(api_group))
        .route("/apis/{group}/{version}", get(group_resources))
        .route("/apis/{group}/{version}/", get(group_resources))
        .route("/api/v1", get(core_resources))
        .route("/api/v1/", get(core_resources))
        // Upstream serves v2 on this exact path only (kube-openapi's handler, not go-restful).
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_root))
        .route("/openapi/v3/", get(openapi_root))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api/v1/{*rest}", axum::routing::any(handlers::resource))
        .route("/apis/{group}/{version}/{*rest}", axum::routing::any(handlers::resource))
        .fallback(|| async { ApiError::not_found_path() })
        .layer(middleware::from_fn_with_state(ctx.clone(), filters::chain))
        .with_state(ctx)
}

async fn api_groups(headers: HeaderMap) -> Response {
    crate::discovery::groups(&headers)
}

async fn core_resources() -> Response {
    group_version_resources("", "v1")
}

async fn openapi_root() -> Response {
    json_response(StatusCode::OK, &crate::openapi::root())
}

/// `/openapi/v2` in the form `Accept` asks for (406 for neither), with upstream's caching
/// headers: a request whose `If-None-Match` names the current ETag gets a bodiless 304.
async fn openapi_v2(headers: HeaderMap) -> Response {
    use crate::openapi_v2::{negotiate, Form, SPEC};
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Some(form) = negotiate(accept) else {
        return (StatusCode::NOT_ACCEPTABLE, [(header::VARY, "Accept")]).into_response();
    };
    let spec = &*SPEC;
    let cached = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == spec.etag || tag.trim() == "*");
    let common = [
        (header::VARY, "Accept"),
        (header::ETAG, spec.etag.as_str()),
        (header::LAST_MODIFIED, spec.last_modified.as_str()),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    let body = if form == Form::Json { spec.json.clone() } else { spec.proto.clone() };
    (StatusCode::OK, common, [(header::CONTENT_TYPE, form.content_type())], body).into_response()
}

/// One group-version's OpenAPI document (`api/v1`, `apis/<group>/<version>`).
async fn openapi_document(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match crate::openapi::DOCUMENTS.get(path.trim_end_matches('/')) {
        Some(d) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], d.body.clone()).into_response(),
        None => ApiError::not_found_path().into_response(),
    }
}

async fn readyz(State(ctx): State<Arc<Ctx>>) -> Response {
    let etcd = matches!(tokio::time::timeout(Duration::from_secs(2), ctx.storage.etcd.revision()).await, Ok(Ok(_)));
    let classes = ctx.priority_classes_ready.load(std::sync::atomic::Ordering::Acquire);
    if etcd && classes {
        return "ok".into_response();
    }
    // Upstream's verbose-on-failure report, one line per check.
    let check = |ok: bool, name: &str| {
        if ok {
            format!("[+]{name} ok\n")
        } else {
            format!("[-]{name} failed: reason withheld\n")
        }
    };
    let body = format!(
        "[+]ping ok\n{}{}readyz check failed\n",
        check(etcd, "etcd"),
        check(classes, "poststarthook/scheduling/bootstrap-system-priority-classes")
    );
    (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
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
