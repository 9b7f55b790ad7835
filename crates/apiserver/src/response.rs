//! How answers are written: JSON bodies, `Warning` headers, and what the client's `Accept`
//! asks for. A leaf of the HTTP side, so the handlers, discovery and the subresources share
//! it without importing the HTTP layer.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

pub fn json_response(code: StatusCode, v: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Adds one `Warning: 299 - "<text>"` header per warning, as upstream's warning recorder.
pub fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = header::HeaderValue::from_str(&format!("299 - {}", serde_json::to_string(w).unwrap_or_default()))
        {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

/// Whether the client asked for a `meta.k8s.io/v1` Table (kubectl get's server-side printing).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| m.contains("as=Table") && m.contains("g=meta.k8s.io") && m.contains("v=v1"))
}
