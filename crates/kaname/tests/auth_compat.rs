//! Authentication and authorization, judged by real etcd 3.4: the same etcdctl session against
//! etcd and `kaname etcd`, outputs, stderr and exit codes compared after masking.

mod support;
use support::*;

/// Users, roles and permissions set up while auth is off, then auth enable. Checks: `user add`
/// with `--new-user-password`/`--interactive=false` (stdin), role add, grant-permission for a
/// key, `--prefix` and `--from-key` with read/write/readwrite, grant-role, get/list output,
/// auth enable refused until root exists (etcdctl itself adds the root role), duplicates and
/// unknown names (exact error texts).
fn setup() -> Vec<Step> {
    vec![
        step(&["auth", "enable"]),
        step(&["user", "add", "root", "--new-user-password=rootpw"]),
        step(&["user", "add", "root", "--new-user-password=rootpw"]),
        step(&["user", "add", "alice", "--interactive=false"]).stdin("alicepw\n"),
        step(&["user", "add", "bob", "--new-user-password=bobpw"]),
        step(&["role", "add", "reader"]),
        step(&["role", "add", "reader"]),
        step(&["role", "grant-permission", "reader", "read", "foo"]),
        step(&["role", "grant-permission", "reader", "readwrite", "dir/", "--prefix"]),
        step(&["role", "grant-permission", "reader", "write", "z", "--from-key"]),
        step(&["role", "grant-permission", "reader", "read", "a", "c"]),
        step(&["role", "grant-permission", "nosuch", "read", "foo"]),
        step(&["user", "grant-role", "alice", "reader"]),
        step(&["user", "grant-role", "alice", "nosuch"]),
        step(&["user", "grant-role", "nosuch", "reader"]),
        step(&["user", "get", "alice"]),
        step(&["user", "get", "alice", "--detail"]),
        step(&["user", "get", "nosuch"]),
        step(&["user", "list"]),
        step(&["role", "get", "reader"]),
        step(&["role", "get", "nosuch"]),
        step(&["role", "list"]),
        step(&["put", "foo", "v0"]),
        step(&["auth", "enable"]),
        step(&["role", "get", "root", "--user", "root:rootpw"]),
        step(&["user", "get", "root", "--user", "root:rootpw"]),
    ]
}

/// With auth on. Checks: no credentials (user name is empty), wrong password, root may do
/// everything, alice only what her role allows (get/put/del/txn/watch allowed and denied with
/// "permission denied"), admin operations refused to non-root users, revoke-permission taking
/// effect, passwd change (old password refused), root protections, auth disable.
fn enabled_session() -> Vec<Step> {
    let root = "--user=root:rootpw";
    let alice = "--user=alice:alicepw";
    vec![
        step(&["get", "foo"]),
        step(&["put", "foo", "x"]),
        step(&["user", "list"]),
        step(&["get", "foo", "--user=alice:wrong"]),
        step(&["get", "foo", "--user=nosuch:pw"]),
        step(&["put", "foo", "byroot", root]),
        step(&["get", "foo", root]),
        step(&["get", "foo", alice]),
        step(&["put", "foo", "x", alice]),
        step(&["put", "dir/a", "1", alice]),
        step(&["get", "dir/", "--prefix", alice]),
        step(&["get", "dir/a", "--prefix", alice]),
        step(&["get", "d", "--prefix", alice]),
        step(&["get", "a", "c", alice]),
        step(&["get", "a", "d", alice]),
        step(&["put", "zz", "1", alice]),
        step(&["get", "zz", alice]),
        step(&["del", "dir/a", alice]),
        step(&["del", "foo", alice]),
        step(&["del", "dir/", "--prefix", alice]),
        step(&["txn", alice]).stdin("value(\"foo\") = \"byroot\"\n\nput dir/t yes\n\nget foo\n\n"),
        step(&["txn", alice]).stdin("value(\"foo\") = \"byroot\"\n\nput foo no\n\n\n"),
        step(&["txn", alice]).stdin("value(\"other\") = \"x\"\n\n\n\n"),
        step(&["watch", "other", alice]),
        step(&["user", "list", alice]),
        step(&["role", "add", "r2", alice]),
        step(&["user", "get", "alice", alice]),
        step(&["user", "get", "bob", alice]),
        step(&["role", "get", "reader", alice]),
        step(&["auth", "disable", alice]),
        step(&["get", "foo", "--user=bob:bobpw"]),
        // revoke-permission takes effect at once
        step(&["role", "revoke-permission", "reader", "foo", root]),
        step(&["role", "revoke-permission", "reader", "foo", root]),
        step(&["role", "revoke-permission", "reader", "dir/", "--prefix", root]),
        step(&["get", "foo", alice]),
        step(&["get", "dir/t", alice]),
        step(&["role", "get", "reader", root]),
        // root protections while auth is on
        step(&["user", "delete", "root", root]),
        step(&["user", "revoke-role", "root", "root", root]),
        step(&["role", "delete", "root", root]),
        step(&["user", "revoke-role", "alice", "nosuch", root]),
        // passwd: the old password stops working
        step(&["user", "passwd", "alice", "--interactive=false", root]).stdin("newpw\n"),
        step(&["get", "zz", alice]),
        step(&["get", "zz", "--user=alice:newpw"]),
        // a deleted role is taken from its users
        step(&["role", "delete", "reader", root]),
        step(&["user", "get", "alice", root]),
        step(&["user", "delete", "bob", root]),
        step(&["user", "list", root]),
        step(&["auth", "disable", root]),
        step(&["get", "foo"]),
        step(&["auth", "disable"]),
    ]
}

#[test]
fn auth_session_matches_etcd_on_one_member() {
    let mut script = setup();
    script.extend(enabled_session());
    compare_session(1, &script);
}

/// On three members, steps go to different members; a member applies the auth state (and
/// the tokens) it did not receive itself.
#[test]
fn auth_session_matches_etcd_on_three_members() {
    let root = "--user=root:rootpw";
    let alice = "--user=alice:alicepw";
    let mut script = setup();
    script.extend([
        step(&["user", "list", root]).on(2),
        step(&["get", "foo", alice]).on(3),
        step(&["put", "dir/x", "1", alice]).on(2),
        step(&["put", "foo", "1", alice]).on(3),
        step(&["role", "revoke-permission", "reader", "dir/", "--prefix", root]).on(2),
        step(&["put", "dir/x", "2", alice]).on(3),
        step(&["get", "foo", "--user=alice:bad"]).on(2),
        step(&["auth", "disable", root]).on(3),
        step(&["get", "foo"]).on(1),
    ]);
    compare_session(3, &script);
}

/// `kaname etcdctl` against kaname: the same user/role/auth commands as the real etcdctl.
#[test]
fn kaname_etcdctl_auth_commands_match_etcdctl_against_kaname() {
    let mut script = setup();
    script.extend(enabled_session());
    compare_tools(Flavor::Kaname, 1, &script);
}

/// Waits until `root` can read through member `i` (`endpoint health` cannot tell: without
/// credentials it is refused once auth is on, on etcd too).
fn wait_serving(c: &Cluster, i: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let out = etcdctl_timeout(&c.member_endpoint(i), &["--user=root:rootpw", "get", "foo"], None, "3s");
        if out.success() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "m{i} does not serve: {}{}\n{}", out.stdout, out.stderr, c.log_tails(30));
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// What the auth state looks like from member `i`, normalized.
fn auth_view(c: &Cluster, i: usize, into: &mut Vec<String>) {
    let (masker, _) = Masker::for_cluster(c);
    let ep = c.member_endpoint(i);
    let steps: [&[&str]; 6] = [
        &["user", "list", "--user=root:rootpw"],
        &["user", "get", "alice", "--detail", "--user=root:rootpw"],
        &["role", "get", "reader", "--user=root:rootpw"],
        &["get", "foo", "--user=alice:alicepw"],
        &["put", "foo", "x", "--user=alice:alicepw"],
        &["get", "foo"],
    ];
    for args in steps {
        let o = etcdctl(&ep, args, None);
        into.push(format!(
            "m{i} $ etcdctl {}\n{}{}exit {}",
            args.join(" "),
            masker.normalize(&o.stdout, false),
            masker.normalize(&o.stderr, false),
            o.code()
        ));
    }
}

/// Users, roles, permissions and the enabled flag are durable and travel in snapshots.
/// Checks: after all 3 members are killed and restarted, every member shows the same users,
/// roles and permissions and still enforces them; `snapshot save` (root only) restored into a
/// new member (etcdctl restore for etcd, `kaname etcdctl snapshot restore` for kaname) keeps
/// them too. Compared with etcd's transcript.
fn persistence_transcript(flavor: Flavor) -> Vec<String> {
    let mut c = Cluster::start(flavor, 3);
    let ep = c.member_endpoint(1);
    let setup: [&[&str]; 8] = [
        &["user", "add", "root", "--new-user-password=rootpw"],
        &["user", "add", "alice", "--new-user-password=alicepw"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "foo"],
        &["role", "grant-permission", "reader", "readwrite", "dir/", "--prefix"],
        &["user", "grant-role", "alice", "reader"],
        &["put", "foo", "v1"],
        &["auth", "enable"],
    ];
    for args in setup {
        let o = etcdctl(&ep, args, None);
        assert!(o.success(), "{}: etcdctl {args:?}: {}", flavor.label(), o.stderr);
    }
    let mut out = Vec::new();
    for i in 1..=3 {
        c.kill(i);
    }
    for i in 1..=3 {
        c.restart(i);
    }
    for i in 1..=3 {
        wait_serving(&c, i);
        auth_view(&c, i, &mut out);
    }

    let snap = c.root().join("auth.db");
    let snap = snap.to_str().unwrap();
    let denied = etcdctl(&ep, &["snapshot", "save", snap, "--user=alice:alicepw"], None);
    out.push(format!("snapshot save as alice: exit {}", denied.code()));
    let saved = etcdctl(&ep, &["snapshot", "save", snap, "--user=root:rootpw"], None);
    assert!(saved.success(), "{}: snapshot save: {}", flavor.label(), saved.stderr);
    let mut dst = Cluster::prepare(flavor, 1);
    let m = dst.member(1);
    let peer = format!("http://127.0.0.1:{}", m.peer.port);
    let args = [
        "snapshot",
        "restore",
        snap,
        "--name",
        &m.name,
        "--data-dir",
        m.data_dir.to_str().unwrap(),
        "--initial-cluster",
        &dst.initial_cluster(),
        "--initial-cluster-token",
        dst.token(),
        "--initial-advertise-peer-urls",
        &peer,
    ];
    let restored = match flavor {
        Flavor::Etcd => etcdctl(&ep, &args, None),
        Flavor::Kaname => kaname_etcdctl(&ep, &args, None),
    };
    assert!(restored.success(), "{}: restore: {}{}", flavor.label(), restored.stdout, restored.stderr);
    dst.restart(1);
    wait_serving(&dst, 1);
    auth_view(&dst, 1, &mut out);
    out
}

#[test]
fn auth_state_survives_restart_and_snapshot_restore_as_in_etcd() {
    let expected = persistence_transcript(Flavor::Etcd);
    let got = persistence_transcript(Flavor::Kaname);
    // Not vacuous: alice kept her role and auth stayed on.
    let all = got.join("\n");
    assert!(all.contains("Role reader\nKV Read:") && all.contains("etcdserver: permission denied"), "{all}");
    assert!(all.contains("etcdserver: user name is empty"), "{all}");
    assert_eq!(expected.len(), got.len());
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e, g, "etcd (left) vs kaname (right)");
    }
}
