//! Auth changes as the state machine applies them (etcd's `authStore` methods behind
//! `applierV3`, and `authApplierV3`'s admin check): decided at apply time, identically on
//! every member, from the replicated state alone.

use kaname_proto::etcdserverpb as pb;
use prost::Message;

use crate::auth::{AuthInfo, AuthOp, AuthState, Role, User, ROOT_ROLE, ROOT_USER};
use crate::error::EtcdError;
use crate::mvcc::WriteBatch;

fn header(rev: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader { revision: rev, ..Default::default() })
}

/// Applies `op` sent by `ai` at log index `index`; returns the encoded etcd response.
pub fn apply(batch: &mut WriteBatch, ai: &AuthInfo, op: &AuthOp, index: u64) -> Result<Vec<u8>, EtcdError> {
    let current = batch.auth();
    if op.needs_admin() {
        current.check_admin(ai)?;
    }
    let mut st: AuthState = (*current).clone();
    let h = header(batch.rev());
    let out = change(&mut st, batch, op, index, h)?;
    if st != *current {
        batch.set_auth(st)?;
    }
    Ok(out)
}

fn user_mut<'a>(st: &'a mut AuthState, name: &str) -> Result<&'a mut User, EtcdError> {
    st.users.get_mut(name).ok_or(EtcdError::UserNotFound)
}

fn role_mut<'a>(st: &'a mut AuthState, name: &str) -> Result<&'a mut Role, EtcdError> {
    st.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)
}

fn change(
    st: &mut AuthState,
    batch: &WriteBatch,
    op: &AuthOp,
    index: u64,
    h: Option<pb::ResponseHeader>,
) -> Result<Vec<u8>, EtcdError> {
    let tokens = batch.tokens();
    // Every successful change but enable and a no-op grant bumps the revision (etcd's
    // `commitRevision`), which makes writes checked against the old state fail.
    let bump = |st: &mut AuthState| st.revision += 1;
    Ok(match op {
        AuthOp::Enable => {
            if !st.enabled {
                let root = st.users.get(ROOT_USER).ok_or(EtcdError::RootUserNotExist)?;
                if !root.roles.iter().any(|r| r == ROOT_ROLE) {
                    return Err(EtcdError::RootRoleNotExist);
                }
                st.enabled = true;
            }
            pb::AuthEnableResponse { header: h }.encode_to_vec()
        }
        AuthOp::Disable => {
            if st.enabled {
                st.enabled = false;
                bump(st);
                tokens.clear();
            }
            pb::AuthDisableResponse { header: h }.encode_to_vec()
        }
        AuthOp::Authenticate { name, prefix } => {
            if !st.enabled {
                return Err(EtcdError::AuthNotEnabled);
            }
            match st.users.get(name) {
                Some(u) if !u.no_password => {}
                _ => return Err(EtcdError::AuthFailed),
            }
            let token = format!("{prefix}.{index}");
            tokens.assign(token.clone(), name);
            pb::AuthenticateResponse { header: h, token }.encode_to_vec()
        }
        AuthOp::UserAdd { name, hash, no_password } => {
            if name.is_empty() {
                return Err(EtcdError::UserEmpty);
            }
            if st.users.contains_key(name) {
                return Err(EtcdError::UserAlreadyExist);
            }
            let user = User { password: hash.clone(), roles: Vec::new(), no_password: *no_password };
            st.users.insert(name.clone(), user);
            bump(st);
            pb::AuthUserAddResponse { header: h }.encode_to_vec()
        }
        AuthOp::UserDelete { name } => {
            if st.enabled && name == ROOT_USER {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            st.users.remove(name).ok_or(EtcdError::UserNotFound)?;
            bump(st);
            tokens.invalidate_user(name);
            pb::AuthUserDeleteResponse { header: h }.encode_to_vec()
        }
        AuthOp::UserChangePassword { name, hash } => {
            user_mut(st, name)?.password = hash.clone();
            bump(st);
            tokens.invalidate_user(name);
            pb::AuthUserChangePasswordResponse { header: h }.encode_to_vec()
        }
        AuthOp::UserGrantRole { user, role } => {
            if !st.users.contains_key(user) {
                return Err(EtcdError::UserNotFound);
            }
            // The root role needs no definition to be granted (etcd).
            if role != ROOT_ROLE && !st.roles.contains_key(role) {
                return Err(EtcdError::RoleNotFound);
            }
            let u = user_mut(st, user)?;
            if let Err(at) = u.roles.binary_search(role) {
                u.roles.insert(at, role.clone());
                bump(st);
            }
            pb::AuthUserGrantRoleResponse { header: h }.encode_to_vec()
        }
        AuthOp::UserRevokeRole { name, role } => {
            if st.enabled && name == ROOT_USER && role == ROOT_ROLE {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            let u = user_mut(st, name)?;
            let before = u.roles.len();
            u.roles.retain(|r| r != role);
            if u.roles.len() == before {
                return Err(EtcdError::RoleNotGranted);
            }
            bump(st);
            pb::AuthUserRevokeRoleResponse { header: h }.encode_to_vec()
        }
        AuthOp::RoleAdd { name } => {
            if name.is_empty() {
                return Err(EtcdError::RoleEmpty);
            }
            if st.roles.contains_key(name) {
                return Err(EtcdError::RoleAlreadyExist);
            }
            st.roles.insert(name.clone(), Role::default());
            bump(st);
            pb::AuthRoleAddResponse { header: h }.encode_to_vec()
        }
        AuthOp::RoleDelete { role } => {
            if st.enabled && role == ROOT_ROLE {
                return Err(EtcdError::InvalidAuthMgmt);
            }
            st.roles.remove(role).ok_or(EtcdError::RoleNotFound)?;
            // etcd 3.4 also takes the deleted role away from every user holding it.
            for u in st.users.values_mut() {
                u.roles.retain(|r| r != role);
            }
            bump(st);
            pb::AuthRoleDeleteResponse { header: h }.encode_to_vec()
        }
        AuthOp::RoleGrantPermission { name, perm } => {
            let r = role_mut(st, name)?;
            match r.perms.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end) {
                Some(p) => p.perm_type = perm.perm_type,
                None => {
                    r.perms.push(perm.clone());
                    r.perms.sort_by(|a, b| a.key.cmp(&b.key));
                }
            }
            bump(st);
            pb::AuthRoleGrantPermissionResponse { header: h }.encode_to_vec()
        }
        AuthOp::RoleRevokePermission { role, key, range_end } => {
            let r = role_mut(st, role)?;
            let before = r.perms.len();
            r.perms.retain(|p| !(&p.key == key && &p.range_end == range_end));
            if r.perms.len() == before {
                return Err(EtcdError::PermissionNotGranted);
            }
            bump(st);
            pb::AuthRoleRevokePermissionResponse { header: h }.encode_to_vec()
        }
    })
}
