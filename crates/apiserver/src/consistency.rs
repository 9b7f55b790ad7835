//! What `resourceVersion`, `resourceVersionMatch`, `limit`, `continue` and
//! `sendInitialEvents` ask of a list or a watch, validated as upstream's `ValidateListOptions`
//! does, and where each read is served from (upstream's "Semantics for get and list"):
//!
//! | request                                  | served from                                  |
//! |------------------------------------------|----------------------------------------------|
//! | no resourceVersion (or a continue token) | etcd, quorum read (paged by limit/continue)  |
//! | resourceVersion=0                        | the watch cache, whatever it holds (any)     |
//! | N, NotOlderThan (or no match, no limit)  | the watch cache once it reached N            |
//! | N, Exact (or no match, with a limit)     | etcd at revision N (410 if compacted)        |

use std::collections::HashMap;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;

use crate::resources::Resource;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, ApiResult, FieldError};
use crate::storage::{ListOptions, ListResult, Storage};
use crate::watch::{Start, WatchOptions};
use crate::watch_cache::Caches;

/// Where a list is read.
#[derive(Debug, PartialEq)]
enum ListFrom {
    /// etcd at its latest revision, or at a continue token's / an exact revision.
    Etcd,
    /// The cache, once it has reached this revision (0: as it is).
    Cache(i64),
}

fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::bad_request(format!("invalid resource version: {rv:?}")))
}

/// The 422 upstream gives for contradictory list/watch options.
fn invalid_options(errs: Vec<FieldError>) -> ApiError {
    ApiError::invalid("ListOptions.meta.k8s.io", "", &errs)
}

fn not_supported(value: &str, supported: &[&str]) -> FieldError {
    let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    FieldError {
        kind: "FieldValueNotSupported",
        field: "resourceVersionMatch".into(),
        detail: format!("Unsupported value: {value:?}: supported values: {}", quoted.join(", ")),
    }
}

/// The selectors, the page and where to read, for a list request.
fn list_plan(res: &Resource, q: &HashMap<String, String>) -> ApiResult<(ListOptions, ListFrom)> {
    let mut opts = selectors(res, q)?;
    opts.limit = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(s) => s.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid limit {s:?}")))?.max(0),
        None => 0,
    };
    opts.continue_token = q.get("continue").filter(|s| !s.is_empty()).cloned();
    let rv = q.get("resourceVersion").map(String::as_str).filter(|s| !s.is_empty());
    let rv_match = q.get("resourceVersionMatch").map(String::as_str).filter(|s| !s.is_empty());
    let mut errs = Vec::new();
    if let Some(m) = rv_match {
        let forbidden = |why: &str| FieldError::forbidden("resourceVersionMatch", why);
        if rv.is_none() {
            errs.push(forbidden("resourceVersionMatch is forbidden unless resourceVersion is provided"));
        }
        if opts.continue_token.is_some() {
            errs.push(forbidden("resourceVersionMatch is forbidden when continue is provided"));
        }
        if m != "Exact" && m != "NotOlderThan" {
            errs.push(not_supported(m, &["Exact", "NotOlderThan", ""]));
        }
        if m == "Exact" && rv == Some("0") {
            errs.push(forbidden("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""));
        }
    }
    if q.contains_key("sendInitialEvents") {
        errs.push(FieldError::forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"));
    }
    if !errs.is_empty() {
        return Err(invalid_options(errs));
    }
    if opts.continue_token.is_some() {
        // The token carries its own revision; "0" is tolerated as upstream does.
        if rv.is_some_and(|r| r != "0") {
            return Err(ApiError::bad_request("specifying resource version is not allowed when using continue"));
        }
        return Ok((opts, ListFrom::Etcd));
    }
    let from = match (rv, rv_match) {
        (None, _) => ListFrom::Etcd,
        (Some(r), Some("Exact")) => {
            opts.exact_rv = Some(parse_rv(r)?);
            ListFrom::Etcd
        }
        (Some(r), None) if opts.limit > 0 && r != "0" => {
            opts.exact_rv = Some(parse_rv(r)?);
            ListFrom::Etcd
        }
        // The cache serves whole lists: upstream's cache ignores limit for these too.
        (Some(r), _) => ListFrom::Cache(parse_rv(r)?),
    };
    Ok((opts, from))
}

pub fn selectors(res: &Resource, q: &HashMap<String, String>) -> ApiResult<ListOptions> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""), res.selectable)
        .map_err(ApiError::bad_request)?;
    Ok(ListOptions { labels, fields, ..Default::default() })
}

/// A list, from etcd or the cache as the request asks.
pub async fn list(
    storage: &Storage,
    caches: &Caches,
    res: &'static Resource,
    ns: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<ListResult> {
    let (opts, from) = list_plan(res, q)?;
    let ListFrom::Cache(min_rev) = from else {
        return storage.list(res, ns, &opts).await.map_err(|e| exact_too_old(e, opts.exact_rv));
    };
    let cache = caches.get(res)?;
    cache.wait_for(min_rev).await?;
    let (revision, objects) = cache.snapshot(&storage.collection(res, ns));
    let items = objects
        .iter()
        .filter(|o| opts.labels.matches(&o["metadata"]["labels"]) && opts.fields.matches(o))
        .cloned()
        .collect();
    Ok(ListResult { items, revision, continue_token: None })
}

/// An exact read at a compacted revision: upstream's message for a list (not a continue).
fn exact_too_old(e: ApiError, exact: Option<i64>) -> ApiError {
    if exact.is_some() && e.code == 410 {
        ApiError::expired("The resourceVersion for the provided list is too old.".into())
    } else {
        e
    }
}

/// Parses a watch request's options (upstream's `validateWatchOptions`).
pub fn watch_options(res: &Resource, q: &HashMap<String, String>, as_table: bool) -> ApiResult<WatchOptions> {
    let sel = selectors(res, q)?;
    let flag = |name: &str| q.get(name).is_some_and(|v| v == "true" || v == "1");
    let send_initial_events = q.get("sendInitialEvents").map(|v| v == "true" || v == "1");
    let rv_match = q.get("resourceVersionMatch").map(String::as_str).filter(|s| !s.is_empty());
    let mut errs = Vec::new();
    if send_initial_events.is_some() && rv_match != Some("NotOlderThan") {
        errs.push(FieldError::forbidden(
            "resourceVersionMatch",
            "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
        ));
    }
    if let Some(m) = rv_match {
        if send_initial_events.is_none() {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if m != "NotOlderThan" {
            errs.push(not_supported(m, &["NotOlderThan"]));
        }
    }
    if !errs.is_empty() {
        return Err(invalid_options(errs));
    }
    let start = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => Start::Consistent,
        Some("0") => Start::Any,
        Some(rv) => Start::After(parse_rv(rv)?),
    };
    // Upstream bounds a watch without timeoutSeconds by a random 30–60 minutes.
    let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        Some(s) => {
            Duration::from_secs(s.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?)
        }
        None => Duration::from_secs(1800 + rand::random::<u64>() % 1800),
    };
    Ok(WatchOptions {
        labels: sel.labels,
        fields: sel.fields,
        start,
        send_initial_events: send_initial_events.unwrap_or(false),
        bookmarks: flag("allowWatchBookmarks"),
        timeout,
        as_table,
    })
}

/// Starts a watch and answers with its event stream (errors found before the first event are
/// plain HTTP errors, as upstream's).
pub async fn watch(
    storage: &Storage,
    caches: &Caches,
    res: &'static Resource,
    ns: Option<&str>,
    opts: WatchOptions,
) -> ApiResult<Response> {
    let cache = caches.get(res)?;
    let prefix = storage.collection(res, ns);
    let sub = crate::watch::subscribe(storage, cache, &prefix, &opts).await?;
    // Small: the cache's ring is the watcher's real buffer; this only decouples the socket.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(crate::watch::serve(res, prefix, opts, sub, tx));
    let stream =
        futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok::<_, std::convert::Infallible>);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(ApiError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(query: &[(&str, &str)]) -> ApiResult<ListFrom> {
        let q = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        list_plan(crate::resources::by_plural("configmaps").unwrap(), &q).map(|(_, f)| f)
    }

    #[test]
    fn lists_are_read_where_upstream_reads_them() {
        assert_eq!(plan(&[]).unwrap(), ListFrom::Etcd);
        assert_eq!(plan(&[("resourceVersion", "0")]).unwrap(), ListFrom::Cache(0));
        assert_eq!(plan(&[("resourceVersion", "7")]).unwrap(), ListFrom::Cache(7));
        assert_eq!(plan(&[("resourceVersion", "7"), ("limit", "2")]).unwrap(), ListFrom::Etcd);
        assert_eq!(
            plan(&[("resourceVersion", "7"), ("resourceVersionMatch", "NotOlderThan")]).unwrap(),
            ListFrom::Cache(7)
        );
        assert_eq!(plan(&[("resourceVersion", "7"), ("resourceVersionMatch", "Exact")]).unwrap(), ListFrom::Etcd);
    }

    #[test]
    fn contradictions_are_upstreams_422s() {
        let e = plan(&[("resourceVersionMatch", "Exact")]).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "ListOptions.meta.k8s.io \"\" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
        );
        let e = plan(&[("resourceVersion", "0"), ("resourceVersionMatch", "Exact")]).unwrap_err();
        assert!(
            e.message.ends_with("resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""),
            "{}",
            e.message
        );
        let e = plan(&[("resourceVersion", "1"), ("resourceVersionMatch", "Newest")]).unwrap_err();
        assert!(
            e.message.ends_with("Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\", \"\""),
            "{}",
            e.message
        );
        assert_eq!(plan(&[("resourceVersion", "x")]).unwrap_err().code, 400);
        assert_eq!(plan(&[("resourceVersion", "5"), ("continue", "abc")]).unwrap_err().code, 400);
    }
}
