//! Admission: the steps upstream's admission chain runs on a write between decoding and
//! storage. A kind lists its plugins in [`Resource::admission`]; the registry runs every
//! plugin's [`Admission::admit`] (mutating admission) before the kind's validation and every
//! [`Admission::validate`] (validating admission) after it, as kube-apiserver's create and
//! update handlers do. Subresource writes (`/status`, `/binding`, ...) are not admitted, as
//! upstream's plugins ignore them.
//!
//! A plugin reads other objects through [`ObjectReader`], which the registry implements: the
//! kinds never import the registry (it is the layer above them), the registry hands itself in.

use futures::future::BoxFuture;
use serde_json::Value;

use super::Resource;
use crate::status::{ApiError, ApiResult};

/// What a write is doing to the object.
#[derive(Clone, Copy)]
pub enum Operation<'a> {
    Create,
    /// An update of the main resource, with the object as stored before it.
    Update {
        old: &'a Value,
    },
}

/// Reads for admission plugins, straight from the store (upstream's plugins read informer
/// caches; a read here is never older than the write being admitted).
pub trait ObjectReader: Sync {
    /// One object, `None` if there is none.
    fn get_object<'a>(
        &'a self,
        res: &'static Resource,
        ns: Option<&'a str>,
        name: &'a str,
    ) -> BoxFuture<'a, ApiResult<Option<Value>>>;
    /// Every object of a kind (in one namespace, or all).
    fn list_objects<'a>(&'a self, res: &'static Resource, ns: Option<&'a str>) -> BoxFuture<'a, ApiResult<Vec<Value>>>;
}

/// Upstream's `admission.Attributes`: what is written, where, and how to read the rest.
#[derive(Clone, Copy)]
pub struct Attributes<'a> {
    pub res: &'static Resource,
    pub op: Operation<'a>,
    pub ns: Option<&'a str>,
    /// The object's name; empty when it is still to be generated (`generateName`).
    pub name: &'a str,
    pub reader: &'a dyn ObjectReader,
}

impl Attributes<'_> {
    /// Upstream's `admission.NewForbidden`: `<resource> "<name>" is forbidden: <why>`, the
    /// name `Unknown` when the object has none yet.
    pub fn forbidden(&self, why: &str) -> ApiError {
        let name = if self.name.is_empty() { "Unknown" } else { self.name };
        ApiError::forbidden_object(&self.res.qualified_plural(), name, why)
    }
}

/// One admission plugin. Both steps default to admitting the object unchanged.
pub trait Admission: Sync {
    /// Mutating admission: may change the object; runs before the kind's validation.
    fn admit<'a>(&'a self, _a: &'a Attributes<'a>, _obj: &'a mut Value) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Validating admission: may only refuse; runs after the kind's validation.
    fn validate<'a>(&'a self, _a: &'a Attributes<'a>, _obj: &'a Value) -> BoxFuture<'a, ApiResult<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// Runs the kind's mutating plugins in order; the first refusal is the answer.
pub async fn admit(a: &Attributes<'_>, obj: &mut Value) -> ApiResult<()> {
    for p in a.res.admission {
        p.admit(a, obj).await?;
    }
    Ok(())
}

/// Runs the kind's validating plugins in order; the first refusal is the answer.
pub async fn validate(a: &Attributes<'_>, obj: &Value) -> ApiResult<()> {
    for p in a.res.admission {
        p.validate(a, obj).await?;
    }
    Ok(())
}

/// A reader over a fixed set of objects, and a way to run a plugin's future, for the plugins'
/// unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    pub struct Objects(pub Vec<Value>);

    impl ObjectReader for Objects {
        fn get_object<'a>(
            &'a self,
            _: &'static Resource,
            _: Option<&'a str>,
            name: &'a str,
        ) -> BoxFuture<'a, ApiResult<Option<Value>>> {
            Box::pin(async move { Ok(self.0.iter().find(|o| o["metadata"]["name"] == name).cloned()) })
        }
        fn list_objects<'a>(
            &'a self,
            _: &'static Resource,
            _: Option<&'a str>,
        ) -> BoxFuture<'a, ApiResult<Vec<Value>>> {
            Box::pin(async move { Ok(self.0.clone()) })
        }
    }

    pub fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }
}
