//! Which resource, namespace, object and subresource a resource request names, resolved from
//! its [`RequestInfo`] against the served resources. Only the URL shapes upstream installs
//! routes for resolve; everything else is a 404 before any verb runs.

use crate::request_info::RequestInfo;
use crate::resources::{Resource, Subresource};
use crate::status::{ApiError, ApiResult};

/// Where a resource request points.
pub struct Target {
    pub res: &'static Resource,
    pub ns: Option<String>,
    pub name: Option<String>,
    /// The subresource the path names, if any.
    pub sub: Option<Subresource>,
}

impl Target {
    pub fn resolve(info: &RequestInfo) -> ApiResult<Target> {
        if !info.is_resource_request || info.parts.len() > 3 || info.parts.iter().any(String::is_empty) {
            return Err(ApiError::not_found_path());
        }
        let res = crate::resources::find(&info.api_group, &info.api_version, &info.resource)
            .ok_or_else(ApiError::not_found_path)?;
        let sub = match info.parts.get(2) {
            None => None,
            Some(s) => Some(Subresource::parse(s).ok_or_else(ApiError::not_found_path)?),
        };
        // The name comes from the path only: a list pinned by a field selector is still a list.
        let t = Target {
            res,
            ns: info.namespace_in_path.then(|| info.namespace.clone()),
            name: info.parts.get(1).cloned(),
            sub,
        };
        // A namespaced resource named without its namespace (`/api/v1/pods/x`) is no URL; a
        // cluster-scoped one has no namespace segment; only some kinds have each subresource.
        if (t.res.namespaced && t.ns.is_none() && t.name.is_some())
            || (!t.res.namespaced && t.ns.is_some())
            || t.sub.is_some_and(|s| !t.res.serves(s))
        {
            return Err(ApiError::not_found_path());
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn route(group: &str, version: &str, rest: &str) -> ApiResult<Target> {
        let path =
            if group.is_empty() { format!("/api/{version}/{rest}") } else { format!("/apis/{group}/{version}/{rest}") };
        Target::resolve(&RequestInfo::parse(&Method::GET, &path, ""))
    }

    #[test]
    fn routes() {
        let core = |rest: &str| route("", "v1", rest);
        let t = core("namespaces/default/configmaps/x").unwrap();
        assert_eq!((t.res.plural, t.ns.as_deref(), t.name.as_deref()), ("configmaps", Some("default"), Some("x")));
        let t = core("namespaces/default").unwrap();
        assert_eq!((t.res.plural, t.ns.as_deref(), t.name.as_deref()), ("namespaces", None, Some("default")));
        assert_eq!(core("configmaps").unwrap().ns, None);
        assert!(core("configmaps/x").is_err());
        assert!(core("namespaces/a/namespaces").is_err());
        assert!(core("namespaces/a/namespaces/a").is_err());
        assert!(core("bogus").is_err());
        assert_eq!(core("namespaces/a/pods/p/status").unwrap().sub, Some(Subresource::Status));
        assert_eq!(core("namespaces/a/status").unwrap().sub, Some(Subresource::Status));
        assert_eq!(core("namespaces/a/finalize").unwrap().sub, Some(Subresource::Finalize));
        assert!(core("namespaces/a/scale").is_err());
        assert_eq!(core("namespaces/a/pods/p/binding").unwrap().sub, Some(Subresource::Binding));
        assert!(core("namespaces/a/configmaps/c/status").is_err());
        assert!(core("namespaces/a/pods/p/status/extra").is_err());
        assert!(core("namespaces/a/deployments").is_err(), "deployments are in apps/v1");
        let t = route("apps", "v1", "namespaces/a/deployments/d/scale").unwrap();
        assert_eq!((t.res.kind, t.sub), ("Deployment", Some(Subresource::Scale)));
        assert!(route("apps", "v1", "namespaces/a/daemonsets/d/scale").is_err());
        let t = route("rbac.authorization.k8s.io", "v1", "clusterroles/admin").unwrap();
        assert_eq!((t.res.kind, t.ns.as_deref()), ("ClusterRole", None));
        assert!(route("apps", "v2", "deployments").is_err());
        let listed = Target::resolve(&RequestInfo::parse(
            &Method::GET,
            "/api/v1/namespaces/a/pods",
            "fieldSelector=metadata.name%3Dp",
        ))
        .unwrap();
        assert_eq!(listed.name, None);
    }
}
