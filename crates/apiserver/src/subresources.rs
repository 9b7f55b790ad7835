//! The subresources that are views or actions rather than parts of the stored object:
//! `/scale` (an `autoscaling/v1` Scale over a workload's `spec.replicas`, what
//! `kubectl scale` and autoscalers use) and `pods/<name>/binding` (how a scheduler places a
//! pod on a node).

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::selector::LabelSelector;
use crate::status::{ApiError, ApiResult, FieldError};
use crate::storage::Storage;

/// The Scale view of a workload: desired replicas, and the observed count and selector.
pub fn scale_of(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let selector = LabelSelector::from_api(&obj["spec"]["selector"]).map(|s| s.to_string()).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

pub async fn get_scale(st: &Storage, res: &'static Resource, ns: Option<&str>, name: &str) -> ApiResult<Value> {
    Ok(scale_of(&st.get(res, ns, name).await?))
}

/// PUT of a Scale (or the result of a patch of one): sets the workload's `spec.replicas`,
/// guarded by the Scale's resourceVersion when it carries one.
pub async fn put_scale(
    st: &Storage,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    scale: &Value,
) -> ApiResult<Value> {
    let replicas = &scale["spec"]["replicas"];
    let n = match replicas {
        Value::Null => 0,
        v => v.as_i64().ok_or_else(|| ApiError::bad_request(format!("spec.replicas must be an integer, not {v}")))?,
    };
    if n < 0 {
        return Err(ApiError::invalid(
            "Scale.autoscaling",
            name,
            &[FieldError::invalid_value("spec.replicas", &json!(n), "must be greater than or equal to 0")],
        ));
    }
    let pinned = scale["metadata"]["resourceVersion"].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    loop {
        let mut obj = st.get(res, ns, name).await?;
        if let Some(rv) = &pinned {
            obj["metadata"]["resourceVersion"] = json!(rv);
        }
        obj["spec"]["replicas"] = json!(n);
        match st.update(res, ns, name, obj, false).await {
            Err(e) if e.is_retryable_conflict() && pinned.is_none() => continue,
            r => return r.map(|o| scale_of(&o)),
        }
    }
}

/// PATCH of a Scale: a merge patch (a strategic one means the same for a Scale, which has no
/// lists) applied to the current view, then written as a PUT.
pub async fn patch_scale(
    st: &Storage,
    res: &'static Resource,
    ns: Option<&str>,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Value> {
    let media = crate::codec::media_type(headers);
    if !matches!(media.as_deref(), Some("application/merge-patch+json" | "application/strategic-merge-patch+json")) {
        return Err(ApiError::unsupported_media_type(&[
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
        ]));
    }
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut scale = get_scale(st, res, ns, name).await?;
    if !patch["metadata"]["resourceVersion"].is_string() {
        scale["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
    }
    crate::patch::merge(&mut scale, &patch);
    put_scale(st, res, ns, name, &scale).await
}

/// `POST pods/<name>/binding`: assigns an unassigned pod to a node (upstream's
/// `BindingREST`): sets `spec.nodeName`, copies the binding's annotations, and marks the pod
/// `PodScheduled`.
pub async fn bind(st: &Storage, pods: &'static Resource, ns: Option<&str>, name: &str, body: &[u8]) -> ApiResult<()> {
    let binding: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))?;
    let bound_name = binding["metadata"]["name"].as_str().unwrap_or("");
    if !bound_name.is_empty() && bound_name != name {
        return Err(ApiError::bad_request("name in URL does not match name in Binding object"));
    }
    let target = &binding["target"];
    let mut errs = Vec::new();
    let kind = target["kind"].as_str().unwrap_or("");
    if !kind.is_empty() && kind != "Node" {
        errs.push(FieldError::not_supported("target.kind", kind, &["Node", "<empty>"]));
    }
    let node = target["name"].as_str().unwrap_or("");
    if node.is_empty() {
        errs.push(FieldError::required("target.name", ""));
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid("Binding", name, &errs));
    }
    loop {
        let mut pod = st.get(pods, ns, name).await?;
        let rev: i64 = pod["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
        if pod["metadata"]["deletionTimestamp"].is_string() {
            return Err(ApiError::conflict(
                "pods/binding",
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(
                "pods/binding",
                name,
                &format!("pod {name} is already assigned to node {current:?}"),
            ));
        }
        pod["spec"]["nodeName"] = json!(node);
        for (k, v) in binding["metadata"]["annotations"].as_object().into_iter().flatten() {
            pod["metadata"]["annotations"][k] = v.clone();
        }
        let conditions = pod["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": crate::meta::now_rfc3339()}));
        pod["status"]["conditions"] = json!(conditions);
        if st.write_if_unchanged(pods, ns, name, rev, pod).await? {
            return Ok(());
        }
    }
}
