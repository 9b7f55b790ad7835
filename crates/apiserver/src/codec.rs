//! How request bodies become objects: the size limit, the media types (JSON, and Kubernetes
//! protobuf through [`crate::protobuf`]), and `fieldValidation` (unknown fields found by
//! comparing the body with its round trip through the kind's k8s-openapi type). Shared by
//! the create/update handlers and by patch, which validates what a patch produced.

use std::collections::HashMap;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap};
use serde_json::Value;

use crate::resources::Resource;
use crate::status::{ApiError, ApiResult};

/// Upstream's limit on a request body (`MaxRequestBodyBytes`): twice etcd's default
/// 1.5 MiB request limit, since JSON is bulkier than what is stored.
pub const MAX_REQUEST_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Reads a resource request's body, refusing a longer one as upstream does (413 Status).
pub async fn read_body(body: Body) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, MAX_REQUEST_BODY_BYTES).await.map_err(|e| {
        let too_long = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_long {
            ApiError::too_large(format!("limit is {MAX_REQUEST_BODY_BYTES}"))
        } else {
            ApiError::bad_request(format!("error reading the request body: {e}"))
        }
    })
}

/// The media types a create or update body may have, in upstream's order (its first is what
/// a body without `Content-Type` is taken as).
pub const BODY_MEDIA_TYPES: [&str; 3] = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"];

/// The media type of a request (`Content-Type` without parameters, lowercased as Go's
/// `mime.ParseMediaType` does); None when the header is absent or empty.
pub fn media_type(headers: &HeaderMap) -> Option<String> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    (!media.is_empty()).then_some(media)
}

/// A create/update body: JSON, YAML or protobuf; unknown fields per `fieldValidation` (Strict:
/// 400, Warn: warning headers, Ignore: dropped silently; upstream's default is Warn).
///
/// A body without `Content-Type` is JSON, as upstream's `NegotiateInputSerializer` takes the
/// first supported type (clients such as the Python and JavaScript libraries send none).
pub fn decode_body(
    res: &Resource,
    headers: &HeaderMap,
    body: &[u8],
    q: &HashMap<String, String>,
) -> ApiResult<(Value, Vec<String>)> {
    let media = media_type(headers).unwrap_or_else(|| BODY_MEDIA_TYPES[0].to_string());
    let v: Value = match media.as_str() {
        "application/json" => {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?
        }
        "application/yaml" => {
            serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?
        }
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode(body).map_err(|_| ApiError::unsupported_media_type(&BODY_MEDIA_TYPES))?
        }
        _ => return Err(ApiError::unsupported_media_type(&BODY_MEDIA_TYPES)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_found() {
        let input = json!({"metadata": {"name": "a", "bogus": 1}, "data": {"k": "v"}, "x": null});
        let typed = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        let mut out = Vec::new();
        unknown_fields(&input, &typed, "", &mut out);
        assert_eq!(out, vec!["metadata.bogus"]);
    }
}
