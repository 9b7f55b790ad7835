//! The namespace controller's deletion loop. Upstream runs it in kube-controller-manager:
//! a namespace marked for deletion (`Terminating`) has every object in it deleted, then the
//! `kubernetes` finalizer removed, and then it goes itself. Until kaname has a controller
//! manager, every API server runs this loop; several doing so at once is safe because each
//! step is an ordinary delete or compare-and-swap update through the registry.
//!
//! The boundary for its move to the controller manager: the loop below sees the API only
//! through [`NamespaceApi`], the calls upstream's controller makes to the API server (list
//! namespaces, discover namespaced resources, deletecollection, update status, finalize,
//! delete). [`in_server`] implements it over the registry; the controller manager will
//! implement it with the `kube` client and take this file as it is.

pub mod in_server;

use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::Notify;

/// What the namespace controller asks of the API server.
pub trait NamespaceApi: Send + Sync {
    /// A namespaced resource as discovery names it.
    type Resource: Send + Sync;
    fn list_namespaces(&self) -> BoxFuture<'_, anyhow::Result<Vec<Value>>>;
    /// Every namespaced resource served (upstream: from discovery).
    fn namespaced_resources(&self) -> Vec<Self::Resource>;
    /// `resource.group`, as the deletion conditions name it.
    fn qualified(&self, r: &Self::Resource) -> String;
    /// `deletecollection` in one namespace; returns what is left (marked, not gone).
    fn delete_collection<'a>(&'a self, r: &'a Self::Resource, ns: &'a str)
        -> BoxFuture<'a, anyhow::Result<Vec<Value>>>;
    /// `PUT namespaces/<name>/status`.
    fn update_status(&self, ns: Value) -> BoxFuture<'_, anyhow::Result<()>>;
    /// `PUT namespaces/<name>/finalize`.
    fn finalize(&self, ns: Value) -> BoxFuture<'_, anyhow::Result<()>>;
    /// `DELETE namespaces/<name>`; a namespace already gone is no error.
    fn delete_namespace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// How often terminating namespaces are looked for when no delete request nudged the loop
/// (another API server may have started the deletion, or finalizers may have been removed).
const RESCAN: Duration = Duration::from_secs(2);

/// Runs until the process ends; `nudge` is notified when a namespace is marked for deletion
/// (through this server), so the loop need not wait for its rescan.
pub async fn run<A: NamespaceApi>(api: A, nudge: &Notify) {
    loop {
        if let Err(e) = sweep(&api).await {
            tracing::debug!("namespace controller: {e}");
        }
        let _ = tokio::time::timeout(RESCAN, nudge.notified()).await;
    }
}

async fn sweep<A: NamespaceApi>(api: &A) -> anyhow::Result<()> {
    let all = api.list_namespaces().await?;
    for ns in all.iter().filter(|n| n["metadata"]["deletionTimestamp"].is_string()) {
        let name = ns["metadata"]["name"].as_str().unwrap_or("");
        let left = empty_namespace(api, name).await?;
        if left.is_empty() {
            finalize(api, ns).await?;
        } else {
            report_remaining(api, ns, &left).await?;
        }
    }
    Ok(())
}

/// Deletes everything in the namespace; returns what is left, by resource (objects with
/// finalizers of their own stay, marked, until those are removed).
async fn empty_namespace<A: NamespaceApi>(api: &A, ns: &str) -> anyhow::Result<Vec<(String, Vec<Value>)>> {
    let mut left = Vec::new();
    for res in api.namespaced_resources() {
        let items = api.delete_collection(&res, ns).await?;
        if !items.is_empty() {
            left.push((api.qualified(&res), items));
        }
    }
    Ok(left)
}

/// Upstream's deletion conditions on a namespace whose content is still there, so
/// `kubectl describe ns` says what it waits for.
async fn report_remaining<A: NamespaceApi>(api: &A, ns: &Value, left: &[(String, Vec<Value>)]) -> anyhow::Result<()> {
    let mut resources: Vec<String> =
        left.iter().map(|(r, items)| format!("{r} has {} resource instances", items.len())).collect();
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
        let since = same.map(|c| c["lastTransitionTime"].clone()).unwrap_or_else(|| json!(crate::meta::now_rfc3339()));
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
    api.update_status(body).await
}

/// Removes the `kubernetes` finalizer (upstream's `PUT .../finalize`), then deletes the
/// namespace, which now goes unless its metadata finalizers hold it.
async fn finalize<A: NamespaceApi>(api: &A, ns: &Value) -> anyhow::Result<()> {
    let name = ns["metadata"]["name"].as_str().unwrap_or("");
    let finalizers: Vec<Value> =
        ns["spec"]["finalizers"].as_array().into_iter().flatten().filter(|f| *f != "kubernetes").cloned().collect();
    let mut body = ns.clone();
    body["spec"]["finalizers"] = json!(finalizers);
    body["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
    api.finalize(body).await?;
    api.delete_namespace(name).await
}
