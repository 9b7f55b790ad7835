//! The namespace controller's [`NamespaceApi`] inside the API server: the registry's own
//! calls, and the nudge the delete handlers give it. Goes when the controller moves to the
//! controller manager.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::Notify;

use super::NamespaceApi;
use crate::resources::{self, Part, Resource, NAMESPACES};
use crate::storage::{DeleteOptions, ListOptions, Storage};

pub struct InServer(pub Storage);

/// Wakes the controller when a request marks a namespace for deletion.
#[derive(Clone, Default)]
pub struct Nudge(pub Arc<Notify>);

impl Nudge {
    /// Called after every delete; only a namespace's wakes the controller.
    pub fn deleted(&self, res: &Resource) {
        if std::ptr::eq(res, NAMESPACES) {
            self.0.notify_one();
        }
    }
}

fn name(ns: &Value) -> String {
    ns["metadata"]["name"].as_str().unwrap_or("").to_string()
}

impl NamespaceApi for InServer {
    type Resource = &'static Resource;

    fn list_namespaces(&self) -> BoxFuture<'_, anyhow::Result<Vec<Value>>> {
        Box::pin(async move {
            let list = self.0.list(NAMESPACES, None, &ListOptions::default()).await.map_err(anyhow::Error::msg)?;
            Ok(list.items.into_iter().map(|o| (*o).clone()).collect())
        })
    }

    fn namespaced_resources(&self) -> Vec<&'static Resource> {
        resources::all().filter(|r| r.namespaced).collect()
    }

    fn qualified(&self, r: &&'static Resource) -> String {
        r.qualified_plural()
    }

    fn delete_collection<'a>(
        &'a self,
        r: &'a &'static Resource,
        ns: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Vec<Value>>> {
        Box::pin(async move {
            let opts = DeleteOptions::default();
            self.0.delete_collection(r, Some(ns), &ListOptions::default(), &opts).await.map_err(anyhow::Error::msg)
        })
    }

    fn update_status(&self, ns: Value) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let n = name(&ns);
            self.0.update_part(NAMESPACES, None, &n, ns, Part::Status).await.map(|_| ()).map_err(anyhow::Error::msg)
        })
    }

    fn finalize(&self, ns: Value) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let n = name(&ns);
            self.0.update_part(NAMESPACES, None, &n, ns, Part::Finalize).await.map(|_| ()).map_err(anyhow::Error::msg)
        })
    }

    fn delete_namespace<'a>(&'a self, name: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            match self.0.delete(NAMESPACES, None, name, &DeleteOptions::default()).await {
                Err(e) if e.code != 404 => Err(anyhow::Error::msg(e)),
                _ => Ok(()),
            }
        })
    }
}
