//! PATCH: JSON merge patch (RFC 7386), and strategic merge patch where it means the same
//! thing: a patch without lists and `$` directives (what `kubectl label`/`annotate` send).
//! Lists in a strategic patch merge by per-field keys that need the type's patch metadata,
//! so those are refused with 415 rather than applied wrongly.

use axum::http::{header, HeaderMap};
use serde_json::{Map, Value};

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

pub async fn apply(
    st: &Storage,
    target: Target<'_>,
    headers: &HeaderMap,
    body: &[u8],
    q: &std::collections::HashMap<String, String>,
) -> ApiResult<(Value, Vec<String>)> {
    let Target { res, ns, name, status } = target;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = ct.split(';').next().unwrap_or("").trim();
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match media {
        "application/merge-patch+json" => {}
        "application/strategic-merge-patch+json" if is_plain_merge(&patch) => {}
        _ => return Err(ApiError::unsupported_media_type(ct)),
    }
    if !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    // The patch may pin a resourceVersion itself (then a stale one is a 409); otherwise it
    // applies to whatever is current, retried if another write lands in between.
    let pinned = patch["metadata"]["resourceVersion"].is_string();
    loop {
        let cur = st.get(res, ns, name).await?;
        let mut merged = cur.clone();
        merge(&mut merged, &patch);
        if !pinned {
            merged["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        }
        let warnings = crate::http::check_fields(res, &merged, q)?;
        match st.update(res, ns, name, merged, status).await {
            Err(e) if e.reason == "Conflict" && !pinned => continue,
            r => return r.map(|o| (o, warnings)),
        }
    }
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

/// A strategic merge patch that is also a valid merge patch with the same meaning.
fn is_plain_merge(v: &Value) -> bool {
    match v {
        Value::Array(_) => false,
        Value::Object(m) => m.iter().all(|(k, v)| !k.starts_with('$') && is_plain_merge(v)),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rfc7386() {
        let mut t = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge(&mut t, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(t, json!({"a": "z", "c": {"d": "e"}}));
        assert!(is_plain_merge(&json!({"metadata": {"labels": {"a": "b"}}})));
        assert!(!is_plain_merge(&json!({"spec": {"containers": []}})));
        assert!(!is_plain_merge(&json!({"$patch": "replace"})));
    }
}
