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
        let left = empty_namespace(storage, name).await?;
        if left.is_empty() {
            finalize(storage, namespaces, ns).await?;
        } else {
            report_remaining(storage, namespaces, ns, &left).await?;
        }
    }
    Ok(())
}

/// Deletes everything in the namespace; returns what is left, by resource (objects with
/// finalizers of their own stay, marked, until those are removed).
async fn empty_namespace(storage: &Storage, ns: &str) -> ApiResult<Vec<(&'static Resource, Vec<Value>)>> {
    let mut left = Vec::new();
    for res in resources::all().filter(|r| r.namespaced) {
        let items =
            storage.delete_collection(res, Some(ns), &ListOptions::default(), &DeleteOptions::default()).await?;
        if !items.is_empty() {
            left.push((res, items));
        }
    }
    Ok(left)
}

/// Upstream's deletion conditions on a namespace whose content is still there, so
/// `kubectl describe ns` says what it waits for.
async fn report_remaining(
    storage: &Storage,
    namespaces: &'static Resource,
    ns: &Value,
    left: &[(&'static Resource, Vec<Value>)],
) -> ApiResult<()> {
    let mut resources: Vec<String> = left
        .iter()
        .map(|(r, items)| format!("{} has {} resource instances", r.qualified_plural(), items.len()))
        .collect();
    resources.sort();
    let mut finalizers = std::collections::BTreeMap::<String, usize>::new();
    for item in left.iter().flat_map(|(_, items)| items) {
        for f in item["metadata"]["finalizers"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            *finalizers.entry(f.to_string()).or_default() += 1;
        }
    }
    let finalizers: Vec<String> = finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
    let old = ns["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let condition = |ty: &str, status: &str, reason: &str, message: String| {
        // The transition time stays while the condition does not change.
        let same = old.iter().find(|c| {
            c["type"] == ty && c["status"] == status && c["reason"] == reason && c["message"] == message.as_str()
        });
        let since =
            same.map(|c| c["lastTransitionTime"].clone()).unwrap_or_else(|| json!(crate::storage::now_rfc3339()));
        json!({"type": ty, "status": status, "lastTransitionTime": since, "reason": reason, "message": message})
    };
    let mut conditions = vec![
        condition(
            "NamespaceDeletionDiscoveryFailure",
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        condition(
            "NamespaceDeletionContentFailure",
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
        condition(
            "NamespaceContentRemaining",
            "True",
            "SomeResourcesRemain",
            format!("Some resources are remaining: {}", resources.join(", ")),
        ),
    ];
    if !finalizers.is_empty() {
        conditions.push(condition(
            "NamespaceFinalizersRemaining",
            "True",
            "SomeFinalizersRemain",
            format!("Some content in the namespace has finalizers remaining: {}", finalizers.join(", ")),
        ));
    }
    let mut body = ns.clone();
    body["status"]["conditions"] = json!(conditions);
    body["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
    let name = ns["metadata"]["name"].as_str().unwrap_or("");
    storage.update_part(namespaces, None, name, body, Part::Status).await.map(|_| ())
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
