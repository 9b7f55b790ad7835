//! The authorizers that stand until RBAC exists: upstream always lets `system:masters` do
//! everything (its privileged-groups authorizer, ahead of RBAC), and its bootstrap
//! `system:discovery` / `system:basic-user` / `system:public-info-viewer` roles let every
//! authenticated user read discovery, `/version`, `/openapi` and the health checks, which
//! [`NonResourcePaths`] stands in for.

use super::{Attributes, Authorizer, Decision, SYSTEM_AUTHENTICATED, SYSTEM_MASTERS};

/// Allows every request of a user in one of the groups (upstream's
/// `authorizerfactory.NewPrivilegedGroups(user.SystemPrivilegedGroup)`).
pub struct PrivilegedGroups(pub Vec<String>);

impl PrivilegedGroups {
    pub fn masters() -> Self {
        PrivilegedGroups(vec![SYSTEM_MASTERS.to_string()])
    }
}

impl Authorizer for PrivilegedGroups {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        if self.0.iter().any(|g| attrs.user.in_group(g)) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

/// Allows authenticated users every non-resource path (discovery, version, OpenAPI, health;
/// any verb, as before RBAC: the routes answer 405 to what they do not serve), and has no
/// opinion on resources.
pub struct NonResourcePaths;

impl Authorizer for NonResourcePaths {
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        if !attrs.info.is_resource_request && attrs.user.in_group(SYSTEM_AUTHENTICATED) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}
