//! The `auth` table: etcd's three auth buckets in one table, so a snapshot row needs one table
//! id. Rows are what etcd writes: `auth/authEnabled` (one byte, 1 or 0), `auth/authRevision`
//! (8 bytes, big endian), `authUsers/<name>` (encoded `authpb.User`, the password as its bcrypt
//! hash) and `authRoles/<name>` (encoded `authpb.Role`). It lives in the redb file of the
//! history, so an auth change commits with its apply round and travels in snapshots.

use kaname_proto::authpb;
use prost::Message;
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use crate::auth::{AuthState, Perm, Role, User};
use crate::error::{internal, EtcdError};

pub(crate) const AUTH_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("auth");

const ENABLED: &[u8] = b"auth/authEnabled";
const REVISION: &[u8] = b"auth/authRevision";
const USERS: &[u8] = b"authUsers/";
const ROLES: &[u8] = b"authRoles/";

fn row_key(prefix: &[u8], name: &str) -> Vec<u8> {
    [prefix, name.as_bytes()].concat()
}

/// Reads the auth state; an empty table is etcd's initial state (revision 1, auth off).
pub(super) fn load(txn: &ReadTransaction) -> Result<AuthState, EtcdError> {
    let table = txn.open_table(AUTH_TABLE).map_err(internal)?;
    let mut st = AuthState::default();
    for row in table.iter().map_err(internal)? {
        let (k, v) = row.map_err(internal)?;
        let (k, v) = (k.value(), v.value());
        if k == ENABLED {
            st.enabled = v == [1];
        } else if k == REVISION {
            st.revision = u64::from_be_bytes(v.try_into().map_err(internal)?);
        } else if let Some(name) = k.strip_prefix(USERS) {
            let u = authpb::User::decode(v).map_err(internal)?;
            let user = User {
                password: String::from_utf8(u.password).map_err(internal)?,
                roles: u.roles,
                no_password: u.options.is_some_and(|o| o.no_password),
            };
            st.users.insert(String::from_utf8_lossy(name).into_owned(), user);
        } else if let Some(name) = k.strip_prefix(ROLES) {
            let r = authpb::Role::decode(v).map_err(internal)?;
            let perms = r
                .key_permission
                .into_iter()
                .map(|p| Perm { perm_type: p.perm_type, key: p.key, range_end: p.range_end })
                .collect();
            st.roles.insert(String::from_utf8_lossy(name).into_owned(), Role { perms });
        }
    }
    Ok(st)
}

/// Replaces the table's rows with `st` (a few rows per user and role; auth changes are rare).
pub(super) fn store(txn: &WriteTransaction, st: &AuthState) -> Result<(), EtcdError> {
    let mut table = txn.open_table(AUTH_TABLE).map_err(internal)?;
    table.retain(|_, _| false).map_err(internal)?;
    table.insert(ENABLED, &[st.enabled as u8][..]).map_err(internal)?;
    table.insert(REVISION, &st.revision.to_be_bytes()[..]).map_err(internal)?;
    for (name, u) in &st.users {
        let row = authpb::User {
            name: name.as_bytes().to_vec(),
            password: u.password.as_bytes().to_vec(),
            roles: u.roles.clone(),
            options: Some(authpb::UserAddOptions { no_password: u.no_password }),
        };
        table.insert(row_key(USERS, name).as_slice(), row.encode_to_vec().as_slice()).map_err(internal)?;
    }
    for (name, r) in &st.roles {
        let row = authpb::Role {
            name: name.as_bytes().to_vec(),
            key_permission: r.perms.iter().map(Perm::to_proto).collect(),
        };
        table.insert(row_key(ROLES, name).as_slice(), row.encode_to_vec().as_slice()).map_err(internal)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn auth_state_round_trips_through_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("db")).unwrap();
        let mut st = AuthState { enabled: true, revision: 7, ..Default::default() };
        let alice = User { password: "$2b$10$hash".into(), roles: vec!["r".into()], no_password: false };
        st.users.insert("alice".into(), alice);
        st.users.insert("cn-only".into(), User { no_password: true, ..Default::default() });
        let perm = Perm { perm_type: 2, key: b"a".to_vec(), range_end: vec![0] };
        st.roles.insert("r".into(), Role { perms: vec![perm] });
        for state in [st, AuthState::default()] {
            let w = db.begin_write().unwrap();
            store(&w, &state).unwrap();
            w.commit().unwrap();
            assert_eq!(load(&db.begin_read().unwrap()).unwrap(), state);
        }
    }
}
