//! Authentication and authorization (etcd's `auth` package): users, roles, key permissions,
//! the enabled flag and the auth revision.
//!
//! The state is replicated: every change is a Raft command ([`AuthOp`], applied by
//! [`crate::apply::auth`]) and the state is kept in the `auth` table of the MVCC backend file
//! (see `mvcc/auth_rows.rs`), committed in the same redb transaction as the apply round, so it
//! travels in Raft snapshots, `snapshot save` and restore, as etcd's `authUsers`/`authRoles`
//! buckets live in its bbolt file.
//! Passwords are bcrypt hashed by the member that receives the request, before proposing,
//! so applying stays cheap and deterministic.
//!
//! Simple tokens are not persisted (etcd keeps them in memory too): see [`tokens`].

pub mod tokens;

use std::collections::BTreeMap;

use kaname_proto::authpb;
use kaname_proto::etcdserverpb as pb;
use serde::{Deserialize, Serialize};

use crate::error::EtcdError;

pub const ROOT_USER: &str = "root";
pub const ROOT_ROLE: &str = "root";

/// `--auth-token` and `--bcrypt-cost`, plus whether client certificates name users.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub bcrypt_cost: u32,
    /// `--client-cert-auth`: a request without a token is made by its certificate's CN.
    pub client_cert_auth: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { bcrypt_cost: bcrypt::DEFAULT_COST, client_cert_auth: false }
    }
}

/// Who sent a request, as the gRPC edge determined it (etcd's `AuthInfo`). `revision` is the
/// auth revision the edge saw; 0 means no user at all (etcd's "user name is empty").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthInfo {
    pub user: String,
    pub revision: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// bcrypt hash; empty for users added with `--no-password`.
    pub password: String,
    /// Granted roles, sorted (etcd keeps them sorted).
    pub roles: Vec<String>,
    pub no_password: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Perm {
    /// `authpb.Permission.Type`: 0 READ, 1 WRITE, 2 READWRITE.
    pub perm_type: i32,
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// Empty: the single key; `\0`: every key from `key` on; otherwise exclusive end.
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

impl Perm {
    pub fn to_proto(&self) -> authpb::Permission {
        authpb::Permission { perm_type: self.perm_type, key: self.key.clone(), range_end: self.range_end.clone() }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Sorted by key, as etcd keeps them.
    pub perms: Vec<Perm>,
}

/// The whole replicated auth state. Small (users and roles of a cluster), so it is kept in
/// memory and stored as one row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthState {
    pub enabled: bool,
    /// etcd's auth revision: bumped by every change of users, roles or the enabled flag; a
    /// write checked against an older revision is refused ("revision of auth store is old").
    pub revision: u64,
    pub users: BTreeMap<String, User>,
    pub roles: BTreeMap<String, Role>,
}

impl Default for AuthState {
    /// etcd commits revision 1 when it creates its auth store, so revision 0 never names a
    /// real state and can mean "no user" in an [`AuthInfo`].
    fn default() -> Self {
        AuthState { enabled: false, revision: 1, users: BTreeMap::new(), roles: BTreeMap::new() }
    }
}

/// One replicated auth request. Passwords arrive already hashed (see the module docs of
/// [`crate::auth`]), so the log never holds a plain password.
///
/// It is written into the Raft log inside [`crate::raft::Command::Auth`] with bincode, which
/// encodes a variant as its position. So add a variant only at the end, and never reorder or
/// remove one: an old log would replay as a different auth change. Give the new variant an
/// example in `src/encoding_tests.rs` and commit the golden bytes its test prints into
/// `testdata/golden_encoding.txt`; the test fails until then.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AuthOp {
    Enable,
    Disable,
    /// The password was checked by the receiving member; `prefix` is the token's random part.
    Authenticate {
        name: String,
        prefix: String,
    },
    UserAdd {
        name: String,
        hash: String,
        no_password: bool,
    },
    UserDelete {
        name: String,
    },
    UserChangePassword {
        name: String,
        hash: String,
    },
    UserGrantRole {
        user: String,
        role: String,
    },
    UserRevokeRole {
        name: String,
        role: String,
    },
    RoleAdd {
        name: String,
    },
    RoleDelete {
        role: String,
    },
    RoleGrantPermission {
        name: String,
        perm: Perm,
    },
    RoleRevokePermission {
        role: String,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl AuthOp {
    /// Everything but Authenticate is an admin operation (etcd's `needAdminPermission`).
    pub fn needs_admin(&self) -> bool {
        !matches!(self, AuthOp::Authenticate { .. })
    }
}

/// What an operation needs on a key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Read,
    Write,
}

impl AuthState {
    fn has_root_role(user: &User) -> bool {
        user.roles.iter().any(|r| r == ROOT_ROLE)
    }

    /// Whether `user` holds the root role (etcd's `hasRootRole`).
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(Self::has_root_role)
    }

    /// etcd's `IsAdminPermitted`: user and role management, auth disable, membership changes
    /// and some maintenance calls need the root role while auth is on.
    pub fn check_admin(&self, ai: &AuthInfo) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if ai.user.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        match self.users.get(&ai.user) {
            None => Err(EtcdError::UserNotFound),
            Some(u) if Self::has_root_role(u) => Ok(()),
            Some(_) => Err(EtcdError::PermissionDenied),
        }
    }

    /// etcd's `isOpPermitted` on `[key, range_end)` (request semantics for `range_end`).
    pub fn check(&self, ai: &AuthInfo, key: &[u8], range_end: &[u8], need: Need) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        if ai.revision == 0 {
            return Err(EtcdError::UserEmpty);
        }
        if ai.revision < self.revision {
            return Err(EtcdError::AuthOldRevision);
        }
        let Some(user) = self.users.get(&ai.user) else {
            return Err(EtcdError::PermissionDenied);
        };
        if Self::has_root_role(user) {
            return Ok(());
        }
        let intervals: Vec<(&[u8], End)> = user
            .roles
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.perms.iter())
            .filter(|p| p.perm_type == 2 || (p.perm_type == 0) == (need == Need::Read))
            .map(|p| (p.key.as_slice(), End::of(&p.range_end)))
            .collect();
        if covered(&intervals, key, range_end) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }
}

/// The permission checks of whole requests (etcd's `authApplierV3` and `checkTxnAuth`).
impl AuthState {
    pub fn check_range(&self, ai: &AuthInfo, r: &pb::RangeRequest) -> Result<(), EtcdError> {
        self.check(ai, &r.key, &r.range_end, Need::Read)
    }

    /// A put needs write on its key, write on every key already attached to its lease (the
    /// user could not revoke that lease otherwise), and read on the key for `prev_kv`.
    pub fn check_put(&self, ai: &AuthInfo, r: &pb::PutRequest, lease_keys: &[Vec<u8>]) -> Result<(), EtcdError> {
        self.check(ai, &r.key, &[], Need::Write)?;
        for k in lease_keys {
            self.check(ai, k, &[], Need::Write)?;
        }
        if r.prev_kv {
            self.check(ai, &r.key, &[], Need::Read)?;
        }
        Ok(())
    }

    pub fn check_delete(&self, ai: &AuthInfo, r: &pb::DeleteRangeRequest) -> Result<(), EtcdError> {
        self.check(ai, &r.key, &r.range_end, Need::Write)?;
        if r.prev_kv {
            self.check(ai, &r.key, &r.range_end, Need::Read)?;
        }
        Ok(())
    }

    /// Read on every compared range and every op of both branches as it needs, recursively.
    pub fn check_txn(&self, ai: &AuthInfo, t: &pb::TxnRequest) -> Result<(), EtcdError> {
        use pb::request_op::Request;
        for c in &t.compare {
            self.check(ai, &c.key, &c.range_end, Need::Read)?;
        }
        for op in t.success.iter().chain(&t.failure) {
            match &op.request {
                Some(Request::RequestRange(r)) => self.check_range(ai, r)?,
                Some(Request::RequestPut(p)) => self.check(ai, &p.key, &[], Need::Write)?,
                Some(Request::RequestDeleteRange(d)) => {
                    if d.prev_kv {
                        self.check(ai, &d.key, &d.range_end, Need::Read)?;
                    }
                    self.check(ai, &d.key, &d.range_end, Need::Write)?;
                }
                Some(Request::RequestTxn(inner)) => self.check_txn(ai, inner)?,
                None => {}
            }
        }
        Ok(())
    }
}

/// Where a permission's interval ends.
#[derive(Clone, Copy)]
enum End<'a> {
    /// A single-key permission: `[key, key\0)` (etcd's `NewBytesAffinePoint`).
    Point,
    Before(&'a [u8]),
    Unbounded,
}

impl<'a> End<'a> {
    fn of(range_end: &'a [u8]) -> Self {
        match range_end {
            [] => End::Point,
            [0] => End::Unbounded,
            e => End::Before(e),
        }
    }
}

/// Whether the union of `intervals` covers the request's keys: the single key when
/// `range_end` is empty, everything from `key` on for `\0`, else `[key, range_end)`
/// (etcd's interval tree `Intersects` for a key, `Contains` for a range).
fn covered(intervals: &[(&[u8], End)], key: &[u8], range_end: &[u8]) -> bool {
    let contains = |b: &[u8], e: End, k: &[u8]| -> bool {
        match e {
            End::Point => k == b,
            End::Before(e) => b <= k && k < e,
            End::Unbounded => b <= k,
        }
    };
    if range_end.is_empty() {
        return intervals.iter().any(|&(b, e)| contains(b, e, key));
    }
    let want_end: Option<&[u8]> = if range_end == [0] { None } else { Some(range_end) };
    // Sweep: extend the covered prefix [key, cur) by the furthest interval containing `cur`.
    let mut cur: Vec<u8> = key.to_vec();
    loop {
        if want_end.is_some_and(|end| cur.as_slice() >= end) {
            return true;
        }
        // None: nothing contains `cur`; Some(None): covered to the end of the key space.
        let mut next: Option<Option<Vec<u8>>> = None;
        for &(b, e) in intervals {
            if !contains(b, e, &cur) {
                continue;
            }
            let reach = match e {
                End::Point => Some([b, &[0u8][..]].concat()),
                End::Before(e) => Some(e.to_vec()),
                End::Unbounded => None,
            };
            next = match (next, reach) {
                (Some(None), _) | (_, None) => Some(None),
                (Some(Some(a)), Some(r)) => Some(Some(a.max(r))),
                (None, Some(r)) => Some(Some(r)),
            };
        }
        match next {
            None => return false,
            Some(None) => return true,
            Some(Some(n)) => cur = n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(perms: Vec<Perm>) -> (AuthState, AuthInfo) {
        let mut s = AuthState { enabled: true, revision: 5, ..Default::default() };
        s.roles.insert("r".into(), Role { perms });
        s.users.insert("alice".into(), User { roles: vec!["r".into()], ..Default::default() });
        (s, AuthInfo { user: "alice".into(), revision: 5 })
    }

    fn perm(t: i32, k: &str, e: &str) -> Perm {
        Perm { perm_type: t, key: k.into(), range_end: e.into() }
    }

    #[test]
    fn single_key_prefix_and_from_key_permissions() {
        let (s, ai) = state_with(vec![perm(0, "a", ""), perm(2, "p/", "p0"), perm(1, "z", "\0")]);
        assert_eq!(s.check(&ai, b"a", b"", Need::Read), Ok(()));
        assert_eq!(s.check(&ai, b"a", b"", Need::Write), Err(EtcdError::PermissionDenied));
        assert_eq!(s.check(&ai, b"ab", b"", Need::Read), Err(EtcdError::PermissionDenied));
        assert_eq!(s.check(&ai, b"p/x", b"", Need::Write), Ok(()));
        assert_eq!(s.check(&ai, b"p/", b"p0", Need::Read), Ok(()));
        assert_eq!(s.check(&ai, b"p", b"p0", Need::Read), Err(EtcdError::PermissionDenied));
        assert_eq!(s.check(&ai, b"zz", b"\0", Need::Write), Ok(()));
        assert_eq!(s.check(&ai, b"zz", b"\0", Need::Read), Err(EtcdError::PermissionDenied));
        // a range made of adjacent permissions is covered
        let (s, ai) = state_with(vec![perm(0, "a", "c"), perm(0, "c", "e")]);
        assert_eq!(s.check(&ai, b"b", b"d", Need::Read), Ok(()));
        assert_eq!(s.check(&ai, b"b", b"f", Need::Read), Err(EtcdError::PermissionDenied));
    }

    #[test]
    fn user_and_revision_checks() {
        let (mut s, ai) = state_with(vec![]);
        assert_eq!(s.check(&AuthInfo::default(), b"a", b"", Need::Read), Err(EtcdError::UserEmpty));
        s.revision = 6;
        assert_eq!(s.check(&ai, b"a", b"", Need::Read), Err(EtcdError::AuthOldRevision));
        s.users.get_mut("alice").unwrap().roles.push(ROOT_ROLE.into());
        assert_eq!(s.check_admin(&ai), Ok(()));
        assert_eq!(s.check_admin(&AuthInfo::default()), Err(EtcdError::UserEmpty));
        s.enabled = false;
        assert_eq!(s.check(&AuthInfo::default(), b"a", b"", Need::Write), Ok(()));
    }
}
