//! Kubernetes `Status` errors (k8s.io/apimachinery/pkg/api/errors): the reason, code and
//! message text match upstream, because kubectl prints `Error from server (<Reason>): <message>`
//! and scripts match on it.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One field error of a 422 Invalid (upstream's `field.Error`).
#[derive(Debug, Clone)]
pub struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub kind: &'static str,
    pub field: String,
    /// The text after the field path, e.g. `Invalid value: "A": a lowercase RFC 1123 ...`.
    pub detail: String,
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &str, why: &str) -> Self {
        FieldError {
            kind: "FieldValueInvalid",
            field: field.into(),
            detail: format!("Invalid value: {}: {why}", serde_json::to_string(value).unwrap_or_default()),
        }
    }
    /// An invalid value that is not a string (a list, a number), printed as JSON as
    /// upstream's field errors print non-string values.
    pub fn invalid_value(field: impl Into<String>, value: &Value, why: &str) -> Self {
        FieldError { kind: "FieldValueInvalid", field: field.into(), detail: format!("Invalid value: {value}: {why}") }
    }
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let quoted: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            kind: "FieldValueNotSupported",
            field: field.into(),
            detail: format!("Unsupported value: {value:?}: supported values: {}", quoted.join(", ")),
        }
    }
    /// Upstream's `field.TooLong` with a byte limit (the value itself is never printed).
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        FieldError {
            kind: "FieldValueTooLong",
            field: field.into(),
            detail: format!("Too long: may not be more than {max_bytes} bytes"),
        }
    }
    pub fn required(field: impl Into<String>, why: &str) -> Self {
        let detail = if why.is_empty() { "Required value".to_string() } else { format!("Required value: {why}") };
        FieldError { kind: "FieldValueRequired", field: field.into(), detail }
    }
    /// Upstream's `field.Duplicate` of a string value (quoted as Go's `%#v` quotes it, which
    /// for a string is JSON's quoting).
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        FieldError {
            kind: "FieldValueDuplicate",
            field: field.into(),
            detail: format!("Duplicate value: {}", serde_json::to_string(value).unwrap_or_default()),
        }
    }
    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        FieldError { kind: "FieldValueForbidden", field: field.into(), detail: format!("Forbidden: {why}") }
    }
}

/// The cause type of a fenced write's 409 (the `fence` module: a leader's write refused because
/// its Lease moved on).
pub const LEASE_FENCED: &str = "LeaseFenced";

/// A failed API request; renders as a `Status` object with the matching HTTP code.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// Upstream's StatusDetails for a `resource.group` (or `Kind.group`) and a name: the group
/// is reported apart from the kind.
fn details(qualified: &str, name: &str) -> Value {
    match qualified.split_once('.') {
        Some((kind, group)) => json!({"name": name, "group": group, "kind": kind}),
        None => json!({"name": name, "kind": qualified}),
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: String, details: Option<Value>) -> Self {
        ApiError { code, reason, message, details }
    }
    /// `configmaps "x" not found`; `resource` is the plural, qualified by its group for named
    /// groups (`deployments.apps`), as upstream's GroupResource prints.
    pub fn not_found(resource: &str, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{resource} \"{name}\" not found"), Some(details(resource, name)))
    }
    pub fn already_exists(resource: &str, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{resource} \"{name}\" already exists"), Some(details(resource, name)))
    }
    /// A conflict that reading the object again and retrying resolves: not a fenced write's
    /// ([`LEASE_FENCED`]), which only a newer lease term could.
    pub fn is_retryable_conflict(&self) -> bool {
        let fenced = self
            .details
            .as_ref()
            .and_then(|d| d["causes"].as_array())
            .is_some_and(|c| c.iter().any(|c| c["reason"] == LEASE_FENCED));
        self.reason == "Conflict" && !fenced
    }
    /// The optimistic-concurrency failure of an update whose resourceVersion is stale.
    pub fn conflict(resource: &str, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {resource} \"{name}\": {why}"),
            Some(details(resource, name)),
        )
    }
    pub fn stale(resource: &str, name: &str) -> Self {
        Self::conflict(
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }
    /// 422 with upstream's aggregate message: one error as is, several in `[a, b]`; `kind`
    /// is qualified by its group for named groups (`Deployment.apps`).
    pub fn invalid(kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let texts: Vec<String> = errs.iter().map(|e| format!("{}: {}", e.field, e.detail)).collect();
        let agg = if texts.len() == 1 { texts[0].clone() } else { format!("[{}]", texts.join(", ")) };
        let causes: Vec<Value> =
            errs.iter().map(|e| json!({"reason": e.kind, "message": e.detail, "field": e.field})).collect();
        Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {agg}"),
            Some({
                let mut d = details(kind, name);
                d["causes"] = json!(causes);
                d
            }),
        )
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        )
    }
    /// Upstream's `UnsupportedMediaTypeError`: the media types this request could have used.
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), None)
    }
    pub fn forbidden(message: String) -> Self {
        Self::new(403, "Forbidden", message, None)
    }
    /// Upstream's `NewForbidden(resource, name, err)`: `<resource> "<name>" is forbidden: <why>`.
    pub fn forbidden_object(resource: &str, name: &str, why: &str) -> Self {
        Self::new(403, "Forbidden", format!("{resource} \"{name}\" is forbidden: {why}"), Some(details(resource, name)))
    }
    /// The body of a 410 for a compacted resourceVersion (watch ERROR events carry it too).
    pub fn expired(message: String) -> Self {
        Self::new(410, "Expired", message, None)
    }
    /// A read or watch for a revision the cache has not reached within its wait (upstream's
    /// `NewTooLargeResourceVersionError`, served as a 504 the client retries).
    pub fn too_large_resource_version(wanted: i64, current: i64) -> Self {
        Self::new(
            504,
            "Timeout",
            format!("Too large resource version: {wanted}, current: {current}"),
            Some(json!({
                "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
                "retryAfterSeconds": 1,
            })),
        )
    }
    /// A watch cache that has not (re)listed yet (upstream's cacher answers the same).
    pub fn storage_initializing() -> Self {
        Self::new(429, "TooManyRequests", "storage is (re)initializing".into(), Some(json!({"retryAfterSeconds": 1})))
    }
    pub fn too_many_requests() -> Self {
        Self::new(429, "TooManyRequests", "Too many requests, please try again later.".into(), None)
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {message}"), None)
    }
    /// etcd unreachable or timing out (upstream surfaces these as 500/504 too).
    pub fn timeout(message: impl std::fmt::Display) -> Self {
        Self::new(504, "Timeout", format!("Timeout: {message}"), None)
    }
    /// Upstream's `NewRequestEntityTooLargeError`.
    pub fn too_large(message: impl std::fmt::Display) -> Self {
        Self::new(413, "RequestEntityTooLarge", format!("Request entity too large: {message}"), None)
    }
    pub fn not_found_path() -> Self {
        Self::new(404, "NotFound", "the server could not find the requested resource".into(), None)
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (code, [(header::CONTENT_TYPE, "application/json")], self.to_status().to_string()).into_response();
        if self.code == 429 {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<tonic::Status> for ApiError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ApiError::timeout(s.message()),
            // An object over etcd's --max-request-bytes: upstream answers 413 with etcd's text
            // (kubernetes#74600), not a 500.
            _ if s.message() == "etcdserver: request is too large" => {
                Self::new(413, "RequestEntityTooLarge", s.message().to_string(), None)
            }
            _ => ApiError::internal(s.message()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
