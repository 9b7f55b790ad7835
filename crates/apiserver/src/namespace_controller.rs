//! The namespace controller's deletion loop. Upstream runs it in kube-controller-manager:
//! a namespace marked for deletion (`Terminating`) has every object in it deleted, then the
//! `kubernetes` finalizer removed, and then it goes itself. Until kaname has a controller
//! manager, every API server runs this loop; several doing so at once is safe because each
//! step is an ordinary delete or compare-and-swap update through the registry.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::resources::{self, Resource};
use crate::status::ApiResult;
use crate::storage::{DeleteOptions, ListOptions, Part, Storage};

/// How often terminating namespaces are looked for when no delete request nudged the loop
/// (another API server may have started the deletion, or finalizers may have been removed).
const RESCAN: Duration = Duration::from_secs(2);

/// Runs until the process ends; `nudge` is notified when this server marks a namespace.
pub async fn run(storage: Storage, nudge: Arc<Notify>) {
    loop {
        if let Err(e) = sweep(&storage).await {
            tracing::debug!("namespace controller: {}", e.message);
        }
        let _ = tokio::time::timeout(RESCAN, nudge.notified()).await;
    }
}

async fn sweep(storage: &Storage) -> ApiResult<()> {
    let namespaces = resources::by_plural("namespaces").expect("namespaces resource");
    let all = storage.list(namespaces, None, &ListOptions::default()).await?;
    for ns in all.items.iter().filter(|n| n["metadata"]["deletionTimestamp"].is_string()) {
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        if empty_namespace(storage, name).await? {
            finalize(storage, namespaces, ns).await?;
        }
    }
    Ok(())
}

/// Deletes everything in the namespace; true once nothing is left (objects with finalizers
/// of their own stay, marked, until those are removed).
async fn empty_namespace(storage: &Storage, ns: &str) -> ApiResult<bool> {
    let mut empty = true;
    for res in resources::all().filter(|r| r.namespaced) {
        let left = storage.delete_collection(res, Some(ns), &ListOptions::default(), &DeleteOptions::default()).await?;
        empty &= left.is_empty();
    }
    Ok(empty)
}

/// Removes the `kubernetes` finalizer (upstream's `PUT .../finalize`), then deletes the
/// namespace, which now goes unless its metadata finalizers hold it.
async fn finalize(storage: &Storage, namespaces: &'static Resource, ns: &Value) -> ApiResult<()> {
    let name = ns["metadata"]["name"].as_str().unwrap_or("");
    let finalizers: Vec<Value> =
        ns["spec"]["finalizers"].as_array().into_iter().flatten().filter(|f| *f != "kubernetes").cloned().collect();
    let mut body = ns.clone();
    body["spec"]["finalizers"] = json!(finalizers);
    body["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
    storage.update_part(namespaces, None, name, body, Part::Finalize).await?;
    match storage.delete(namespaces, None, name, &DeleteOptions::default()).await {
        Err(e) if e.code != 404 => Err(e),
        _ => Ok(()),
    }
}
