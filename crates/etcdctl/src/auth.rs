//! user, role and auth commands (etcdctl 3.4's texts; simple and json output).

use clap::{Args, Subcommand};
use kaname_proto::authpb::{Permission, UserAddOptions};
use kaname_proto::etcdserverpb::*;

use crate::client::{bad_args, Format, Global, Res};
use crate::out::{outln, Obj, J};
use crate::pr::*;

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Adds a new user
    Add(UserAddArgs),
    /// Deletes a user
    Delete(Plain),
    /// Gets detailed information of a user
    Get(UserGetArgs),
    /// Lists all users
    List(Plain),
    /// Changes password of user
    Passwd(UserAddArgs),
    /// Grants a role to a user
    GrantRole(Plain),
    /// Revokes a role from a user
    RevokeRole(Plain),
}

#[derive(Args, Debug)]
pub struct Plain {
    args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// Read password from stdin instead of interactive terminal
    #[arg(long, default_value = "true", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    interactive: bool,
    /// Supply password from the command line flag
    #[arg(long, default_value = "")]
    new_user_password: String,
    /// Create a user without password (CN based auth only)
    #[arg(long)]
    no_password: bool,
    args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UserGetArgs {
    /// Show permissions of roles granted to the user
    #[arg(long)]
    detail: bool,
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Adds a new role
    Add(Plain),
    /// Deletes a role
    Delete(Plain),
    /// Gets detailed information of a role
    Get(Plain),
    /// Lists all roles
    List(Plain),
    /// Grants a key to a role
    GrantPermission(PermArgs),
    /// Revokes a key from a role
    RevokePermission(PermArgs),
}

#[derive(Args, Debug)]
pub struct PermArgs {
    /// grant a prefix permission
    #[arg(long)]
    prefix: bool,
    /// grant a permission of keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    from_key: bool,
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Enables authentication
    Enable(Plain),
    /// Disables authentication
    Disable(Plain),
}

fn hdr_only(h: &Option<ResponseHeader>) -> J {
    Obj::new().opt("header", hdr_json(h)).j()
}

fn strs(v: &[String]) -> J {
    J::A(v.iter().map(|s| J::S(s.clone())).collect())
}

/// Prints `simple` or the json `j`; other formats are unsupported.
fn show(f: Format, simple: impl FnOnce(), j: impl FnOnce() -> J) -> Res {
    match f {
        Format::Simple => simple(),
        Format::Json => print_json(j()),
        _ => return unsupported(f),
    }
    Ok(())
}

fn read_password(args: &UserAddArgs) -> String {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let _ = args;
    line.split_whitespace().next().unwrap_or("").to_string()
}

pub async fn user(g: &Global, cmd: UserCmd) -> Res {
    let f = g.format()?;
    match cmd {
        UserCmd::Add(a) => {
            if a.args.len() != 1 {
                return bad_args("user add command requires user name as its argument");
            }
            let (user, password) = if a.no_password {
                (a.args[0].clone(), String::new())
            } else if !a.new_user_password.is_empty() {
                (a.args[0].clone(), a.new_user_password.clone())
            } else if let Some((u, p)) = a.args[0].split_once(':') {
                if u.is_empty() {
                    return bad_args("empty user name is not allowed");
                }
                (u.to_string(), p.to_string())
            } else {
                (a.args[0].clone(), read_password(&a))
            };
            let c = g.connect().await?;
            let req = AuthUserAddRequest {
                name: user.clone(),
                password,
                options: Some(UserAddOptions { no_password: a.no_password }),
                hashed_password: String::new(),
            };
            let r = g.timed(c.auth().user_add(req)).await?;
            show(f, || outln(&format!("User {user} created")), || hdr_only(&r.header))
        }
        UserCmd::Delete(a) => {
            if a.args.len() != 1 {
                return bad_args("user delete command requires user name as its argument");
            }
            let c = g.connect().await?;
            let r = g.timed(c.auth().user_delete(AuthUserDeleteRequest { name: a.args[0].clone() })).await?;
            show(f, || outln(&format!("User {} deleted", a.args[0])), || hdr_only(&r.header))
        }
        UserCmd::Get(a) => {
            if a.args.len() != 1 {
                return bad_args("user get command requires user name as its argument");
            }
            let name = a.args[0].clone();
            let c = g.connect().await?;
            let r = g.timed(c.auth().user_get(AuthUserGetRequest { name: name.clone() })).await?;
            if a.detail {
                outln(&format!("User: {name}"));
                for role in &r.roles {
                    outln("");
                    let rr = g.timed(c.auth().role_get(AuthRoleGetRequest { role: role.clone() })).await?;
                    show(f, || print_role(role, &rr.perm), || role_json(&rr))?;
                }
                return Ok(());
            }
            show(
                f,
                || {
                    let roles: String = r.roles.iter().map(|x| format!(" {x}")).collect();
                    outln(&format!("User: {name}\nRoles:{roles}"));
                },
                || Obj::new().opt("header", hdr_json(&r.header)).o("roles", strs(&r.roles)).j(),
            )
        }
        UserCmd::List(a) => {
            if !a.args.is_empty() {
                return bad_args("user list command requires no arguments");
            }
            let c = g.connect().await?;
            let r = g.timed(c.auth().user_list(AuthUserListRequest {})).await?;
            show(
                f,
                || r.users.iter().for_each(|u| outln(u)),
                || Obj::new().opt("header", hdr_json(&r.header)).o("users", strs(&r.users)).j(),
            )
        }
        UserCmd::Passwd(a) => {
            if a.args.len() != 1 {
                return bad_args("user passwd command requires user name as its argument");
            }
            let password = read_password(&a);
            let c = g.connect().await?;
            let req =
                AuthUserChangePasswordRequest { name: a.args[0].clone(), password, hashed_password: String::new() };
            let r = g.timed(c.auth().user_change_password(req)).await?;
            show(f, || outln("Password updated"), || hdr_only(&r.header))
        }
        UserCmd::GrantRole(a) => {
            if a.args.len() != 2 {
                return bad_args("user grant command requires user name and role name as its argument");
            }
            let c = g.connect().await?;
            let req = AuthUserGrantRoleRequest { user: a.args[0].clone(), role: a.args[1].clone() };
            let r = g.timed(c.auth().user_grant_role(req)).await?;
            show(f, || outln(&format!("Role {} is granted to user {}", a.args[1], a.args[0])), || hdr_only(&r.header))
        }
        UserCmd::RevokeRole(a) => {
            if a.args.len() != 2 {
                return bad_args("user revoke-role requires user name and role name as its argument");
            }
            let c = g.connect().await?;
            let req = AuthUserRevokeRoleRequest { name: a.args[0].clone(), role: a.args[1].clone() };
            let r = g.timed(c.auth().user_revoke_role(req)).await?;
            show(f, || outln(&format!("Role {} is revoked from user {}", a.args[1], a.args[0])), || hdr_only(&r.header))
        }
    }
}

fn role_json(r: &AuthRoleGetResponse) -> J {
    let perms = r
        .perm
        .iter()
        .map(|p| {
            Obj::new()
                .o("permType", J::I(p.perm_type as i64))
                .o("key", J::Bytes(p.key.clone()))
                .o("range_end", J::Bytes(p.range_end.clone()))
                .j()
        })
        .collect();
    Obj::new().opt("header", hdr_json(&r.header)).o("perm", J::A(perms)).j()
}

fn print_role(role: &str, perms: &[Permission]) {
    outln(&format!("Role {role}"));
    let show = |p: &Permission| {
        let key = String::from_utf8_lossy(&p.key);
        let end = String::from_utf8_lossy(&p.range_end);
        if p.range_end.is_empty() {
            outln(&format!("\t{key}"));
            return;
        }
        let mut s = if p.range_end != [0] { format!("\t[{key}, {end})") } else { format!("\t[{key}, <open ended>") };
        if crate::kv::prefix_end(&p.key) == p.range_end {
            s.push_str(&format!(" (prefix {key})"));
        }
        outln(&s);
    };
    outln("KV Read:");
    perms.iter().filter(|p| p.perm_type == 0 || p.perm_type == 2).for_each(show);
    outln("KV Write:");
    perms.iter().filter(|p| p.perm_type == 1 || p.perm_type == 2).for_each(show);
}

/// etcdctl's permRange: the key and range end a permission covers.
fn perm_range(a: &PermArgs, args: &[String]) -> Res<(Vec<u8>, Vec<u8>)> {
    let key = args[0].clone().into_bytes();
    if key.is_empty() {
        if a.prefix && a.from_key {
            return bad_args("--from-key and --prefix flags are mutually exclusive");
        }
        let end = if a.prefix || a.from_key { vec![0] } else { Vec::new() };
        return Ok((vec![0], end));
    }
    if args.len() == 2 {
        if a.prefix {
            return bad_args("unexpected endkey argument with --prefix flag");
        }
        if a.from_key {
            return bad_args("unexpected endkey argument with --from-key flag");
        }
        return Ok((key, args[1].clone().into_bytes()));
    }
    if a.prefix && a.from_key {
        return bad_args("--from-key and --prefix flags are mutually exclusive");
    }
    let end = if a.prefix {
        crate::kv::prefix_end(&key)
    } else if a.from_key {
        vec![0]
    } else {
        Vec::new()
    };
    Ok((key, end))
}

pub async fn role(g: &Global, cmd: RoleCmd) -> Res {
    let f = g.format()?;
    match cmd {
        RoleCmd::Add(a) => {
            if a.args.len() != 1 {
                return bad_args("role add command requires role name as its argument");
            }
            let c = g.connect().await?;
            let r = g.timed(c.auth().role_add(AuthRoleAddRequest { name: a.args[0].clone() })).await?;
            show(f, || outln(&format!("Role {} created", a.args[0])), || hdr_only(&r.header))
        }
        RoleCmd::Delete(a) => {
            if a.args.len() != 1 {
                return bad_args("role delete command requires role name as its argument");
            }
            let c = g.connect().await?;
            let r = g.timed(c.auth().role_delete(AuthRoleDeleteRequest { role: a.args[0].clone() })).await?;
            show(f, || outln(&format!("Role {} deleted", a.args[0])), || hdr_only(&r.header))
        }
        RoleCmd::Get(a) => {
            if a.args.len() != 1 {
                return bad_args("role get command requires role name as its argument");
            }
            let c = g.connect().await?;
            let r = g.timed(c.auth().role_get(AuthRoleGetRequest { role: a.args[0].clone() })).await?;
            show(f, || print_role(&a.args[0], &r.perm), || role_json(&r))
        }
        RoleCmd::List(a) => {
            if !a.args.is_empty() {
                return bad_args("role list command requires no arguments");
            }
            let c = g.connect().await?;
            let r = g.timed(c.auth().role_list(AuthRoleListRequest {})).await?;
            show(
                f,
                || r.roles.iter().for_each(|u| outln(u)),
                || Obj::new().opt("header", hdr_json(&r.header)).o("roles", strs(&r.roles)).j(),
            )
        }
        RoleCmd::GrantPermission(a) => {
            if a.args.len() < 3 {
                return bad_args(
                    "role grant command requires role name, permission type, and key [endkey] as its argument",
                );
            }
            let perm_type = match a.args[1].to_uppercase().as_str() {
                "READ" => 0,
                "WRITE" => 1,
                "READWRITE" => 2,
                _ => return bad_args(format!("invalid permission type: {}", a.args[1])),
            };
            let (key, range_end) = perm_range(&a, &a.args[2..])?;
            let c = g.connect().await?;
            let req = AuthRoleGrantPermissionRequest {
                name: a.args[0].clone(),
                perm: Some(Permission { perm_type, key, range_end }),
            };
            let r = g.timed(c.auth().role_grant_permission(req)).await?;
            show(f, || outln(&format!("Role {} updated", a.args[0])), || hdr_only(&r.header))
        }
        RoleCmd::RevokePermission(a) => {
            if a.args.len() < 2 {
                return bad_args("role revoke-permission command requires role name and key [endkey] as its argument");
            }
            let (key, range_end) = perm_range(&a, &a.args[1..])?;
            let c = g.connect().await?;
            let req = AuthRoleRevokePermissionRequest { role: a.args[0].clone(), key, range_end: range_end.clone() };
            let r = g.timed(c.auth().role_revoke_permission(req)).await?;
            let (role, key) = (&a.args[0], &a.args[1]);
            let end = String::from_utf8_lossy(&range_end);
            let text = if range_end.is_empty() {
                format!("Permission of key {key} is revoked from role {role}")
            } else if range_end != [0] {
                format!("Permission of range [{key}, {end}) is revoked from role {role}")
            } else {
                format!("Permission of range [{key}, <open ended> is revoked from role {role}")
            };
            show(f, || outln(&text), || hdr_only(&r.header))
        }
    }
}

pub async fn auth(g: &Global, cmd: AuthCmd) -> Res {
    let f = g.format()?;
    match cmd {
        AuthCmd::Enable(a) => {
            if !a.args.is_empty() {
                return bad_args("auth enable command does not accept any arguments");
            }
            let c = g.connect().await?;
            loop {
                match g.timed(c.auth().auth_enable(AuthEnableRequest {})).await {
                    Ok(_) => break,
                    Err(e) if e.msg.as_deref() == Some("etcdserver: root user does not have root role") => {
                        g.timed(c.auth().role_add(AuthRoleAddRequest { name: "root".into() })).await?;
                        let grant = AuthUserGrantRoleRequest { user: "root".into(), role: "root".into() };
                        g.timed(c.auth().user_grant_role(grant)).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
            let _ = f;
            outln("Authentication Enabled");
            Ok(())
        }
        AuthCmd::Disable(a) => {
            if !a.args.is_empty() {
                return bad_args("auth disable command does not accept any arguments");
            }
            let c = g.connect().await?;
            g.timed(c.auth().auth_disable(AuthDisableRequest {})).await?;
            outln("Authentication Disabled");
            Ok(())
        }
    }
}
