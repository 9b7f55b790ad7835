//! What a request asks for, read from its method, path and query once, before anything else
//! looks at it: upstream's `RequestInfo` (k8s.io/apiserver/pkg/endpoints/request). The
//! authorizers decide on it, the in-flight limit exempts long-running verbs by it, and the
//! REST handlers find their resource from it, so the three can never read a path differently.

use axum::http::Method;

/// Upstream's `RequestInfo`, with its field meanings. A resource request is one below
/// `/api/<version>/` or `/apis/<group>/<version>/`; everything else (health, discovery,
/// `/openapi`, `/version`) is a non-resource request named by its path.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    pub path: String,
    /// A resource request's verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
    /// `delete`, `deletecollection`), or the lower-case HTTP method of a non-resource one.
    pub verb: String,
    /// `api` or `apis`; empty for non-resource requests.
    pub api_prefix: String,
    /// Empty for the legacy core group.
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    /// The object's name from the path, or for a list or watch from a
    /// `fieldSelector=metadata.name=<n>` (so authorizers can allow one named object).
    pub name: String,
    /// The path segments from the resource on: `resource/name/subresource/...`.
    pub parts: Vec<String>,
    /// Whether the path named the namespace with a `namespaces/<ns>/` prefix before the
    /// resource (not the case for the `namespaces` resource itself, whose name upstream also
    /// reports as the namespace).
    pub namespace_in_path: bool,
}

/// The subresources of the `namespaces` resource: `namespaces/<name>/<sub>` names them, not a
/// resource inside the namespace.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

impl RequestInfo {
    /// Upstream's `RequestInfoFactory.NewRequestInfo` for the prefixes we serve (`/api`, `/apis`).
    pub fn parse(method: &Method, path: &str, query: &str) -> RequestInfo {
        let non_resource = || RequestInfo {
            is_resource_request: false,
            path: path.to_string(),
            verb: method.as_str().to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, group, version, rest) = match segs.as_slice() {
            ["api", version, rest @ ..] => ("api", "", *version, rest),
            ["apis", group, version, rest @ ..] => ("apis", *group, *version, rest),
            _ => return non_resource(),
        };
        // `/api/v1` and `/apis/<group>/<version>` themselves are discovery.
        if rest.is_empty() || rest.iter().all(|s| s.is_empty()) {
            return non_resource();
        }
        let mut info = RequestInfo {
            is_resource_request: true,
            path: path.to_string(),
            api_prefix: prefix.to_string(),
            api_group: group.to_string(),
            api_version: version.to_string(),
            ..RequestInfo::default()
        };
        info.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        let mut parts: &[&str] = rest;
        if parts[0] == "namespaces" && parts.len() > 1 {
            info.namespace = parts[1].to_string();
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts = &parts[2..];
                info.namespace_in_path = true;
            }
        }
        info.parts = parts.iter().map(|s| s.to_string()).collect();
        if let Some(s) = parts.get(2) {
            info.subresource = s.to_string();
        }
        if let Some(s) = parts.get(1) {
            info.name = s.to_string();
        }
        info.resource = parts[0].to_string();
        let param =
            |key: &str| query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v);
        if info.name.is_empty() && info.verb == "get" {
            let watch = param("watch").is_some_and(|w| w == "true" || w == "1");
            info.verb = if watch { "watch" } else { "list" }.to_string();
            if let Some(name) = param("fieldSelector").and_then(exact_name) {
                info.name = name;
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_string();
        }
        info
    }

    /// Long-running requests, which upstream's max-in-flight filter does not count.
    pub fn is_long_running(&self) -> bool {
        self.is_resource_request && self.verb == "watch"
    }
}

/// The name a field selector pins with `metadata.name=<n>` (or `==`), when that is a valid
/// path segment, as upstream's `RequiresExactMatch` use in `NewRequestInfo`.
fn exact_name(selector: &str) -> Option<String> {
    let decoded = percent_decode(selector);
    decoded.split(',').find_map(|term| {
        let (k, v) = term.split_once("==").or_else(|| term.split_once('='))?;
        let ok = k.trim() == "metadata.name" && !v.is_empty();
        let valid = ok && v != "." && v != ".." && !v.contains('/') && !v.contains('%');
        valid.then(|| v.to_string())
    })
}

/// Minimal `%XX` and `+` decoding of one query value.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: &str) -> RequestInfo {
        RequestInfo::parse(&method, path, query)
    }

    #[test]
    fn resource_requests_as_upstream_reads_them() {
        let i = info(Method::GET, "/apis/apps/v1/namespaces/dev/deployments", "");
        assert_eq!(
            (i.verb.as_str(), i.api_group.as_str(), i.namespace.as_str(), i.resource.as_str()),
            ("list", "apps", "dev", "deployments")
        );
        assert!(i.is_resource_request && i.namespace_in_path);
        let i = info(Method::GET, "/api/v1/namespaces/dev/pods/p/status", "");
        assert_eq!((i.verb.as_str(), i.name.as_str(), i.subresource.as_str()), ("get", "p", "status"));
        let i = info(Method::GET, "/api/v1/pods", "watch=true&resourceVersion=5");
        assert_eq!((i.verb.as_str(), i.namespace.as_str()), ("watch", ""));
        assert!(i.is_long_running());
        let i = info(Method::DELETE, "/api/v1/namespaces/dev/configmaps", "");
        assert_eq!(i.verb, "deletecollection");
        let i = info(Method::POST, "/api/v1/namespaces/dev/pods/p/binding", "");
        assert_eq!((i.verb.as_str(), i.subresource.as_str()), ("create", "binding"));
    }

    #[test]
    fn the_namespaces_resource_names_itself_as_the_namespace() {
        let i = info(Method::DELETE, "/api/v1/namespaces/dev", "");
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("delete", "namespaces", "dev", "dev")
        );
        assert!(!i.namespace_in_path);
        let i = info(Method::PUT, "/api/v1/namespaces/dev/finalize", "");
        assert_eq!((i.resource.as_str(), i.name.as_str(), i.subresource.as_str()), ("namespaces", "dev", "finalize"));
        let i = info(Method::GET, "/api/v1/namespaces/dev/namespaces", "");
        assert!(i.namespace_in_path && i.resource == "namespaces");
    }

    #[test]
    fn discovery_and_health_are_non_resource_requests() {
        for p in
            ["/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1", "/healthz", "/openapi/v3/api/v1", "/version"]
        {
            let i = info(Method::GET, p, "");
            assert!(!i.is_resource_request, "{p}");
            assert_eq!((i.verb.as_str(), i.path.as_str()), ("get", p));
        }
    }

    #[test]
    fn a_list_pinned_to_one_name_carries_it() {
        let i = info(Method::GET, "/api/v1/namespaces/a/secrets", "fieldSelector=metadata.name%3Dtoken&limit=1");
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("list", "token"));
        let i = info(Method::GET, "/api/v1/nodes", "fieldSelector=metadata.name!%3Dx");
        assert_eq!(i.name, "");
    }
}
