//! Who is asking, and may they: upstream's authentication and authorization interfaces
//! (k8s.io/apiserver/pkg/authentication and pkg/authorization). The HTTP filter chain runs
//! an [`Authenticators`] chain, then an [`Authorizers`] chain over the request's
//! [`RequestInfo`]; new methods (bearer tokens, service-account tokens, RBAC, the Node
//! authorizer) are new implementations of the two traits added to the chains in `lib.rs`, not
//! edits to the filter.
//!
//! Today's implementations: client certificates ([`x509::ClientCertificate`]), and the
//! `system:masters` group plus open discovery for every authenticated user ([`authz`]).

pub mod authz;
pub mod x509;

use std::collections::BTreeMap;

use axum::http::request::Parts;
use futures::future::BoxFuture;

use crate::request_info::RequestInfo;
use crate::status::ApiError;

/// Upstream's `user.Info`: the authenticated user a request acts as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

/// The group of users that may do anything (upstream's `user.SystemPrivilegedGroup`).
pub const SYSTEM_MASTERS: &str = "system:masters";
/// The group every authenticated user is in.
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";

impl UserInfo {
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g == group)
    }
}

/// One way of telling who sent a request (upstream's `authenticator.Request`).
///
/// `Ok(None)`: this method does not apply (no credentials of its kind); the chain asks the
/// next one. `Err(message)`: credentials of its kind were presented and are not valid; the
/// request fails with 401. Async because token methods may need a lookup.
pub trait Authenticator: Send + Sync {
    fn authenticate<'a>(&'a self, req: &'a Parts) -> BoxFuture<'a, Result<Option<UserInfo>, String>>;
}

/// Upstream's union authenticator: the first method that recognizes the request decides.
#[derive(Default)]
pub struct Authenticators(pub Vec<Box<dyn Authenticator>>);

impl Authenticators {
    pub async fn authenticate(&self, req: &Parts) -> Result<Option<UserInfo>, String> {
        let mut failure = None;
        for a in &self.0 {
            match a.authenticate(req).await {
                Ok(Some(user)) => return Ok(Some(user)),
                Ok(None) => {}
                // Upstream's union keeps trying the others and reports the errors if none
                // succeeded.
                Err(e) => failure = Some(e),
            }
        }
        failure.map_or(Ok(None), Err)
    }
}

/// What an authorizer says of a request (upstream's `authorizer.Decision`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with a reason that ends the Forbidden message (may be empty).
    Deny(String),
    /// No rule here covers it: the next authorizer decides.
    NoOpinion,
}

/// Who asks, and for what: upstream's `authorizer.Attributes`.
pub struct Attributes<'a> {
    pub user: &'a UserInfo,
    pub info: &'a RequestInfo,
}

/// One way of deciding whether a request is allowed (upstream's `authorizer.Authorizer`).
/// Synchronous: authorizers decide from state they keep in memory (RBAC's informer caches,
/// the Node authorizer's graph).
pub trait Authorizer: Send + Sync {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;
}

/// Upstream's union authorizer: the first Allow or Deny wins; all NoOpinion is a denial.
#[derive(Default)]
pub struct Authorizers(pub Vec<Box<dyn Authorizer>>);

impl Authorizers {
    /// Ok when allowed; otherwise the 403 upstream answers, worded as its `forbiddenMessage`.
    pub fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), ApiError> {
        let mut reason = String::new();
        for a in &self.0 {
            match a.authorize(attrs) {
                Decision::Allow => return Ok(()),
                Decision::Deny(why) => {
                    reason = why;
                    break;
                }
                Decision::NoOpinion => {}
            }
        }
        Err(forbidden(attrs, &reason))
    }
}

/// Upstream's `responsewriters.Forbidden`: `<resource>[ "<name>"] is forbidden: User "<u>"
/// cannot <verb> resource "<res>[/<sub>]" in API group "<g>" in the namespace "<ns>"` (or
/// `at the cluster scope`), and for a non-resource request `forbidden: User "<u>" cannot <verb>
/// path "<p>"`.
pub fn forbidden(attrs: &Attributes<'_>, reason: &str) -> ApiError {
    let (user, info) = (&attrs.user.name, attrs.info);
    let mut msg = if !info.is_resource_request {
        format!("User {user:?} cannot {} path {:?}", info.verb, info.path)
    } else {
        let mut resource = info.resource.clone();
        if !info.subresource.is_empty() {
            resource = format!("{resource}/{}", info.subresource);
        }
        let scope = if info.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", info.namespace)
        };
        format!("User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}", info.verb, info.api_group)
    };
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified =
        if info.api_group.is_empty() { info.resource.clone() } else { format!("{}.{}", info.resource, info.api_group) };
    if qualified.is_empty() {
        ApiError::forbidden(format!("forbidden: {msg}"))
    } else if info.name.is_empty() {
        ApiError::forbidden(format!("{qualified} is forbidden: {msg}"))
    } else {
        ApiError::forbidden_object(&qualified, &info.name, &msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn jane() -> UserInfo {
        UserInfo { name: "jane".into(), groups: vec![SYSTEM_AUTHENTICATED.into()], ..UserInfo::default() }
    }

    #[test]
    fn forbidden_messages_are_upstreams() {
        let user = jane();
        let msg = |m: Method, path: &str| {
            let info = RequestInfo::parse(&m, path, "");
            forbidden(&Attributes { user: &user, info: &info }, "").message
        };
        assert_eq!(
            msg(Method::GET, "/api/v1/namespaces/default/configmaps"),
            r#"configmaps is forbidden: User "jane" cannot list resource "configmaps" in API group "" in the namespace "default""#
        );
        assert_eq!(
            msg(Method::GET, "/apis/apps/v1/namespaces/dev/deployments/web/scale"),
            r#"deployments.apps "web" is forbidden: User "jane" cannot get resource "deployments/scale" in API group "apps" in the namespace "dev""#
        );
        assert_eq!(
            msg(Method::GET, "/api/v1/nodes"),
            r#"nodes is forbidden: User "jane" cannot list resource "nodes" in API group "" at the cluster scope"#
        );
        assert_eq!(msg(Method::POST, "/logs"), r#"forbidden: User "jane" cannot post path "/logs""#);
    }

    struct Says(Decision);
    impl Authorizer for Says {
        fn authorize(&self, _: &Attributes<'_>) -> Decision {
            self.0.clone()
        }
    }

    #[test]
    fn the_first_authorizer_with_an_opinion_decides() {
        let user = jane();
        let info = RequestInfo::parse(&Method::GET, "/api/v1/pods", "");
        let attrs = Attributes { user: &user, info: &info };
        let chain =
            |ds: Vec<Decision>| Authorizers(ds.into_iter().map(|d| Box::new(Says(d)) as Box<dyn Authorizer>).collect());
        assert!(chain(vec![Decision::NoOpinion, Decision::Allow]).authorize(&attrs).is_ok());
        let denied = chain(vec![Decision::Deny("no".into()), Decision::Allow]).authorize(&attrs).unwrap_err();
        assert!(denied.message.ends_with(": no"), "{}", denied.message);
        assert_eq!(chain(vec![Decision::NoOpinion]).authorize(&attrs).unwrap_err().code, 403);
    }
}
