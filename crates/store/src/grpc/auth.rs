//! `etcdserverpb.Auth` (etcd's `v3rpc/auth.go` and the auth half of `v3_server.go`), and how
//! the edge learns who sent a request (etcd's `AuthInfoFromCtx`).
//!
//! Changes go through Raft as [`Command::Auth`]; reads of the auth state (user/role get and
//! list) are answered locally after a linearizable barrier, with the admin check of etcd's
//! `authApplierV3` done here instead of at apply time.

use std::sync::Arc;

use kaname_proto::etcdserverpb::auth_server::Auth;
use kaname_proto::etcdserverpb::*;
use prost::Message;
use tonic::{Request, Response, Status};

use super::{observed, Headed};
use crate::auth::tokens::{gen_prefix, token_index};
use crate::auth::{AuthInfo, AuthOp, Perm};
use crate::error::{internal, EtcdError};
use crate::raft::Command;
use crate::server::EtcdServer;

/// The verified client certificate's CommonName of a TLS connection, put into each request's
/// extensions by the client listener (as axum's `ConnectInfo`).
#[derive(Clone, Debug)]
pub struct PeerCommonName(pub Option<String>);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>>
    for PeerCommonName
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        let (_, conn) = stream.io().get_ref();
        let leaf = conn.peer_certificates().and_then(|chain| chain.first());
        PeerCommonName(leaf.and_then(|c| subject_common_name(c.as_ref())))
    }
}

/// The subject CommonName of a DER certificate (the last one, as Go's `pkix.Name` keeps).
fn subject_common_name(der: &[u8]) -> Option<String> {
    kaname_tls::subject(der)?.common_name
}

impl EtcdServer {
    /// Who sent `req` (etcd's `AuthInfoFromCtx`, then `AuthInfoFromTLS`): the user of its
    /// `token` metadata, or, with `--client-cert-auth` and no token, its certificate's CN.
    /// A token this member does not know (yet) is waited for up to its Raft index, so a token
    /// issued by another member works here; an unknown one is `invalid auth token`.
    pub async fn auth_info<T>(&self, req: &Request<T>) -> Result<Option<AuthInfo>, EtcdError> {
        if let Some(token) = req.metadata().get("token") {
            let token = token.to_str().map_err(|_| EtcdError::InvalidAuthToken)?;
            let index = token_index(token).ok_or(EtcdError::InvalidAuthToken)?;
            let deadline = tokio::time::Instant::now() + self.limits.request_timeout;
            self.wait_applied(index, deadline).await?;
            let user = self.store.tokens().user_of(token).ok_or(EtcdError::InvalidAuthToken)?;
            return Ok(Some(AuthInfo { user, revision: self.store.auth().revision }));
        }
        if self.auth_cfg.client_cert_auth {
            let info = req.extensions().get::<axum::extract::ConnectInfo<PeerCommonName>>();
            if let Some(axum::extract::ConnectInfo(PeerCommonName(Some(cn)))) = info {
                return Ok(Some(AuthInfo { user: cn.clone(), revision: self.store.auth().revision }));
            }
        }
        Ok(None)
    }

    /// [`Self::auth_info`], with "nobody" for a request without credentials.
    pub async fn auth_info_or_none<T>(&self, req: &Request<T>) -> Result<AuthInfo, EtcdError> {
        Ok(self.auth_info(req).await?.unwrap_or_default())
    }

    /// Fails unless the sender may run admin operations (etcd's `IsAdminPermitted`).
    pub async fn check_admin<T>(&self, req: &Request<T>) -> Result<(), EtcdError> {
        let ai = self.auth_info_or_none(req).await?;
        self.store.auth().check_admin(&ai)
    }

    /// [`Self::check_admin`] for Defragment, HashKV and Snapshot: etcd 3.4's
    /// `authMaintenanceServer` returns the auth package's own error unconverted, so clients
    /// see code Unknown and an `auth: ...` text there (e.g. `auth: permission denied`).
    pub async fn check_maintenance_admin<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.check_admin(req).await.map_err(|e| {
            let text = e.to_string();
            match text.strip_prefix("etcdserver: ") {
                Some(rest) if is_auth_error(&e) => Status::unknown(format!("auth: {rest}")),
                _ => Status::from(e),
            }
        })
    }
}

/// Errors of etcd's auth package (whose `auth: ...` texts match ours but for the prefix).
fn is_auth_error(e: &EtcdError) -> bool {
    use EtcdError::*;
    matches!(e, UserEmpty | UserNotFound | PermissionDenied | InvalidAuthToken)
}

/// Wraps a client's write with its sender, for the apply-time permission check.
pub fn as_user(ai: &AuthInfo, cmd: Command) -> Command {
    Command::AsUser { user: ai.user.clone(), auth_revision: ai.revision, cmd: Box::new(cmd) }
}

pub struct AuthService {
    pub server: Arc<EtcdServer>,
}

headed!(
    AuthEnableResponse,
    AuthDisableResponse,
    AuthStatusResponse,
    AuthenticateResponse,
    AuthUserAddResponse,
    AuthUserGetResponse,
    AuthUserListResponse,
    AuthUserDeleteResponse,
    AuthUserChangePasswordResponse,
    AuthUserGrantRoleResponse,
    AuthUserRevokeRoleResponse,
    AuthRoleAddResponse,
    AuthRoleGetResponse,
    AuthRoleListResponse,
    AuthRoleDeleteResponse,
    AuthRoleGrantPermissionResponse,
    AuthRoleRevokePermissionResponse
);

impl AuthService {
    /// Proposes an auth change on behalf of the request's sender.
    async fn change<T, R: Headed>(&self, req: &Request<T>, op: AuthOp) -> Result<Response<R>, Status> {
        let ai = self.server.auth_info_or_none(req).await?;
        let cmd = Command::Auth { user: ai.user, auth_revision: ai.revision, op };
        let out = self.server.propose(cmd).await?;
        let mut resp = R::decode(out.as_slice()).map_err(internal)?;
        self.server.fill_header(resp.header());
        Ok(Response::new(resp))
    }

    /// A local answer, after the barrier that makes it linearizable.
    fn answer<R: Headed>(&self, mut resp: R) -> Result<Response<R>, Status> {
        resp.header().get_or_insert_with(Default::default).revision = self.server.store.current_rev();
        self.server.fill_header(resp.header());
        Ok(Response::new(resp))
    }

    /// bcrypt off the async runtime: at cost 10 a hash takes tens of milliseconds.
    async fn hash(&self, password: String) -> Result<String, Status> {
        let cost = self.server.auth_cfg.bcrypt_cost;
        tokio::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(internal)?
            .map_err(|e| Status::from(internal(e)))
    }

    async fn verify(&self, password: String, hash: String) -> bool {
        tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false)).await.unwrap_or(false)
    }
}

const SVC: &str = "etcdserverpb.Auth";

#[tonic::async_trait]
impl Auth for AuthService {
    async fn auth_enable(&self, req: Request<AuthEnableRequest>) -> Result<Response<AuthEnableResponse>, Status> {
        observed(&self.server, SVC, "AuthEnable", self.change(&req, AuthOp::Enable)).await
    }

    async fn auth_disable(&self, req: Request<AuthDisableRequest>) -> Result<Response<AuthDisableResponse>, Status> {
        observed(&self.server, SVC, "AuthDisable", self.change(&req, AuthOp::Disable)).await
    }

    async fn auth_status(&self, _req: Request<AuthStatusRequest>) -> Result<Response<AuthStatusResponse>, Status> {
        observed(&self.server, SVC, "AuthStatus", async {
            self.server.linearizable_barrier().await?;
            let st = self.server.store.auth();
            self.answer(AuthStatusResponse { header: None, enabled: st.enabled, auth_revision: st.revision })
        })
        .await
    }

    /// etcd's `Authenticate`: the password is checked here, the token is issued through Raft
    /// so every member knows it; if the auth state changed meanwhile, the check is redone.
    async fn authenticate(&self, req: Request<AuthenticateRequest>) -> Result<Response<AuthenticateResponse>, Status> {
        observed(&self.server, SVC, "Authenticate", async {
            let r = req.into_inner();
            self.server.linearizable_barrier().await?;
            loop {
                let st = self.server.store.auth();
                if !st.enabled {
                    return Err(EtcdError::AuthNotEnabled.into());
                }
                let hash = match st.users.get(&r.name) {
                    Some(u) if !u.no_password => u.password.clone(),
                    _ => return Err(EtcdError::AuthFailed.into()),
                };
                if !self.verify(r.password.clone(), hash).await {
                    tracing::info!(user = %r.name, "authentication failed, invalid password");
                    return Err(EtcdError::AuthFailed.into());
                }
                let op = AuthOp::Authenticate { name: r.name.clone(), prefix: gen_prefix() };
                let cmd = Command::Auth { user: String::new(), auth_revision: 0, op };
                let out = self.server.propose(cmd).await?;
                if self.server.store.auth().revision == st.revision {
                    let mut resp = AuthenticateResponse::decode(out.as_slice()).map_err(internal)?;
                    self.server.fill_header(&mut resp.header);
                    return Ok(Response::new(resp));
                }
                tracing::info!("auth revision changed while the password was checked; retrying");
            }
        })
        .await
    }

    async fn user_add(&self, req: Request<AuthUserAddRequest>) -> Result<Response<AuthUserAddResponse>, Status> {
        observed(&self.server, SVC, "UserAdd", async {
            let r = req.get_ref().clone();
            let no_password = r.options.is_some_and(|o| o.no_password);
            let hash = if no_password { String::new() } else { self.hash(r.password).await? };
            self.change(&req, AuthOp::UserAdd { name: r.name, hash, no_password }).await
        })
        .await
    }

    async fn user_get(&self, req: Request<AuthUserGetRequest>) -> Result<Response<AuthUserGetResponse>, Status> {
        observed(&self.server, SVC, "UserGet", async {
            self.server.linearizable_barrier().await?;
            let ai = self.server.auth_info_or_none(&req).await?;
            let st = self.server.store.auth();
            let name = &req.get_ref().name;
            // A user may look at itself (etcd's authApplierV3.UserGet).
            if let Err(e) = st.check_admin(&ai) {
                if *name != ai.user {
                    return Err(e.into());
                }
            }
            let user = st.users.get(name).ok_or(EtcdError::UserNotFound)?;
            self.answer(AuthUserGetResponse { header: None, roles: user.roles.clone() })
        })
        .await
    }

    async fn user_list(&self, req: Request<AuthUserListRequest>) -> Result<Response<AuthUserListResponse>, Status> {
        observed(&self.server, SVC, "UserList", async {
            self.server.linearizable_barrier().await?;
            self.server.check_admin(&req).await?;
            let users = self.server.store.auth().users.keys().cloned().collect();
            self.answer(AuthUserListResponse { header: None, users })
        })
        .await
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        let op = AuthOp::UserDelete { name: req.get_ref().name.clone() };
        observed(&self.server, SVC, "UserDelete", self.change(&req, op)).await
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        observed(&self.server, SVC, "UserChangePassword", async {
            let r = req.get_ref().clone();
            let hash = self.hash(r.password).await?;
            self.change(&req, AuthOp::UserChangePassword { name: r.name, hash }).await
        })
        .await
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        let r = req.get_ref().clone();
        let op = AuthOp::UserGrantRole { user: r.user, role: r.role };
        observed(&self.server, SVC, "UserGrantRole", self.change(&req, op)).await
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        let r = req.get_ref().clone();
        let op = AuthOp::UserRevokeRole { name: r.name, role: r.role };
        observed(&self.server, SVC, "UserRevokeRole", self.change(&req, op)).await
    }

    async fn role_add(&self, req: Request<AuthRoleAddRequest>) -> Result<Response<AuthRoleAddResponse>, Status> {
        let op = AuthOp::RoleAdd { name: req.get_ref().name.clone() };
        observed(&self.server, SVC, "RoleAdd", self.change(&req, op)).await
    }

    async fn role_get(&self, req: Request<AuthRoleGetRequest>) -> Result<Response<AuthRoleGetResponse>, Status> {
        observed(&self.server, SVC, "RoleGet", async {
            self.server.linearizable_barrier().await?;
            let ai = self.server.auth_info_or_none(&req).await?;
            let st = self.server.store.auth();
            let role = &req.get_ref().role;
            // A user may look at the roles it holds (etcd's authApplierV3.RoleGet).
            if let Err(e) = st.check_admin(&ai) {
                if !st.users.get(&ai.user).is_some_and(|u| u.roles.contains(role)) {
                    return Err(e.into());
                }
            }
            let r = st.roles.get(role).ok_or(EtcdError::RoleNotFound)?;
            // etcd 3.4 lists only the stored permissions, none for the root role (which is
            // allowed everything without any).
            let perm = r.perms.iter().map(Perm::to_proto).collect();
            self.answer(AuthRoleGetResponse { header: None, perm })
        })
        .await
    }

    async fn role_list(&self, req: Request<AuthRoleListRequest>) -> Result<Response<AuthRoleListResponse>, Status> {
        observed(&self.server, SVC, "RoleList", async {
            self.server.linearizable_barrier().await?;
            self.server.check_admin(&req).await?;
            let roles = self.server.store.auth().roles.keys().cloned().collect();
            self.answer(AuthRoleListResponse { header: None, roles })
        })
        .await
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        let op = AuthOp::RoleDelete { role: req.get_ref().role.clone() };
        observed(&self.server, SVC, "RoleDelete", self.change(&req, op)).await
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        let r = req.get_ref().clone();
        let p = r.perm.unwrap_or_default();
        let perm = Perm { perm_type: p.perm_type, key: p.key, range_end: p.range_end };
        let op = AuthOp::RoleGrantPermission { name: r.name, perm };
        observed(&self.server, SVC, "RoleGrantPermission", self.change(&req, op)).await
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        let r = req.get_ref().clone();
        let op = AuthOp::RoleRevokePermission { role: r.role, key: r.key, range_end: r.range_end };
        observed(&self.server, SVC, "RoleRevokePermission", self.change(&req, op)).await
    }
}
